//! The ingest batch's own trace: the `ingest.batch` span and its links to the producers'
//! spans named by the messages' `traceparent` headers.
//!
//! A batch mixes messages of many sagas, services and traces, so it cannot be a child of any
//! one of them: it is a root span (a trace of its own) with one span link per producer span,
//! the OpenTelemetry shape for batch consumers. Tempo then shows, from a service's trace, the
//! tracker batch that stored its event, and from the batch, every trace it carried.
//!
//! Everything here is per batch, never per event, unless an OpenTelemetry layer records the
//! span: without one (export off) the headers are not even read.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Value;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Most span links on one batch span: OpenTelemetry's default span limit
/// (`max_links_per_span`), beyond which the SDK would drop links arbitrarily.
pub const MAX_LINKS: usize = 128;

/// The W3C trace-context header the SDK (and any OpenTelemetry producer) sends.
const TRACEPARENT: &str = "traceparent";

/// The `ingest.batch` span for `batch`, a root span with its links attached; see the module
/// documentation. Counts are recorded as `i64`: `tracing-opentelemetry` exports unsigned
/// integers as strings, and the conventions (and TraceQL comparisons) want integers.
/// The attributes only known at the end (`duplicates`, `dead_letters`,
/// `oldest_event_lag_ms`, `outcome`) are declared empty and recorded by the caller.
pub fn batch_span(batch: &[OwnedMessage], topic: &str, group: &str) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "ingest.batch",
        otel.kind = "consumer",
        messaging.batch.message_count = batch.len() as i64,
        partitions = partition_count(batch) as i64,
        links = tracing::field::Empty,
        links_dropped = tracing::field::Empty,
        duplicates = tracing::field::Empty,
        dead_letters = tracing::field::Empty,
        oldest_event_lag_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // A batch is a root whatever context happens to be current; `set_parent` succeeding is
    // also how we learn that an OpenTelemetry layer records the span at all (`Err` without
    // one, or when the span is filtered out), and only then are the headers worth reading.
    if span.set_parent(opentelemetry::Context::new()).is_ok() {
        exported_attributes(
            &span,
            [
                ("messaging.system", "kafka".into()),
                ("messaging.operation.type", "process".into()),
                ("messaging.operation.name", "process".into()),
                ("messaging.destination.name", topic.to_owned().into()),
                ("messaging.consumer.group.name", group.to_owned().into()),
            ],
        );
        let (links, dropped) = choose_links(batch.iter().filter_map(producer_span));
        span.record("links", links.len() as i64);
        span.record("links_dropped", dropped as i64);
        for link in links {
            span.add_link(link);
        }
    }
    span
}

/// Sets attributes for the exporter only: the constant semantic-convention values (system,
/// operation, destination, …), which as `tracing` fields would repeat in every log line
/// written inside the span. Does nothing without an OpenTelemetry layer.
pub fn exported_attributes<const N: usize>(span: &Span, attributes: [(&'static str, Value); N]) {
    for (key, value) in attributes {
        span.set_attribute(key, value);
    }
}

/// The trace id (32 lowercase hex digits) of `span` when it is recorded *and* sampled, i.e.
/// when the trace will exist in the backend; `None` otherwise (export off, sampled out).
/// Starts the OpenTelemetry span, so call it after the links are attached.
pub fn sampled_trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// Distinct partitions in the batch.
fn partition_count(batch: &[OwnedMessage]) -> usize {
    let mut seen: Vec<(&str, i32)> = Vec::new();
    for m in batch {
        let key = (m.topic(), m.partition());
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen.len()
}

/// The producer span named by a message's `traceparent` header, if it names a valid one.
pub fn producer_span(msg: &OwnedMessage) -> Option<SpanContext> {
    let headers = msg.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(TRACEPARENT))?
        .value?;
    let value = std::str::from_utf8(value).ok()?;
    let cx = TraceContextPropagator::new().extract(&OneHeader(value));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The one header the W3C propagator reads, as its [`Extractor`].
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The links of one batch: each distinct producer span once, at most [`MAX_LINKS`], and how
/// many distinct ones were left out.
///
/// Beyond the cap the choice is deterministic: the [`MAX_LINKS`] spans with the lowest
/// [`link_rank`], a fixed hash of the trace id (then the span id). Not "the first 128 in
/// offset order", because a batch interleaves partitions and the first ones fetched would
/// always win; a hash of the trace id is unbiased across partitions and producers, gives the
/// same choice on every redelivery and every replica, and — like trace-id-ratio sampling —
/// keeps or drops a trace consistently across the batches it appears in, so the traces that
/// are linked are linked from all of their batches.
pub fn choose_links(spans: impl Iterator<Item = SpanContext>) -> (Vec<SpanContext>, usize) {
    let mut ranked: Vec<((u64, u128, u64), SpanContext)> =
        spans.map(|sc| (link_rank(&sc), sc)).collect();
    ranked.sort_unstable_by_key(|(rank, _)| *rank);
    ranked.dedup_by_key(|(rank, _)| *rank);
    let dropped = ranked.len().saturating_sub(MAX_LINKS);
    ranked.truncate(MAX_LINKS);
    (ranked.into_iter().map(|(_, sc)| sc).collect(), dropped)
}

/// Orders link candidates: a fixed hash of the trace id first (see [`choose_links`]), then
/// the ids themselves, so equal spans compare equal and ties break the same way everywhere.
/// The hash is splitmix64's finaliser over both halves of the id — fixed, not std's seeded
/// `RandomState`, so every process and every version ranks alike.
fn link_rank(sc: &SpanContext) -> (u64, u128, u64) {
    let trace = u128::from_be_bytes(sc.trace_id().to_bytes());
    let span = u64::from_be_bytes(sc.span_id().to_bytes());
    let hash = mix(mix(trace as u64) ^ (trace >> 64) as u64);
    (hash, trace, span)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use rdkafka::message::{Header, OwnedHeaders, Timestamp};

    fn sc(trace: u128, span: u64) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    fn message(traceparent: Option<&str>) -> OwnedMessage {
        let headers = traceparent.map(|tp| {
            OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(tp),
            })
        });
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn a_valid_traceparent_names_the_producer_span() {
        let m = message(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        let got = producer_span(&m).expect("valid traceparent");
        assert_eq!(
            got.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(got.span_id().to_string(), "00f067aa0ba902b7");
        assert!(got.is_remote() && got.is_sampled());
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            assert_eq!(producer_span(&message(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn links_are_distinct_and_capped_by_a_fixed_rank() {
        // Twice as many distinct spans as the cap, each sent twice.
        let all: Vec<SpanContext> = (1..=2 * MAX_LINKS as u64)
            .map(|i| sc(u128::from(i) << 64 | u128::from(i), i))
            .collect();
        let twice = all.iter().chain(all.iter()).cloned();
        let (links, dropped) = choose_links(twice);
        assert_eq!((links.len(), dropped), (MAX_LINKS, MAX_LINKS));

        // The same spans in another order choose the same links: offsets do not matter.
        let (reversed, _) = choose_links(all.iter().rev().cloned());
        assert_eq!(links, reversed);

        // They are the lowest-ranked ones.
        let mut ranks: Vec<_> = all.iter().map(link_rank).collect();
        ranks.sort_unstable();
        let cutoff = ranks[MAX_LINKS - 1];
        assert!(links.iter().all(|l| link_rank(l) <= cutoff));

        // Under the cap, everything is kept.
        let (few, dropped) = choose_links(all.iter().take(3).cloned());
        assert_eq!((few.len(), dropped), (3, 0));
    }

    #[test]
    fn spans_of_one_trace_are_kept_or_dropped_together_across_batches() {
        // A trace's rank does not depend on its span id, so two batches that each hold one
        // of its spans and the same competition keep both or neither.
        let others: Vec<SpanContext> = (1..=MAX_LINKS as u64 + 10)
            .map(|i| sc(u128::from(i) * 0x1_0000_0001, i))
            .collect();
        let trace = 0xdead_beef_u128 << 64 | 7;
        let in_first = others.iter().cloned().chain([sc(trace, 1)]);
        let in_second = others.iter().cloned().chain([sc(trace, 2)]);
        let kept = |links: Vec<SpanContext>| {
            links
                .iter()
                .any(|l| u128::from_be_bytes(l.trace_id().to_bytes()) == trace)
        };
        assert_eq!(
            kept(choose_links(in_first).0),
            kept(choose_links(in_second).0)
        );
    }
}
