//! `saga-tracker`: the thin binary. Parses the command line, loads configuration and calls
//! the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use saga_tracker::api::auth::keys::{hash_token, NewKey};
use saga_tracker::cli::{self, ApiArgs, ColorChoice, Output};
use saga_tracker::config::{Role, Settings};
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
    /// Colours in terminal output: `auto` (a terminal, and `NO_COLOR` unset), `always`, `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
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
    /// Run locally with an embedded Kafka-protocol broker (in memory) and demo traffic.
    #[command(after_help = "Examples:
  saga-tracker dev                        # broker on 127.0.0.1:9092, demo on, UI printed
  saga-tracker dev --no-demo --broker-port 19092
  TRACKER_DATABASE__URL=postgres://postgres@127.0.0.1:5432/sagas_dev saga-tracker dev")]
    Dev(saga_tracker::dev::DevArgs),
    /// Make API keys for `[[auth.api_keys]]` (needs no configuration).
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Find, inspect and export sagas through a running tracker's REST API.
    Sagas {
        #[command(subcommand)]
        command: cli::sagas::SagasCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Inspect and replay the dead-letter topic (uses the `[kafka]` settings).
    #[command(after_help = cli::dlq::HELP)]
    Dlq {
        #[command(subcommand)]
        command: cli::dlq::DlqCommand,
    },
    /// Check configuration, database, Kafka and the API; say what is wrong; exit 1 if anything is.
    Doctor {
        #[command(flatten)]
        args: cli::doctor::DoctorArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a shell completion script, e.g. `saga-tracker completions bash > /etc/bash_completion.d/saga-tracker`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Print a fresh random token and the configuration entry holding its hash.
    New {
        /// The key's name, shown in logs and /api/v1/whoami (A-Z a-z 0-9 _ . @ -).
        #[arg(long)]
        name: String,
        /// `reader` or `operator`.
        #[arg(long)]
        role: Role,
    },
    /// Read a token on stdin and print its `sha256:` hash, e.g. to re-enter a token kept in a
    /// secret manager when rotating.
    Hash,
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
        Command::ApiKey { command } => return api_key(command),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "saga-tracker", &mut std::io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let out = Output::new(cli.color);
    // The operator's commands print for a person; they neither need the server's settings
    // (`sagas`) nor its JSON logs on stdout.
    match cli.command {
        Command::Sagas { command, api } => {
            cli::exit_on_error(cli::sagas::run(command, api, out).await)
        }
        Command::Doctor { args, api } => {
            match cli::doctor::run(args, cli.config.as_deref(), api, out).await {
                Ok(healthy) => std::process::exit(if healthy { 0 } else { 1 }),
                Err(e) => cli::exit_on_error(Err(e)),
            }
        }
        Command::Dlq { command } => {
            cli::exit_on_error(match Settings::load(cli.config.as_deref()) {
                Ok(settings) => cli::dlq::run(command, settings, out).await,
                Err(e) => Err(e),
            })
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    let telemetry = telemetry::init(&settings.log, &settings.telemetry)?;
    let ignored = Settings::ignored_env_vars();
    if !ignored.is_empty() {
        // Not settings (those are TRACKER_<SECTION>__<KEY>): typically the TRACKER_PORT,
        // TRACKER_SERVICE_HOST, … Kubernetes injects for a Service named `tracker`.
        tracing::warn!(
            variables = %ignored.join(", "),
            "ignoring TRACKER_* environment variables that are not settings (settings are \
             TRACKER_<SECTION>__<KEY>)"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match cli.command {
        Command::Run => {
            let app = Application::build(settings).await?;
            tracing::info!(
                addr = %app.local_addr()?,
                ops_addr = %app.ops_addr()?,
                "saga tracker listening"
            );
            let result = app.run(shutdown).await;
            // Exports the spans and lines of the last batches before the process exits.
            telemetry.shutdown().await;
            result
        }
        Command::Migrate => {
            if let store::ConnectCheck::Unreachable(why) =
                store::check_connection(&settings.database).await?
            {
                anyhow::bail!("cannot reach PostgreSQL to migrate: {why}");
            }
            let pool = store::connect_lazy(&settings.database)?;
            store::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Dev(args) => {
            let result = saga_tracker::dev::run(settings, args, shutdown).await;
            telemetry.shutdown().await;
            result
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
        Command::Openapi
        | Command::DefaultConfig
        | Command::ApiKey { .. }
        | Command::Completions { .. }
        | Command::Sagas { .. }
        | Command::Dlq { .. }
        | Command::Doctor { .. } => Ok(()),
    }
}

/// `api-key new` / `api-key hash`: output for a person (or a script) to paste, nothing
/// stored.
fn api_key(command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::New { name, role } => {
            let key = NewKey::generate(&name, role)?;
            println!("# The token: give it to the client. It is shown only this once.");
            println!("{}", key.token);
            println!();
            println!("# Add this to the configuration (in `auth.api_keys_file`, as [[api_keys]]):");
            print!("{}", key.entry_toml("auth.api_keys"));
        }
        ApiKeyCommand::Hash => {
            let mut token = String::new();
            std::io::stdin()
                .read_line(&mut token)
                .context("reading the token from stdin")?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                anyhow::bail!("expected one token on stdin, without spaces");
            }
            println!("{}", hash_token(token));
        }
    }
    Ok(())
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
