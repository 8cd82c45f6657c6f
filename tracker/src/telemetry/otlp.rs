//! Spans over OTLP: which collector, which protocol and sampler (typed settings, overridden
//! by the standard `OTEL_*` variables), and the bounded, counted export pipeline.
//!
//! The pipeline is the SDK's thread-based `BatchSpanProcessor` between two small wrappers of
//! ours. [`Gate`] admits a finished span only while fewer than `max_queue_size` are waiting
//! and counts the rest as dropped; [`Counted`] marks spans as no longer waiting when the
//! processor hands them to the exporter, and counts failed exports. So the memory spans can
//! hold is bounded by the queue size whatever the collector does, ingest never waits on an
//! export (the processor runs on its own thread), and the operator sees both effects in
//! `/metrics` and in at most one warning a minute.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetrySettings;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Everything the exporter is built from, after settings and environment were merged.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The full URL the exporter sends to (for HTTP, including `/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub timeout: Duration,
    pub sampler: Sampler,
    /// `service.name` of the resource.
    pub service_name: String,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Merges `settings` with the standard variables read through `env`; `None` when span
/// export is off. `OTEL_*` wins over the settings; setting an endpoint variable turns export
/// on, and `OTEL_SDK_DISABLED=true` turns it off whatever else is set.
pub fn resolve(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<OtlpConfig>> {
    let get = |k: &str| non_empty(env(k));
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let o = &settings.otlp;
    let traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    if !o.enabled && traces_endpoint.is_none() && base_endpoint.is_none() {
        return Ok(None);
    }
    let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p))
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)))
        .or_else(|| non_empty(Some(o.protocol.clone())).map(|p| ("telemetry.otlp.protocol", p)))
    {
        None => OtlpProtocol::Grpc,
        Some((_, p)) if p == "grpc" => OtlpProtocol::Grpc,
        Some((_, p)) if p == "http/protobuf" => OtlpProtocol::HttpProtobuf,
        Some((key, p)) => bail!(
            "invalid configuration: `{key}` is {p:?}; this tracker speaks \"grpc\" and \
             \"http/protobuf\""
        ),
    };
    // A signal-specific endpoint is used as is; a base one gets the signal's path for HTTP
    // (the OTLP exporter specification's rule).
    let endpoint = match (
        traces_endpoint,
        base_endpoint,
        non_empty(Some(o.endpoint.clone())),
    ) {
        (Some(e), _, _) => e,
        (None, Some(base), _) | (None, None, Some(base)) => match protocol {
            OtlpProtocol::Grpc => base,
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        },
        (None, None, None) => match protocol {
            OtlpProtocol::Grpc => "http://localhost:4317".to_owned(),
            OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_owned(),
        },
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("invalid configuration: the OTLP endpoint {endpoint:?} must be an http:// or https:// URL");
    }
    // The gRPC client is built without TLS (an in-cluster collector is the common case);
    // HTTP/protobuf speaks TLS with rustls and the platform's trust store.
    if protocol == OtlpProtocol::Grpc && endpoint.starts_with("https://") {
        bail!(
            "invalid configuration: the OTLP endpoint {endpoint:?} needs TLS, which this \
             tracker speaks over HTTP only: set the protocol to \"http/protobuf\" \
             (OTEL_EXPORTER_OTLP_PROTOCOL or telemetry.otlp.protocol)"
        );
    }
    let sampler = match get("OTEL_TRACES_SAMPLER") {
        Some(name) => parse_sampler(
            "OTEL_TRACES_SAMPLER",
            &name,
            &get("OTEL_TRACES_SAMPLER_ARG").unwrap_or_default(),
        )?,
        None => parse_sampler("telemetry.otlp.sampler", &o.sampler, &o.sampler_arg)?,
    };
    let timeout_ms = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .map(|t| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", t))
        .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT").map(|t| ("OTEL_EXPORTER_OTLP_TIMEOUT", t)))
    {
        None => o.timeout_ms,
        Some((key, t)) => match t.parse::<u64>() {
            Ok(ms) if (1..=600_000).contains(&ms) => ms,
            _ => bail!(
                "invalid configuration: `{key}` is {t:?}; expected milliseconds between 1 and \
                 600000"
            ),
        },
    };
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        timeout: Duration::from_millis(timeout_ms),
        sampler,
        service_name: service_name(settings, env),
        max_queue_size: o.max_queue_size,
        max_export_batch_size: o.max_export_batch_size,
        scheduled_delay: Duration::from_millis(o.scheduled_delay_ms),
    }))
}

/// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else
/// `telemetry.service_name`.
pub fn service_name(settings: &TelemetrySettings, env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(name) = non_empty(env("OTEL_SERVICE_NAME")) {
        return name;
    }
    let from_attributes = non_empty(env("OTEL_RESOURCE_ATTRIBUTES")).and_then(|attrs| {
        attrs.split(',').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == "service.name")
                .then(|| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    });
    from_attributes.unwrap_or_else(|| settings.service_name.clone())
}

/// The OpenTelemetry sampler `name` with its argument, as `OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG` spell them; `key` names the setting in the error.
pub fn parse_sampler(key: &str, name: &str, arg: &str) -> anyhow::Result<Sampler> {
    let ratio = || -> anyhow::Result<f64> {
        if arg.trim().is_empty() {
            return Ok(1.0);
        }
        match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => bail!(
                "invalid configuration: the argument of `{key}` ({arg:?}) must be a ratio \
                 between 0.0 and 1.0"
            ),
        }
    };
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" | "" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        other => bail!(
            "invalid configuration: `{key}` is {other:?}; expected always_on, always_off, \
             traceidratio, parentbased_always_on, parentbased_always_off or \
             parentbased_traceidratio"
        ),
    })
}

/// Builds the tracer provider. Must run inside the Tokio runtime: the gRPC client's
/// connection task lives there (the processor's own thread only waits on it).
pub fn provider(config: &OtlpConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&config.endpoint)
            .with_timeout(config.timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&config.endpoint)
            .with_timeout(config.timeout)
            .build(),
    }
    .with_context(|| format!("building the OTLP span exporter for {}", config.endpoint))?;
    let waiting = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        waiting: waiting.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.scheduled_delay)
            .build(),
    )
    .build();
    // Resource::builder() reads OTEL_RESOURCE_ATTRIBUTES (and adds telemetry.sdk.*); the
    // service name is set last so the precedence of `service_name` holds.
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Gate {
            inner: batch,
            waiting,
            max: config.max_queue_size,
        })
        .with_sampler(config.sampler.clone())
        .with_resource(resource)
        .build())
}

/// Admits a finished span to the batch processor only while fewer than `max` wait for
/// export; the rest are dropped and counted. Keeps the processor's own queue from ever
/// filling, so every drop is ours and visible.
#[derive(Debug)]
struct Gate<P> {
    inner: P,
    /// Spans handed to `inner` and not yet given to the exporter (see [`Counted`]).
    waiting: Arc<AtomicUsize>,
    max: usize,
}

impl<P: SpanProcessor> SpanProcessor for Gate<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::telemetry_dropped(super::Signal::Traces, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting: spans leave the [`Gate`]'s count when handed over; a failed
/// export's spans are dropped (the processor does not retry) and reported through
/// [`super::export_failed`].
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    waiting: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.waiting.fetch_sub(n, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            // The processor does not retry: the batch is lost, and counted as dropped.
            crate::metrics::telemetry_dropped(super::Signal::Traces, n as u64);
            super::export_failed(super::Signal::Traces, n as u64, &e.to_string());
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings() -> TelemetrySettings {
        let fig = crate::config::Settings::figment(None);
        fig.extract_inner("telemetry")
            .expect("default telemetry settings")
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn export_is_off_unless_enabled_or_an_endpoint_variable_is_set() {
        assert!(resolve(&settings(), &env(&[])).expect("resolves").is_none());
        let on = resolve(
            &settings(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]),
        )
        .expect("resolves")
        .expect("on");
        assert_eq!(on.endpoint, "http://collector:4317");
        assert_eq!(on.protocol, OtlpProtocol::Grpc);
        assert_eq!(on.service_name, "saga-tracker");
        let disabled = resolve(
            &settings(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
        )
        .expect("resolves");
        assert!(disabled.is_none());
    }

    #[test]
    fn http_gets_the_signal_path_on_a_base_endpoint_only() {
        let c = resolve(
            &settings(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
        )
        .expect("resolves")
        .expect("on");
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        let c = resolve(
            &settings(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
        )
        .expect("resolves")
        .expect("on");
        assert_eq!(c.endpoint, "http://c:4318/custom");
        let mut s = settings();
        s.otlp.enabled = true;
        s.otlp.protocol = "http/protobuf".into();
        let c = resolve(&s, &env(&[])).expect("resolves").expect("on");
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
    }

    #[test]
    fn the_standard_variables_win_over_the_settings() {
        let mut s = settings();
        s.otlp.enabled = true;
        s.otlp.endpoint = "http://from-settings:4317".into();
        s.otlp.protocol = "grpc".into();
        let c = resolve(
            &s,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://from-env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ]),
        )
        .expect("resolves")
        .expect("on");
        assert_eq!(c.endpoint, "http://from-env:4318/v1/traces");
        assert!(matches!(c.sampler, Sampler::AlwaysOff));
        let c = resolve(&s, &env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]))
            .expect("resolves")
            .expect("on");
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert!(resolve(&s, &env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")])).is_err());
        let err = resolve(
            &s,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]),
        )
        .expect_err("gRPC over TLS is not built in");
        assert!(format!("{err}").contains("http/protobuf"), "{err}");
        let err = resolve(&s, &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .expect_err("http/json is not spoken");
        assert!(
            format!("{err}").contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
    }

    #[test]
    fn service_name_comes_from_the_variables_first() {
        let s = settings();
        assert_eq!(service_name(&s, &env(&[])), "saga-tracker");
        assert_eq!(
            service_name(
                &s,
                &env(&[(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "a=b, service.name = tracker-eu "
                )])
            ),
            "tracker-eu"
        );
        assert_eq!(
            service_name(
                &s,
                &env(&[
                    ("OTEL_RESOURCE_ATTRIBUTES", "service.name=tracker-eu"),
                    ("OTEL_SERVICE_NAME", "tracker-us"),
                ])
            ),
            "tracker-us"
        );
    }

    #[test]
    fn samplers_parse_as_the_specification_names_them() {
        assert!(matches!(
            parse_sampler("k", "parentbased_traceidratio", "0.25").expect("valid"),
            Sampler::ParentBased(_)
        ));
        assert!(matches!(
            parse_sampler("k", "traceidratio", "0.5").expect("valid"),
            Sampler::TraceIdRatioBased(r) if r == 0.5
        ));
        assert!(parse_sampler("k", "traceidratio", "2").is_err());
        let err = parse_sampler("OTEL_TRACES_SAMPLER", "jaeger_remote", "").expect_err("unknown");
        assert!(format!("{err}").contains("OTEL_TRACES_SAMPLER"), "{err}");
    }
}

#[cfg(test)]
mod bound_tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkError;

    use super::*;

    /// A processor whose exporter never gets to run: it holds every span it is given.
    #[derive(Debug)]
    struct Holding(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Holding {
        fn on_start(&self, _: &mut Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().expect("lock").push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Unreachable;

    impl SpanExporter for Unreachable {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn no_more_than_max_queue_size_spans_wait_whatever_the_collector_does() {
        let held = Arc::new(Mutex::new(Vec::new()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Gate {
                inner: Holding(held.clone()),
                waiting: waiting.clone(),
                max: 16,
            })
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..1000 {
            tracer.start("ingest.batch").end();
        }
        assert_eq!(
            held.lock().expect("lock").len(),
            16,
            "the rest were dropped"
        );
        assert_eq!(waiting.load(Ordering::Acquire), 16);

        // The processor hands a batch to the exporter, which fails: the spans are gone (and
        // counted), so the queue admits new ones again instead of staying full.
        let exporter = Counted {
            inner: Unreachable,
            waiting: waiting.clone(),
        };
        let batch: Vec<SpanData> = held.lock().expect("lock").drain(..).collect();
        assert!(exporter.export(batch).await.is_err());
        assert_eq!(waiting.load(Ordering::Acquire), 0);
        for _ in 0..5 {
            tracer.start("ingest.batch").end();
        }
        assert_eq!(held.lock().expect("lock").len(), 5);
    }
}
