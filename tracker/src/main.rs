//! `saga-tracker`: the thin binary. Parses the command line, loads configuration and calls
//! the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use saga_tracker::config::Settings;
use saga_tracker::{api, app::Application, demo, store, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "saga-tracker",
    version,
    about = "Observability for distributed sagas"
)]
struct Cli {
    /// TOML file overriding the built-in defaults (TRACKER_* variables override both).
    #[arg(long, global = true, env = "TRACKER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume events and serve the API until SIGTERM/SIGINT.
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
    /// Print the built-in default configuration (commented TOML) and exit.
    DefaultConfig,
    /// Generate demo saga traffic through the SDK.
    Demo {
        /// Target events per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Stop after this many sagas (default: run until interrupted).
        #[arg(long)]
        sagas: Option<u64>,
        /// Random seed, for reproducible traffic.
        #[arg(long, default_value_t = 8812)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            let doc = api::openapi()
                .to_pretty_json()
                .context("serializing the OpenAPI document")?;
            println!("{doc}");
            return Ok(());
        }
        Command::DefaultConfig => {
            print!("{}", saga_tracker::config::DEFAULT_CONFIG);
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match cli.command {
        Command::Run => {
            let app = Application::build(settings).await?;
            tracing::info!(addr = %app.local_addr()?, "saga tracker listening");
            app.run(shutdown).await
        }
        Command::Migrate => {
            let pool = store::connect_lazy(&settings.database)?;
            store::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Demo { rate, sagas, seed } => {
            let opts = demo::DemoOptions {
                brokers: settings.kafka.brokers.clone(),
                topic: settings.kafka.topic.clone(),
                rate,
                sagas,
                seed,
            };
            demo::run(opts, shutdown).await.map(|_| ())
        }
        Command::Openapi | Command::DefaultConfig => Ok(()),
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}
