//! The poison catalogue: malformed Kafka message values (and one bad key) that must each land
//! in the dead-letter topic with a stable `dlq.reason` (+ `dlq.field`) instead of stopping the
//! consumer or reaching the database.
//!
//! Shared by the SDK's decode table test (`sdk/tests/poison_catalogue.rs`) and the tracker's
//! end-to-end DLQ test (`tracker/tests/poison.rs`), which include this file with `#[path]`.

#![allow(dead_code)]

use serde_json::{json, Value};

/// One kind of malformed input.
#[derive(Debug, Clone)]
pub struct Poison {
    /// Short stable name, also sent as the `poison.name` header so the DLQ copy can be matched.
    pub name: &'static str,
    /// `None` = use the saga id as the key (the normal case).
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Expected `dlq.reason`.
    pub reason: &'static str,
    /// Expected `dlq.field` (`None` = no field header).
    pub field: Option<&'static str>,
}

/// A valid v1 event of saga `saga_id`, as a JSON object to break.
pub fn valid_event(saga_id: &str, event_id: &str) -> serde_json::Map<String, Value> {
    let v = json!({
        "schemaVersion": 1,
        "eventId": event_id,
        "sagaId": saga_id,
        "sagaType": "ORDER_CREATION",
        "step": "STOCK_RESERVED",
        "stepStatus": "SUCCEEDED",
        "occurredAt": "2025-06-01T12:00:00Z",
        "service": "stock-service",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn with(saga_id: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut m = valid_event(saga_id, &format!("poison-{}", uuid_like(saga_id)));
    f(&mut m);
    Value::Object(m).to_string().into_bytes()
}

fn uuid_like(s: &str) -> String {
    // A deterministic event id is fine: poison never reaches the store.
    format!("{:x}", s.len())
}

fn legacy(saga_id: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut m = match json!({
        "sagaId": saga_id,
        "sagaType": "ORDER_CREATION",
        "step": "PAYMENT",
        "status": "IN_PROGRESS",
        "eventTimestamp": 1_750_000_000_000_i64,
        "orderId": "8812",
    }) {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    };
    f(&mut m);
    Value::Object(m).to_string().into_bytes()
}

fn p(
    name: &'static str,
    payload: Vec<u8>,
    reason: &'static str,
    field: Option<&'static str>,
) -> Poison {
    Poison {
        name,
        key: None,
        payload,
        reason,
        field,
    }
}

/// Every kind of poison, for saga `saga_id` where a saga id is needed.
pub fn catalogue(saga_id: &str) -> Vec<Poison> {
    let s = saga_id;
    let long = "x".repeat(129);
    let mut out = vec![
        p("empty_value", Vec::new(), "empty_message", None),
        p("plain_text", b"this is not json".to_vec(), "not_json", None),
        p(
            "truncated_json",
            br#"{"schemaVersion":1,"eventId":"#.to_vec(),
            "not_json",
            None,
        ),
        p(
            "trailing_garbage",
            [with(s, |_| {}), b"}".to_vec()].concat(),
            "not_json",
            None,
        ),
        p(
            "lone_surrogate_escape",
            with(s, |_| {}).replace_first(b"\"STOCK_RESERVED\"", br#""STOCK\ud800""#),
            "not_json",
            None,
        ),
        p(
            "number_out_of_range",
            with(s, |m| {
                m.insert("sequence".into(), json!(1));
            })
            .replace_first(b"\"sequence\":1", b"\"sequence\":1e400"),
            "not_json",
            None,
        ),
        p(
            "utf8_bom",
            [b"\xEF\xBB\xBF".to_vec(), with(s, |_| {})].concat(),
            "not_json",
            None,
        ),
        p(
            "json_array",
            format!("[{}]", String::from_utf8_lossy(&with(s, |_| {}))).into_bytes(),
            "not_object",
            None,
        ),
        p("json_string", br#""an event""#.to_vec(), "not_object", None),
        p("json_null", b"null".to_vec(), "not_object", None),
        p("json_number", b"42".to_vec(), "not_object", None),
        p(
            "invalid_utf8",
            vec![0xff, 0xfe, 0x00, 0x7b],
            "not_utf8",
            None,
        ),
        p(
            "invalid_utf8_inside_string",
            with(s, |_| {}).replace_first(b"stock-service", b"stock-\xC3\x28service"),
            "not_utf8",
            None,
        ),
        p(
            "no_schema_version",
            with(s, |m| {
                m.remove("schemaVersion");
            }),
            "missing_field",
            Some("schemaVersion"),
        ),
        p(
            "unknown_schema_version",
            with(s, |m| {
                m.insert("schemaVersion".into(), json!(2));
            }),
            "unsupported_schema_version",
            Some("schemaVersion"),
        ),
        p(
            "fractional_schema_version",
            with(s, |m| {
                m.insert("schemaVersion".into(), json!(1.5));
            }),
            "unsupported_schema_version",
            Some("schemaVersion"),
        ),
        p(
            "schema_version_as_string",
            with(s, |m| {
                m.insert("schemaVersion".into(), json!("1"));
            }),
            "wrong_type",
            Some("schemaVersion"),
        ),
    ];
    for field in [
        "eventId",
        "sagaId",
        "sagaType",
        "step",
        "stepStatus",
        "occurredAt",
        "service",
    ] {
        out.push(Poison {
            name: leak(format!("missing_{field}")),
            key: None,
            payload: with(s, |m| {
                m.remove(field);
            }),
            reason: "missing_field",
            field: Some(field),
        });
    }
    out.extend([
        p(
            "saga_id_as_number",
            with(s, |m| {
                m.insert("sagaId".into(), json!(8812));
            }),
            "wrong_type",
            Some("sagaId"),
        ),
        p(
            "event_id_as_object",
            with(s, |m| {
                m.insert("eventId".into(), json!({"id": 1}));
            }),
            "wrong_type",
            Some("eventId"),
        ),
        p(
            "step_status_as_bool",
            with(s, |m| {
                m.insert("stepStatus".into(), json!(true));
            }),
            "wrong_type",
            Some("stepStatus"),
        ),
        p(
            "sequence_as_string",
            with(s, |m| {
                m.insert("sequence".into(), json!("3"));
            }),
            "wrong_type",
            Some("sequence"),
        ),
        p(
            "sequence_fractional",
            with(s, |m| {
                m.insert("sequence".into(), json!(1.5));
            }),
            "wrong_type",
            Some("sequence"),
        ),
        p(
            "sequence_beyond_i64",
            with(s, |m| {
                m.insert("sequence".into(), json!(u64::MAX));
            }),
            "wrong_type",
            Some("sequence"),
        ),
        p(
            "occurred_at_as_epoch_number",
            with(s, |m| {
                m.insert("occurredAt".into(), json!(1_750_000_000_000_i64));
            }),
            "wrong_type",
            Some("occurredAt"),
        ),
        p(
            "empty_saga_id",
            with(s, |m| {
                m.insert("sagaId".into(), json!(""));
            }),
            "invalid_value",
            Some("sagaId"),
        ),
        p(
            "overlong_saga_id",
            with(s, |m| {
                m.insert("sagaId".into(), json!(long));
            }),
            "invalid_value",
            Some("sagaId"),
        ),
        p(
            "empty_event_id",
            with(s, |m| {
                m.insert("eventId".into(), json!(""));
            }),
            "invalid_value",
            Some("eventId"),
        ),
        p(
            "overlong_event_id",
            with(s, |m| {
                m.insert("eventId".into(), json!(long));
            }),
            "invalid_value",
            Some("eventId"),
        ),
        p(
            "overlong_step",
            with(s, |m| {
                m.insert("step".into(), json!(long));
            }),
            "invalid_value",
            Some("step"),
        ),
        p(
            "lowercase_saga_type",
            with(s, |m| {
                m.insert("sagaType".into(), json!("order creation"));
            }),
            "invalid_value",
            Some("sagaType"),
        ),
        p(
            "unknown_step_status",
            with(s, |m| {
                m.insert("stepStatus".into(), json!("DONE"));
            }),
            "invalid_value",
            Some("stepStatus"),
        ),
        p(
            "unknown_saga_status",
            with(s, |m| {
                m.insert("sagaStatus".into(), json!("PAUSED"));
            }),
            "invalid_value",
            Some("sagaStatus"),
        ),
        p(
            "timestamp_not_rfc3339",
            with(s, |m| {
                m.insert("occurredAt".into(), json!("yesterday at noon"));
            }),
            "invalid_timestamp",
            Some("occurredAt"),
        ),
        p(
            "timestamp_without_offset",
            with(s, |m| {
                m.insert("occurredAt".into(), json!("2025-06-01T12:00:00"));
            }),
            "invalid_timestamp",
            Some("occurredAt"),
        ),
        p(
            "timestamp_impossible_date",
            with(s, |m| {
                m.insert("occurredAt".into(), json!("2025-02-30T12:00:00Z"));
            }),
            "invalid_timestamp",
            Some("occurredAt"),
        ),
        p(
            "timestamp_1970",
            with(s, |m| {
                m.insert("occurredAt".into(), json!("1970-01-01T00:00:00Z"));
            }),
            "invalid_timestamp",
            Some("occurredAt"),
        ),
        p(
            "timestamp_year_9999",
            with(s, |m| {
                m.insert("occurredAt".into(), json!("9999-12-31T23:59:59Z"));
            }),
            "invalid_timestamp",
            Some("occurredAt"),
        ),
        p(
            "metadata_as_string",
            with(s, |m| {
                m.insert("metadata".into(), json!("{\"a\":1}"));
            }),
            "wrong_type",
            Some("metadata"),
        ),
        p(
            "metadata_as_array",
            with(s, |m| {
                m.insert("metadata".into(), json!([1, 2]));
            }),
            "wrong_type",
            Some("metadata"),
        ),
        p(
            "metadata_oversize",
            with(s, |m| {
                m.insert("metadata".into(), json!({"blob": "m".repeat(17 * 1024)}));
            }),
            "metadata_too_large",
            Some("metadata"),
        ),
        p(
            "nul_in_saga_id",
            with(s, |m| {
                m.insert("sagaId".into(), json!(format!("{s}\u{0}")));
            }),
            "invalid_value",
            Some("sagaId"),
        ),
        p(
            "control_char_in_step",
            with(s, |m| {
                m.insert("step".into(), json!("STOCK\u{7}"));
            }),
            "invalid_value",
            Some("step"),
        ),
        p(
            "nul_in_metadata_value",
            with(s, |m| {
                m.insert("metadata".into(), json!({"note": "a\u{0}b"}));
            }),
            "invalid_value",
            Some("metadata"),
        ),
        p(
            "nul_in_metadata_key",
            with(s, |m| {
                m.insert("metadata".into(), json!({"k\u{0}": "v"}));
            }),
            "invalid_value",
            Some("metadata"),
        ),
        p(
            "nul_in_error_message",
            with(s, |m| {
                m.insert("error".into(), json!({"code": "E", "message": "x\u{0}y"}));
            }),
            "invalid_value",
            Some("error"),
        ),
        p(
            "error_as_string",
            with(s, |m| {
                m.insert("error".into(), json!("card declined"));
            }),
            "wrong_type",
            Some("error"),
        ),
        p(
            "error_empty_object",
            with(s, |m| {
                m.insert("error".into(), json!({}));
            }),
            "invalid_value",
            Some("error"),
        ),
        p(
            "trace_id_not_hex",
            with(s, |m| {
                m.insert("traceId".into(), json!("z".repeat(32)));
            }),
            "invalid_value",
            Some("traceId"),
        ),
        p(
            "span_id_wrong_length",
            with(s, |m| {
                m.insert("spanId".into(), json!("abc"));
            }),
            "invalid_value",
            Some("spanId"),
        ),
        p(
            "huge_message",
            with(s, |m| {
                m.insert("padding".into(), json!("p".repeat(70 * 1024)));
            }),
            "oversize",
            None,
        ),
        p(
            "legacy_unknown_status",
            legacy(s, |m| {
                m.insert("status".into(), json!("PAUSED"));
            }),
            "invalid_value",
            Some("status"),
        ),
        p(
            "legacy_metadata_not_json",
            legacy(s, |m| {
                m.insert("metadata".into(), json!("{not json"));
            }),
            "invalid_value",
            Some("metadata"),
        ),
        p(
            "legacy_without_timestamp",
            legacy(s, |m| {
                m.remove("eventTimestamp");
            }),
            "missing_field",
            Some("eventTimestamp"),
        ),
        Poison {
            name: "key_differs_from_saga_id",
            key: Some(format!("{s}-someone-else")),
            payload: with(s, |_| {}),
            reason: "key_mismatch",
            field: Some("sagaId"),
        },
    ]);
    out
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Byte-string search and replace of the first occurrence (test data only).
trait ReplaceFirst {
    fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => panic!(
                "test data: {:?} not found in {:?}",
                String::from_utf8_lossy(from),
                String::from_utf8_lossy(&self)
            ),
        }
    }
}
