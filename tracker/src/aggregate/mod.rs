//! The pure core: a saga's events in, the saga's derived state out.
//!
//! Everything here is plain Rust over owned data — no I/O, no async, no sqlx, no rdkafka — so
//! the aggregation rules of the brief can be property-tested exhaustively. The store calls
//! [`fold`] with *all* stored events of a saga whenever a batch touches it, which is what
//! makes late and out-of-order delivery harmless: the result depends only on the set of
//! events, never on the order they arrived in or how often.
//!
//! Refolding every event on every batch costs a saga with many events dearly, so [`resume`]
//! continues a stored fold with new events when that is provably the same — they all sort
//! after the last folded one — and says `None` (refold) otherwise; see `resume.rs`.
//!
//! This module must not import `ingest`, `store` or `api`.

mod fold;
mod resume;
#[cfg(test)]
mod test_support;
mod timeline;

pub use fold::{canonical_order, fold, SagaState, UNSPECIFIED_ERROR_CODE};
pub use resume::{fold_with_state, resume, step_facts, FoldState, StepFacts, FOLD_STATE_VERSION};
pub use timeline::{timeline, StepCompensation, StepTimeline};

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::SagaEvent;

/// One stored event: the validated contract event plus when the tracker received it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The event as validated by the contract.
    pub event: SagaEvent,
    /// When the tracker read it from Kafka (tracker clock; informational only, never used to
    /// order events).
    pub received_at: DateTime<Utc>,
}
