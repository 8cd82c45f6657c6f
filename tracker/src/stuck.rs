//! Stuck detection: when a saga that is not done counts as stuck, and why.
//!
//! Stuck is a pure function of a saga row, the clock and the `[stuck]` settings — nothing is
//! stored. The API evaluates it at query time, so a saga is reported stuck the moment its
//! threshold passes and stops being stuck with its next event, on every replica alike. The
//! search filter (`stuck=true`) runs the same rules as SQL ([`crate::store::read`]); this
//! module is the reference and the detail view's implementation, and the tests of both pin
//! them to each other.
//!
//! Three rules, each with its own reason (a saga matches at most one, by status):
//!
//! | reason | status | reference time | threshold |
//! |---|---|---|---|
//! | `no_progress` | `STARTED`, `IN_PROGRESS` | `updated_at` (last event) | per type, else default |
//! | `compensation_not_finished` | `COMPENSATING`, or `FAILED` after compensation began (and did not end) | `compensation_started_at` (else `updated_at`) | `compensation_timeout_secs` |
//! | `failed_not_compensated` | `FAILED`, compensation never began | `ended_at` (else `updated_at`) | `failed_uncompensated_secs` (0 = off) |
//!
//! A saga is stuck when `now >= reference + threshold`; `since` is that instant.
//!
//! This module does no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::StuckSettings;

/// Why a saga is stuck. The wire names are also the `reason` label of the stuck gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StuckReason {
    /// Running, and no event for longer than its type's threshold.
    NoProgress,
    /// Failed and its compensation never began.
    FailedNotCompensated,
    /// Compensation began and has not finished in time.
    CompensationNotFinished,
}

impl StuckReason {
    pub const ALL: [StuckReason; 3] = [
        StuckReason::NoProgress,
        StuckReason::FailedNotCompensated,
        StuckReason::CompensationNotFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StuckReason::NoProgress => "no_progress",
            StuckReason::FailedNotCompensated => "failed_not_compensated",
            StuckReason::CompensationNotFinished => "compensation_not_finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The verdict for one stuck saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stuck {
    /// The instant the saga became stuck: its reference time plus the threshold.
    pub since: DateTime<Utc>,
    pub reason: StuckReason,
    /// The threshold that applied, in seconds.
    pub threshold_secs: i64,
}

/// The fields of a saga row that stuck detection reads.
#[derive(Debug, Clone, Copy)]
pub struct SagaClock<'a> {
    pub saga_type: &'a str,
    /// Wire name of the saga status.
    pub status: &'a str,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub compensation_started_at: Option<DateTime<Utc>>,
    pub compensation_ended_at: Option<DateTime<Utc>>,
}

/// The `[stuck]` settings in the shape the rules use. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckPolicy {
    /// Seconds without an event before a running saga of an unlisted type is stuck.
    pub default_threshold_secs: i64,
    /// Per-type overrides. Keys are upper-cased on load (saga types are upper case, and
    /// environment variables arrive lower-cased).
    pub thresholds: BTreeMap<String, i64>,
    /// 0 = the `failed_not_compensated` rule is off.
    pub failed_uncompensated_secs: i64,
    pub compensation_timeout_secs: i64,
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl From<&StuckSettings> for StuckPolicy {
    fn from(s: &StuckSettings) -> Self {
        Self {
            default_threshold_secs: secs(s.default_threshold_secs),
            thresholds: s
                .thresholds
                .iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), secs(*v)))
                .collect(),
            failed_uncompensated_secs: secs(s.failed_uncompensated_secs),
            compensation_timeout_secs: secs(s.compensation_timeout_secs),
        }
    }
}

impl Default for StuckPolicy {
    /// The built-in defaults of `config/default.toml`.
    fn default() -> Self {
        Self {
            default_threshold_secs: 900,
            thresholds: BTreeMap::new(),
            failed_uncompensated_secs: 900,
            compensation_timeout_secs: 1800,
        }
    }
}

impl StuckPolicy {
    /// The no-progress threshold of `saga_type`.
    pub fn threshold_for(&self, saga_type: &str) -> i64 {
        self.thresholds
            .get(saga_type)
            .copied()
            .unwrap_or(self.default_threshold_secs)
    }

    /// Which rule applies to a saga in this state, with its reference time and threshold;
    /// `None` when no rule can ever apply (finished, or the rule is off).
    pub fn rule(&self, s: &SagaClock<'_>) -> Option<(StuckReason, DateTime<Utc>, i64)> {
        match s.status {
            "STARTED" | "IN_PROGRESS" => Some((
                StuckReason::NoProgress,
                s.updated_at,
                self.threshold_for(s.saga_type),
            )),
            "COMPENSATING" => Some((
                StuckReason::CompensationNotFinished,
                s.compensation_started_at.unwrap_or(s.updated_at),
                self.compensation_timeout_secs,
            )),
            "FAILED" => match (s.compensation_started_at, s.compensation_ended_at) {
                // The compensation itself failed (or is still reporting) and never finished.
                (Some(began), None) => Some((
                    StuckReason::CompensationNotFinished,
                    began,
                    self.compensation_timeout_secs,
                )),
                (None, _) if self.failed_uncompensated_secs > 0 => Some((
                    StuckReason::FailedNotCompensated,
                    s.ended_at.unwrap_or(s.updated_at),
                    self.failed_uncompensated_secs,
                )),
                _ => None,
            },
            _ => None,
        }
    }

    /// The verdict at `now`: `Some` when the saga is stuck.
    pub fn evaluate(&self, s: &SagaClock<'_>, now: DateTime<Utc>) -> Option<Stuck> {
        let (reason, reference, threshold_secs) = self.rule(s)?;
        let since = reference + chrono::Duration::seconds(threshold_secs);
        (now >= since).then_some(Stuck {
            since,
            reason,
            threshold_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn clock(status: &str) -> SagaClock<'_> {
        SagaClock {
            saga_type: "ORDER_CREATION",
            status,
            updated_at: t(0),
            ended_at: None,
            compensation_started_at: None,
            compensation_ended_at: None,
        }
    }

    fn policy() -> StuckPolicy {
        StuckPolicy {
            default_threshold_secs: 900,
            thresholds: [("ORDER_CREATION".to_owned(), 300)].into(),
            failed_uncompensated_secs: 600,
            compensation_timeout_secs: 1200,
        }
    }

    #[test]
    fn a_running_saga_is_stuck_once_its_types_threshold_passes() {
        let p = policy();
        let s = clock("IN_PROGRESS");
        assert_eq!(p.evaluate(&s, t(299)), None);
        assert_eq!(
            p.evaluate(&s, t(300)),
            Some(Stuck {
                since: t(300),
                reason: StuckReason::NoProgress,
                threshold_secs: 300
            })
        );
        let other = SagaClock {
            saga_type: "SHIPMENT",
            ..s
        };
        assert_eq!(p.evaluate(&other, t(899)), None);
        assert!(p.evaluate(&other, t(900)).is_some());
    }

    #[test]
    fn finished_sagas_are_never_stuck() {
        let p = policy();
        for status in ["COMPLETED", "COMPENSATED"] {
            assert_eq!(p.evaluate(&clock(status), t(1_000_000)), None);
        }
    }

    #[test]
    fn a_failed_saga_without_compensation_is_stuck_after_its_own_threshold() {
        let p = policy();
        let s = SagaClock {
            ended_at: Some(t(10)),
            ..clock("FAILED")
        };
        assert_eq!(p.evaluate(&s, t(609)), None);
        let v = p.evaluate(&s, t(610)).map(|v| (v.reason, v.since));
        assert_eq!(v, Some((StuckReason::FailedNotCompensated, t(610))));
        let off = StuckPolicy {
            failed_uncompensated_secs: 0,
            ..p
        };
        assert_eq!(off.evaluate(&s, t(1_000_000)), None);
    }

    #[test]
    fn an_unfinished_compensation_is_stuck_after_the_compensation_timeout() {
        let p = policy();
        for status in ["COMPENSATING", "FAILED"] {
            let s = SagaClock {
                compensation_started_at: Some(t(100)),
                ..clock(status)
            };
            assert_eq!(p.evaluate(&s, t(1299)), None, "{status}");
            let v = p.evaluate(&s, t(1300)).map(|v| v.reason);
            assert_eq!(v, Some(StuckReason::CompensationNotFinished), "{status}");
        }
    }

    #[test]
    fn threshold_keys_from_the_environment_are_upper_cased() {
        let settings = StuckSettings {
            default_threshold_secs: 900,
            thresholds: [("order_creation".to_owned(), 60)].into(),
            failed_uncompensated_secs: 0,
            compensation_timeout_secs: 60,
            evaluate_interval_secs: 30,
        };
        assert_eq!(
            StuckPolicy::from(&settings).threshold_for("ORDER_CREATION"),
            60
        );
    }
}
