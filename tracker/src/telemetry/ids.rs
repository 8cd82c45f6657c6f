//! The OpenTelemetry trace and span id of the span a log line is written in, for the JSON
//! log format (top-level `trace_id` and `span_id`) and for the Loki lines (see
//! [`super::loki`]), so Grafana can go from a line to its trace and back.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// Lower-case hex trace id (32 digits) and span id (16 digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

/// The ids of `span`, or of the nearest ancestor that has them (a span the OpenTelemetry
/// layer has started: one that was entered, or whose context was asked for).
pub fn of_span<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) -> Option<TraceIds> {
    span.scope().find_map(|s| {
        let ext = s.extensions();
        let data = ext.get::<OtelData>()?;
        let (trace_id, span_id) = (data.trace_id()?, data.span_id()?);
        (trace_id != opentelemetry::TraceId::INVALID).then(|| TraceIds {
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
        })
    })
}

/// Wraps tracing-subscriber's JSON format and puts `"trace_id"` and `"span_id"` first in
/// every line written inside a span; lines outside any span are unchanged.
#[derive(Debug)]
pub struct WithTraceIds<F> {
    pub inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let span = match event.parent() {
            Some(id) => ctx.span(id),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let Some(ids) = span.as_ref().and_then(of_span) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_ids_and_lines_outside_do_not() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .event_format(WithTraceIds {
                        inner: tracing_subscriber::fmt::format().json().flatten_event(true),
                    })
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("ingest_batch");
            let _g = span.enter();
            tracing::info!(size = 3, "inside");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        let trace_id = lines[1]["trace_id"].as_str().expect("trace_id");
        let span_id = lines[1]["span_id"].as_str().expect("span_id");
        assert_eq!(trace_id.len(), 32, "{text}");
        assert_eq!(span_id.len(), 16, "{text}");
        assert_eq!(
            lines[1]["size"], 3,
            "the event's own fields are kept: {text}"
        );
        assert_eq!(lines[1]["message"], "inside", "{text}");
    }
}
