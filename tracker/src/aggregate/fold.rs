//! Events → [`SagaState`]: ordering, the status state machine and derived fields.

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{SagaStatus, StepError};
use serde_json::{Map, Value};

use super::EventRecord;

/// Derived state of one saga (one row of the `sagas` table).
#[derive(Debug, Clone, PartialEq)]
pub struct SagaState {
    pub saga_id: String,
    pub saga_type: String,
    pub status: SagaStatus,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub current_step: String,
    pub failed_step: Option<String>,
    pub failure: Option<StepError>,
    pub compensation_started_at: Option<DateTime<Utc>>,
    pub compensation_ended_at: Option<DateTime<Utc>>,
    pub compensation_duration_ms: Option<i64>,
    pub event_count: i32,
    pub late_event_count: i32,
    pub business_key: Option<String>,
    pub trace_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub services: Vec<String>,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
}

/// Deduplicates by `eventId` and sorts into saga order: `sequence` (absent first), then
/// `occurredAt`, then `eventId`.
pub fn canonical_order(events: &[EventRecord]) -> Vec<&EventRecord> {
    todo!()
}

/// Folds a saga's events into its state. `None` for an empty slice.
pub fn fold(events: &[EventRecord]) -> Option<SagaState> {
    todo!()
}
