//! Events → per-step timeline for the detail view.

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{StepError, StepStatus};

use super::EventRecord;

/// Compensation of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCompensation {
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub failed: bool,
}

/// One step of a saga as seen across its events.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTimeline {
    pub step: String,
    pub status: StepStatus,
    pub service: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<StepError>,
    pub compensation: Option<StepCompensation>,
    pub event_count: usize,
    pub first_event_at: DateTime<Utc>,
}

/// The steps of a saga in the order they first appear in saga order.
pub fn timeline(events: &[EventRecord]) -> Vec<StepTimeline> {
    todo!()
}
