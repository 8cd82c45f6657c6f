//! The event contract (v1): the one JSON shape that travels on the `saga.tracker` topic.
//!
//! This module owns every rule about what a valid event is — field lengths, enum values,
//! timestamps, metadata size, `schemaVersion` — so the SDK (which emits) and the tracker
//! (which consumes) can never disagree. It also accepts the legacy shape of the earlier
//! Kotlin/Avro design and maps it onto v1, so a fleet can migrate without touching emitters.
//!
//! It must not do I/O: [`decode`] takes bytes and returns a validated [`SagaEvent`] or a
//! [`ContractError`] whose [`ContractError::reason`] is a short, stable code used as the DLQ
//! reason header and as a metric label.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// JSON Schema (ECMA-262) spelling of "no control characters", the rule `check_len` applies.
#[cfg(feature = "schema")]
const NO_CONTROL_CHARS: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;
/// Upper bound on the serialized `metadata` object.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Upper bound on a whole message. Metadata is capped at 16 KiB and every other field is
/// short, so anything above this is not an event but a mistake (or an attack).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Upper bound on `sagaId`, `step`, `eventId`, `service` and `businessKey`.
pub const MAX_ID_CHARS: usize = 128;
/// Upper bound on `sagaType` (which must also match `[A-Z0-9_.-]+`).
pub const MAX_SAGA_TYPE_CHARS: usize = 64;
/// Upper bound on `error.code`.
pub const MAX_ERROR_CODE_CHARS: usize = 128;
/// Upper bound on `error.message`; longer messages are rejected rather than cut so that the
/// stored event is byte-for-byte what the emitter sent.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 4096;
/// Events may not claim to have happened before this instant (2000-01-01T00:00:00Z): an
/// earlier `occurredAt` is a unit mix-up (seconds as millis) or an uninitialised clock.
pub const MIN_OCCURRED_AT_MILLIS: i64 = 946_684_800_000;
/// How far in the future `occurredAt` may be, relative to the validator's clock. Clocks drift;
/// a day is generous for drift and still rejects timestamps in the wrong unit.
pub const MAX_FUTURE_SKEW_SECS: i64 = 24 * 3600;

/// Status of one step, as reported by the service that ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// The step began.
    Started,
    /// The step finished successfully.
    Succeeded,
    /// The step failed; `error` says why.
    Failed,
    /// The step's compensating action began.
    Compensating,
    /// The step's compensating action finished.
    Compensated,
}

impl StepStatus {
    /// All values, in declaration order.
    pub const ALL: [StepStatus; 5] = [
        Self::Started,
        Self::Succeeded,
        Self::Failed,
        Self::Compensating,
        Self::Compensated,
    ];

    /// The wire name (`STARTED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of a whole saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// The saga began.
    Started,
    /// Steps are running.
    InProgress,
    /// Every step succeeded. Absorbing.
    Completed,
    /// A step failed; compensation may follow.
    Failed,
    /// Compensating actions are running.
    Compensating,
    /// Compensation finished. Absorbing.
    Compensated,
}

impl SagaStatus {
    /// All values, in declaration order.
    pub const ALL: [SagaStatus; 6] = [
        Self::Started,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Compensating,
        Self::Compensated,
    ];

    /// The wire name (`STARTED`, `IN_PROGRESS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// `COMPLETED` and `COMPENSATED` never change again.
    pub fn is_absorbing(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }

    /// Terminal for reporting purposes: the saga is over unless compensation follows a failure.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StepError {
    /// A short machine-readable code, e.g. `INSUFFICIENT_FUNDS`.
    #[cfg_attr(feature = "schema", schemars(length(max = 128)))]
    pub code: String,
    /// A human-readable message.
    #[cfg_attr(feature = "schema", schemars(length(max = 4096)))]
    pub message: String,
}

/// A validated v1 saga event. Construct it through [`decode`] or [`SagaEvent::validate`]; a
/// value that passed either satisfies every rule of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "SagaEvent",
        description = "One saga step event, contract v1: the JSON value of one Kafka message on \
                       the `saga.tracker` topic, keyed by `sagaId`. A `null` field counts as \
                       absent; unknown fields are ignored. `orderId` is accepted as an alias \
                       of `businessKey`."
    )
)]
pub struct SagaEvent {
    /// Always [`SCHEMA_VERSION`].
    #[cfg_attr(
        feature = "schema",
        schemars(description = "Always 1.", extend("const" = 1))
    )]
    pub schema_version: u32,
    /// Unique per event; the idempotency key (UUIDv7 when emitted by the SDK).
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 128), regex(pattern = NO_CONTROL_CHARS))
    )]
    pub event_id: String,
    /// One logical saga across all services; also the Kafka message key.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 128), regex(pattern = NO_CONTROL_CHARS))
    )]
    pub saga_id: String,
    /// Open set such as `ORDER_CREATION`; `[A-Z0-9_.-]{1,64}`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Z0-9_.-]{1,64}$")))]
    pub saga_type: String,
    /// Step name chosen by the emitter, e.g. `STOCK_RESERVED`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 128), regex(pattern = NO_CONTROL_CHARS))
    )]
    pub step: String,
    /// What happened to the step.
    pub step_status: StepStatus,
    /// The saga-level transition, when the emitter knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_status: Option<SagaStatus>,
    /// Event time at the emitter.
    #[cfg_attr(
        feature = "schema",
        schemars(
            description = "Event time at the emitter, RFC 3339. Not before 2000-01-01 and not \
                           more than 24 h ahead of the tracker's clock."
        )
    )]
    pub occurred_at: DateTime<Utc>,
    /// Emitting service name.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 128), regex(pattern = NO_CONTROL_CHARS))
    )]
    pub service: String,
    /// Per-saga order hint from the emitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Business identifier such as an order number (`orderId` accepted as an alias).
    #[serde(default, alias = "orderId", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 128), regex(pattern = NO_CONTROL_CHARS))
    )]
    pub business_key: Option<String>,
    /// W3C trace id (32 lowercase hex digits), all-zero dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9a-fA-F]{32}$")))]
    pub trace_id: Option<String>,
    /// W3C span id (16 lowercase hex digits), all-zero dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9a-fA-F]{16}$")))]
    pub span_id: Option<String>,
    /// Failure detail for FAILED steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Free-form searchable metadata, at most [`MAX_METADATA_BYTES`] serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            description = "Free-form searchable metadata: a JSON object of at most 16384 bytes \
                           serialized (not expressible in JSON Schema; the tracker enforces it)."
        )
    )]
    pub metadata: Option<Map<String, Value>>,
}

/// Why a message is not a valid event.
///
/// `reason` is one of a small fixed set of codes (bounded metric label, DLQ header); `field`
/// names the offending field when there is one; `detail` is for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    reason: &'static str,
    field: Option<&'static str>,
    detail: String,
}

impl ContractError {
    fn new(reason: &'static str, field: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field,
            detail: detail.into(),
        }
    }

    /// Stable reason code: `not_utf8`, `not_json`, `not_object`, `oversize`,
    /// `unsupported_schema_version`, `missing_field`, `wrong_type`, `invalid_value`,
    /// `invalid_timestamp`, `metadata_too_large`, `key_mismatch`, `empty_message`, and for
    /// Confluent-framed Avro (see [`AvroRejection`]) `avro_unknown_schema`,
    /// `avro_schema_mismatch`, `avro_malformed`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The field at fault, if any (wire name, e.g. `sagaId`).
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// Human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub(crate) fn missing(field: &'static str) -> Self {
        Self::new(
            "missing_field",
            Some(field),
            format!("`{field}` is required"),
        )
    }

    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self::new("invalid_value", Some(field), detail)
    }

    /// The message key disagrees with `sagaId` (raised by the consumer, which sees the key).
    pub fn key_mismatch(key: &str, saga_id: &str) -> Self {
        Self::new(
            "key_mismatch",
            Some("sagaId"),
            format!("message key {key:?} differs from sagaId {saga_id:?}"),
        )
    }
}

/// Why a Confluent-framed Avro message (the earlier design's wire format) is not an event.
/// The consumer decodes the Avro; the contract only names the outcome, so the reason codes
/// stay one fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroRejection {
    /// The schema id in the frame is neither a local schema file nor known to the registry.
    UnknownSchema,
    /// The writer schema is not the `SagaTracker` record nor a compatible evolution of it.
    SchemaMismatch,
    /// The bytes do not decode with the writer schema (short frame, truncated or trailing
    /// data, an invalid value).
    Malformed,
}

impl AvroRejection {
    /// The reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownSchema => "avro_unknown_schema",
            Self::SchemaMismatch => "avro_schema_mismatch",
            Self::Malformed => "avro_malformed",
        }
    }
}

impl ContractError {
    /// A Confluent-framed Avro message that cannot become an event (raised by the consumer,
    /// which resolves schemas and decodes Avro).
    pub fn avro(why: AvroRejection, detail: impl Into<String>) -> Self {
        Self::new(why.reason(), None, detail)
    }
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.reason, self.detail),
            None => write!(f, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for ContractError {}

/// Decodes and validates one Kafka message value, accepting v1 and the legacy shape.
///
/// `now` is the validator's clock, used only to reject timestamps absurdly far in the future.
pub fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<SagaEvent, ContractError> {
    if bytes.is_empty() {
        return Err(ContractError::new(
            "empty_message",
            None,
            "message has no value",
        ));
    }
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(ContractError::new(
            "oversize",
            None,
            format!(
                "message is {} bytes, the limit is {MAX_EVENT_BYTES}",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ContractError::new("not_utf8", None, format!("message is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ContractError::new("not_json", None, format!("message is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ContractError::new(
            "not_object",
            None,
            format!("expected a JSON object, got {}", json_kind(&value)),
        ));
    };
    let event = if obj.contains_key("schemaVersion") {
        from_v1(&obj)?
    } else if obj.contains_key("status") && !obj.contains_key("stepStatus") {
        from_legacy(&obj)?
    } else {
        return Err(ContractError::missing("schemaVersion"));
    };
    event.validate(now)
}

/// Maps and validates one event already parsed into the legacy shape (see [`decode`]'s
/// legacy branch). The consumer's Avro decoder turns each `SagaTracker` record into this
/// JSON object, so Avro and legacy JSON share one mapping.
pub fn decode_legacy(
    obj: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<SagaEvent, ContractError> {
    from_legacy(obj)?.validate(now)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to fields of a JSON object, each failure naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, name: &'static str) -> Option<&'a Value> {
        match self.0.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn wrong_type(name: &'static str, want: &str, got: &Value) -> ContractError {
        ContractError::new(
            "wrong_type",
            Some(name),
            format!("`{name}` must be {want}, got {}", json_kind(got)),
        )
    }

    fn opt_str(&self, name: &'static str) -> Result<Option<&'a str>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong_type(name, "a string", v)),
        }
    }

    fn str(&self, name: &'static str) -> Result<&'a str, ContractError> {
        self.opt_str(name)?
            .ok_or_else(|| ContractError::missing(name))
    }

    fn opt_i64(&self, name: &'static str) -> Result<Option<i64>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
                ContractError::new(
                    "wrong_type",
                    Some(name),
                    format!("`{name}` must be an integer, got {n}"),
                )
            }),
            Some(v) => Err(Self::wrong_type(name, "an integer", v)),
        }
    }

    fn opt_object(
        &self,
        name: &'static str,
    ) -> Result<Option<&'a Map<String, Value>>, ContractError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(Self::wrong_type(name, "an object", v)),
        }
    }
}

fn parse_rfc3339(field: &'static str, s: &str) -> Result<DateTime<Utc>, ContractError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ContractError::new(
                "invalid_timestamp",
                Some(field),
                format!("`{field}` is not an RFC 3339 timestamp ({e}): {s:?}"),
            )
        })
}

fn parse_millis(field: &'static str, ms: i64) -> Result<DateTime<Utc>, ContractError> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| {
        ContractError::new(
            "invalid_timestamp",
            Some(field),
            format!("`{field}` is not a valid epoch-millisecond timestamp: {ms}"),
        )
    })
}

fn parse_error(f: &Fields<'_>) -> Result<Option<StepError>, ContractError> {
    let Some(err) = f.opt_object("error")? else {
        return Ok(None);
    };
    let ef = Fields(err);
    let code = ef.opt_str("code").map_err(|_| {
        ContractError::new("wrong_type", Some("error"), "`error.code` must be a string")
    })?;
    let message = ef.opt_str("message").map_err(|_| {
        ContractError::new(
            "wrong_type",
            Some("error"),
            "`error.message` must be a string",
        )
    })?;
    match (code, message) {
        (None, None) => Err(ContractError::invalid(
            "error",
            "`error` needs at least one of `code` and `message`",
        )),
        (code, message) => Ok(Some(StepError {
            code: code.unwrap_or("UNSPECIFIED").to_owned(),
            message: message.unwrap_or("").to_owned(),
        })),
    }
}

fn from_v1(obj: &Map<String, Value>) -> Result<SagaEvent, ContractError> {
    let f = Fields(obj);
    let version = match f.get("schemaVersion") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(v) => return Err(Fields::wrong_type("schemaVersion", "an integer", v)),
        None => None,
    };
    if version != Some(u64::from(SCHEMA_VERSION)) {
        return Err(ContractError::new(
            "unsupported_schema_version",
            Some("schemaVersion"),
            format!(
                "schemaVersion {} is not supported (this tracker understands {SCHEMA_VERSION})",
                obj.get("schemaVersion")
                    .map_or("null".into(), Value::to_string)
            ),
        ));
    }
    let step_status_raw = f.str("stepStatus")?;
    let step_status = StepStatus::parse(step_status_raw).ok_or_else(|| {
        ContractError::invalid(
            "stepStatus",
            format!(
                "unknown stepStatus {step_status_raw:?}; expected one of STARTED SUCCEEDED FAILED COMPENSATING COMPENSATED"
            ),
        )
    })?;
    let saga_status = match f.opt_str("sagaStatus")? {
        None => None,
        Some(s) => Some(SagaStatus::parse(s).ok_or_else(|| {
            ContractError::invalid(
                "sagaStatus",
                format!("unknown sagaStatus {s:?}; expected one of STARTED IN_PROGRESS COMPLETED FAILED COMPENSATING COMPENSATED"),
            )
        })?),
    };
    let business_key = match f.opt_str("businessKey")? {
        Some(k) => Some(k),
        None => f.opt_str("orderId")?,
    };
    Ok(SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: f.str("eventId")?.to_owned(),
        saga_id: f.str("sagaId")?.to_owned(),
        saga_type: f.str("sagaType")?.to_owned(),
        step: f.str("step")?.to_owned(),
        step_status,
        saga_status,
        occurred_at: parse_rfc3339("occurredAt", f.str("occurredAt")?)?,
        service: f.str("service")?.to_owned(),
        sequence: f.opt_i64("sequence")?,
        business_key: business_key.map(str::to_owned),
        trace_id: f.opt_str("traceId")?.map(str::to_owned),
        span_id: f.opt_str("spanId")?.map(str::to_owned),
        error: parse_error(&f)?,
        metadata: f.opt_object("metadata")?.cloned(),
    })
}

/// Namespace for the deterministic ids given to legacy events that carry no `eventId`.
const LEGACY_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b4d_4e8f_a1c3_5d7e_9f0b_2c4e);

/// `service` of a legacy event that names none, neither at the top level nor as
/// `producerService` in its metadata.
pub const LEGACY_UNKNOWN_SERVICE: &str = "unknown";

/// Maps the earlier Kotlin/Avro shape onto v1.
///
/// Legacy `status` is the saga status as of this step, so it becomes `sagaStatus`, and the
/// step status is derived from it: `STARTED`→`STARTED`, `IN_PROGRESS`/`COMPLETED`→`SUCCEEDED`,
/// `FAILED`→`FAILED`, `COMPENSATED`→`COMPENSATED`. `eventTimestamp` (or, failing that,
/// `recordedAt`) in epoch millis becomes `occurredAt`; `metadata` is a JSON string holding an
/// object. Absent top-level `service`, `traceId` and `spanId` are taken from the metadata's
/// `producerService`, `traceId` and `spanId` (where the earlier SDK put them). A legacy event
/// without `eventId` gets a UUIDv5 of its content, so redelivery of the same legacy message is
/// still deduplicated.
fn from_legacy(obj: &Map<String, Value>) -> Result<SagaEvent, ContractError> {
    let f = Fields(obj);
    let status_raw = f.str("status")?;
    let (saga_status, step_status) = match status_raw {
        "STARTED" => (SagaStatus::Started, StepStatus::Started),
        "IN_PROGRESS" => (SagaStatus::InProgress, StepStatus::Succeeded),
        "COMPLETED" => (SagaStatus::Completed, StepStatus::Succeeded),
        "FAILED" => (SagaStatus::Failed, StepStatus::Failed),
        "COMPENSATED" => (SagaStatus::Compensated, StepStatus::Compensated),
        other => {
            return Err(ContractError::invalid(
                "status",
                format!("unknown legacy status {other:?}; expected one of STARTED IN_PROGRESS COMPLETED FAILED COMPENSATED"),
            ))
        }
    };
    let occurred_ms = match f.opt_i64("eventTimestamp")? {
        Some(ms) => ("eventTimestamp", ms),
        None => (
            "recordedAt",
            f.opt_i64("recordedAt")?
                .ok_or_else(|| ContractError::missing("eventTimestamp"))?,
        ),
    };
    let occurred_at = parse_millis(occurred_ms.0, occurred_ms.1)?;
    let metadata = match f.get("metadata") {
        None => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) | Err(_) => {
                return Err(ContractError::invalid(
                    "metadata",
                    "legacy `metadata` must be a string holding a JSON object",
                ))
            }
        },
        Some(Value::Object(m)) => Some(m.clone()),
        Some(v) => return Err(Fields::wrong_type("metadata", "a JSON string", v)),
    };
    let saga_id = f.str("sagaId")?.to_owned();
    let saga_type = f.str("sagaType")?.to_owned();
    let step = f.str("step")?.to_owned();
    let top_service = f.opt_str("service")?;
    // The earlier SDK (`KafkaSagaTrackerClient`) has no `service` field: it writes
    // `producerService`, `traceId` and `spanId` into the metadata JSON instead. Without this
    // fallback its events would all belong to `unknown`.
    let from_metadata = |key: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    };
    let service = match top_service {
        Some(s) => s.to_owned(),
        None => from_metadata("producerService")
            .filter(|s| check_len("service", s, MAX_ID_CHARS).is_ok())
            .unwrap_or(LEGACY_UNKNOWN_SERVICE)
            .to_owned(),
    };
    let event_id = match f.opt_str("eventId")? {
        Some(id) => id.to_owned(),
        None => {
            // The top-level service (not the metadata fallback) keeps the ids of legacy
            // events stored before the fallback existed unchanged, so replays still dedupe.
            let fingerprint = format!(
                "{saga_id}\u{1f}{saga_type}\u{1f}{step}\u{1f}{status_raw}\u{1f}{}\u{1f}{}",
                occurred_ms.1,
                top_service.unwrap_or(LEGACY_UNKNOWN_SERVICE)
            );
            Uuid::new_v5(&LEGACY_EVENT_NAMESPACE, fingerprint.as_bytes()).to_string()
        }
    };
    // Metadata trace ids are free-form: only a well-formed, non-zero W3C id is taken (the
    // top-level fields, when present, are checked strictly by `validate`).
    let metadata_id = |key: &'static str, digits: usize| {
        from_metadata(key)
            .and_then(|v| check_hex_id(key, Some(v.to_owned()), digits).ok().flatten())
    };
    let trace_id = match f.opt_str("traceId")? {
        Some(t) => Some(t.to_owned()),
        None => metadata_id("traceId", 32),
    };
    let span_id = match f.opt_str("spanId")? {
        Some(t) => Some(t.to_owned()),
        None => metadata_id("spanId", 16),
    };
    let error = match (f.opt_str("errorCode")?, f.opt_str("errorMessage")?) {
        (None, None) => parse_error(&f)?,
        (code, message) => Some(StepError {
            code: code.unwrap_or("UNSPECIFIED").to_owned(),
            message: message.unwrap_or("").to_owned(),
        }),
    };
    Ok(SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id,
        saga_id,
        saga_type,
        step,
        step_status,
        saga_status: Some(saga_status),
        occurred_at,
        service,
        sequence: f.opt_i64("sequence")?,
        business_key: f.opt_str("orderId")?.map(str::to_owned),
        trace_id,
        span_id,
        error,
        metadata,
    })
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), ContractError> {
    // ASCII (the usual case) is one byte per character and its control characters are
    // below 0x20 and 0x7f; anything else takes the per-character route.
    if value.is_ascii() {
        let n = value.len();
        if n != 0 && n <= max && !value.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Ok(());
        }
    }
    let n = value.chars().count();
    if n == 0 {
        return Err(ContractError::invalid(field, format!("`{field}` is empty")));
    }
    if n > max {
        return Err(ContractError::invalid(
            field,
            format!("`{field}` is {n} characters, the limit is {max}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ContractError::invalid(
            field,
            format!("`{field}` contains control characters"),
        ));
    }
    Ok(())
}

fn check_saga_type(saga_type: &str) -> Result<(), ContractError> {
    if saga_type.is_empty()
        || saga_type.len() > MAX_SAGA_TYPE_CHARS
        || !saga_type
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(ContractError::invalid(
            "sagaType",
            format!(
                "`sagaType` must match [A-Z0-9_.-]{{1,{MAX_SAGA_TYPE_CHARS}}}, got {:?}",
                truncate(saga_type, 80)
            ),
        ));
    }
    Ok(())
}

/// Checks a `sagaId` on its own with the rule [`SagaEvent::validate`] applies (1–128
/// characters, no control characters). Used to validate a saga context before any event exists.
pub fn validate_saga_id(saga_id: &str) -> Result<(), ContractError> {
    check_len("sagaId", saga_id, MAX_ID_CHARS)
}

/// Checks a `sagaType` on its own with the rule [`SagaEvent::validate`] applies
/// (`[A-Z0-9_.-]{1,64}`).
pub fn validate_saga_type(saga_type: &str) -> Result<(), ContractError> {
    check_saga_type(saga_type)
}

/// Checks a `businessKey` on its own with the rule [`SagaEvent::validate`] applies (1–128
/// characters, no control characters).
pub fn validate_business_key(business_key: &str) -> Result<(), ContractError> {
    check_len("businessKey", business_key, MAX_ID_CHARS)
}

/// Checks a `step` name on its own with the rule [`SagaEvent::validate`] applies (1–128
/// characters, no control characters).
pub fn validate_step(step: &str) -> Result<(), ContractError> {
    check_len("step", step, MAX_ID_CHARS)
}

/// Checks a W3C id: `digits` lowercase hex digits. All-zero ids are invalid per W3C and are
/// dropped (`Ok(None)`) rather than rejected, since some tracers emit them when unsampled.
fn check_hex_id(
    field: &'static str,
    value: Option<String>,
    digits: usize,
) -> Result<Option<String>, ContractError> {
    let Some(v) = value else { return Ok(None) };
    let v = v.to_ascii_lowercase();
    if v.len() != digits || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContractError::invalid(
            field,
            format!("`{field}` must be {digits} hex digits"),
        ));
    }
    if v.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    Ok(Some(v))
}

impl SagaEvent {
    /// Applies every rule of the contract, normalising where the contract says so (hex ids to
    /// lowercase, all-zero trace ids dropped). Returns the normalised event.
    pub fn validate(mut self, now: DateTime<Utc>) -> Result<Self, ContractError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ContractError::new(
                "unsupported_schema_version",
                Some("schemaVersion"),
                format!("schemaVersion {} is not supported", self.schema_version),
            ));
        }
        check_len("eventId", &self.event_id, MAX_ID_CHARS)?;
        check_len("sagaId", &self.saga_id, MAX_ID_CHARS)?;
        check_saga_type(&self.saga_type)?;
        check_len("step", &self.step, MAX_ID_CHARS)?;
        check_len("service", &self.service, MAX_ID_CHARS)?;
        if let Some(k) = &self.business_key {
            check_len("businessKey", k, MAX_ID_CHARS)?;
        }
        let millis = self.occurred_at.timestamp_millis();
        if millis < MIN_OCCURRED_AT_MILLIS {
            return Err(ContractError::new(
                "invalid_timestamp",
                Some("occurredAt"),
                format!(
                    "occurredAt {} is before 2000-01-01",
                    self.occurred_at.to_rfc3339()
                ),
            ));
        }
        if self.occurred_at > now + chrono::Duration::seconds(MAX_FUTURE_SKEW_SECS) {
            return Err(ContractError::new(
                "invalid_timestamp",
                Some("occurredAt"),
                format!(
                    "occurredAt {} is more than {MAX_FUTURE_SKEW_SECS} s in the future",
                    self.occurred_at.to_rfc3339()
                ),
            ));
        }
        self.trace_id = check_hex_id("traceId", self.trace_id.take(), 32)?;
        self.span_id = check_hex_id("spanId", self.span_id.take(), 16)?;
        if let Some(err) = &self.error {
            if err.code.chars().count() > MAX_ERROR_CODE_CHARS {
                return Err(ContractError::invalid(
                    "error",
                    format!("`error.code` is longer than {MAX_ERROR_CODE_CHARS} characters"),
                ));
            }
            if err.code.contains('\0') || err.message.contains('\0') {
                return Err(ContractError::invalid(
                    "error",
                    "`error` contains a NUL character",
                ));
            }
            if err.message.chars().count() > MAX_ERROR_MESSAGE_CHARS {
                return Err(ContractError::invalid(
                    "error",
                    format!("`error.message` is longer than {MAX_ERROR_MESSAGE_CHARS} characters"),
                ));
            }
        }
        if let Some(m) = &self.metadata {
            let size = serialized_len(m);
            if size > MAX_METADATA_BYTES {
                return Err(ContractError::new(
                    "metadata_too_large",
                    Some("metadata"),
                    format!(
                        "metadata is {size} bytes serialized, the limit is {MAX_METADATA_BYTES}"
                    ),
                ));
            }
            // PostgreSQL's jsonb cannot hold U+0000; reject it here, with a reason, rather
            // than have the database reject the whole batch.
            if object_has_nul(m) {
                return Err(ContractError::invalid(
                    "metadata",
                    "`metadata` contains a NUL character (\\u0000)",
                ));
            }
            if m.is_empty() {
                self.metadata = None;
            }
        }
        Ok(self)
    }

    /// Serializes to the v1 wire form: the bytes of this type's `Serialize` derive, written
    /// without it (see [`SagaEvent::write_json`]).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::wire::size_hint(self));
        self.write_json(&mut out);
        out
    }

    /// Appends the v1 wire form to `out`, e.g. a buffer reused from one event to the next.
    /// The bytes are exactly those of `serde_json::to_vec(self)`; only the object's frame and
    /// `occurredAt` are written by hand, every value goes through `serde_json`'s writer.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(crate::wire::size_hint(self));
        crate::wire::write_event(out, self);
    }
}

/// The JSON Schema (draft 2020-12) of a v1 event, generated from [`SagaEvent`].
///
/// This is what `docs/event.schema.json` holds; a unit test fails when the two drift apart.
/// Emitters in other languages can validate against it. Rules JSON Schema cannot express (the
/// 16 KiB metadata limit, "not before 2000", "at most a day in the future") are in the field
/// descriptions and enforced by [`decode`].
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<SagaEvent>();
    schema.to_value()
}

fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(m) => object_has_nul(m),
        _ => false,
    }
}

fn object_has_nul(m: &Map<String, Value>) -> bool {
    m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
}

/// The length of `value` serialized by `serde_json`, counted without keeping the bytes.
fn serialized_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn valid() -> Value {
        json!({
            "schemaVersion": 1,
            "eventId": "0193a0c4-0000-7000-8000-000000000001",
            "sagaId": "order-8812",
            "sagaType": "ORDER_CREATION",
            "step": "STOCK_RESERVED",
            "stepStatus": "SUCCEEDED",
            "occurredAt": "2026-11-21T11:59:00.123Z",
            "service": "stock",
        })
    }

    fn decode_value(v: &Value) -> Result<SagaEvent, ContractError> {
        decode(v.to_string().as_bytes(), now())
    }

    fn reason_of(v: Value) -> (&'static str, Option<&'static str>) {
        let e = decode_value(&v).expect_err("should be rejected");
        (e.reason(), e.field())
    }

    #[test]
    fn a_minimal_v1_event_decodes() {
        let e = decode_value(&valid()).expect("valid");
        assert_eq!(e.saga_id, "order-8812");
        assert_eq!(e.step_status, StepStatus::Succeeded);
        assert_eq!(e.saga_status, None);
    }

    #[test]
    fn order_id_is_an_alias_for_business_key() {
        let mut v = valid();
        v["orderId"] = json!("8812");
        assert_eq!(
            decode_value(&v).expect("valid").business_key.as_deref(),
            Some("8812")
        );
    }

    #[test]
    fn round_trips_through_json() {
        let mut v = valid();
        v["metadata"] = json!({"region": "eu"});
        v["error"] = json!({"code": "X", "message": "y"});
        v["traceId"] = json!("4BF92F3577B34DA6A3CE929D0E0E4736");
        let e = decode_value(&v).expect("valid");
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let again = decode(&e.to_json(), now()).expect("re-decodes");
        assert_eq!(e, again);
    }

    #[test]
    fn all_zero_trace_ids_are_dropped() {
        let mut v = valid();
        v["traceId"] = json!("00000000000000000000000000000000");
        v["spanId"] = json!("0000000000000000");
        let e = decode_value(&v).expect("valid");
        assert_eq!((e.trace_id, e.span_id), (None, None));
    }

    #[test]
    fn bad_inputs_name_their_reason_and_field() {
        assert_eq!(decode(b"", now()).unwrap_err().reason(), "empty_message");
        assert_eq!(decode(b"nope", now()).unwrap_err().reason(), "not_json");
        assert_eq!(decode(b"[1]", now()).unwrap_err().reason(), "not_object");
        assert_eq!(
            decode(&[0xff, 0xfe], now()).unwrap_err().reason(),
            "not_utf8"
        );
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(decode(&big, now()).unwrap_err().reason(), "oversize");

        let mut v = valid();
        v.as_object_mut().map(|o| o.remove("sagaId"));
        assert_eq!(reason_of(v), ("missing_field", Some("sagaId")));

        let mut v = valid();
        v["schemaVersion"] = json!(2);
        assert_eq!(
            reason_of(v),
            ("unsupported_schema_version", Some("schemaVersion"))
        );

        let mut v = valid();
        v["sagaId"] = json!(42);
        assert_eq!(reason_of(v), ("wrong_type", Some("sagaId")));

        let mut v = valid();
        v["sagaId"] = json!("");
        assert_eq!(reason_of(v), ("invalid_value", Some("sagaId")));

        let mut v = valid();
        v["sagaId"] = json!("x".repeat(129));
        assert_eq!(reason_of(v), ("invalid_value", Some("sagaId")));

        let mut v = valid();
        v["sagaType"] = json!("order creation");
        assert_eq!(reason_of(v), ("invalid_value", Some("sagaType")));

        let mut v = valid();
        v["stepStatus"] = json!("DONE");
        assert_eq!(reason_of(v), ("invalid_value", Some("stepStatus")));

        let mut v = valid();
        v["occurredAt"] = json!("yesterday");
        assert_eq!(reason_of(v), ("invalid_timestamp", Some("occurredAt")));

        let mut v = valid();
        v["occurredAt"] = json!("1970-01-01T00:00:00Z");
        assert_eq!(reason_of(v), ("invalid_timestamp", Some("occurredAt")));

        let mut v = valid();
        v["occurredAt"] = json!("2999-01-01T00:00:00Z");
        assert_eq!(reason_of(v), ("invalid_timestamp", Some("occurredAt")));

        let mut v = valid();
        v["metadata"] = json!("not an object");
        assert_eq!(reason_of(v), ("wrong_type", Some("metadata")));

        let mut v = valid();
        v["metadata"] = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(reason_of(v), ("metadata_too_large", Some("metadata")));

        let mut v = valid();
        v["metadata"] = json!({"k": "a\u{0}b"});
        assert_eq!(reason_of(v), ("invalid_value", Some("metadata")));

        let mut v = valid();
        v["traceId"] = json!("xyz");
        assert_eq!(reason_of(v), ("invalid_value", Some("traceId")));

        let mut v = valid();
        v.as_object_mut().map(|o| o.remove("schemaVersion"));
        assert_eq!(reason_of(v), ("missing_field", Some("schemaVersion")));
    }

    #[test]
    fn the_legacy_shape_maps_onto_v1() {
        let legacy = json!({
            "sagaId": "legacy-1",
            "sagaType": "ORDER_CREATION",
            "step": "PAYMENT",
            "status": "FAILED",
            "orderId": "8812",
            "eventTimestamp": 1_763_726_400_000_i64,
            "recordedAt": 1_763_726_400_500_i64,
            "metadata": "{\"amount\": 12}",
            "service": "payment"
        });
        let e = decode_value(&legacy).expect("legacy accepted");
        assert_eq!(e.saga_status, Some(SagaStatus::Failed));
        assert_eq!(e.step_status, StepStatus::Failed);
        assert_eq!(e.business_key.as_deref(), Some("8812"));
        assert_eq!(e.occurred_at.timestamp_millis(), 1_763_726_400_000);
        assert_eq!(
            e.metadata.as_ref().and_then(|m| m.get("amount")),
            Some(&json!(12))
        );
        // Deterministic id: the same legacy message decodes to the same eventId.
        let again = decode_value(&legacy).expect("legacy accepted");
        assert_eq!(e.event_id, again.event_id);
    }

    /// What the earlier SDK's `KafkaSagaTrackerClient` sends: no `service`, the producer and
    /// the trace ids inside the metadata JSON.
    fn legacy_from_the_earlier_sdk(metadata: Value) -> Value {
        json!({
            "eventId": "3f0c1a9e-2b7d-4c55-9e41-0d8a6b2f7c10",
            "sagaId": "legacy-sdk-1",
            "sagaType": "ORDER_CREATION",
            "step": "STOCK_RESERVED",
            "status": "IN_PROGRESS",
            "orderId": "8812",
            "eventTimestamp": 1_763_726_400_000_i64,
            "recordedAt": 1_763_726_400_100_i64,
            "metadata": metadata.to_string(),
        })
    }

    #[test]
    fn legacy_events_take_service_and_trace_ids_from_their_metadata() {
        let legacy = legacy_from_the_earlier_sdk(json!({
            "producerService": "stock-service",
            "producerTimestamp": 1_763_726_400_000_i64,
            "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736",
            "spanId": "00f067aa0ba902b7",
            "warehouse": "north",
        }));
        let e = decode_value(&legacy).expect("legacy accepted");
        assert_eq!(e.service, "stock-service");
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(e.span_id.as_deref(), Some("00f067aa0ba902b7"));
        // The metadata itself is kept whole.
        let m = e.metadata.expect("metadata kept");
        assert_eq!(m.get("producerService"), Some(&json!("stock-service")));
        assert_eq!(m.get("warehouse"), Some(&json!("north")));
    }

    #[test]
    fn top_level_service_and_trace_ids_win_over_the_metadata_keys() {
        let mut legacy = legacy_from_the_earlier_sdk(json!({
            "producerService": "from-metadata",
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanId": "00f067aa0ba902b7",
        }));
        legacy["service"] = json!("top-level");
        legacy["traceId"] = json!("0af7651916cd43dd8448eb211c80319c");
        legacy["spanId"] = json!("b7ad6b7169203331");
        let e = decode_value(&legacy).expect("legacy accepted");
        assert_eq!(e.service, "top-level");
        assert_eq!(
            e.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(e.span_id.as_deref(), Some("b7ad6b7169203331"));
    }

    #[test]
    fn malformed_metadata_trace_ids_and_services_are_ignored_not_rejected() {
        // Metadata is free-form: a 64-bit (16-digit) trace id of an older tracer, a blank or
        // overlong producer name must not dead-letter an otherwise valid event.
        for metadata in [
            json!({"producerService": "", "traceId": "463ac35c9f6413ad", "spanId": "xyz"}),
            json!({"producerService": "x".repeat(200), "traceId": 42}),
            json!({"producerService": 7, "traceId": "00000000000000000000000000000000"}),
        ] {
            let e = decode_value(&legacy_from_the_earlier_sdk(metadata.clone()))
                .unwrap_or_else(|err| panic!("{metadata} rejected: {err}"));
            assert_eq!(e.service, LEGACY_UNKNOWN_SERVICE, "{metadata}");
            assert_eq!((e.trace_id, e.span_id), (None, None), "{metadata}");
        }
    }

    #[test]
    fn the_metadata_fallback_leaves_legacy_event_ids_unchanged() {
        // Ids derived before the fallback existed used `unknown`; a replay must dedupe.
        let mut without = legacy_from_the_earlier_sdk(json!({}));
        without.as_object_mut().map(|o| o.remove("eventId"));
        let mut with = legacy_from_the_earlier_sdk(json!({"producerService": "stock-service"}));
        with.as_object_mut().map(|o| o.remove("eventId"));
        let a = decode_value(&without).expect("accepted");
        let b = decode_value(&with).expect("accepted");
        assert_eq!(
            (a.service.as_str(), b.service.as_str()),
            ("unknown", "stock-service")
        );
        assert_eq!(a.event_id, b.event_id);
    }

    #[test]
    fn decode_legacy_is_the_legacy_branch_of_decode() {
        let legacy = legacy_from_the_earlier_sdk(json!({"producerService": "stock-service"}));
        let obj = legacy.as_object().expect("an object");
        assert_eq!(
            decode_legacy(obj, now()).expect("accepted"),
            decode_value(&legacy).expect("accepted")
        );
    }

    #[test]
    fn avro_rejections_have_their_own_reason_codes() {
        for (why, reason) in [
            (AvroRejection::UnknownSchema, "avro_unknown_schema"),
            (AvroRejection::SchemaMismatch, "avro_schema_mismatch"),
            (AvroRejection::Malformed, "avro_malformed"),
        ] {
            let e = ContractError::avro(why, "detail");
            assert_eq!((e.reason(), e.field()), (reason, None));
        }
    }

    #[test]
    fn legacy_with_bad_status_or_metadata_is_rejected() {
        let legacy = json!({
            "sagaId": "l", "sagaType": "T", "step": "S", "status": "WEIRD",
            "eventTimestamp": 1_763_726_400_000_i64
        });
        assert_eq!(reason_of(legacy), ("invalid_value", Some("status")));
        let legacy = json!({
            "sagaId": "l", "sagaType": "T", "step": "S", "status": "STARTED",
            "eventTimestamp": 1_763_726_400_000_i64, "metadata": "[1,2]"
        });
        assert_eq!(reason_of(legacy), ("invalid_value", Some("metadata")));
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use serde_json::json;

    const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/event.schema.json");
    const REGENERATE: &str =
        "UPDATE_SCHEMA=1 cargo test -p saga-tracker-sdk --features schema json_schema";

    fn committed() -> Value {
        let text = std::fs::read_to_string(SCHEMA_PATH)
            .unwrap_or_else(|e| panic!("cannot read {SCHEMA_PATH} ({e}); run `{REGENERATE}`"));
        serde_json::from_str(&text).expect("docs/event.schema.json is JSON")
    }

    /// Runs without the `schema` feature too: the committed schema names exactly the fields a
    /// fully populated event serializes, and requires exactly the non-optional ones.
    #[test]
    fn json_schema_names_every_serialized_field() {
        let full = SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "e".into(),
            saga_id: "s".into(),
            saga_type: "T".into(),
            step: "A".into(),
            step_status: StepStatus::Failed,
            saga_status: Some(SagaStatus::Failed),
            occurred_at: Utc::now(),
            service: "svc".into(),
            sequence: Some(1),
            business_key: Some("k".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            span_id: Some("00f067aa0ba902b7".into()),
            error: Some(StepError {
                code: "C".into(),
                message: "m".into(),
            }),
            metadata: Some(Map::from_iter([("k".to_owned(), json!(1))])),
        };
        let Value::Object(wire) = serde_json::to_value(&full).expect("serializes") else {
            panic!("an event serializes to an object")
        };
        let schema = committed();
        let mut in_schema: Vec<&str> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut on_wire: Vec<&str> = wire.keys().map(String::as_str).collect();
        in_schema.sort_unstable();
        on_wire.sort_unstable();
        assert_eq!(in_schema, on_wire, "schema drifted; run `{REGENERATE}`");
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        required.sort_unstable();
        assert_eq!(
            required,
            [
                "eventId",
                "occurredAt",
                "sagaId",
                "sagaType",
                "schemaVersion",
                "service",
                "step",
                "stepStatus"
            ],
            "schema drifted; run `{REGENERATE}`"
        );
    }

    /// The committed `docs/event.schema.json` is what the Rust types generate today.
    #[cfg(feature = "schema")]
    #[test]
    fn json_schema_is_up_to_date() {
        let mut generated =
            serde_json::to_string_pretty(&json_schema()).expect("a schema serializes");
        generated.push('\n');
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(SCHEMA_PATH, &generated).expect("write docs/event.schema.json");
            return;
        }
        let committed = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/event.schema.json is out of date with sdk/src/contract.rs; regenerate it \
             with `{REGENERATE}` and commit the result"
        );
    }
}
