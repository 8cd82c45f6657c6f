//! Events → per-step timeline for the detail view.
//!
//! Like [`fold`](fn@super::fold), [`timeline`] is a pure function of the set of a saga's events:
//! it deduplicates and orders them with [`canonical_order`] and every "first", "last",
//! "before" and "after" below refers to positions in that saga order. Late events (after the
//! saga became `COMPLETED`/`COMPENSATED`) are included: the timeline shows everything that
//! was reported.
//!
//! One [`StepTimeline`] per distinct step name, in order of the step's first event:
//!
//! - `status` — step status of the step's last event;
//! - `service` — service of the step's first event;
//! - `started_at` — `occurredAt` of the first `STARTED` event, or of the step's first event
//!   when it has no `STARTED` (the emitter only reported the outcome);
//! - `ended_at` — `occurredAt` of the first `SUCCEEDED` or `FAILED` event at or after the
//!   start and before compensation began (a `FAILED` during compensation is a failed
//!   compensation, not the end of the step);
//! - `error` — `error` of the step's first `FAILED` event (`UNSPECIFIED` if it had none);
//! - `compensation` — present when the step has a `COMPENSATING` or `COMPENSATED` event. It
//!   begins at the first `COMPENSATING` event, or the first `COMPENSATED` when there is no
//!   `COMPENSATING`; it ends at the first `COMPENSATED` at or after that; it `failed` when a
//!   `FAILED` event comes after it began.
//!
//! Durations are whole milliseconds and never negative: clock skew that puts an end before
//! its start gives 0, while `None` always means "has not ended".

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{SagaEvent, StepError, StepStatus};

use super::fold::{elapsed_ms, failure_of};
use super::{canonical_order, EventRecord};

/// Compensation of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCompensation {
    /// When the compensating action began (first `COMPENSATING`, else first `COMPENSATED`).
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (first `COMPENSATED` from the start on); `None` while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended_at − started_at` in milliseconds (at least 0): feeds the "slow compensation"
    /// view.
    pub duration_ms: Option<i64>,
    /// A `FAILED` event was reported for the step after compensation began: the
    /// compensating action itself failed and someone has to look.
    pub failed: bool,
}

/// One step of a saga as seen across its events.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTimeline {
    /// The step name as emitted.
    pub step: String,
    /// Step status of the step's last event: where the step stands now.
    pub status: StepStatus,
    /// Service of the step's first event: who ran it.
    pub service: String,
    /// First `STARTED`, or the first event when the step never reported one.
    pub started_at: Option<DateTime<Utc>>,
    /// First `SUCCEEDED`/`FAILED` from the start on and before compensation; `None` while
    /// the step runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended_at − started_at` in milliseconds (at least 0): the per-step duration of the
    /// detail view.
    pub duration_ms: Option<i64>,
    /// Why the step failed, from its first `FAILED` event.
    pub error: Option<StepError>,
    /// Present when the step was compensated or is being compensated.
    pub compensation: Option<StepCompensation>,
    /// Distinct events reported for the step.
    pub event_count: usize,
    /// `occurredAt` of the step's first event in saga order.
    pub first_event_at: DateTime<Utc>,
}

/// The steps of a saga in the order they first appear in saga order.
pub fn timeline(events: &[EventRecord]) -> Vec<StepTimeline> {
    let mut position_of: HashMap<&str, usize> = HashMap::new();
    let mut steps: Vec<Vec<&SagaEvent>> = Vec::new();
    for record in canonical_order(events) {
        let event = &record.event;
        let index = *position_of.entry(event.step.as_str()).or_insert_with(|| {
            steps.push(Vec::new());
            steps.len() - 1
        });
        if let Some(step_events) = steps.get_mut(index) {
            step_events.push(event);
        }
    }
    steps.iter().filter_map(|s| step_timeline(s)).collect()
}

/// One step from its events in saga order; `None` only for an empty slice.
fn step_timeline(events: &[&SagaEvent]) -> Option<StepTimeline> {
    let first = *events.first()?;
    let last = *events.last()?;
    let position = |status: StepStatus| events.iter().position(|e| e.step_status == status);

    let start = position(StepStatus::Started).unwrap_or(0);
    let compensation_start =
        position(StepStatus::Compensating).or(position(StepStatus::Compensated));
    let forward = events
        .get(start..compensation_start.unwrap_or(events.len()))
        .unwrap_or_default();
    let started_at = events.get(start).map(|e| e.occurred_at);
    let ended_at = forward
        .iter()
        .find(|e| matches!(e.step_status, StepStatus::Succeeded | StepStatus::Failed))
        .map(|e| e.occurred_at);

    let compensation = compensation_start.map(|begin| {
        let after = events.get(begin..).unwrap_or_default();
        let started_at = after.first().map(|e| e.occurred_at);
        let ended_at = after
            .iter()
            .find(|e| e.step_status == StepStatus::Compensated)
            .map(|e| e.occurred_at);
        StepCompensation {
            started_at,
            ended_at,
            duration_ms: duration(started_at, ended_at),
            failed: after.iter().any(|e| e.step_status == StepStatus::Failed),
        }
    });

    Some(StepTimeline {
        step: first.step.clone(),
        status: last.step_status,
        service: first.service.clone(),
        started_at,
        ended_at,
        duration_ms: duration(started_at, ended_at),
        error: events
            .iter()
            .find(|e| e.step_status == StepStatus::Failed)
            .map(|e| failure_of(e)),
        compensation,
        event_count: events.len(),
        first_event_at: first.occurred_at,
    })
}

fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<i64> {
    start.zip(end).map(|(s, e)| elapsed_ms(s, e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use saga_tracker_sdk::contract::SagaStatus;
    use saga_tracker_sdk::contract::StepStatus::{
        Compensated, Compensating, Failed, Started, Succeeded,
    };

    use super::super::test_support::{
        arb_saga, arb_saga_and_redelivery, ev, permutation_cases, t, t_ms, Ev,
    };
    use super::*;

    fn steps(events: impl IntoIterator<Item = Ev>) -> Vec<StepTimeline> {
        let records: Vec<EventRecord> = events.into_iter().map(Ev::build).collect();
        timeline(&records)
    }

    fn error(code: &str, message: &str) -> Option<StepError> {
        Some(StepError {
            code: code.into(),
            message: message.into(),
        })
    }

    #[test]
    fn a_saga_without_events_has_no_steps() {
        assert_eq!(timeline(&[]), []);
    }

    #[test]
    fn a_compensated_saga_shows_each_step_with_its_run_and_its_compensation() {
        let timeline = steps([
            ev("e6", "RESERVE_STOCK", Compensated, 7)
                .service("stock")
                .saga(SagaStatus::Compensated),
            ev("e1", "RESERVE_STOCK", Started, 0).service("stock"),
            ev("e3", "CHARGE_PAYMENT", Started, 2).service("payment"),
            ev("e2", "RESERVE_STOCK", Succeeded, 1).service("stock"),
            ev("e4", "CHARGE_PAYMENT", Failed, 4)
                .service("payment")
                .error("DECLINED", "card declined"),
            ev("e5", "RESERVE_STOCK", Compensating, 5).service("stock"),
        ]);
        assert_eq!(
            timeline,
            [
                StepTimeline {
                    step: "RESERVE_STOCK".into(),
                    status: Compensated,
                    service: "stock".into(),
                    started_at: Some(t(0)),
                    ended_at: Some(t(1)),
                    duration_ms: Some(1000),
                    error: None,
                    compensation: Some(StepCompensation {
                        started_at: Some(t(5)),
                        ended_at: Some(t(7)),
                        duration_ms: Some(2000),
                        failed: false,
                    }),
                    event_count: 4,
                    first_event_at: t(0),
                },
                StepTimeline {
                    step: "CHARGE_PAYMENT".into(),
                    status: Failed,
                    service: "payment".into(),
                    started_at: Some(t(2)),
                    ended_at: Some(t(4)),
                    duration_ms: Some(2000),
                    error: error("DECLINED", "card declined"),
                    compensation: None,
                    event_count: 2,
                    first_event_at: t(2),
                },
            ]
        );
    }

    #[test]
    fn a_running_step_has_no_end_yet() {
        let [step] = &steps([ev("e1", "RESERVE_STOCK", Started, 0)])[..] else {
            panic!("one step expected");
        };
        assert_eq!(step.status, Started);
        assert_eq!(
            (step.started_at, step.ended_at, step.duration_ms),
            (Some(t(0)), None, None)
        );
    }

    #[test]
    fn a_step_that_only_reported_its_outcome_starts_and_ends_at_that_event() {
        let [step] = &steps([
            ev("e1", "RESERVE_STOCK", Succeeded, 3),
            ev("e2", "RESERVE_STOCK", Compensated, 5),
        ])[..] else {
            panic!("one step expected");
        };
        assert_eq!(
            (step.started_at, step.ended_at, step.duration_ms),
            (Some(t(3)), Some(t(3)), Some(0))
        );
        assert_eq!(
            step.compensation,
            Some(StepCompensation {
                started_at: Some(t(5)),
                ended_at: Some(t(5)),
                duration_ms: Some(0),
                failed: false,
            })
        );
    }

    #[test]
    fn a_failure_during_compensation_marks_the_compensation_failed() {
        let [step] = &steps([
            ev("e1", "RESERVE_STOCK", Started, 0),
            ev("e2", "RESERVE_STOCK", Succeeded, 1),
            ev("e3", "RESERVE_STOCK", Compensating, 2),
            ev("e4", "RESERVE_STOCK", Failed, 3).error("STOCK_DB_DOWN", "release failed"),
        ])[..] else {
            panic!("one step expected");
        };
        assert_eq!(step.status, Failed);
        // The step itself ended when it succeeded; the FAILED belongs to its compensation.
        assert_eq!(step.ended_at, Some(t(1)));
        assert_eq!(step.error, error("STOCK_DB_DOWN", "release failed"));
        assert_eq!(
            step.compensation,
            Some(StepCompensation {
                started_at: Some(t(2)),
                ended_at: None,
                duration_ms: None,
                failed: true,
            })
        );
    }

    #[test]
    fn a_retried_step_ends_at_its_first_outcome_and_shows_its_last_status() {
        let [step] = &steps([
            ev("e1", "CHARGE_PAYMENT", Started, 0),
            ev("e2", "CHARGE_PAYMENT", Failed, 1).error("TIMEOUT", "gateway timeout"),
            ev("e3", "CHARGE_PAYMENT", Started, 2),
            ev("e4", "CHARGE_PAYMENT", Succeeded, 3),
        ])[..] else {
            panic!("one step expected");
        };
        assert_eq!(step.status, Succeeded);
        assert_eq!((step.ended_at, step.duration_ms), (Some(t(1)), Some(1000)));
        assert_eq!(step.error, error("TIMEOUT", "gateway timeout"));
        assert_eq!(step.event_count, 4);
    }

    #[test]
    fn a_failed_step_without_an_error_reports_an_unspecified_one() {
        let [step] = &steps([ev("e1", "CHARGE_PAYMENT", Failed, 1)])[..] else {
            panic!("one step expected");
        };
        assert_eq!(
            step.error,
            error(crate::aggregate::UNSPECIFIED_ERROR_CODE, "")
        );
    }

    #[test]
    fn clock_skew_never_gives_a_negative_step_duration() {
        // `sequence` says STARTED came first, the clocks disagree by 800 ms.
        let [step] = &steps([
            ev("e1", "RESERVE_STOCK", Started, 0).seq(1).at_ms(5000),
            ev("e2", "RESERVE_STOCK", Succeeded, 0).seq(2).at_ms(4200),
            ev("e3", "RESERVE_STOCK", Compensating, 0)
                .seq(3)
                .at_ms(9000),
            ev("e4", "RESERVE_STOCK", Compensated, 0).seq(4).at_ms(8000),
        ])[..] else {
            panic!("one step expected");
        };
        assert_eq!(
            (step.started_at, step.ended_at),
            (Some(t_ms(5000)), Some(t_ms(4200)))
        );
        assert_eq!(step.duration_ms, Some(0));
        assert_eq!(
            step.compensation.as_ref().and_then(|c| c.duration_ms),
            Some(0)
        );
    }

    #[test]
    fn late_events_and_duplicates_show_once_in_the_timeline() {
        let timeline = steps([
            ev("e1", "CONFIRM", Succeeded, 0).saga(SagaStatus::Completed),
            ev("e1", "CONFIRM", Succeeded, 0).saga(SagaStatus::Completed),
            ev("e2", "CHARGE_PAYMENT", Failed, 5).service("payment"),
        ]);
        let names: Vec<(&str, usize)> = timeline
            .iter()
            .map(|s| (s.step.as_str(), s.event_count))
            .collect();
        assert_eq!(names, [("CONFIRM", 1), ("CHARGE_PAYMENT", 1)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(permutation_cases()))]

        #[test]
        fn the_timeline_is_a_function_of_the_set_of_its_events(
            (events, delivered) in arb_saga_and_redelivery()
        ) {
            prop_assert_eq!(timeline(&delivered), timeline(&events));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn the_timeline_accounts_for_every_event_once(events in arb_saga()) {
            let ordered = canonical_order(&events);
            let timeline = timeline(&events);
            let names: BTreeSet<&str> = timeline.iter().map(|s| s.step.as_str()).collect();
            prop_assert_eq!(names.len(), timeline.len(), "one entry per step name");
            prop_assert_eq!(
                timeline.iter().map(|s| s.event_count).sum::<usize>(),
                ordered.len()
            );
            for step in &timeline {
                let of_step: Vec<_> = ordered
                    .iter()
                    .filter(|r| r.event.step == step.step)
                    .collect();
                prop_assert_eq!(Some(step.status), of_step.last().map(|r| r.event.step_status));
                prop_assert!(step.started_at.is_some());
                prop_assert_eq!(
                    step.compensation.is_some(),
                    of_step.iter().any(|r| matches!(
                        r.event.step_status,
                        Compensating | Compensated
                    ))
                );
                let compensation = step.compensation.as_ref().and_then(|c| c.duration_ms);
                for d in [step.duration_ms, compensation].into_iter().flatten() {
                    prop_assert!(d >= 0);
                }
            }
        }
    }
}
