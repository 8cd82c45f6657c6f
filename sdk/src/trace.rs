//! Trace correlation: which W3C trace an event belongs to, and its `traceparent` header.
//!
//! Ids come from the caller ([`crate::Step::with_trace_ids`], [`crate::Step::with_traceparent`])
//! or, with the `opentelemetry` feature, from the current OpenTelemetry context. Invalid and
//! all-zero ids never reach the wire: W3C says a receiver must ignore them, so this module
//! drops them rather than failing the recording.
//!
//! With the `opentelemetry` feature each recorded step also gets a producer span
//! ([`ProducerSpan`], `send <topic>`, OpenTelemetry messaging conventions), a child of the
//! step's trace, and *that* span is what the event's `spanId` and its `traceparent` header
//! name: the tracker links its ingest batch to it, so a trace reads service → Kafka →
//! tracker. The span comes from the global tracer provider; with none installed (the
//! no-op default) it is the parent itself, and the ids are exactly the caller's.

/// A W3C trace context: trace id, parent (span) id and trace flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub(crate) trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub(crate) span_id: String,
    /// Bit 0 is "sampled".
    pub(crate) flags: u8,
}

/// Flags used when the caller gave ids but no flags: "sampled", since a caller that bothers
/// to pass ids has a trace it wants to follow.
pub(crate) const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// The `traceparent` header value (version 00).
    pub(crate) fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Builds from ids that already passed contract validation (lowercase hex, non-zero).
    pub(crate) fn from_ids(trace_id: &str, span_id: &str, flags: u8) -> Option<Self> {
        (is_hex_id(trace_id, 32) && is_hex_id(span_id, 16)).then(|| Self {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
            flags,
        })
    }

    /// Parses a `traceparent` header per W3C Trace Context: `None` for anything invalid.
    /// Upper-case hex is accepted (and lowercased) to be lenient with hand-made headers.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        if version.len() != 2
            || !version.bytes().all(|b| b.is_ascii_hexdigit())
            || version.eq_ignore_ascii_case("ff")
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && rest.is_some() {
            return None;
        }
        if flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Self::from_ids(trace_id, span_id, flags)
    }

    /// The span context of `cx`, if it is valid.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn from_otel(cx: &opentelemetry::Context) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        Self::from_span_context(cx.span().span_context())
    }

    /// `sc`, if it is valid.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn from_span_context(sc: &opentelemetry::trace::SpanContext) -> Option<Self> {
        if !sc.is_valid() {
            return None;
        }
        Self::from_ids(
            &sc.trace_id().to_string(),
            &sc.span_id().to_string(),
            sc.trace_flags().to_u8(),
        )
    }

    /// The current OpenTelemetry span's context, if there is a valid one.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn current() -> Option<Self> {
        Self::from_otel(&opentelemetry::Context::current())
    }

    /// Without the `opentelemetry` feature there is no ambient context.
    #[cfg(not(feature = "opentelemetry"))]
    pub(crate) fn current() -> Option<Self> {
        None
    }
}

/// The producer span of one recorded step, from the global tracer provider; see the module
/// documentation. Ended by [`ProducerSpan::end`] once the event is delivered (`Sync`) or
/// buffered (`Async`), so its duration is what the recording cost the caller.
#[cfg(feature = "opentelemetry")]
pub(crate) struct ProducerSpan(opentelemetry::global::BoxedSpan);

#[cfg(feature = "opentelemetry")]
impl ProducerSpan {
    /// Starts the span for `event` about to be sent to `topic`, as a child of the event's
    /// trace (the current context when that is where the ids came from, else the caller's
    /// ids as a remote parent; a new trace when there is none), and points the event's ids
    /// and `traceparent` at it.
    pub(crate) fn start(
        topic: &str,
        event: &mut crate::contract::SagaEvent,
        traceparent: &mut Option<TraceParent>,
    ) -> Self {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
        };
        use opentelemetry::KeyValue;

        let current = opentelemetry::Context::current();
        let parent = match traceparent.as_ref() {
            None => current,
            Some(tp) if Self::same(&current, tp) => current,
            Some(tp) => match (
                TraceId::from_hex(&tp.trace_id),
                SpanId::from_hex(&tp.span_id),
            ) {
                (Ok(trace_id), Ok(span_id)) => opentelemetry::Context::new()
                    .with_remote_span_context(SpanContext::new(
                        trace_id,
                        span_id,
                        TraceFlags::new(tp.flags),
                        true,
                        TraceState::default(),
                    )),
                _ => current,
            },
        };
        let tracer = opentelemetry::global::tracer_with_scope(scope().clone());
        let span = tracer
            .span_builder(format!("send {topic}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.destination.name", topic.to_owned()),
                KeyValue::new("messaging.kafka.message.key", event.saga_id.clone()),
                KeyValue::new("messaging.message.id", event.event_id.clone()),
                KeyValue::new("saga.type", event.saga_type.clone()),
                KeyValue::new("saga.step", event.step.clone()),
                KeyValue::new("saga.step_status", event.step_status.as_str()),
            ])
            .start_with_context(&tracer, &parent);
        if let Some(tp) =
            TraceParent::from_span_context(opentelemetry::trace::Span::span_context(&span))
        {
            event.trace_id = Some(tp.trace_id.clone());
            event.span_id = Some(tp.span_id.clone());
            *traceparent = Some(tp);
        }
        Self(span)
    }

    /// Whether `cx`'s span is the one `tp` names.
    fn same(cx: &opentelemetry::Context, tp: &TraceParent) -> bool {
        TraceParent::from_otel(cx)
            .is_some_and(|t| t.trace_id == tp.trace_id && t.span_id == tp.span_id)
    }

    /// Ends the span with the outcome of the send: an error status when it failed or the
    /// event was dropped (`Ok(false)`).
    pub(crate) fn end(mut self, outcome: &Result<bool, crate::Error>) {
        use opentelemetry::trace::{Span as _, Status};
        use opentelemetry::KeyValue;

        let failure = match outcome {
            Ok(true) => None,
            Ok(false) => Some((
                "dropped",
                "the event was dropped (buffer full or closed)".into(),
            )),
            Err(e) => Some((error_type(e), e.to_string())),
        };
        if let Some((kind, message)) = failure {
            self.0.set_attribute(KeyValue::new("error.type", kind));
            self.0.set_status(Status::error(message));
        }
        self.0.end();
    }
}

/// A bounded `error.type` for a failed send.
#[cfg(feature = "opentelemetry")]
fn error_type(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::Invalid(_) => "invalid",
        crate::Error::Closed => "closed",
        crate::Error::FlushTimeout { .. } => "flush_timeout",
        crate::Error::Delivery(_) => "delivery",
        _ => "other",
    }
}

/// The SDK's instrumentation scope, built once.
#[cfg(feature = "opentelemetry")]
fn scope() -> &'static opentelemetry::InstrumentationScope {
    static SCOPE: std::sync::OnceLock<opentelemetry::InstrumentationScope> =
        std::sync::OnceLock::new();
    SCOPE.get_or_init(|| {
        opentelemetry::InstrumentationScope::builder("saga-tracker-sdk")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    })
}

fn is_hex_id(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let t = TraceParent::parse(TP).expect("valid");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.header_value(), TP);
        let upper = TraceParent::parse(&TP.to_ascii_uppercase()).expect("lenient");
        assert_eq!(upper.header_value(), TP);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A future version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[cfg(feature = "opentelemetry")]
    #[test]
    fn the_current_otel_span_is_picked_up() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        assert_eq!(TraceParent::current(), None);
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::current().with_remote_span_context(sc);
        let _guard = cx.attach();
        assert_eq!(
            TraceParent::current().map(|t| t.header_value()).as_deref(),
            Some(TP)
        );
        let invalid = opentelemetry::Context::new().with_remote_span_context(SpanContext::NONE);
        assert_eq!(TraceParent::from_otel(&invalid), None);
    }
}
