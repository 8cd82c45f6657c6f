//! Events → [`SagaState`]: deduplication, saga order, the status state machine and the
//! derived fields.
//!
//! [`fold`] is a pure function of the *set* of a saga's events: the same events in any order,
//! any number of times, give the same [`SagaState`]. The rules below are the product's
//! contract; the tests at the bottom of this file (unit and property) pin them down.
//!
//! # 1. Deduplication
//!
//! Events are identified by `eventId`. When several records share an `eventId`, one is kept:
//! the one received first (smallest `received_at`), ties broken by the smallest serialized v1
//! JSON of the event. Normally the copies are byte-identical redeliveries; the tie-break only
//! matters for an emitter that reused an id for different content, and it makes the choice
//! independent of delivery order.
//!
//! # 2. Saga order
//!
//! The kept events are sorted by `sequence` (events without one first), then `occurredAt`,
//! then `eventId`. Ids are unique after step 1, so this is a total order — [`canonical_order`]
//! — and every "first", "last" and "later" below refers to it.
//!
//! # 3. Status state machine
//!
//! Each event *proposes* a saga status:
//!
//! - **explicit** — its `sagaStatus`, when set;
//! - **inferred** from `stepStatus` otherwise: `STARTED`/`SUCCEEDED` → `IN_PROGRESS`,
//!   `FAILED` → `FAILED`, `COMPENSATING`/`COMPENSATED` → `COMPENSATING`. One exception: the
//!   very first event of the saga, when its step status is `STARTED`, infers `STARTED` — a
//!   saga of which only the opening step has begun has `STARTED`, and anything after that is
//!   `IN_PROGRESS`. Inference never proposes `COMPLETED` or `COMPENSATED`: only an emitter
//!   knows that the whole saga is over.
//!
//! The first event's proposal, explicit or inferred, becomes the initial status. Each later
//! proposal is then applied to the current status with this table (rank, used by inferred
//! proposals: `STARTED` < `IN_PROGRESS` < `FAILED` < `COMPENSATING`):
//!
//! | current status            | inferred proposal `p`        | explicit proposal `p`                                   |
//! |---------------------------|------------------------------|---------------------------------------------------------|
//! | `STARTED`                 | `p` if rank(`p`) > rank(now) | any `p`                                                  |
//! | `IN_PROGRESS`             | `p` if rank(`p`) > rank(now) | any `p` except `STARTED` (ignored: no step backwards)   |
//! | `FAILED`, set by inference | `COMPENSATING`              | `IN_PROGRESS`, `COMPLETED` (a retry recovered the saga), `FAILED` (confirms it, now explicit), `COMPENSATING`, `COMPENSATED` |
//! | `FAILED`, set explicitly  | `COMPENSATING`               | `COMPENSATING`, `COMPENSATED`                           |
//! | `COMPENSATING`            | — (nothing ranks higher)     | `COMPENSATED`, `FAILED` (compensation failed; explicit) |
//! | `COMPLETED`, `COMPENSATED`| — absorbing                  | — absorbing                                             |
//!
//! A proposal the table does not allow is ignored; the event still counts everywhere else. A
//! `FAILED` reached from `COMPENSATING` is explicit, so only compensation may follow it.
//!
//! An event that comes after the saga reached `COMPLETED` or `COMPENSATED` is **late**: it is
//! kept (timeline, metadata, services, counts, `updated_at`) and counted in
//! [`SagaState::late_event_count`], but changes neither the status nor any field derived from
//! the status machine (`current_step`, `ended_at`, failure, compensation). A late event never
//! reopens a saga.
//!
//! # 4. Derived fields
//!
//! See the field docs of [`SagaState`]. Durations are whole milliseconds and never negative:
//! when clock skew between emitters puts an end before its start, the duration is 0.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus};
use serde_json::{Map, Value};

use super::EventRecord;

/// The `error.code` reported for a failed step whose event carried no `error`.
pub const UNSPECIFIED_ERROR_CODE: &str = "UNSPECIFIED";

/// Derived state of one saga (one row of the `sagas` table).
#[derive(Debug, Clone, PartialEq)]
pub struct SagaState {
    /// The saga's id (the Kafka key); the same on every event.
    pub saga_id: String,
    /// `sagaType` of the first event in saga order; groups sagas in search, stats and
    /// stuck thresholds.
    pub saga_type: String,
    /// Result of the status state machine (module docs, rule 3).
    pub status: SagaStatus,
    /// Earliest `occurredAt` of any event: when the saga began, by the emitters' clocks.
    pub started_at: DateTime<Utc>,
    /// Latest `occurredAt` of any event, late ones included: what stuck detection compares
    /// against.
    pub updated_at: DateTime<Utc>,
    /// `occurredAt` of the event that moved the saga into its current status, when that
    /// status is `COMPLETED`, `FAILED` or `COMPENSATED`; `None` while the saga runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended_at − started_at` in milliseconds (at least 0).
    pub duration_ms: Option<i64>,
    /// Step of the last non-late event: where the saga is, or where it stopped.
    pub current_step: String,
    /// Step of the first non-late event whose step status is `FAILED`. Kept even when the
    /// saga later recovered (a retry), because "which step fails most" counts it.
    pub failed_step: Option<String>,
    /// `error` of that same event; `{code: "UNSPECIFIED", message: ""}` when it had none, so
    /// `failure` is `Some` exactly when `failed_step` is.
    pub failure: Option<StepError>,
    /// `occurredAt` of the first non-late event with step status `COMPENSATING` or
    /// `COMPENSATED`, or saga status `COMPENSATING` or `COMPENSATED`.
    pub compensation_started_at: Option<DateTime<Utc>>,
    /// `occurredAt` of the event that moved the saga to `COMPENSATED`.
    pub compensation_ended_at: Option<DateTime<Utc>>,
    /// `compensation_ended_at − compensation_started_at` in milliseconds (at least 0).
    pub compensation_duration_ms: Option<i64>,
    /// Number of distinct `eventId`s (saturates at `i32::MAX`).
    pub event_count: i32,
    /// How many of those arrived after the saga was already `COMPLETED`/`COMPENSATED`: a
    /// signal of emitters that disagree about the end of a saga.
    pub late_event_count: i32,
    /// First `businessKey` in saga order; the handle people search by ("order 8812").
    pub business_key: Option<String>,
    /// First `traceId` in saga order; links the saga to its distributed trace.
    pub trace_id: Option<String>,
    /// Shallow merge of every event's `metadata` in saga order, later keys winning.
    pub metadata: Map<String, Value>,
    /// Sorted, distinct `service` of every event: who took part.
    pub services: Vec<String>,
    /// Earliest tracker receive time of a kept event.
    pub first_received_at: DateTime<Utc>,
    /// Latest tracker receive time of a kept event. A redelivered duplicate does not move
    /// it, because deduplication keeps the first-received copy.
    pub last_received_at: DateTime<Utc>,
}

/// Deduplicates by `eventId` and sorts into saga order: `sequence` (absent first), then
/// `occurredAt`, then `eventId` (module docs, rules 1 and 2).
pub fn canonical_order(events: &[EventRecord]) -> Vec<&EventRecord> {
    let mut kept: BTreeMap<&str, &EventRecord> = BTreeMap::new();
    for record in events {
        match kept.entry(record.event.event_id.as_str()) {
            Entry::Vacant(slot) => {
                slot.insert(record);
            }
            Entry::Occupied(mut slot) => {
                if preferred_copy(record, slot.get()) {
                    slot.insert(record);
                }
            }
        }
    }
    let mut ordered: Vec<&EventRecord> = kept.into_values().collect();
    // `Option`'s order puts `None` before every `Some`, which is exactly rule 2.
    ordered.sort_by(|a, b| key_of(a).cmp(&key_of(b)));
    ordered
}

/// Folds a saga's events into its state. `None` for an empty slice.
pub fn fold(events: &[EventRecord]) -> Option<SagaState> {
    let ordered = canonical_order(events);
    let (first, rest) = ordered.split_first()?;
    let mut folding = Folding::start(first);
    for record in rest {
        folding.push(record);
    }
    Some(folding.finish().0)
}

/// The canonical key of an event (rule 2): `(sequence, occurredAt, eventId)`.
pub(super) type Key<'a> = (Option<i64>, DateTime<Utc>, &'a str);

/// The key [`canonical_order`] sorts by.
pub(super) fn key_of(record: &EventRecord) -> Key<'_> {
    (
        record.event.sequence,
        record.event.occurred_at,
        record.event.event_id.as_str(),
    )
}

/// What the fold knows beyond [`SagaState`] after its last event: the part of
/// [`Folding`] that `resume` needs back to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail<'a> {
    /// The state machine's `failed_explicitly` (rule 3's table).
    pub(super) failed_explicitly: bool,
    /// The key of the last event folded, the greatest in saga order.
    pub(super) last: Key<'a>,
}

/// The fold in progress: a left fold over saga order, one [`Folding::push`] per event.
///
/// [`fold`] starts it at the first event; [`super::resume`] rebuilds it from a stored
/// [`SagaState`] and [`Tail`] and pushes the events that sort after the last one. Both
/// therefore run the very same step, which is what lets the property tests say "resuming
/// equals refolding" instead of comparing two implementations of the rules.
#[derive(Debug)]
pub(super) struct Folding<'a> {
    saga_id: &'a str,
    saga_type: &'a str,
    machine: Machine,
    /// When the current status was entered. Only observable through `ended_at` and
    /// `compensation_ended_at`, i.e. while the status is `COMPLETED`, `FAILED` or
    /// `COMPENSATED` — which is why a resumed fold can take it from `ended_at`.
    entered_at: DateTime<Utc>,
    current_step: &'a str,
    failed: Option<Failure<'a>>,
    compensation_started_at: Option<DateTime<Utc>>,
    event_count: usize,
    late_events: usize,
    business_key: Option<&'a str>,
    trace_id: Option<&'a str>,
    metadata: Map<String, Value>,
    services: BTreeSet<&'a str>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    first_received_at: DateTime<Utc>,
    last_received_at: DateTime<Utc>,
    last: Key<'a>,
}

/// The first failed step: still an event while folding, or already a stored row's
/// `failed_step` and `failure` when resuming.
#[derive(Debug, Clone, Copy)]
enum Failure<'a> {
    Event(&'a SagaEvent),
    Stored(&'a str, &'a StepError),
}

impl<'a> Folding<'a> {
    /// The fold after the first event of the saga.
    pub(super) fn start(first: &'a EventRecord) -> Self {
        let event = &first.event;
        let mut folding = Self {
            saga_id: &event.saga_id,
            saga_type: &event.saga_type,
            machine: Machine::initial(Proposal::of(event, true)),
            entered_at: event.occurred_at,
            current_step: &event.step,
            failed: None,
            compensation_started_at: None,
            event_count: 0,
            late_events: 0,
            business_key: None,
            trace_id: None,
            metadata: Map::new(),
            services: BTreeSet::new(),
            started_at: event.occurred_at,
            updated_at: event.occurred_at,
            first_received_at: first.received_at,
            last_received_at: first.received_at,
            last: key_of(first),
        };
        folding.record(first);
        if event.step_status == StepStatus::Failed {
            folding.failed = Some(Failure::Event(event));
        }
        if begins_compensation(event) {
            folding.compensation_started_at = Some(event.occurred_at);
        }
        folding
    }

    /// The fold as it stood when it produced `state` and `tail`. `None` when the two
    /// cannot belong together (a negative count, `failed_explicitly` without `FAILED`).
    pub(super) fn resume(state: &'a SagaState, tail: Tail<'a>) -> Option<Self> {
        if tail.failed_explicitly && state.status != SagaStatus::Failed {
            return None;
        }
        let failed = match (&state.failed_step, &state.failure) {
            (Some(step), Some(failure)) => Some(Failure::Stored(step, failure)),
            (None, None) => None,
            _ => return None,
        };
        Some(Self {
            saga_id: &state.saga_id,
            saga_type: &state.saga_type,
            machine: Machine {
                status: state.status,
                failed_explicitly: tail.failed_explicitly,
            },
            // Unobservable unless the status is one that sets `ended_at` (see the field).
            entered_at: state.ended_at.unwrap_or(state.updated_at),
            current_step: &state.current_step,
            failed,
            compensation_started_at: state.compensation_started_at,
            event_count: usize::try_from(state.event_count).ok()?,
            late_events: usize::try_from(state.late_event_count).ok()?,
            business_key: state.business_key.as_deref(),
            trace_id: state.trace_id.as_deref(),
            metadata: state.metadata.clone(),
            services: state.services.iter().map(String::as_str).collect(),
            started_at: state.started_at,
            updated_at: state.updated_at,
            first_received_at: state.first_received_at,
            last_received_at: state.last_received_at,
            last: tail.last,
        })
    }

    /// Folds in the next event in saga order: the loop body of rule 3. The caller
    /// guarantees `record` sorts after every event pushed so far.
    pub(super) fn push(&mut self, record: &'a EventRecord) {
        let event = &record.event;
        self.record(record);
        self.last = key_of(record);
        if self.machine.status.is_absorbing() {
            self.late_events += 1;
            return;
        }
        self.current_step = &event.step;
        if self.failed.is_none() && event.step_status == StepStatus::Failed {
            self.failed = Some(Failure::Event(event));
        }
        if self.compensation_started_at.is_none() && begins_compensation(event) {
            self.compensation_started_at = Some(event.occurred_at);
        }
        if let Some(next) = self.machine.apply(Proposal::of(event, false)) {
            if next.status != self.machine.status {
                self.entered_at = event.occurred_at;
            }
            self.machine = next;
        }
    }

    /// What every event contributes, late or not.
    fn record(&mut self, record: &'a EventRecord) {
        let event = &record.event;
        self.event_count += 1;
        if let Some(m) = &event.metadata {
            self.metadata
                .extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.services.insert(&event.service);
        if self.business_key.is_none() {
            self.business_key = event.business_key.as_deref();
        }
        if self.trace_id.is_none() {
            self.trace_id = event.trace_id.as_deref();
        }
        self.started_at = self.started_at.min(event.occurred_at);
        self.updated_at = self.updated_at.max(event.occurred_at);
        self.first_received_at = self.first_received_at.min(record.received_at);
        self.last_received_at = self.last_received_at.max(record.received_at);
    }

    /// The saga's state after the events pushed so far, and what it takes to go on.
    pub(super) fn finish(self) -> (SagaState, Tail<'a>) {
        let status = self.machine.status;
        let started_at = self.started_at;
        let ended_at = matches!(
            status,
            SagaStatus::Completed | SagaStatus::Failed | SagaStatus::Compensated
        )
        .then_some(self.entered_at);
        let compensation_ended_at = (status == SagaStatus::Compensated).then_some(self.entered_at);
        let (failed_step, failure) = match self.failed {
            None => (None, None),
            Some(Failure::Event(e)) => (Some(e.step.clone()), Some(failure_of(e))),
            Some(Failure::Stored(step, failure)) => (Some(step.to_owned()), Some(failure.clone())),
        };
        let state = SagaState {
            saga_id: self.saga_id.to_owned(),
            saga_type: self.saga_type.to_owned(),
            status,
            started_at,
            updated_at: self.updated_at,
            ended_at,
            duration_ms: ended_at.map(|end| elapsed_ms(started_at, end)),
            current_step: self.current_step.to_owned(),
            failed_step,
            failure,
            compensation_started_at: self.compensation_started_at,
            compensation_ended_at,
            compensation_duration_ms: self
                .compensation_started_at
                .zip(compensation_ended_at)
                .map(|(start, end)| elapsed_ms(start, end)),
            event_count: saturating_i32(self.event_count),
            late_event_count: saturating_i32(self.late_events),
            business_key: self.business_key.map(str::to_owned),
            trace_id: self.trace_id.map(str::to_owned),
            metadata: self.metadata,
            services: self.services.into_iter().map(str::to_owned).collect(),
            first_received_at: self.first_received_at,
            last_received_at: self.last_received_at,
        };
        let tail = Tail {
            failed_explicitly: self.machine.failed_explicitly,
            last: self.last,
        };
        (state, tail)
    }
}

/// Milliseconds from `start` to `end`, clamped at 0 so clock skew between emitters never
/// shows as a negative duration.
pub(super) fn elapsed_ms(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    (end - start).num_milliseconds().max(0)
}

/// The failure reported for a `FAILED` event: its `error`, or an `UNSPECIFIED` one.
pub(super) fn failure_of(event: &SagaEvent) -> StepError {
    event.error.clone().unwrap_or_else(|| StepError {
        code: UNSPECIFIED_ERROR_CODE.to_owned(),
        message: String::new(),
    })
}

/// Whether `candidate` should replace `kept` as the copy of an event id (rule 1): first
/// received wins, then the smaller serialized event.
fn preferred_copy(candidate: &EventRecord, kept: &EventRecord) -> bool {
    candidate
        .received_at
        .cmp(&kept.received_at)
        .then_with(|| candidate.event.to_json().cmp(&kept.event.to_json()))
        .is_lt()
}

fn begins_compensation(event: &SagaEvent) -> bool {
    matches!(
        event.step_status,
        StepStatus::Compensating | StepStatus::Compensated
    ) || matches!(
        event.saga_status,
        Some(SagaStatus::Compensating | SagaStatus::Compensated)
    )
}

fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What one event says about the saga's status (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proposal {
    /// The emitter's `sagaStatus`.
    Explicit(SagaStatus),
    /// Derived from `stepStatus`; never `COMPLETED` or `COMPENSATED`.
    Inferred(SagaStatus),
}

impl Proposal {
    fn of(event: &SagaEvent, is_first_event: bool) -> Self {
        if let Some(status) = event.saga_status {
            return Self::Explicit(status);
        }
        Self::Inferred(match event.step_status {
            StepStatus::Started if is_first_event => SagaStatus::Started,
            StepStatus::Started | StepStatus::Succeeded => SagaStatus::InProgress,
            StepStatus::Failed => SagaStatus::Failed,
            StepStatus::Compensating | StepStatus::Compensated => SagaStatus::Compensating,
        })
    }
}

/// The state machine's state: the status, plus whether a `FAILED` status was stated by an
/// emitter (which forbids recovering from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Machine {
    status: SagaStatus,
    failed_explicitly: bool,
}

impl Machine {
    fn initial(proposal: Proposal) -> Self {
        match proposal {
            Proposal::Explicit(status) => Self::entered(status, true),
            Proposal::Inferred(status) => Self::entered(status, false),
        }
    }

    fn entered(status: SagaStatus, explicit: bool) -> Self {
        Self {
            status,
            failed_explicitly: explicit && status == SagaStatus::Failed,
        }
    }

    /// The transition table of rule 3; `None` when the proposal is ignored.
    fn apply(self, proposal: Proposal) -> Option<Self> {
        use SagaStatus::{Compensated, Compensating, Completed, Failed, InProgress, Started};
        let allowed = match (self.status, proposal) {
            (Completed | Compensated, _) => false,
            (_, Proposal::Inferred(p)) => rank(p) > rank(self.status),
            (Started, Proposal::Explicit(_)) => true,
            (InProgress, Proposal::Explicit(p)) => p != Started,
            (Failed, Proposal::Explicit(Failed | Compensating | Compensated)) => true,
            (Failed, Proposal::Explicit(InProgress | Completed)) => !self.failed_explicitly,
            (Failed, Proposal::Explicit(Started)) => false,
            (Compensating, Proposal::Explicit(p)) => matches!(p, Compensated | Failed),
        };
        allowed.then(|| match proposal {
            Proposal::Explicit(p) => Self::entered(p, true),
            Proposal::Inferred(p) => Self::entered(p, false),
        })
    }
}

/// Order in which inferred proposals may move the status forward. `COMPLETED` and
/// `COMPENSATED` are never inferred and are absorbing, so their rank is never consulted.
fn rank(status: SagaStatus) -> u8 {
    match status {
        SagaStatus::Started => 0,
        SagaStatus::InProgress => 1,
        SagaStatus::Failed => 2,
        SagaStatus::Compensating => 3,
        SagaStatus::Completed | SagaStatus::Compensated => 4,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use saga_tracker_sdk::contract::decode;
    use serde_json::json;

    use super::super::test_support::{
        arb_saga, arb_saga_and_redelivery, ev, permutation_cases, t, Ev,
    };
    use super::*;

    use saga_tracker_sdk::contract::SagaStatus::{
        Compensated, Compensating, Completed, Failed, InProgress, Started,
    };
    use saga_tracker_sdk::contract::StepStatus::{
        Compensated as StepCompensated, Compensating as StepCompensating, Failed as StepFailed,
        Started as StepStarted, Succeeded,
    };

    fn records(events: impl IntoIterator<Item = Ev>) -> Vec<EventRecord> {
        events.into_iter().map(Ev::build).collect()
    }

    fn folded(events: &[EventRecord]) -> SagaState {
        fold(events).expect("a non-empty saga folds")
    }

    fn status_of(events: impl IntoIterator<Item = Ev>) -> SagaStatus {
        folded(&records(events)).status
    }

    fn completed_saga() -> Vec<EventRecord> {
        records([
            ev("e1", "ORDER_CREATED", StepStarted, 0)
                .business_key("8812")
                .metadata(json!({"channel": "web", "amount": 12})),
            ev("e2", "ORDER_CREATED", Succeeded, 1),
            ev("e3", "RESERVE_STOCK", StepStarted, 2).service("stock"),
            ev("e4", "RESERVE_STOCK", Succeeded, 3).service("stock"),
            ev("e5", "CONFIRM", Succeeded, 5)
                .saga(Completed)
                .metadata(json!({"channel": "app", "confirmed": true})),
        ])
    }

    fn compensated_saga() -> Vec<EventRecord> {
        records([
            ev("e1", "RESERVE_STOCK", StepStarted, 0).service("stock"),
            ev("e2", "RESERVE_STOCK", Succeeded, 1).service("stock"),
            ev("e3", "CHARGE_PAYMENT", StepStarted, 2).service("payment"),
            ev("e4", "CHARGE_PAYMENT", StepFailed, 4)
                .service("payment")
                .error("DECLINED", "card declined"),
            ev("e5", "RESERVE_STOCK", StepCompensating, 5).service("stock"),
            ev("e6", "RESERVE_STOCK", StepCompensated, 7)
                .service("stock")
                .saga(Compensated),
        ])
    }

    #[test]
    fn an_empty_event_list_has_no_saga() {
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn a_saga_whose_only_event_is_a_started_step_is_started() {
        assert_eq!(
            status_of([ev("e1", "ORDER_CREATED", StepStarted, 0)]),
            Started
        );
        assert_eq!(
            status_of([
                ev("e1", "ORDER_CREATED", StepStarted, 0),
                ev("e2", "RESERVE_STOCK", StepStarted, 1),
            ]),
            InProgress
        );
        assert_eq!(
            status_of([ev("e1", "ORDER_CREATED", Succeeded, 0)]),
            InProgress
        );
    }

    #[test]
    fn a_saga_whose_steps_all_succeed_is_completed_with_its_duration() {
        let state = folded(&completed_saga());
        assert_eq!(
            state,
            SagaState {
                saga_id: "order-8812".into(),
                saga_type: "ORDER_CREATION".into(),
                status: Completed,
                started_at: t(0),
                updated_at: t(5),
                ended_at: Some(t(5)),
                duration_ms: Some(5000),
                current_step: "CONFIRM".into(),
                failed_step: None,
                failure: None,
                compensation_started_at: None,
                compensation_ended_at: None,
                compensation_duration_ms: None,
                event_count: 5,
                late_event_count: 0,
                business_key: Some("8812".into()),
                trace_id: None,
                metadata: json!({"channel": "app", "amount": 12, "confirmed": true})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                services: vec!["orders".into(), "stock".into()],
                first_received_at: t(1),
                last_received_at: t(6),
            }
        );
    }

    #[test]
    fn a_failed_then_compensated_saga_reports_failure_and_compensation_durations() {
        let events = compensated_saga();

        let failed = folded(&events[..4]);
        assert_eq!(failed.status, Failed);
        assert_eq!(failed.ended_at, Some(t(4)));
        assert_eq!(failed.duration_ms, Some(4000));
        assert_eq!(failed.compensation_started_at, None);

        let compensating = folded(&events[..5]);
        assert_eq!(compensating.status, Compensating);
        assert_eq!(compensating.ended_at, None);
        assert_eq!(compensating.duration_ms, None);
        assert_eq!(compensating.compensation_started_at, Some(t(5)));
        assert_eq!(compensating.compensation_ended_at, None);

        let state = folded(&events);
        assert_eq!(state.status, Compensated);
        assert_eq!(state.ended_at, Some(t(7)));
        assert_eq!(state.duration_ms, Some(7000));
        assert_eq!(state.current_step, "RESERVE_STOCK");
        assert_eq!(state.failed_step.as_deref(), Some("CHARGE_PAYMENT"));
        assert_eq!(
            state.failure,
            Some(StepError {
                code: "DECLINED".into(),
                message: "card declined".into()
            })
        );
        assert_eq!(state.compensation_started_at, Some(t(5)));
        assert_eq!(state.compensation_ended_at, Some(t(7)));
        assert_eq!(state.compensation_duration_ms, Some(2000));
        assert_eq!(state.services, ["payment", "stock"]);
    }

    #[test]
    fn a_failed_step_without_an_error_reports_an_unspecified_failure() {
        let state = folded(&records([ev("e1", "CHARGE_PAYMENT", StepFailed, 0)]));
        assert_eq!(state.status, Failed);
        assert_eq!(
            state.failure,
            Some(StepError {
                code: UNSPECIFIED_ERROR_CODE.into(),
                message: String::new()
            })
        );
    }

    #[test]
    fn an_event_after_completion_is_late_and_does_not_reopen_the_saga() {
        let on_time = folded(&completed_saga());
        let mut events = completed_saga();
        events.extend(records([
            ev("e6", "CHARGE_PAYMENT", StepFailed, 9)
                .service("payment")
                .error("TIMEOUT", "gateway timeout")
                .metadata(json!({"refund": "pending"})),
            ev("e7", "RESERVE_STOCK", StepCompensating, 10)
                .service("stock")
                .saga(Compensating),
        ]));
        let state = folded(&events);

        assert_eq!(state.status, Completed);
        assert_eq!(state.late_event_count, 2);
        assert_eq!(state.event_count, 7);
        assert_eq!(state.ended_at, on_time.ended_at);
        assert_eq!(state.duration_ms, on_time.duration_ms);
        assert_eq!(state.current_step, "CONFIRM");
        assert_eq!(state.failed_step, None);
        assert_eq!(state.failure, None);
        assert_eq!(state.compensation_started_at, None);
        // Late events are still facts: they are kept and visible.
        assert_eq!(state.updated_at, t(10));
        assert_eq!(state.metadata.get("refund"), Some(&json!("pending")));
        assert_eq!(state.services, ["orders", "payment", "stock"]);
    }

    #[test]
    fn an_explicit_status_wins_over_the_inferred_one() {
        // A step failed (inferred FAILED), the emitter retried and says the saga goes on.
        let recovered = folded(&records([
            ev("e1", "CHARGE_PAYMENT", StepStarted, 0),
            ev("e2", "CHARGE_PAYMENT", StepFailed, 1).error("TIMEOUT", "retrying"),
            ev("e3", "CHARGE_PAYMENT", Succeeded, 2).saga(InProgress),
            ev("e4", "CONFIRM", Succeeded, 3).saga(Completed),
        ]));
        assert_eq!(recovered.status, Completed);
        assert_eq!(recovered.ended_at, Some(t(3)));
        // The failure happened and still counts for "which step fails most".
        assert_eq!(recovered.failed_step.as_deref(), Some("CHARGE_PAYMENT"));

        // An emitter may declare the saga over while step events alone would say otherwise.
        assert_eq!(
            status_of([
                ev("e1", "CHARGE_PAYMENT", StepFailed, 0),
                ev("e2", "CHARGE_PAYMENT", StepFailed, 1).saga(Compensated),
            ]),
            Compensated
        );
        // Explicit beats inferred where they conflict, but does not freeze the saga: a step
        // that fails later still fails it.
        assert_eq!(
            status_of([
                ev("e1", "ORDER_CREATED", Succeeded, 0).saga(InProgress),
                ev("e2", "CHARGE_PAYMENT", StepFailed, 1),
            ]),
            Failed
        );
    }

    #[test]
    fn inference_never_moves_the_status_backwards() {
        assert_eq!(
            status_of([
                ev("e1", "CHARGE_PAYMENT", StepFailed, 0),
                ev("e2", "CONFIRM", Succeeded, 1),
                ev("e3", "CONFIRM", StepStarted, 2),
            ]),
            Failed
        );
        assert_eq!(
            status_of([
                ev("e1", "RESERVE_STOCK", StepCompensating, 0),
                ev("e2", "CHARGE_PAYMENT", StepFailed, 1),
                ev("e3", "CONFIRM", Succeeded, 2),
            ]),
            Compensating
        );
    }

    #[test]
    fn an_explicit_failure_can_only_be_followed_by_compensation() {
        let state = folded(&records([
            ev("e1", "CHARGE_PAYMENT", StepFailed, 0).saga(Failed),
            ev("e2", "CHARGE_PAYMENT", Succeeded, 1).saga(InProgress),
            ev("e3", "CONFIRM", Succeeded, 2).saga(Completed),
        ]));
        assert_eq!(state.status, Failed);
        assert_eq!(state.ended_at, Some(t(0)));
        // The ignored proposals are still the saga's latest news.
        assert_eq!(state.current_step, "CONFIRM");

        assert_eq!(
            status_of([
                ev("e1", "CHARGE_PAYMENT", StepFailed, 0).saga(Failed),
                ev("e2", "RESERVE_STOCK", StepCompensating, 1),
            ]),
            Compensating
        );
    }

    #[test]
    fn a_failed_compensation_is_failed_and_may_still_be_compensated_later() {
        let mut events = records([
            ev("e1", "CHARGE_PAYMENT", StepFailed, 0),
            ev("e2", "RESERVE_STOCK", StepCompensating, 1).saga(Compensating),
            ev("e3", "RESERVE_STOCK", StepFailed, 2)
                .saga(Failed)
                .error("STOCK_DB_DOWN", "release failed"),
        ]);
        let state = folded(&events);
        assert_eq!(state.status, Failed);
        assert_eq!(state.ended_at, Some(t(2)));
        // The saga's failure is the first one, not the compensation's.
        assert_eq!(state.failed_step.as_deref(), Some("CHARGE_PAYMENT"));
        assert_eq!(state.compensation_started_at, Some(t(1)));

        // Compensation failed explicitly: a retry succeeding is not enough to go on.
        events.push(ev("e4", "CONFIRM", Succeeded, 3).saga(Completed).build());
        assert_eq!(folded(&events).status, Failed);
        events.push(
            ev("e5", "RESERVE_STOCK", StepCompensated, 9)
                .saga(Compensated)
                .build(),
        );
        let state = folded(&events);
        assert_eq!(state.status, Compensated);
        assert_eq!(state.compensation_ended_at, Some(t(9)));
        assert_eq!(state.compensation_duration_ms, Some(8000));
    }

    #[test]
    fn out_of_order_delivery_gives_the_same_saga() {
        let in_order = folded(&compensated_saga());
        let mut reversed = compensated_saga();
        reversed.reverse();
        assert_eq!(folded(&reversed), in_order);
        let mut rotated = compensated_saga();
        rotated.rotate_left(4);
        assert_eq!(folded(&rotated), in_order);
    }

    #[test]
    fn sequence_orders_events_before_their_clocks_do() {
        // The payment service's clock runs 3 s behind: `sequence` still orders its events
        // after the stock service's, and the clamped duration is 0, not negative.
        let events = records([
            ev("b", "CHARGE_PAYMENT", StepCompensated, 2)
                .service("payment")
                .seq(3)
                .saga(Compensated),
            ev("a", "RESERVE_STOCK", StepCompensating, 5).seq(2),
            ev("c", "ORDER_CREATED", StepStarted, 9),
            ev("d", "RESERVE_STOCK", StepFailed, 4).seq(1),
        ]);
        let order: Vec<&str> = canonical_order(&events)
            .iter()
            .map(|r| r.event.event_id.as_str())
            .collect();
        assert_eq!(order, ["c", "d", "a", "b"]);

        let state = folded(&events);
        assert_eq!(state.status, Compensated);
        assert_eq!(state.started_at, t(2));
        assert_eq!(state.updated_at, t(9));
        assert_eq!(state.current_step, "CHARGE_PAYMENT");
        assert_eq!(state.compensation_started_at, Some(t(5)));
        assert_eq!(state.compensation_ended_at, Some(t(2)));
        assert_eq!(state.compensation_duration_ms, Some(0));
    }

    #[test]
    fn ties_in_sequence_and_time_are_broken_by_event_id() {
        let events = records([
            ev("b", "CONFIRM", Succeeded, 1).seq(1).saga(Completed),
            ev("a", "CHARGE_PAYMENT", StepFailed, 1).seq(1).saga(Failed),
        ]);
        // "a" comes first: FAILED, then an explicit COMPLETED that a FAILED stated by an
        // emitter does not allow.
        assert_eq!(folded(&events).status, Failed);
    }

    #[test]
    fn duplicates_are_counted_once_and_the_first_received_copy_wins() {
        let first = ev("e1", "ORDER_CREATED", Succeeded, 0)
            .received(t(1))
            .metadata(json!({"copy": "first"}))
            .build();
        let redelivered = Ev(first.clone()).received(t(30)).build();
        let clash = ev("e1", "ORDER_CREATED", StepFailed, 0)
            .received(t(20))
            .metadata(json!({"copy": "clash"}))
            .build();
        let a = folded(&[first.clone(), redelivered.clone(), clash.clone()]);
        let b = folded(&[clash, redelivered, first]);
        assert_eq!(a, b);
        assert_eq!(a.event_count, 1);
        assert_eq!(a.status, InProgress);
        assert_eq!(a.metadata.get("copy"), Some(&json!("first")));
        assert_eq!((a.first_received_at, a.last_received_at), (t(1), t(1)));
    }

    #[test]
    fn legacy_events_with_an_explicit_status_on_every_event_fold_like_v1() {
        let legacy = |step: &str, status: &str, secs: i64| {
            let message = json!({
                "sagaId": "order-8812",
                "sagaType": "ORDER_CREATION",
                "step": step,
                "status": status,
                "orderId": "8812",
                "eventTimestamp": t(secs).timestamp_millis(),
                "metadata": format!("{{\"legacyStep\": \"{step}\"}}"),
                "service": "monolith",
            });
            let event = decode(message.to_string().as_bytes(), t(3600)).expect("legacy accepted");
            EventRecord {
                event,
                received_at: t(secs + 1),
            }
        };

        let completed = folded(&[
            legacy("ORDER_CREATED", "STARTED", 0),
            legacy("STOCK_RESERVED", "IN_PROGRESS", 1),
            legacy("PAYMENT_CHARGED", "IN_PROGRESS", 2),
            legacy("ORDER_CONFIRMED", "COMPLETED", 4),
        ]);
        assert_eq!(completed.status, Completed);
        assert_eq!(completed.ended_at, Some(t(4)));
        assert_eq!(completed.duration_ms, Some(4000));
        assert_eq!(completed.business_key.as_deref(), Some("8812"));
        assert_eq!(
            completed.metadata.get("legacyStep"),
            Some(&json!("ORDER_CONFIRMED"))
        );

        let compensated = folded(&[
            legacy("ORDER_CREATED", "STARTED", 0),
            legacy("STOCK_RESERVED", "IN_PROGRESS", 1),
            legacy("PAYMENT_CHARGED", "FAILED", 2),
            legacy("STOCK_RELEASED", "COMPENSATED", 5),
            // The Kotlin design had no COMPENSATING; a straggler after the end is late.
            legacy("ORDER_CONFIRMED", "IN_PROGRESS", 6),
        ]);
        assert_eq!(compensated.status, Compensated);
        assert_eq!(compensated.failed_step.as_deref(), Some("PAYMENT_CHARGED"));
        assert_eq!(
            compensated.failure.map(|f| f.code),
            Some(UNSPECIFIED_ERROR_CODE.to_owned())
        );
        assert_eq!(compensated.compensation_started_at, Some(t(5)));
        assert_eq!(compensated.compensation_ended_at, Some(t(5)));
        assert_eq!(compensated.compensation_duration_ms, Some(0));
        assert_eq!(compensated.late_event_count, 1);
        assert_eq!(compensated.current_step, "STOCK_RELEASED");
    }

    /// Every pair (status, proposal) of the table in the module docs, checked against the
    /// invariants the brief states in words.
    #[test]
    fn the_transition_table_keeps_the_promises_of_the_brief() {
        for status in SagaStatus::ALL {
            for failed_explicitly in [false, true] {
                if failed_explicitly && status != Failed {
                    continue;
                }
                let now = Machine {
                    status,
                    failed_explicitly,
                };
                for p in SagaStatus::ALL {
                    let inferred = now.apply(Proposal::Inferred(p)).map(|m| m.status);
                    let explicit = now.apply(Proposal::Explicit(p)).map(|m| m.status);
                    if status.is_absorbing() {
                        assert_eq!((inferred, explicit), (None, None), "{status} is absorbing");
                    }
                    if let Some(next) = inferred {
                        assert!(rank(next) > rank(status), "{status} -inferred {p}-> {next}");
                    }
                    if status == Failed && failed_explicitly {
                        assert!(
                            matches!(explicit, None | Some(Failed | Compensating | Compensated)),
                            "explicit FAILED -> {explicit:?}"
                        );
                    }
                    if status == Compensating {
                        assert!(matches!(explicit, None | Some(Compensated | Failed)));
                    }
                    if matches!(status, Started | InProgress) && p != Started {
                        assert_eq!(explicit, Some(p), "explicit {p} wins from {status}");
                    }
                }
            }
        }
    }

    /// `fold` as it was written before it became [`Folding`] (shared with `resume`): the
    /// refactor must not change a single field for any saga.
    fn fold_as_before(events: &[EventRecord]) -> Option<SagaState> {
        let ordered = canonical_order(events);
        let first = *ordered.first()?;

        let mut machine: Option<Machine> = None;
        let mut entered_at = first.event.occurred_at;
        let mut current_step = first.event.step.as_str();
        let mut late_events = 0_usize;
        let mut failed: Option<&SagaEvent> = None;
        let mut compensation_started_at = None;
        let mut metadata = Map::new();
        let mut services = BTreeSet::new();

        for (position, record) in ordered.iter().enumerate() {
            let event = &record.event;
            if let Some(m) = &event.metadata {
                metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            services.insert(event.service.as_str());

            if machine.is_some_and(|m| m.status.is_absorbing()) {
                late_events += 1;
                continue;
            }
            current_step = event.step.as_str();
            if failed.is_none() && event.step_status == StepStatus::Failed {
                failed = Some(event);
            }
            if compensation_started_at.is_none() && begins_compensation(event) {
                compensation_started_at = Some(event.occurred_at);
            }
            let proposal = Proposal::of(event, position == 0);
            let next = match machine {
                None => Some(Machine::initial(proposal)),
                Some(now) => now.apply(proposal),
            };
            if let Some(next) = next {
                if machine.map(|m| m.status) != Some(next.status) {
                    entered_at = event.occurred_at;
                }
                machine = Some(next);
            }
        }

        let status = machine?.status;
        let started_at = ordered.iter().map(|r| r.event.occurred_at).min()?;
        let updated_at = ordered.iter().map(|r| r.event.occurred_at).max()?;
        let ended_at = matches!(
            status,
            SagaStatus::Completed | SagaStatus::Failed | SagaStatus::Compensated
        )
        .then_some(entered_at);
        let compensation_ended_at = (status == SagaStatus::Compensated).then_some(entered_at);

        Some(SagaState {
            saga_id: first.event.saga_id.clone(),
            saga_type: first.event.saga_type.clone(),
            status,
            started_at,
            updated_at,
            ended_at,
            duration_ms: ended_at.map(|end| elapsed_ms(started_at, end)),
            current_step: current_step.to_owned(),
            failed_step: failed.map(|e| e.step.clone()),
            failure: failed.map(failure_of),
            compensation_started_at,
            compensation_ended_at,
            compensation_duration_ms: compensation_started_at
                .zip(compensation_ended_at)
                .map(|(start, end)| elapsed_ms(start, end)),
            event_count: saturating_i32(ordered.len()),
            late_event_count: saturating_i32(late_events),
            business_key: ordered.iter().find_map(|r| r.event.business_key.clone()),
            trace_id: ordered.iter().find_map(|r| r.event.trace_id.clone()),
            metadata,
            services: services.into_iter().map(str::to_owned).collect(),
            first_received_at: ordered.iter().map(|r| r.received_at).min()?,
            last_received_at: ordered.iter().map(|r| r.received_at).max()?,
        })
    }

    fn ids(events: &[EventRecord]) -> Vec<String> {
        canonical_order(events)
            .iter()
            .map(|r| r.event.event_id.clone())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(permutation_cases()))]

        #[test]
        fn the_saga_is_a_function_of_the_set_of_its_events(
            (events, delivered) in arb_saga_and_redelivery()
        ) {
            prop_assert_eq!(ids(&delivered), ids(&events));
            prop_assert_eq!(fold(&delivered), fold(&events));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn the_accumulator_folds_exactly_like_the_loop_it_replaced(events in arb_saga()) {
            prop_assert_eq!(fold(&events), fold_as_before(&events));
        }

        #[test]
        fn event_count_is_the_number_of_distinct_event_ids(events in arb_saga()) {
            let distinct: BTreeSet<&str> =
                events.iter().map(|r| r.event.event_id.as_str()).collect();
            let state = folded(&events);
            prop_assert_eq!(usize::try_from(state.event_count).ok(), Some(distinct.len()));
            prop_assert!(state.late_event_count < state.event_count);
            // The search relies on it (`updatedBefore` also bounds `started_at`).
            prop_assert!(state.started_at <= state.updated_at);
        }

        #[test]
        fn derived_fields_agree_with_the_status(events in arb_saga()) {
            let s = folded(&events);
            prop_assert_eq!(
                s.ended_at.is_some(),
                matches!(s.status, Completed | Failed | Compensated)
            );
            prop_assert_eq!(s.compensation_ended_at.is_some(), s.status == Compensated);
            prop_assert_eq!(s.failure.is_some(), s.failed_step.is_some());
            prop_assert!(s.started_at <= s.updated_at);
            prop_assert!(s.first_received_at <= s.last_received_at);
            for d in [s.duration_ms, s.compensation_duration_ms].into_iter().flatten() {
                prop_assert!(d >= 0);
            }
            if s.status == Compensated {
                prop_assert!(s.compensation_started_at.is_some());
            }
        }

        /// Whatever comes after a COMPLETED or COMPENSATED saga in saga order changes
        /// nothing the status machine derives, and is counted as late.
        #[test]
        fn completed_and_compensated_are_absorbing(
            events in arb_saga(),
            end_with_completed in any::<bool>(),
            later in arb_saga(),
        ) {
            let after = events.iter().filter_map(|r| r.event.sequence).max().unwrap_or(0) + 1;
            let mut ended = events;
            ended.push(
                ev("zz-end", "CONFIRM", Succeeded, 3)
                    .seq(after)
                    .saga(if end_with_completed { Completed } else { Compensated })
                    .build(),
            );
            let before = folded(&ended);
            // From COMPENSATING or an explicit FAILED, COMPLETED is not allowed; nothing to check.
            if before.status.is_absorbing() {
                let late = BTreeSet::from_iter(later.iter().map(|r| r.event.event_id.clone()));
                let mut with_late = ended;
                with_late.extend(later.into_iter().map(|mut r| {
                    r.event.event_id = format!("zz-late-{}", r.event.event_id);
                    r.event.sequence = Some(after + 1 + r.event.sequence.unwrap_or(0));
                    r
                }));
                let s = folded(&with_late);
                prop_assert_eq!(s.status, before.status);
                prop_assert_eq!(s.ended_at, before.ended_at);
                prop_assert_eq!(&s.current_step, &before.current_step);
                prop_assert_eq!(&s.failed_step, &before.failed_step);
                prop_assert_eq!(&s.failure, &before.failure);
                prop_assert_eq!(s.compensation_started_at, before.compensation_started_at);
                prop_assert_eq!(s.compensation_ended_at, before.compensation_ended_at);
                prop_assert_eq!(
                    usize::try_from(s.late_event_count - before.late_event_count).ok(),
                    Some(late.len())
                );
            }
        }
    }
}
