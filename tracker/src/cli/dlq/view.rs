//! What a dead-lettered message is, for a person: its payload decoded (pretty JSON, escaped
//! text or a hex preview) and what the contract says of it *today* — the same decoding the
//! tracker's consumer applies, so after a fix (a new tracker, a repaired database) the view
//! tells whether a replay would be accepted.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::read::{fmt_time, DlqRecord};
use crate::config::SchemaRegistrySettings;
use crate::ingest::avro::{AvroDecoder, BatchSchemas};
use crate::ingest::{decode_parts, REASON_DB_REJECTED};

/// Bytes of a non-UTF-8 payload shown as hex.
const HEX_PREVIEW: usize = 256;
/// Characters of a non-JSON text payload shown.
const TEXT_PREVIEW: usize = 2000;

/// The consumer's decoding rules, with the writer schemas the selection's Avro frames name
/// looked up once (local `.avsc` files and the Schema Registry of `[schema_registry]`).
#[derive(Debug)]
pub struct Judge {
    avro: AvroDecoder,
    schemas: BatchSchemas,
}

impl Judge {
    /// Resolves every schema id `records` name. A registry that cannot answer is an error:
    /// a verdict on an Avro message without its schema would be a guess.
    pub async fn for_records(
        registry: &SchemaRegistrySettings,
        records: &[DlqRecord],
    ) -> anyhow::Result<Self> {
        let avro = AvroDecoder::new(registry)?;
        let ids = AvroDecoder::framed_ids(
            records
                .iter()
                .map(|r| r.payload.as_deref().unwrap_or_default()),
        );
        let mut schemas = BatchSchemas::with_capacity(ids.len());
        for id in ids {
            let (verdict, _) = avro.writer_schema(id).await.map_err(|e| {
                e.context(format!(
                    "looking up Avro schema id {id} to judge the dead-lettered messages"
                ))
            })?;
            schemas.insert(id, verdict);
        }
        Ok(Self { avro, schemas })
    }
}

/// The contract's verdict on a message now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Verdict {
    /// A valid event: a replay makes the tracker store it (or find it already stored).
    #[serde(rename_all = "camelCase")]
    Valid {
        event_id: String,
        saga_id: String,
        saga_type: String,
        step: String,
        step_status: String,
    },
    /// Still invalid: a replay dead-letters it again for this reason.
    Invalid {
        reason: String,
        field: Option<String>,
        detail: String,
    },
}

impl Verdict {
    /// Decodes the message's key and value as the tracker's consumer would at `now`.
    pub fn of(rec: &DlqRecord, now: DateTime<Utc>, judge: &Judge) -> Self {
        match decode_parts(
            rec.key.as_deref(),
            rec.payload.as_deref().unwrap_or_default(),
            now,
            &judge.avro,
            &judge.schemas,
        ) {
            Ok(e) => Self::Valid {
                event_id: e.event_id,
                saga_id: e.saga_id,
                saga_type: e.saga_type,
                step: e.step,
                step_status: e.step_status.as_str().to_owned(),
            },
            Err(e) => Self::Invalid {
                reason: e.reason().to_owned(),
                field: e.field().map(str::to_owned),
                detail: e.detail().to_owned(),
            },
        }
    }

    /// What names a valid event in the store: its saga and its `eventId` (ids are unique
    /// per saga, so the pair is the identity).
    pub fn identity(&self) -> Option<(&str, &str)> {
        match self {
            Self::Valid {
                event_id, saga_id, ..
            } => Some((saga_id, event_id)),
            Self::Invalid { .. } => None,
        }
    }

    /// One line: `valid: event e-1 of saga order-1 (ORDER_CREATION), step PAYMENT SUCCEEDED`.
    pub fn line(&self) -> String {
        match self {
            Self::Valid {
                event_id,
                saga_id,
                saga_type,
                step,
                step_status,
            } => format!(
                "valid: event {event_id} of saga {saga_id} ({saga_type}), step {step} {step_status}"
            ),
            Self::Invalid {
                reason,
                field: Some(field),
                detail,
            } => format!("invalid: {reason} ({field}): {detail}"),
            Self::Invalid {
                reason,
                field: None,
                detail,
            } => format!("invalid: {reason}: {detail}"),
        }
    }

    /// A short cell: `valid` or `invalid: not_json`.
    pub fn short(&self) -> String {
        match self {
            Self::Valid { .. } => "valid".to_owned(),
            Self::Invalid { reason, .. } => format!("invalid: {reason}"),
        }
    }
}

/// A note for a message the contract accepts but that was dead-lettered by the database
/// (`db_rejected`): the contract cannot say whether the database would accept it now.
pub fn db_note(rec: &DlqRecord, verdict: &Verdict) -> Option<&'static str> {
    (matches!(verdict, Verdict::Valid { .. }) && rec.reason() == REASON_DB_REJECTED).then_some(
        "the database refused it: whether it does again depends on the fix (see dlq.error)",
    )
}

/// A payload for display and for JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Payload {
    None,
    Json {
        value: Value,
    },
    Text {
        text: String,
        truncated: bool,
    },
    #[serde(rename_all = "camelCase")]
    Binary {
        base64: String,
        hex_preview: String,
    },
}

impl Payload {
    pub fn of(bytes: Option<&[u8]>) -> Self {
        let Some(bytes) = bytes else {
            return Self::None;
        };
        if bytes.is_empty() {
            return Self::None;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => match serde_json::from_str::<Value>(text) {
                Ok(value) => Self::Json { value },
                Err(_) => Self::Text {
                    truncated: text.chars().count() > TEXT_PREVIEW,
                    text: text.chars().take(TEXT_PREVIEW).collect(),
                },
            },
            Err(_) => Self::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
                hex_preview: hex_dump(&bytes[..bytes.len().min(HEX_PREVIEW)]),
            },
        }
    }

    /// Lines for the terminal, indented by the caller.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::None => vec!["(no value)".to_owned()],
            Self::Json { value } => serde_json::to_string_pretty(value)
                .unwrap_or_else(|_| value.to_string())
                .lines()
                .map(str::to_owned)
                .collect(),
            Self::Text { text, truncated } => {
                let mut v = vec![format!("{:?}", text)];
                if *truncated {
                    v.push(format!("(first {TEXT_PREVIEW} characters)"));
                }
                v
            }
            Self::Binary { hex_preview, .. } => hex_preview.lines().map(str::to_owned).collect(),
        }
    }

    /// `JSON`, `text, not JSON`, `binary, not UTF-8`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "empty",
            Self::Json { .. } => "JSON",
            Self::Text { .. } => "text, not JSON",
            Self::Binary { .. } => "binary, not UTF-8",
        }
    }
}

/// `00000000  ff fe fd 41 …  |...A|`, 16 bytes a line.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{ascii}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

/// A header value for JSON: text when it is UTF-8, else base64.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderView {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl HeaderView {
    pub fn of(key: &str, value: Option<&[u8]>) -> Self {
        let (text, b64) = match value {
            None => (None, None),
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => (Some(s.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(v)),
                ),
            },
        };
        Self {
            key: key.to_owned(),
            value: text,
            value_base64: b64,
        }
    }

    /// `value`, or `<N bytes, not UTF-8>`, or `<no value>`.
    pub fn display(&self) -> String {
        match (&self.value, &self.value_base64) {
            (Some(v), _) => v.clone(),
            (None, Some(b)) => format!("<not UTF-8, base64 {b}>"),
            (None, None) => "<no value>".to_owned(),
        }
    }
}

/// One message in `dlq show --json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<String>,
    pub key: Option<String>,
    pub reason: String,
    pub error: Option<String>,
    pub field: Option<String>,
    pub original: OriginalView,
    pub headers: Vec<HeaderView>,
    pub payload_bytes: usize,
    pub payload: Payload,
    pub contract_now: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginalView {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp: Option<String>,
}

impl MessageView {
    pub fn of(rec: &DlqRecord, now: DateTime<Utc>, judge: &Judge) -> Self {
        use crate::ingest::dlq as h;
        let verdict = Verdict::of(rec, now, judge);
        Self {
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp.map(fmt_time),
            key: rec.key_text(),
            reason: rec.reason(),
            error: rec.header(h::HEADER_ERROR),
            field: rec.header(h::HEADER_FIELD),
            original: OriginalView {
                topic: rec.header(h::HEADER_TOPIC),
                partition: rec.origin().partition,
                offset: rec.original_offset(),
                timestamp: rec.original_timestamp().map(fmt_time),
            },
            headers: rec
                .headers
                .iter()
                .map(|(k, v)| HeaderView::of(k, v.as_deref()))
                .collect(),
            payload_bytes: rec.payload.as_ref().map_or(0, Vec::len),
            payload: Payload::of(rec.payload.as_deref()),
            note: db_note(rec, &verdict),
            contract_now: verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, payload: &[u8]) -> DlqRecord {
        DlqRecord {
            topic: "t.dlq".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: Some(payload.to_vec()),
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn the_verdict_is_the_consumers_including_the_key_rule() {
        let now = Utc::now();
        let avro_unknown = [0u8, 0, 0, 0, 42, 2, b'x'];
        let records = [rec(None, &avro_unknown)];
        let judge = Judge::for_records(&SchemaRegistrySettings::default(), &records)
            .await
            .expect("no registry to ask");
        let event = serde_json::json!({
            "schemaVersion": 1, "eventId": "e-1", "sagaId": "s-1", "sagaType": "ORDER",
            "step": "PAY", "stepStatus": "SUCCEEDED", "occurredAt": "2026-12-01T10:00:00Z",
            "service": "svc"
        })
        .to_string();
        assert!(matches!(
            Verdict::of(&rec(Some("s-1"), event.as_bytes()), now, &judge),
            Verdict::Valid { ref event_id, .. } if event_id == "e-1"
        ));
        assert!(matches!(
            Verdict::of(&rec(Some("other"), event.as_bytes()), now, &judge),
            Verdict::Invalid { ref reason, .. } if reason == "key_mismatch"
        ));
        assert!(matches!(
            Verdict::of(&rec(None, b"not json {"), now, &judge),
            Verdict::Invalid { ref reason, .. } if reason == "not_json"
        ));
        assert!(matches!(
            Verdict::of(&records[0], now, &judge),
            Verdict::Invalid { ref reason, .. } if reason == "avro_unknown_schema"
        ));
    }

    #[test]
    fn payloads_are_shown_as_json_text_or_hex() {
        assert!(matches!(
            Payload::of(Some(br#"{"a":1}"#)),
            Payload::Json { .. }
        ));
        assert!(matches!(Payload::of(Some(b"oops {")), Payload::Text { .. }));
        let bin = Payload::of(Some(&[0xff, 0xfe, 0x41]));
        let Payload::Binary { hex_preview, .. } = &bin else {
            panic!("{bin:?}")
        };
        assert!(
            hex_preview.starts_with("00000000  ff fe 41"),
            "{hex_preview}"
        );
        assert!(hex_preview.contains("|..A|"), "{hex_preview}");
        assert_eq!(Payload::of(None), Payload::None);
        let json = serde_json::to_value(&bin).expect("serializes");
        assert_eq!(json["kind"], "binary");
        assert_eq!(json["base64"], "//5B");
        assert!(json["hexPreview"].is_string(), "{json}");
        let header = serde_json::to_value(HeaderView::of("h", Some(&[0xff]))).expect("serializes");
        assert_eq!(
            header,
            serde_json::json!({ "key": "h", "valueBase64": "/w==" })
        );
    }
}
