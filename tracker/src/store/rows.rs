//! Row types shared by the write path and the read queries, and their conversion back into
//! contract events for the pure aggregate.

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use serde_json::Value;

use crate::aggregate::EventRecord;

/// The columns of `saga_events` needed to rebuild an event. Select them with
/// [`EVENT_COLUMNS`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: String,
    pub saga_id: String,
    pub saga_type: String,
    pub step: String,
    pub step_status: String,
    pub saga_status: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub service: String,
    pub sequence: Option<i64>,
    pub business_key: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub metadata: Option<Value>,
    pub kafka_topic: Option<String>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
}

/// Column list matching [`EventRow`].
pub const EVENT_COLUMNS: &str = "event_id, saga_id, saga_type, step, step_status, saga_status, \
     occurred_at, received_at, service, sequence, business_key, trace_id, span_id, error_code, \
     error_message, metadata, kafka_topic, kafka_partition, kafka_offset";

impl EventRow {
    /// Rebuilds the stored event. Fails only if the row holds a status this build does not
    /// know, which would mean the table was written by something other than the tracker.
    pub fn to_record(&self) -> Result<EventRecord, sqlx::Error> {
        let bad = |what: &str, v: &str| {
            sqlx::Error::Decode(format!("saga_events.{what} holds unknown value {v:?}").into())
        };
        let step_status = StepStatus::parse(&self.step_status)
            .ok_or_else(|| bad("step_status", &self.step_status))?;
        let saga_status = match &self.saga_status {
            None => None,
            Some(s) => Some(SagaStatus::parse(s).ok_or_else(|| bad("saga_status", s))?),
        };
        let error = match (&self.error_code, &self.error_message) {
            (None, None) => None,
            (code, message) => Some(StepError {
                code: code.clone().unwrap_or_default(),
                message: message.clone().unwrap_or_default(),
            }),
        };
        let metadata = match &self.metadata {
            Some(Value::Object(m)) => Some(m.clone()),
            _ => None,
        };
        Ok(EventRecord {
            event: SagaEvent {
                schema_version: SCHEMA_VERSION,
                event_id: self.event_id.clone(),
                saga_id: self.saga_id.clone(),
                saga_type: self.saga_type.clone(),
                step: self.step.clone(),
                step_status,
                saga_status,
                occurred_at: self.occurred_at,
                service: self.service.clone(),
                sequence: self.sequence,
                business_key: self.business_key.clone(),
                trace_id: self.trace_id.clone(),
                span_id: self.span_id.clone(),
                error,
                metadata,
            },
            received_at: self.received_at,
        })
    }
}
