//! The SDK's self-metrics: every outcome of an event is logged and counted here, in one place.
//!
//! Counts go to two sinks: per-tracker atomics, read with
//! [`SagaTracker::stats`](crate::SagaTracker::stats) (health checks, tests), and the process-wide
//! [`metrics`] facade, exported by whatever recorder the service installed (Prometheus, …):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `saga_tracker_sdk_events_sent_total` | counter | acknowledged by the broker |
//! | `saga_tracker_sdk_events_failed_total` | counter | accepted, then not delivered (timeout, broker error, purged at exit) |
//! | `saga_tracker_sdk_events_dropped_total{reason}` | counter | never accepted: `buffer_full`, `buffer_timeout`, `closed`, `invalid` |
//! | `saga_tracker_sdk_buffer_depth` | gauge | accepted, not yet acknowledged or failed |
//! | `saga_tracker_sdk_delivery_duration_seconds` | histogram | accepted → acknowledged |
//!
//! Label values are a fixed set, so cardinality is bounded. Log lines for failures and drops
//! are rate-limited (one per kind per 10 s, with the running count) so a broker outage cannot
//! flood the service's logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counter of acknowledged events.
pub const EVENTS_SENT: &str = "saga_tracker_sdk_events_sent_total";
/// Counter of accepted events that were not delivered.
pub const EVENTS_FAILED: &str = "saga_tracker_sdk_events_failed_total";
/// Counter of events never accepted, by `reason`.
pub const EVENTS_DROPPED: &str = "saga_tracker_sdk_events_dropped_total";
/// Gauge of events accepted and not yet acknowledged or failed.
pub const BUFFER_DEPTH: &str = "saga_tracker_sdk_buffer_depth";
/// Histogram of the time from acceptance to acknowledgement.
pub const DELIVERY_DURATION: &str = "saga_tracker_sdk_delivery_duration_seconds";

/// Why an event was never accepted (the `reason` label of [`EVENTS_DROPPED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// `Async` with [`OverflowPolicy::Drop`](crate::OverflowPolicy::Drop): the buffer was full.
    BufferFull,
    /// The buffer stayed full for the whole wait ([`OverflowPolicy::Wait`](crate::OverflowPolicy::Wait),
    /// or the delivery timeout in `Sync` mode).
    BufferTimeout,
    /// The tracker had been shut down.
    Closed,
    /// The event broke the contract (the call returned [`Error::Invalid`](crate::Error::Invalid)).
    Invalid,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BufferFull => "buffer_full",
            Self::BufferTimeout => "buffer_timeout",
            Self::Closed => "closed",
            Self::Invalid => "invalid",
        }
    }
}

/// A snapshot of one tracker's counts since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events acknowledged by the broker.
    pub sent: u64,
    /// Events accepted, then not delivered.
    pub failed: u64,
    /// Events never accepted (all reasons).
    pub dropped: u64,
    /// Events accepted and not yet acknowledged or failed.
    pub buffered: u64,
}

/// Per-tracker counters plus the metric and log side effects of each outcome.
#[derive(Debug)]
pub(crate) struct Recorder {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    buffered: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last failure / drop log line.
    last_failure_log: AtomicU64,
    last_drop_log: AtomicU64,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            started: Instant::now(),
            last_failure_log: AtomicU64::new(u64::MAX),
            last_drop_log: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The event entered the buffer (librdkafka's queue).
    pub(crate) fn accepted(&self) {
        self.buffered.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(BUFFER_DEPTH).increment(1.0);
    }

    /// The broker acknowledged an accepted event.
    pub(crate) fn delivered(&self, took: Duration) {
        self.leave_buffer();
        self.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(EVENTS_SENT).increment(1);
        metrics::histogram!(DELIVERY_DURATION).record(took.as_secs_f64());
    }

    /// An accepted event will never be delivered.
    pub(crate) fn failed(&self, error: &str) {
        self.leave_buffer();
        self.not_delivered(error);
    }

    /// The producer refused an event outright (it never entered the buffer).
    pub(crate) fn refused(&self, error: &str) {
        self.not_delivered(error);
    }

    fn not_delivered(&self, error: &str) {
        let total = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(EVENTS_FAILED).increment(1);
        if self.should_log(&self.last_failure_log) {
            tracing::warn!(
                error,
                failed_total = total,
                "saga event not delivered to Kafka"
            );
        }
    }

    /// The event was never accepted.
    pub(crate) fn dropped(&self, reason: DropReason) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(EVENTS_DROPPED, "reason" => reason.as_str()).increment(1);
        if self.should_log(&self.last_drop_log) {
            tracing::warn!(
                reason = reason.as_str(),
                dropped_total = total,
                "saga event dropped"
            );
        }
    }

    /// An event counted as accepted was handed back by the producer (never entered).
    pub(crate) fn withdrawn(&self) {
        self.leave_buffer();
    }

    fn leave_buffer(&self) {
        // Saturating: never wrap below zero even if librdkafka reports twice.
        let _ = self
            .buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        metrics::gauge!(BUFFER_DEPTH).decrement(1.0);
    }

    /// True at most once per [`LOG_EVERY`] for a given `last` slot.
    fn should_log(&self, last: &AtomicU64) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        let prev = last.load(Ordering::Relaxed);
        let due = prev == u64::MAX || now.saturating_sub(prev) >= every;
        due && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_each_outcome() {
        let r = Recorder::new();
        r.accepted();
        r.accepted();
        r.delivered(Duration::from_millis(3));
        r.failed("timed out");
        r.refused("queue full");
        r.dropped(DropReason::BufferFull);
        assert_eq!(
            r.snapshot(),
            Stats {
                sent: 1,
                failed: 2,
                dropped: 1,
                buffered: 0
            }
        );
    }

    #[test]
    fn logging_is_rate_limited() {
        let r = Recorder::new();
        assert!(r.should_log(&r.last_drop_log));
        assert!(!r.should_log(&r.last_drop_log));
        assert!(r.should_log(&r.last_failure_log));
    }
}
