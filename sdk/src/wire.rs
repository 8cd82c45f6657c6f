//! The v1 wire form of a [`SagaEvent`], written straight into a byte buffer.
//!
//! [`SagaEvent`]'s `Serialize` derive is the definition of the wire form; this module writes
//! the same bytes without going through it, because the SDK serializes one event per recorded
//! step on the caller's request path. What it writes by hand is only the object's structure —
//! field names, their order, commas, which optional fields are left out — and `occurredAt`.
//! Every string, number and the `metadata` object still go through `serde_json`'s own writer,
//! so escaping and number formats cannot drift from the derive. The tests below hold the two
//! routes to the same bytes for arbitrary events.
//!
//! It must not validate: that is [`SagaEvent::validate`]'s job, done before an event gets here.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::contract::SagaEvent;

/// Bytes of a typical event besides its strings and metadata (field names, punctuation, the
/// timestamp), used to size the buffer once.
const FIXED_BYTES: usize = 256;

/// A capacity that holds `event`'s wire form without growing in the common case.
pub(crate) fn size_hint(event: &SagaEvent) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    FIXED_BYTES
        + event.event_id.len()
        + event.saga_id.len()
        + event.saga_type.len()
        + event.step.len()
        + event.service.len()
        + opt(&event.business_key)
        + opt(&event.trace_id)
        + opt(&event.span_id)
        + event
            .error
            .as_ref()
            .map_or(0, |e| e.code.len() + e.message.len())
        // Metadata is usually a few short entries; a large one grows the buffer once.
        + event.metadata.as_ref().map_or(0, |m| m.len() * 32)
}

/// Appends `event`'s v1 JSON to `out`: the bytes `serde_json::to_vec(event)` gives.
pub(crate) fn write_event(out: &mut Vec<u8>, event: &SagaEvent) {
    out.extend_from_slice(b"{\"schemaVersion\":");
    scalar(out, &event.schema_version);
    out.extend_from_slice(b",\"eventId\":");
    scalar(out, event.event_id.as_str());
    out.extend_from_slice(b",\"sagaId\":");
    scalar(out, event.saga_id.as_str());
    out.extend_from_slice(b",\"sagaType\":");
    scalar(out, event.saga_type.as_str());
    out.extend_from_slice(b",\"step\":");
    scalar(out, event.step.as_str());
    out.extend_from_slice(b",\"stepStatus\":\"");
    // Wire names are upper-case ASCII letters and `_`: nothing to escape.
    out.extend_from_slice(event.step_status.as_str().as_bytes());
    out.push(b'"');
    if let Some(status) = event.saga_status {
        out.extend_from_slice(b",\"sagaStatus\":\"");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"occurredAt\":");
    timestamp(out, &event.occurred_at);
    out.extend_from_slice(b",\"service\":");
    scalar(out, event.service.as_str());
    if let Some(sequence) = &event.sequence {
        out.extend_from_slice(b",\"sequence\":");
        scalar(out, sequence);
    }
    if let Some(key) = &event.business_key {
        out.extend_from_slice(b",\"businessKey\":");
        scalar(out, key.as_str());
    }
    if let Some(id) = &event.trace_id {
        out.extend_from_slice(b",\"traceId\":");
        scalar(out, id.as_str());
    }
    if let Some(id) = &event.span_id {
        out.extend_from_slice(b",\"spanId\":");
        scalar(out, id.as_str());
    }
    if let Some(error) = &event.error {
        out.extend_from_slice(b",\"error\":{\"code\":");
        scalar(out, error.code.as_str());
        out.extend_from_slice(b",\"message\":");
        scalar(out, error.message.as_str());
        out.push(b'}');
    }
    if let Some(metadata) = &event.metadata {
        out.extend_from_slice(b",\"metadata\":");
        scalar(out, metadata);
    }
    out.push(b'}');
}

/// Writes a string, a number or a JSON map exactly as `serde_json` does.
fn scalar<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a `Vec` cannot fail, and neither can serializing strings, integers or a
    // map with string keys.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Writes `occurredAt` as chrono's `Serialize` does (RFC 3339, `Z`, as many fraction digits
/// as needed among 0, 3, 6 and 9), without its formatting machinery. The rare cases outside
/// the fast path — a leap second, a year outside 0–9999 — are handed to chrono itself.
fn timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        scalar(out, t);
        return;
    }
    let mut buf = *b"\"0000-00-00T00:00:00";
    // `year` is in 0..=9999 and every other part is below 100, so each fits its digits.
    let year = year.unsigned_abs();
    digits(&mut buf[1..5], year);
    digits(&mut buf[6..8], t.month());
    digits(&mut buf[9..11], t.day());
    digits(&mut buf[12..14], t.hour());
    digits(&mut buf[15..17], t.minute());
    digits(&mut buf[18..20], t.second());
    out.extend_from_slice(&buf);
    let (fraction, width) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        let mut frac = *b".000000000";
        digits(&mut frac[1..=width], fraction);
        out.extend_from_slice(&frac[..=width]);
    }
    out.extend_from_slice(b"Z\"");
}

/// Writes `value` as zero-padded decimal filling `buf` (which is all `0` to begin with).
fn digits(buf: &mut [u8], mut value: u32) {
    for b in buf.iter_mut().rev() {
        // `value % 10` is a single digit.
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn ours(event: &SagaEvent) -> Vec<u8> {
        let mut out = Vec::new();
        write_event(&mut out, event);
        out
    }

    fn serde_route(event: &SagaEvent) -> Vec<u8> {
        serde_json::to_vec(event).expect("an event serializes")
    }

    fn minimal(occurred_at: DateTime<Utc>) -> SagaEvent {
        SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "0193a0c4-0000-7000-8000-000000000001".into(),
            saga_id: "order-8812".into(),
            saga_type: "ORDER_CREATION".into(),
            step: "STOCK_RESERVED".into(),
            step_status: StepStatus::Succeeded,
            saga_status: None,
            occurred_at,
            service: "stock".into(),
            sequence: None,
            business_key: None,
            trace_id: None,
            span_id: None,
            error: None,
            metadata: None,
        }
    }

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos)
            .single()
            .expect("a valid instant")
    }

    #[test]
    fn a_minimal_event_is_what_serde_writes() {
        let e = minimal(at(1_763_726_340, 123_000_000));
        assert_eq!(
            String::from_utf8(ours(&e)).expect("UTF-8"),
            "{\"schemaVersion\":1,\"eventId\":\"0193a0c4-0000-7000-8000-000000000001\",\
             \"sagaId\":\"order-8812\",\"sagaType\":\"ORDER_CREATION\",\"step\":\"STOCK_RESERVED\",\
             \"stepStatus\":\"SUCCEEDED\",\"occurredAt\":\"2025-11-21T11:59:00.123Z\",\
             \"service\":\"stock\"}"
        );
        assert_eq!(ours(&e), serde_route(&e));
    }

    #[test]
    fn every_fraction_width_and_the_slow_path_match_chrono() {
        let cases = [
            at(1_763_726_340, 0),
            at(1_763_726_340, 1_000_000),
            at(1_763_726_340, 120_000),
            at(1_763_726_340, 1),
            at(1_763_726_340, 999_999_999),
            // 0000-01-01, 9999-12-31T23:59:59, and years outside 0..=9999.
            at(-62_167_219_200, 5),
            at(253_402_300_799, 7_000),
            at(-62_167_219_201, 0),
            at(253_402_300_800, 0),
            // A leap second: chrono keeps it as nanoseconds past 1e9.
            Utc.from_utc_datetime(
                &chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                    .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                    .expect("a leap second"),
            ),
        ];
        for t in cases {
            let e = minimal(t);
            assert_eq!(
                String::from_utf8(ours(&e)).expect("UTF-8"),
                String::from_utf8(serde_route(&e)).expect("UTF-8"),
                "{t:?}"
            );
        }
    }

    #[test]
    fn a_full_event_with_awkward_strings_is_what_serde_writes() {
        let awkward =
            "q\"b\\s/\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} \u{7f}\u{80}\u{9f}é€😀\u{2028}";
        let mut metadata = Map::new();
        metadata.insert(awkward.into(), json!(awkward));
        metadata.insert(
            "nested".into(),
            json!({"a": [1, -2.5, true, null, {"": "x"}]}),
        );
        metadata.insert("big".into(), json!(u64::MAX));
        metadata.insert("neg".into(), json!(i64::MIN));
        metadata.insert("float".into(), json!(1e300));
        let e = SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: awkward.into(),
            saga_id: awkward.into(),
            saga_type: "T".into(),
            step: awkward.into(),
            step_status: StepStatus::Compensating,
            saga_status: Some(SagaStatus::InProgress),
            occurred_at: at(1_763_726_340, 123_456_789),
            service: awkward.into(),
            sequence: Some(i64::MIN),
            business_key: Some(awkward.into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            span_id: Some("00f067aa0ba902b7".into()),
            error: Some(StepError {
                code: awkward.into(),
                message: awkward.into(),
            }),
            metadata: Some(metadata),
        };
        assert_eq!(ours(&e), serde_route(&e));
        assert!(ours(&e).len() <= size_hint(&e) + 512);
    }

    fn status() -> impl Strategy<Value = StepStatus> {
        proptest::sample::select(StepStatus::ALL.to_vec())
    }

    fn saga_status() -> impl Strategy<Value = Option<SagaStatus>> {
        proptest::option::of(proptest::sample::select(SagaStatus::ALL.to_vec()))
    }

    /// JSON values of any shape, strings drawn from all of Unicode.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn optional_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(any::<String>())
    }

    prop_compose! {
        fn event()(
            strings in proptest::collection::vec(any::<String>(), 6),
            step_status in status(),
            saga_status in saga_status(),
            secs in -70_000_000_000_i64..260_000_000_000,
            nanos in prop_oneof![
                Just(0_u32),
                (0_u32..1000).prop_map(|n| n * 1_000_000),
                (0_u32..1_000_000).prop_map(|n| n * 1000),
                0_u32..2_000_000_000,
            ],
            sequence in proptest::option::of(any::<i64>()),
            business_key in optional_string(),
            trace_id in optional_string(),
            span_id in optional_string(),
            error in proptest::option::of((any::<String>(), any::<String>())),
            metadata in proptest::option::of(
                proptest::collection::btree_map(any::<String>(), json_value(), 0..6)
            ),
        ) -> SagaEvent {
            let occurred_at = Utc
                .timestamp_opt(secs, nanos)
                .single()
                .unwrap_or_else(|| at(secs, 0));
            let [event_id, saga_id, saga_type, step, service, _]: [String; 6] =
                strings.try_into().expect("six strings");
            SagaEvent {
                schema_version: SCHEMA_VERSION,
                event_id,
                saga_id,
                saga_type,
                step,
                step_status,
                saga_status,
                occurred_at,
                service,
                sequence,
                business_key,
                trace_id,
                span_id,
                error: error.map(|(code, message)| StepError { code, message }),
                metadata: metadata.map(|m| m.into_iter().collect()),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The hand-written route and the derive give the same bytes for any event, valid or
        /// not: the writer never relies on validation.
        #[test]
        fn any_event_is_written_as_serde_writes_it(e in event()) {
            prop_assert_eq!(ours(&e), serde_route(&e));
        }

        /// Appending keeps what the buffer held.
        #[test]
        fn writing_appends(e in event(), prefix in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut out = prefix.clone();
            write_event(&mut out, &e);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&out[prefix.len()..], &serde_route(&e)[..]);
        }
    }
}
