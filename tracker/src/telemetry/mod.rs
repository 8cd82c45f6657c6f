//! The tracker's own telemetry in one place: log lines (text for people, JSON for log
//! pipelines) on stderr, and — each off unless configured — spans over OTLP ([`otlp`]) and
//! log lines pushed to Loki ([`loki`]).
//!
//! `RUST_LOG`, when set, wins over `log.level` so an operator can turn up one module
//! without a config change. The level filter applies to spans too: what is not logged is not
//! traced either.
//!
//! Nothing here may slow ingest or grow without bound when a collector or Loki is down:
//! exports run on their own thread or task behind bounded queues, and a failure costs a
//! counter ([`crate::metrics::telemetry_export_failed`]) and at most one warning a minute
//! per signal ([`export_failed`]). The W3C TraceContext propagator is installed globally
//! (always, so `traceparent` handling does not depend on export being on); code that
//! continues an incoming trace uses `opentelemetry::global::get_text_map_propagator`.

pub mod ids;
pub mod loki;
pub mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogSettings, TelemetrySettings};

pub use otlp::parse_sampler;

/// What a telemetry counter or warning is about: the `signal` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Logs => "logs",
        }
    }
}

/// Shortest time between two "export failing" warnings of one signal.
pub const FAILURE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Unix seconds of the last warning per signal (traces, logs); 0: none yet.
static LAST_WARNING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Failures since the last warning per signal, reported in the next one.
static SINCE_WARNING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Reports one failed export of `items` spans or log lines: counts it, and logs a warning
/// unless one was logged for this signal less than [`FAILURE_WARNING_INTERVAL`] ago. The one
/// place export failures are logged and counted.
pub fn export_failed(signal: Signal, items: u64, error: &str) {
    crate::metrics::telemetry_export_failed(signal);
    let i = signal as usize;
    let failures = SINCE_WARNING[i].fetch_add(1, Ordering::AcqRel) + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_WARNING[i].load(Ordering::Acquire);
    if now < last + FAILURE_WARNING_INTERVAL.as_secs()
        || LAST_WARNING[i]
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    SINCE_WARNING[i].store(0, Ordering::Release);
    tracing::warn!(
        signal = signal.as_str(),
        failures,
        items,
        error,
        "telemetry export failing; the data of failed exports is dropped and counted in \
         saga_tracker_telemetry_export_failures_total (next warning in a minute at the earliest)"
    );
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    loki: Option<loki::Loki>,
}

impl Telemetry {
    /// Exports what is still queued (each within its timeout) and stops the exporters.
    /// Call once, after the application stopped, so the last batches' spans and lines go out.
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            // The processor's thread waits on the gRPC client's task, which needs this
            // runtime to make progress: block a blocking-pool thread, not a worker.
            let joined = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = joined {
                eprintln!("saga-tracker: flushing spans at shutdown failed: {e}");
            }
        }
        if let Some(loki) = self.loki {
            loki.shutdown().await;
        }
    }
}

/// Installs the global subscriber, writing to stderr, with the exporters `telemetry` (and
/// the standard `OTEL_*` variables) turn on. Must run inside the Tokio runtime. A second
/// call installs nothing and returns an empty [`Telemetry`].
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let env = |k: &str| std::env::var(k).ok();
    let otlp = otlp::resolve(telemetry, &env)?;
    let loki_config = loki::resolve(telemetry, &env)?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.level.clone()));

    let mut layers: Vec<BoxedLayer> = vec![fmt_layer(log, std::io::stderr)];
    let mut started = Telemetry::default();
    if let Some(config) = &otlp {
        let provider = otlp::provider(config)?;
        let tracer = provider.tracer("saga-tracker");
        started.traces = Some(provider);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // The exporter's own HTTP/2 and HTTP stack must not produce spans about
                // exporting spans.
                .with_filter(filter_fn(|meta| !is_export_machinery(meta.target())))
                .boxed(),
        );
    }
    if let Some(config) = loki_config {
        let (layer, running) = loki::start(config).context("starting the Loki log push")?;
        started.loki = Some(running);
        layers.push(
            layer
                .with_filter(filter_fn(|meta| !is_export_machinery(meta.target())))
                .boxed(),
        );
    }
    if tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .is_err()
    {
        // Already installed (tests start several applications in one process): leave it.
        return Ok(Telemetry::default());
    }
    if let Some(config) = &otlp {
        tracing::info!(
            endpoint = %config.endpoint,
            protocol = ?config.protocol,
            service_name = %config.service_name,
            "exporting spans over OTLP"
        );
    }
    Ok(started)
}

/// Installs the global subscriber writing to `writer` instead, in the configured format,
/// so a test can read exactly what the tracker would have logged. The filter is
/// `settings.level` alone: `RUST_LOG` is not consulted, so what a test captures does not
/// depend on the environment it runs in. No exporter is started. Later calls are ignored,
/// as with [`init`].
pub fn init_with_writer<W>(settings: &LogSettings, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::new(settings.level.clone()))
        .with(vec![fmt_layer(settings, writer)])
        .try_init();
}

/// Every layer sits on the registry behind the level filter.
type BoxedLayer = Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync>;

fn fmt_layer<W>(settings: &LogSettings, writer: W) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if settings.format == "json" {
        layer
            .json()
            .flatten_event(true)
            .event_format(ids::WithTraceIds {
                inner: tracing_subscriber::fmt::format().json().flatten_event(true),
            })
            .boxed()
    } else {
        layer.boxed()
    }
}

/// Targets of the crates that carry exports (and of the exporters themselves): their spans
/// and events stay out of the exports, or every export would make more to export.
fn is_export_machinery(target: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
        "opentelemetry_http",
        "tracing_loki",
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "reqwest",
        "rustls",
    ];
    PREFIXES.iter().any(|p| {
        target
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    }) || target.starts_with("saga_tracker::telemetry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_machinery_is_recognised_by_crate_not_by_prefix_of_a_name() {
        assert!(is_export_machinery("h2::codec"));
        assert!(is_export_machinery("hyper"));
        assert!(is_export_machinery("opentelemetry_sdk"));
        assert!(is_export_machinery("opentelemetry_otlp::exporter"));
        assert!(is_export_machinery("saga_tracker::telemetry::loki"));
        assert!(!is_export_machinery("saga_tracker::ingest"));
        assert!(!is_export_machinery("h2o"));
    }
}
