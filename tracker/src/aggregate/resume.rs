//! Resuming a saga's fold from a stored state instead of refolding every stored event.
//!
//! [`fold`](super::fold) is a left fold over saga order (rule 2 of `fold.rs`). A left fold
//! can be continued from where it stopped, *provided the new events come after every event
//! already folded*: then the refold of all events visits the old ones first, in the same
//! order, and reaches exactly the state the old fold ended in before it visits the new ones.
//! The machinery lives in `Folding` (fold.rs), which both [`fold_with_state`] and [`resume`]
//! drive, so resuming is the same code as folding, not a second implementation of the rules.
//!
//! [`FoldState`] is what a stored [`SagaState`] lacks to go on: whether a `FAILED` status was
//! stated by an emitter, and the canonical key of the last event folded. It also carries the
//! per-step facts the statistics rollups need ([`StepFacts`], the Rust twin of
//! `STEP_DURATION_US` in `store/rollup.rs`), kept as minima and an "or", which merge in any
//! order: the step facts never need a refold, only the saga order does.
//!
//! # When resuming falls back
//!
//! [`resume`] returns `None`, and the caller refolds from all stored events, when:
//!
//! - a new event does not sort strictly after the state's last key — an out-of-order or late
//!   delivery, or an event whose `sequence` puts it earlier. Refolding is the only way to
//!   place it correctly;
//! - the state cannot be trusted with this row: another saga's, a count of events that
//!   differs from the row's (the row was written without updating the state, e.g. by an
//!   older tracker), a version this build does not know (rejected when deserialising), or a
//!   row that contradicts it.
//!
//! Events arriving in saga order — the normal case for one emitter, or several with
//! `sequence` — resume; everything else costs what it cost before.
//!
//! `resume` trusts its caller for one thing it cannot check: none of the new events' ids is
//! among the events already folded (the write path passes the rows its insert actually
//! stored). Timestamps must have the precision the store gives them back with (µs), since
//! a refold sees the stored values.

use std::fmt;

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::StepStatus;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::fold::{canonical_order, key_of, Folding, Tail};
use super::{EventRecord, SagaState};

/// The version of [`FoldState`]'s meaning and layout. Bump it whenever either changes — a
/// field, the fold rules of `fold.rs`, or the step rules (`ROLLUP_VERSION` in
/// `store/rollup.rs`): stored states of another version no longer deserialise, so every
/// saga is refolded once on its next event.
pub const FOLD_STATE_VERSION: u32 = 1;

/// What it takes, beyond the [`SagaState`] it was produced with, to continue a saga's fold
/// with new events, plus the saga's per-step statistics facts.
///
/// Stored per saga as JSON, so it is compact: short field names, times as integer
/// microseconds. Produce it with [`fold_with_state`] or [`resume`]; store it with its saga
/// row, in the same write, so the two never disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldState {
    /// [`FOLD_STATE_VERSION`]; another value fails deserialisation.
    #[serde(rename = "v", deserialize_with = "known_version")]
    version: u32,
    /// The saga it belongs to: a state read for the wrong saga is refused, not resumed.
    #[serde(rename = "id")]
    saga_id: String,
    /// The saga's `event_count` when the state was made. A row whose count differs was
    /// written without this state (so the state is stale) and is refolded.
    #[serde(rename = "n")]
    event_count: i32,
    /// The state machine's `failed_explicitly`: an emitter stated `FAILED`, so only
    /// compensation may follow. Not derivable from the row's status alone.
    #[serde(rename = "fx", default, skip_serializing_if = "is_false")]
    failed_explicitly: bool,
    /// `(sequence, occurredAt, eventId)` of the last event in saga order: new events must
    /// sort strictly after it to be folded on top.
    #[serde(rename = "k")]
    last: (Option<i64>, Micros, String),
    /// One entry per step, sorted by step name.
    #[serde(rename = "st")]
    steps: Vec<StepMinima>,
}

/// What the rollups count for one step of one saga (the `{prefix}_steps` CTE of
/// `store/rollup.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFacts {
    /// The step's name.
    pub step: String,
    /// The step reported `FAILED` at least once.
    pub failed: bool,
    /// `STEP_DURATION_US`: first `STARTED` — or the step's first event when it never
    /// reported `STARTED` — to its first `SUCCEEDED`/`FAILED`, in whole µs, at least 0;
    /// `None` while the step has not ended.
    pub duration_us: Option<i64>,
}

/// One step's facts in mergeable form: an "or" and three minima, so events can be added in
/// any order and any number of batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepMinima {
    #[serde(rename = "s")]
    step: String,
    /// Any event of the step reported `FAILED`.
    #[serde(rename = "f", default, skip_serializing_if = "is_false")]
    failed: bool,
    /// Earliest `occurredAt` of any event of the step.
    #[serde(rename = "a")]
    first: Micros,
    /// Earliest `STARTED`.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    started: Option<Micros>,
    /// Earliest `SUCCEEDED` or `FAILED`.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    ended: Option<Micros>,
}

impl StepMinima {
    fn facts(&self) -> StepFacts {
        StepFacts {
            step: self.step.clone(),
            failed: self.failed,
            duration_us: self.ended.map(|Micros(end)| {
                let Micros(from) = self.started.unwrap_or(self.first);
                (end - from).num_microseconds().unwrap_or(i64::MAX).max(0)
            }),
        }
    }
}

/// Adds one event to the per-step minima, kept sorted by step name.
fn add_step(steps: &mut Vec<StepMinima>, step: &str, status: StepStatus, at: DateTime<Utc>) {
    let i = match steps.binary_search_by(|s| s.step.as_str().cmp(step)) {
        Ok(i) => i,
        Err(i) => {
            steps.insert(
                i,
                StepMinima {
                    step: step.to_owned(),
                    failed: false,
                    first: Micros(at),
                    started: None,
                    ended: None,
                },
            );
            i
        }
    };
    let s = &mut steps[i];
    let earliest = |slot: &mut Option<Micros>| {
        if slot.is_none_or(|Micros(t)| at < t) {
            *slot = Some(Micros(at));
        }
    };
    if at < s.first.0 {
        s.first = Micros(at);
    }
    match status {
        StepStatus::Started => earliest(&mut s.started),
        StepStatus::Succeeded => earliest(&mut s.ended),
        StepStatus::Failed => {
            earliest(&mut s.ended);
            s.failed = true;
        }
        StepStatus::Compensating | StepStatus::Compensated => {}
    }
}

/// The step facts of a set of events, sorted by step name: what `rollup::step_facts` computes
/// from `(step, step_status, occurred_at)` triples. Every record counts; deduplicate first
/// when the slice may hold an `eventId` twice (stored events never do).
pub fn step_facts<'a>(events: impl IntoIterator<Item = &'a EventRecord>) -> Vec<StepFacts> {
    let mut steps = Vec::new();
    for r in events {
        add_step(
            &mut steps,
            &r.event.step,
            r.event.step_status,
            r.event.occurred_at,
        );
    }
    steps.iter().map(StepMinima::facts).collect()
}

impl FoldState {
    /// The saga's step facts as the rollups count them, sorted by step name; the same as
    /// [`step_facts`] over all the events folded into this state.
    pub fn step_facts(&self) -> Vec<StepFacts> {
        self.steps.iter().map(StepMinima::facts).collect()
    }

    /// The state as the JSON stored with its saga.
    pub fn to_json(&self) -> Value {
        // A struct of strings, integers, booleans and arrays always serialises to a Value.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A stored state, or `None` when it is missing, malformed or of another
    /// [`FOLD_STATE_VERSION`] — the caller then refolds.
    pub fn from_json(value: &Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }

    /// Whether `record` sorts strictly after every event folded into this state, for a saga
    /// whose row holds `event_count` events. Then it is none of them: the canonical key ends
    /// with the `eventId`, so a redelivered copy has the key of an event already folded, which
    /// is at most the last one. The write path stores such events without the duplicate check.
    /// `false` when the state does not describe the row (its count differs), so the caller
    /// cannot tell.
    pub fn precedes(&self, event_count: i32, record: &EventRecord) -> bool {
        self.event_count == event_count && key_of(record) > self.tail().last
    }

    fn tail(&self) -> Tail<'_> {
        Tail {
            failed_explicitly: self.failed_explicitly,
            last: (self.last.0, self.last.1 .0, self.last.2.as_str()),
        }
    }

    fn new(state: &SagaState, tail: Tail<'_>, steps: Vec<StepMinima>) -> Self {
        let (sequence, occurred_at, event_id) = tail.last;
        Self {
            version: FOLD_STATE_VERSION,
            saga_id: state.saga_id.clone(),
            event_count: state.event_count,
            failed_explicitly: tail.failed_explicitly,
            last: (sequence, Micros(occurred_at), event_id.to_owned()),
            steps,
        }
    }
}

/// [`fold`](super::fold), plus the [`FoldState`] to resume it from. `None` for an empty
/// slice; the [`SagaState`] is always the one `fold` gives.
pub fn fold_with_state(events: &[EventRecord]) -> Option<(SagaState, FoldState)> {
    let ordered = canonical_order(events);
    let (first, rest) = ordered.split_first()?;
    let folding = Folding::start(first);
    let mut steps = Vec::new();
    add_step(
        &mut steps,
        &first.event.step,
        first.event.step_status,
        first.event.occurred_at,
    );
    Some(fold_on(folding, steps, rest.iter().copied()))
}

/// Continues the fold that produced `prev` and `state` with `new`: the saga's events that are
/// not yet folded (their `eventId`s are none of the folded ones; any order, duplicates
/// allowed).
///
/// `Some` only when the result is exactly what [`fold_with_state`] over all the events would
/// give — when every new event sorts strictly after the state's last event. `None` otherwise,
/// or when `state` does not belong to `prev` (module docs); the caller then refolds.
pub fn resume(
    prev: &SagaState,
    state: &FoldState,
    new: &[EventRecord],
) -> Option<(SagaState, FoldState)> {
    if state.version != FOLD_STATE_VERSION
        || state.saga_id != prev.saga_id
        || state.event_count != prev.event_count
    {
        return None;
    }
    let ordered = canonical_order(new);
    let tail = state.tail();
    match ordered.first() {
        None => return Some((prev.clone(), state.clone())),
        Some(first) if key_of(first) <= tail.last => return None,
        Some(_) => {}
    }
    if ordered.iter().any(|r| r.event.saga_id != prev.saga_id) {
        return None;
    }
    let folding = Folding::resume(prev, tail)?;
    let steps = state.steps.clone();
    Some(fold_on(folding, steps, ordered.iter().copied()))
}

/// Pushes `records` (in saga order) through `folding` and the step minima, then finishes both:
/// the shared end of [`fold_with_state`] and [`resume`].
fn fold_on<'a>(
    mut folding: Folding<'a>,
    mut steps: Vec<StepMinima>,
    records: impl IntoIterator<Item = &'a EventRecord>,
) -> (SagaState, FoldState) {
    for record in records {
        folding.push(record);
        add_step(
            &mut steps,
            &record.event.step,
            record.event.step_status,
            record.event.occurred_at,
        );
    }
    let (saga, tail) = folding.finish();
    let state = FoldState::new(&saga, tail, steps);
    (saga, state)
}

/// Lets [`FoldState`] skip `false` flags.
fn is_false(b: &bool) -> bool {
    !*b
}

fn known_version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == FOLD_STATE_VERSION {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "fold state version {v}, this build reads {FOLD_STATE_VERSION}"
        )))
    }
}

/// A time stored as integer microseconds since the epoch — the store's precision, and half
/// the size of RFC 3339 — or, for the rare time finer than a microsecond, as RFC 3339 text,
/// so a round trip never changes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Micros(DateTime<Utc>);

impl fmt::Debug for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Below 10^9 ns: a leap second's nanoseconds would not survive `timestamp_micros`.
        let nanos = self.0.timestamp_subsec_nanos();
        if nanos % 1000 == 0 && nanos < 1_000_000_000 {
            s.serialize_i64(self.0.timestamp_micros())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Micros(i64),
            Text(DateTime<Utc>),
        }
        match Stored::deserialize(d)? {
            Stored::Micros(us) => {
                DateTime::from_timestamp_micros(us)
                    .map(Micros)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format_args!("time {us} µs is out of range"))
                    })
            }
            Stored::Text(t) => Ok(Micros(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::Duration;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use serde_json::json;

    use super::super::fold;
    use super::super::test_support::{arb_saga, ev, t, Ev, SAGA_ID};
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

    fn folded(events: &[EventRecord]) -> (SagaState, FoldState) {
        fold_with_state(events).expect("a non-empty saga folds")
    }

    /// Folds `a`, resumes it with `b`; `None` when `resume` refuses.
    fn resumed(a: &[EventRecord], b: &[EventRecord]) -> Option<(SagaState, FoldState)> {
        let (saga, state) = folded(a);
        resume(&saga, &state, b)
    }

    /// `a ∪ b` as one fold.
    fn refolded(a: &[EventRecord], b: &[EventRecord]) -> (SagaState, FoldState) {
        folded(&[a, b].concat())
    }

    /// Requires `resume` to continue `a` with `b`, and to give what the refold gives.
    fn resumes(a: impl IntoIterator<Item = Ev>, b: impl IntoIterator<Item = Ev>) -> SagaState {
        let (a, b) = (records(a), records(b));
        let result = resumed(&a, &b).expect("b sorts after a: resume continues");
        assert_eq!(result, refolded(&a, &b));
        result.0
    }

    /// Requires `resume` to refuse; the refold is the answer then.
    fn refuses(a: impl IntoIterator<Item = Ev>, b: impl IntoIterator<Item = Ev>) -> SagaState {
        let (a, b) = (records(a), records(b));
        assert_eq!(resumed(&a, &b), None);
        refolded(&a, &b).0
    }

    /// The stored form of a set of events: one record per id, in saga order.
    fn distinct(events: &[EventRecord]) -> Vec<EventRecord> {
        canonical_order(events).into_iter().cloned().collect()
    }

    /// The step facts straight from the SQL of `STEP_DURATION_US` and the `bool_or` of the
    /// `{prefix}_steps` CTE, one aggregate at a time, over the stored events.
    fn sql_step_facts(events: &[EventRecord]) -> Vec<StepFacts> {
        let steps: BTreeSet<&str> = events.iter().map(|r| r.event.step.as_str()).collect();
        steps
            .into_iter()
            .map(|step| {
                let of_step = || events.iter().filter(move |r| r.event.step == step);
                let min_where = |keep: &dyn Fn(StepStatus) -> bool| {
                    of_step()
                        .filter(|r| keep(r.event.step_status))
                        .map(|r| r.event.occurred_at)
                        .min()
                };
                let ended = min_where(&|s| matches!(s, StepStatus::Succeeded | StepStatus::Failed));
                let started = min_where(&|s| s == StepStatus::Started);
                let first = min_where(&|_| true);
                StepFacts {
                    step: step.to_owned(),
                    failed: of_step().any(|r| r.event.step_status == StepStatus::Failed),
                    duration_us: ended.map(|end| {
                        let from = started.or(first).expect("the step has an event");
                        (end - from).num_microseconds().expect("small").max(0)
                    }),
                }
            })
            .collect()
    }

    /// A stored saga cut in saga order: the first `1..=n` events, and the rest shuffled and
    /// partly delivered twice.
    fn arb_ordered_split() -> impl Strategy<Value = (Vec<EventRecord>, Vec<EventRecord>)> {
        arb_saga()
            .prop_flat_map(|raw| {
                let stored = distinct(&raw);
                let n = stored.len();
                (
                    Just(stored),
                    1..=n,
                    prop::collection::vec(any::<Index>(), 0..3),
                )
            })
            .prop_flat_map(|(stored, cut, repeats)| {
                let (a, b) = stored.split_at(cut);
                let mut b = b.to_vec();
                if !b.is_empty() {
                    let again: Vec<EventRecord> = repeats
                        .iter()
                        .map(|i| b[i.index(b.len())].clone())
                        .collect();
                    b.extend(again);
                }
                (Just(a.to_vec()), Just(b).prop_shuffle())
            })
    }

    /// A stored saga split into any two sets, `a` non-empty.
    fn arb_any_split() -> impl Strategy<Value = (Vec<EventRecord>, Vec<EventRecord>)> {
        arb_saga()
            .prop_flat_map(|raw| {
                let stored = distinct(&raw);
                let n = stored.len();
                (
                    Just(stored),
                    prop::collection::vec(any::<bool>(), n),
                    any::<Index>(),
                )
            })
            .prop_flat_map(|(stored, in_a, keep)| {
                let keep = keep.index(stored.len());
                let (a, b): (Vec<_>, Vec<_>) = stored
                    .into_iter()
                    .enumerate()
                    .partition(|(i, _)| in_a[*i] || *i == keep);
                let strip = |v: Vec<(usize, EventRecord)>| -> Vec<EventRecord> {
                    v.into_iter().map(|(_, r)| r).collect()
                };
                (Just(strip(a)), Just(strip(b)).prop_shuffle())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn folding_with_state_gives_the_saga_fold_gives(events in arb_saga()) {
            prop_assert_eq!(fold_with_state(&events).map(|(saga, _)| saga), fold(&events));
        }

        /// (a) New events after the folded ones: resuming is refolding.
        #[test]
        fn events_after_the_last_folded_one_resume_to_the_refold(
            (a, b) in arb_ordered_split()
        ) {
            prop_assert_eq!(resumed(&a, &b), Some(refolded(&a, &b)));
        }

        /// (b) Any split: resume refuses or is right, and it refuses only when it must.
        #[test]
        fn resume_is_never_wrong((a, b) in arb_any_split()) {
            let refold = refolded(&a, &b);
            let after = {
                let last = canonical_order(&a).last().copied().map(key_of).expect("a non-empty");
                b.iter().all(|r| key_of(r) > last)
            };
            match resumed(&a, &b) {
                Some(result) => {
                    prop_assert!(after, "resumed with an event before the last folded one");
                    prop_assert_eq!(result, refold);
                }
                None => prop_assert!(!after, "refused although every new event comes after"),
            }
        }

        /// (c) A saga delivered in consecutive chunks, each stored and read back as JSON
        /// between batches, ends where one fold of everything ends.
        #[test]
        fn chained_resumes_over_consecutive_chunks_equal_one_fold(
            raw in arb_saga(),
            cuts in prop::collection::vec(any::<Index>(), 0..5),
        ) {
            let stored = distinct(&raw);
            let n = stored.len();
            let mut bounds: Vec<usize> = cuts.iter().map(|c| 1 + c.index(n)).collect();
            bounds.extend([1, n]);
            bounds.sort_unstable();
            let (mut saga, mut state) = folded(&stored[..1]);
            for pair in bounds.windows(2) {
                let mut chunk = stored[pair[0]..pair[1]].to_vec();
                chunk.reverse();
                let read_back = FoldState::from_json(&state.to_json()).expect("own state reads");
                (saga, state) = resume(&saga, &read_back, &chunk).expect("chunks come in order");
            }
            prop_assert_eq!((saga, state), folded(&stored));
        }

        /// (d) The step facts kept in the state are the rollups' definition over all events.
        #[test]
        fn step_facts_of_the_state_are_the_sql_definition((a, b) in arb_ordered_split()) {
            let all = distinct(&[a.clone(), b.clone()].concat());
            let (_, state) = resumed(&a, &b).expect("ordered split resumes");
            prop_assert_eq!(state.step_facts(), sql_step_facts(&all));
            prop_assert_eq!(step_facts(&all), sql_step_facts(&all));
            // What the rollups subtract for the saga as it was before the batch.
            prop_assert_eq!(folded(&a).1.step_facts(), sql_step_facts(&a));
        }

        /// (e) Storing a state and reading it back changes nothing.
        #[test]
        fn a_state_survives_its_json_round_trip(events in arb_saga()) {
            let (_, state) = folded(&events);
            prop_assert_eq!(FoldState::from_json(&state.to_json()), Some(state.clone()));
            let text = serde_json::to_string(&state).expect("serialises");
            prop_assert_eq!(serde_json::from_str::<FoldState>(&text).ok(), Some(state));
        }
    }

    #[test]
    fn only_the_very_first_event_infers_started() {
        let a = [ev("e1", "ORDER_CREATED", StepStarted, 0)];
        assert_eq!(folded(&records(a.clone())).0.status, Started);
        // A STARTED after the first event is progress, resumed or not.
        let s = resumes(a, [ev("e2", "RESERVE_STOCK", StepStarted, 1)]);
        assert_eq!(s.status, InProgress);
        assert_eq!(s.current_step, "RESERVE_STOCK");
    }

    #[test]
    fn events_after_completed_stay_late_across_batches() {
        let s = resumes(
            [
                ev("e1", "ORDER_CREATED", StepStarted, 0),
                ev("e2", "CONFIRM", Succeeded, 2).saga(Completed),
            ],
            [
                ev("e3", "CHARGE_PAYMENT", StepFailed, 3)
                    .service("payment")
                    .metadata(json!({"retry": true})),
                ev("e4", "CHARGE_PAYMENT", StepStarted, 4).saga(InProgress),
            ],
        );
        assert_eq!(s.status, Completed);
        assert_eq!((s.ended_at, s.duration_ms), (Some(t(2)), Some(2000)));
        assert_eq!(s.current_step, "CONFIRM");
        assert_eq!(s.failed_step, None);
        assert_eq!((s.event_count, s.late_event_count), (4, 2));
        // Late events still count where the brief says they do.
        assert_eq!(s.updated_at, t(4));
        assert_eq!(s.services, ["orders", "payment"]);
        assert_eq!(s.metadata.get("retry"), Some(&json!(true)));
    }

    #[test]
    fn an_inferred_failure_recovers_in_a_later_batch_and_an_explicit_one_does_not() {
        let s = resumes(
            [ev("e1", "CHARGE_PAYMENT", StepFailed, 0).error("DECLINED", "card declined")],
            [
                ev("e2", "CHARGE_PAYMENT", Succeeded, 1).saga(InProgress),
                ev("e3", "CONFIRM", Succeeded, 3).saga(Completed),
            ],
        );
        assert_eq!(s.status, Completed);
        assert_eq!(s.ended_at, Some(t(3)));
        assert_eq!(s.failed_step.as_deref(), Some("CHARGE_PAYMENT"));
        assert_eq!(s.failure.map(|f| f.code).as_deref(), Some("DECLINED"));

        // Whether FAILED was stated is not in the saga row: the state has to carry it.
        let explicit = [ev("e1", "CHARGE_PAYMENT", StepFailed, 0).saga(Failed)];
        assert_eq!(
            folded(&records(explicit.clone())).1.to_json()["fx"],
            json!(true)
        );
        let s = resumes(
            explicit,
            [ev("e2", "CONFIRM", Succeeded, 3).saga(Completed)],
        );
        assert_eq!(s.status, Failed);
        assert_eq!(s.ended_at, Some(t(0)));
        assert_eq!(s.current_step, "CONFIRM");
        assert_eq!(
            s.failure.map(|f| f.code).as_deref(),
            Some(super::super::UNSPECIFIED_ERROR_CODE)
        );
    }

    #[test]
    fn compensation_started_in_one_batch_ends_in_another() {
        let a = [
            ev("e1", "CHARGE_PAYMENT", StepFailed, 0),
            ev("e2", "RESERVE_STOCK", StepCompensating, 1),
        ];
        assert_eq!(folded(&records(a.clone())).0.status, Compensating);
        let s = resumes(
            a,
            [ev("e3", "RESERVE_STOCK", StepCompensated, 4).saga(Compensated)],
        );
        assert_eq!(s.status, Compensated);
        assert_eq!(s.compensation_started_at, Some(t(1)));
        assert_eq!(s.compensation_ended_at, Some(t(4)));
        assert_eq!(s.compensation_duration_ms, Some(3000));
        assert_eq!((s.ended_at, s.duration_ms), (Some(t(4)), Some(4000)));
    }

    #[test]
    fn later_metadata_wins_and_the_first_business_key_and_trace_id_stay() {
        let s = resumes(
            [ev("e1", "ORDER_CREATED", StepStarted, 0)
                .metadata(json!({"channel": "web", "amount": 12}))],
            [
                ev("e2", "RESERVE_STOCK", Succeeded, 1)
                    .metadata(json!({"channel": "app"}))
                    .business_key("8812")
                    .trace("4bf92f3577b34da6a3ce929d0e0e4736"),
                ev("e3", "CONFIRM", Succeeded, 2)
                    .business_key("8813")
                    .trace("0af7651916cd43dd8448eb211c80319c"),
            ],
        );
        assert_eq!(
            serde_json::Value::Object(s.metadata),
            json!({"channel": "app", "amount": 12})
        );
        assert_eq!(s.business_key.as_deref(), Some("8812"));
        assert_eq!(
            s.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );

        let s = resumes(
            [ev("e1", "ORDER_CREATED", StepStarted, 0)
                .business_key("8812")
                .trace("4bf92f3577b34da6a3ce929d0e0e4736")],
            [ev("e2", "CONFIRM", Succeeded, 2)
                .business_key("8813")
                .trace("0af7651916cd43dd8448eb211c80319c")],
        );
        assert_eq!(s.business_key.as_deref(), Some("8812"));
        assert_eq!(
            s.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn an_event_without_sequence_sorts_before_every_sequenced_one() {
        // Later by the clock, but no sequence: it belongs before e1, so refold.
        let s = refuses(
            [ev("e1", "ORDER_CREATED", StepStarted, 0).seq(1)],
            [ev("e2", "RESERVE_STOCK", Succeeded, 5)],
        );
        assert_eq!(s.current_step, "ORDER_CREATED");
        // A sequence after an unsequenced saga sorts last, even earlier by the clock.
        let s = resumes(
            [ev("e1", "ORDER_CREATED", StepStarted, 5)],
            [ev("e2", "RESERVE_STOCK", Succeeded, 0).seq(0)],
        );
        assert_eq!(s.current_step, "RESERVE_STOCK");
        assert_eq!(s.started_at, t(0));
    }

    #[test]
    fn equal_times_are_ordered_by_event_id() {
        let a = || [ev("b", "CHARGE_PAYMENT", StepFailed, 1).seq(1).saga(Failed)];
        // "a" sorts before "b": its explicit COMPLETED comes first and the FAILED is last.
        let s = refuses(
            a(),
            [ev("a", "CONFIRM", Succeeded, 1).seq(1).saga(Completed)],
        );
        assert_eq!(s.status, Completed);
        assert_eq!(s.late_event_count, 1);
        let s = resumes(
            a(),
            [ev("c", "CONFIRM", Succeeded, 1).seq(1).saga(Completed)],
        );
        assert_eq!(s.status, Failed);
        // The same key as the last folded event is not "after" it either.
        let (saga, state) = folded(&records(a()));
        let same_key = ev("b", "CONFIRM", Succeeded, 1).seq(1).build();
        assert_eq!(resume(&saga, &state, &[same_key]), None);
    }

    #[test]
    fn clock_skew_clamps_saga_and_step_durations_at_zero() {
        // The payment service's clock is 2 s behind; `sequence` orders its event last.
        let a = [ev("e1", "CHARGE_PAYMENT", StepStarted, 5).seq(1)];
        let b = [ev("e2", "CHARGE_PAYMENT", Succeeded, 3)
            .seq(2)
            .service("payment")
            .saga(Completed)];
        let (a, b) = (records(a), records(b));
        let (s, state) = resumed(&a, &b).expect("in sequence order");
        assert_eq!((s, state.clone()), refolded(&a, &b));
        assert_eq!(folded(&[a, b].concat()).0.started_at, t(3));
        assert_eq!(
            state.step_facts(),
            [StepFacts {
                step: "CHARGE_PAYMENT".to_owned(),
                failed: false,
                duration_us: Some(0),
            }]
        );

        // Compensation "ends" before it started by the clocks: 0, not negative.
        let s = resumes(
            [
                ev("e1", "CHARGE_PAYMENT", StepFailed, 0).seq(1),
                ev("e2", "RESERVE_STOCK", StepCompensating, 5).seq(2),
            ],
            [ev("e3", "RESERVE_STOCK", StepCompensated, 2)
                .seq(3)
                .saga(Compensated)],
        );
        assert_eq!(s.compensation_started_at, Some(t(5)));
        assert_eq!(s.compensation_ended_at, Some(t(2)));
        assert_eq!(s.compensation_duration_ms, Some(0));
        assert_eq!(s.duration_ms, Some(2000));
    }

    #[test]
    fn no_new_events_and_redelivered_copies_change_nothing() {
        let a = records([ev("e1", "ORDER_CREATED", StepStarted, 0)]);
        let (saga, state) = folded(&a);
        assert_eq!(
            resume(&saga, &state, &[]),
            Some((saga.clone(), state.clone()))
        );

        let b = records([ev("e2", "RESERVE_STOCK", Succeeded, 1)]);
        let twice = [b.clone(), b.clone()].concat();
        let result = resume(&saga, &state, &twice).expect("after e1");
        assert_eq!(result, refolded(&a, &b));
        assert_eq!(result.0.event_count, 2);
    }

    #[test]
    fn a_state_that_does_not_belong_to_the_row_is_refused() {
        let a = records([ev("e1", "ORDER_CREATED", StepStarted, 0)]);
        let b = records([ev("e2", "RESERVE_STOCK", Succeeded, 1)]);
        let (saga, state) = folded(&a);

        // Another saga's row.
        let mut other = saga.clone();
        other.saga_id = "order-9999".to_owned();
        assert_eq!(resume(&other, &state, &b), None);

        // New events of another saga.
        let mut stray = b.clone();
        stray[0].event.saga_id = "order-9999".to_owned();
        assert_eq!(resume(&saga, &state, &stray), None);

        // A row that moved on without the state (written by a tracker that does not store it).
        let (newer, _) = refolded(&a, &b);
        let c = records([ev("e3", "CONFIRM", Succeeded, 2)]);
        assert_eq!(resume(&newer, &state, &c), None);

        // A state that contradicts the row: an explicit failure on a running saga.
        let mut tampered = state.to_json();
        tampered["fx"] = json!(true);
        let tampered = FoldState::from_json(&tampered).expect("well-formed");
        assert_eq!(resume(&saga, &tampered, &b), None);
    }

    #[test]
    fn a_stored_state_of_another_version_or_shape_does_not_read() {
        let (_, state) = folded(&records([ev("e1", "ORDER_CREATED", StepStarted, 0)]));
        let good = state.to_json();
        assert_eq!(FoldState::from_json(&good), Some(state));

        let mut newer = good.clone();
        newer["v"] = json!(FOLD_STATE_VERSION + 1);
        assert_eq!(FoldState::from_json(&newer), None);
        let mut extra = good.clone();
        extra["zz"] = json!(1);
        assert_eq!(FoldState::from_json(&extra), None);
        let mut missing = good;
        missing.as_object_mut().expect("an object").remove("k");
        assert_eq!(FoldState::from_json(&missing), None);
        assert_eq!(FoldState::from_json(&json!(null)), None);
    }

    #[test]
    fn the_stored_form_is_small_and_exact() {
        let (_, state) = folded(&records([
            ev("e1", "RESERVE_STOCK", StepStarted, 0),
            ev("e2", "RESERVE_STOCK", Succeeded, 1).seq(4),
            ev("e3", "CHARGE_PAYMENT", StepFailed, 2).seq(5),
        ]));
        let us = |secs: i64| t(secs).timestamp_micros();
        assert_eq!(
            state.to_json(),
            json!({
                "v": FOLD_STATE_VERSION,
                "id": SAGA_ID,
                "n": 3,
                "k": [5, us(2), "e3"],
                "st": [
                    {"s": "CHARGE_PAYMENT", "f": true, "a": us(2), "e": us(2)},
                    {"s": "RESERVE_STOCK", "a": us(0), "b": us(0), "e": us(1)},
                ],
            })
        );

        // A time finer than the store keeps (the contract accepts nanoseconds) is kept as
        // text rather than rounded, so the round trip stays exact.
        let mut fine = ev("e1", "ORDER_CREATED", StepStarted, 0).build();
        fine.event.occurred_at += Duration::nanoseconds(1500);
        let (_, state) = folded(&[fine]);
        let stored = state.to_json();
        assert!(stored["k"][1].is_string(), "{stored}");
        assert_eq!(FoldState::from_json(&stored), Some(state));
    }
}
