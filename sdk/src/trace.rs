//! Trace correlation: which W3C trace an event belongs to, and its `traceparent` header.
//!
//! Ids come from the caller ([`crate::Step::with_trace_ids`], [`crate::Step::with_traceparent`])
//! or, with the `opentelemetry` feature, from the current OpenTelemetry context. Invalid and
//! all-zero ids never reach the wire: W3C says a receiver must ignore them, so this module
//! drops them rather than failing the recording.

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
        let span = cx.span();
        let sc = span.span_context();
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
