//! Logging set-up in one place: text for people, JSON for log pipelines.
//!
//! `RUST_LOG`, when set, wins over `log.level` so an operator can turn up one module
//! without a config change.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global subscriber, writing to stderr. Safe to call more than once (later
/// calls are ignored), which tests rely on.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.level.clone()));
    install(settings, filter, std::io::stderr);
}

/// Installs the global subscriber writing to `writer` instead, in the configured format,
/// so a test can read exactly what the tracker would have logged. The filter is
/// `settings.level` alone: `RUST_LOG` is not consulted, so what a test captures does not
/// depend on the environment it runs in. Later calls are ignored, as with [`init`].
pub fn init_with_writer<W>(settings: &LogSettings, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(settings, EnvFilter::new(settings.level.clone()), writer);
}

fn install<W>(settings: &LogSettings, filter: EnvFilter, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if settings.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
