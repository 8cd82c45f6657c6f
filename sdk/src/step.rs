//! [`Step`]: one step event to record, before it gets its id, time and service.
//!
//! A `Step` is plain data with `with_*` setters; [`Step::into_event`] turns it into a validated
//! [`SagaEvent`]. Nothing here talks to Kafka.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::contract::{
    ContractError, SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION,
};
use crate::error::Error;
use crate::trace::{TraceParent, SAMPLED};

/// One step event to record. Build it with [`Step::new`] (or
/// [`SagaContext::step`](crate::SagaContext::step)) and the `with_*` setters.
///
/// ```
/// use saga_tracker_sdk::Step;
/// use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
///
/// let step = Step::new("order-8812", "ORDER_CREATION", "PAYMENT_CAPTURED", StepStatus::Failed)
///     .with_saga_status(SagaStatus::Failed)
///     .with_error("INSUFFICIENT_FUNDS", "card declined")
///     .with_business_key("8812")
///     .with_metadata_entry("amount", 129.90);
/// let event = step.into_event("payment-service")?;
/// assert_eq!(event.saga_id, "order-8812");
/// # Ok::<(), saga_tracker_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Step {
    saga_id: String,
    saga_type: String,
    step: String,
    step_status: StepStatus,
    saga_status: Option<SagaStatus>,
    sequence: Option<i64>,
    business_key: Option<String>,
    error: Option<StepError>,
    metadata: Option<Map<String, Value>>,
    occurred_at: Option<DateTime<Utc>>,
    /// Ids given by the caller; they win over the ambient OpenTelemetry context.
    trace: Option<ExplicitTrace>,
    /// A problem found by a setter that cannot return an error (metadata that is not an
    /// object); reported by [`Step::into_event`] so the builder chain stays infallible.
    problem: Option<ContractError>,
}

#[derive(Debug, Clone)]
struct ExplicitTrace {
    trace_id: String,
    span_id: String,
    flags: u8,
}

impl Step {
    /// A step event for `saga_id`.
    pub fn new(
        saga_id: impl Into<String>,
        saga_type: impl Into<String>,
        step: impl Into<String>,
        step_status: StepStatus,
    ) -> Self {
        Self {
            saga_id: saga_id.into(),
            saga_type: saga_type.into(),
            step: step.into(),
            step_status,
            saga_status: None,
            sequence: None,
            business_key: None,
            error: None,
            metadata: None,
            occurred_at: None,
            trace: None,
            problem: None,
        }
    }

    /// Also report the saga-level transition.
    pub fn with_saga_status(mut self, status: SagaStatus) -> Self {
        self.saga_status = Some(status);
        self
    }

    /// Per-saga order hint.
    pub fn with_sequence(mut self, sequence: i64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// Business identifier (order number, …).
    pub fn with_business_key(mut self, key: impl Into<String>) -> Self {
        self.business_key = Some(key.into());
        self
    }

    /// Failure detail: a short machine-readable code and a human-readable message.
    pub fn with_error(mut self, code: impl Into<String>, message: impl Into<String>) -> Self {
        self.error = Some(StepError {
            code: code.into(),
            message: message.into(),
        });
        self
    }

    /// Searchable metadata (at most 16 KiB serialized), replacing any set before.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Metadata as a JSON value, e.g. from `serde_json::json!({..})`. It must be an object;
    /// anything else makes [`Step::into_event`] fail with `invalid_value (metadata)`.
    pub fn with_metadata_value(mut self, metadata: Value) -> Self {
        match metadata {
            Value::Object(m) => self.metadata = Some(m),
            Value::Null => self.metadata = None,
            other => {
                self.problem = Some(ContractError::invalid(
                    "metadata",
                    format!(
                        "`metadata` must be a JSON object, got {}",
                        json_kind_of(&other)
                    ),
                ))
            }
        }
        self
    }

    /// Adds one metadata entry, keeping the others.
    pub fn with_metadata_entry(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata
            .get_or_insert_with(Map::new)
            .insert(key.into(), value.into());
        self
    }

    /// Override the event time (defaults to now). Useful for back-filling.
    pub fn at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(occurred_at);
        self
    }

    /// Sets W3C trace and span ids (32 and 16 hex digits), e.g. from a tracer the SDK does not
    /// know. They win over the OpenTelemetry context; malformed ids fail validation
    /// (`invalid_value`), all-zero ids are dropped. The `traceparent` header sent with them
    /// is marked sampled. With the `opentelemetry` feature and a tracer provider installed,
    /// [`crate::SagaTracker::record`] makes its producer span a child of these ids, and the
    /// event's `spanId` and header name that span (the trace id stays yours).
    pub fn with_trace_ids(
        mut self,
        trace_id: impl Into<String>,
        span_id: impl Into<String>,
    ) -> Self {
        self.trace = Some(ExplicitTrace {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            flags: SAMPLED,
        });
        self
    }

    /// Takes trace and span ids (and flags) from a W3C `traceparent` header value, e.g. the
    /// one on the incoming request. An invalid header is ignored, as W3C Trace Context asks
    /// of receivers: correlation is best effort and never fails a recording.
    pub fn with_traceparent(mut self, traceparent: &str) -> Self {
        if let Some(t) = TraceParent::parse(traceparent) {
            self.trace = Some(ExplicitTrace {
                trace_id: t.trace_id,
                span_id: t.span_id,
                flags: t.flags,
            });
        }
        self
    }

    /// Takes the ids from an explicit OpenTelemetry context instead of the current one (an
    /// invalid span context is ignored).
    #[cfg(feature = "opentelemetry")]
    pub fn with_otel_context(mut self, cx: &opentelemetry::Context) -> Self {
        if let Some(t) = TraceParent::from_otel(cx) {
            self.trace = Some(ExplicitTrace {
                trace_id: t.trace_id,
                span_id: t.span_id,
                flags: t.flags,
            });
        }
        self
    }

    /// The saga this step belongs to.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Builds the contract event for `service`, with a fresh UUIDv7 id, and validates it.
    ///
    /// Trace ids set on the step are used; otherwise, with the `opentelemetry` feature, those
    /// of the current OpenTelemetry span.
    pub fn into_event(self, service: &str) -> Result<SagaEvent, Error> {
        self.into_parts(service).map(|(event, _)| event)
    }

    /// [`Step::into_event`] plus the `traceparent` to send with the event, if any.
    pub(crate) fn into_parts(
        self,
        service: &str,
    ) -> Result<(SagaEvent, Option<TraceParent>), Error> {
        if let Some(problem) = self.problem {
            return Err(problem.into());
        }
        let (trace_id, span_id, flags) = match self.trace {
            Some(t) => (Some(t.trace_id), Some(t.span_id), t.flags),
            None => match TraceParent::current() {
                Some(t) => (Some(t.trace_id), Some(t.span_id), t.flags),
                None => (None, None, SAMPLED),
            },
        };
        let now = Utc::now();
        let event = SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: new_event_id(),
            saga_id: self.saga_id,
            saga_type: self.saga_type,
            step: self.step,
            step_status: self.step_status,
            saga_status: self.saga_status,
            occurred_at: self.occurred_at.unwrap_or(now),
            service: service.to_owned(),
            sequence: self.sequence,
            business_key: self.business_key,
            trace_id,
            span_id,
            error: self.error,
            metadata: self.metadata,
        }
        .validate(now)?;
        // Validation drops all-zero ids; only a complete, valid pair makes a header.
        let traceparent = match (&event.trace_id, &event.span_id) {
            (Some(t), Some(s)) => TraceParent::from_ids(t, s, flags),
            _ => None,
        };
        Ok((event, traceparent))
    }
}

/// A fresh UUIDv7 in its hyphenated lower-case form, formatted on the stack and allocated once.
fn new_event_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

fn json_kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::MAX_METADATA_BYTES;
    use serde_json::json;

    fn step() -> Step {
        Step::new("s-1", "ORDER", "A", StepStatus::Started)
    }

    #[test]
    fn steps_get_a_uuid_v7_and_are_validated() {
        let e = step().into_event("svc").expect("valid");
        let id = Uuid::parse_str(&e.event_id).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        let bad = Step::new("s-1", "lower", "A", StepStatus::Started).into_event("svc");
        assert!(matches!(bad, Err(Error::Invalid(_))));
    }

    #[test]
    fn each_event_gets_a_fresh_id() {
        let a = step().into_event("svc").expect("valid");
        let b = step().into_event("svc").expect("valid");
        assert_ne!(a.event_id, b.event_id);
    }

    #[test]
    fn oversize_metadata_is_rejected_with_the_contract_reason() {
        let e = step()
            .with_metadata_entry("blob", "x".repeat(MAX_METADATA_BYTES))
            .into_event("svc")
            .expect_err("too large");
        let Error::Invalid(c) = e else {
            panic!("expected Invalid, got {e:?}")
        };
        assert_eq!(c.reason(), "metadata_too_large");
        assert_eq!(c.field(), Some("metadata"));
        assert!(c.to_string().contains("16384"), "{c}");
    }

    #[test]
    fn metadata_must_be_an_object() {
        let e = step()
            .with_metadata_value(json!([1, 2]))
            .into_event("svc")
            .expect_err("array");
        let Error::Invalid(c) = e else {
            panic!("expected Invalid, got {e:?}")
        };
        assert_eq!((c.reason(), c.field()), ("invalid_value", Some("metadata")));
        let ok = step()
            .with_metadata_value(json!({"a": 1}))
            .with_metadata_entry("b", "two")
            .into_event("svc")
            .expect("object");
        assert_eq!(ok.metadata.map(|m| m.len()), Some(2));
    }

    #[test]
    fn explicit_trace_ids_are_validated_and_produce_a_traceparent() {
        let (e, tp) = step()
            .with_trace_ids("4BF92F3577B34DA6A3CE929D0E0E4736", "00f067aa0ba902b7")
            .into_parts("svc")
            .expect("valid");
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            tp.map(|t| t.header_value()).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );

        let bad = step()
            .with_trace_ids("xyz", "00f067aa0ba902b7")
            .into_event("svc");
        assert!(matches!(bad, Err(Error::Invalid(c)) if c.field() == Some("traceId")));

        let (e, tp) = step()
            .with_trace_ids("0".repeat(32), "0".repeat(16))
            .into_parts("svc")
            .expect("zeros are dropped, not rejected");
        assert_eq!((e.trace_id, e.span_id, tp), (None, None, None));
    }

    proptest::proptest! {
        /// Arbitrary input never panics: it becomes an event or an `Invalid` error.
        #[test]
        fn any_input_is_an_event_or_an_invalid_error(
            saga_id in ".{0,140}",
            saga_type in ".{0,70}",
            name in ".{0,140}",
            code in ".{0,140}",
            message in ".{0,200}",
            trace in ".{0,40}",
            traceparent in ".{0,60}",
            meta_key in ".{0,20}",
            meta_value in ".{0,50}",
        ) {
            let result = Step::new(saga_id, saga_type, name, StepStatus::Failed)
                .with_error(code, message)
                .with_traceparent(&traceparent)
                .with_trace_ids(trace, "00f067aa0ba902b7")
                .with_metadata_entry(meta_key, meta_value)
                .into_event("svc");
            match result {
                Ok(e) => {
                    let again = crate::contract::decode(&e.to_json(), Utc::now());
                    proptest::prop_assert_eq!(again.ok(), Some(e));
                }
                Err(Error::Invalid(_)) => {}
                Err(other) => proptest::prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    #[test]
    fn a_traceparent_keeps_its_flags_and_a_bad_one_is_ignored() {
        let (e, tp) = step()
            .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .into_parts("svc")
            .expect("valid");
        assert_eq!(e.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(tp.map(|t| t.flags), Some(0));
        let (e, tp) = step()
            .with_traceparent("not a header")
            .into_parts("svc")
            .expect("ignored");
        assert_eq!((e.trace_id, tp), (None, None));
    }
}
