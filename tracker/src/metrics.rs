//! Every metric the tracker exports: names, label sets and buckets in one place.
//!
//! Call sites use the small functions here instead of the `metrics` macros directly, so a
//! name or label can never drift between the code, the dashboards and the alert rules.
//! Saga counters are only ever moved after the transaction that produced them committed.
//! `saga_type` and `step` label values are capped ([`LabelCap`]): one misbehaving emitter
//! inventing types or steps cannot explode the number of series.
//!
//! The active and stuck gauges are different from everything else here: they are read from
//! the database ([`db_gauges`]), so every replica exports the same value and dashboards
//! aggregate them with `max`, never `sum`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use saga_tracker_sdk::contract::SagaStatus;

pub const EVENTS_PROCESSED: &str = "saga_tracker_events_processed_total";
pub const DLQ_MESSAGES: &str = "saga_tracker_dlq_messages_total";
pub const BATCH_SIZE: &str = "saga_tracker_batch_size";
pub const DB_WRITE_SECONDS: &str = "saga_tracker_db_write_seconds";
pub const DB_WRITE_ERRORS: &str = "saga_tracker_db_write_errors_total";
pub const SCHEMA_REGISTRY_LOOKUPS: &str = "saga_tracker_schema_registry_lookups_total";
pub const VISIBILITY_LAG_SECONDS: &str = "saga_tracker_visibility_lag_seconds";
pub const SAGAS_STARTED: &str = "saga_tracker_sagas_started_total";
pub const SAGAS_COMPLETED: &str = "saga_tracker_sagas_completed_total";
pub const SAGAS_FAILED: &str = "saga_tracker_sagas_failed_total";
pub const SAGAS_COMPENSATED: &str = "saga_tracker_sagas_compensated_total";
pub const HTTP_REQUEST_SECONDS: &str = "saga_tracker_http_request_duration_seconds";
pub const CONSUMER_UP: &str = "saga_tracker_consumer_up";
pub const CONSUMER_LAG: &str = "saga_tracker_consumer_lag";
pub const LAST_COMMIT_TIMESTAMP: &str = "saga_tracker_last_commit_timestamp_seconds";
pub const SAGA_DURATION_SECONDS: &str = "saga_tracker_saga_duration_seconds";
pub const COMPENSATION_DURATION_SECONDS: &str = "saga_tracker_compensation_duration_seconds";
pub const STEP_FAILURES: &str = "saga_tracker_step_failures_total";
pub const SAGAS_ACTIVE: &str = "saga_tracker_sagas_active";
pub const SAGAS_STUCK: &str = "saga_tracker_sagas_stuck";
pub const GAUGES_REFRESHED_TIMESTAMP: &str = "saga_tracker_gauges_refreshed_timestamp_seconds";
pub const DB_REPLICA_UP: &str = "saga_tracker_db_replica_up";
pub const DB_REPLICA_LAG_BYTES: &str = "saga_tracker_db_replica_lag_bytes";
pub const DB_REPLICA_LAG_SECONDS: &str = "saga_tracker_db_replica_lag_seconds";
pub const RETENTION_DELETED: &str = "saga_tracker_retention_deleted_total";
pub const RETENTION_ERRORS: &str = "saga_tracker_retention_errors_total";
pub const RETENTION_DAYS_DROPPED: &str = "saga_tracker_retention_days_dropped_total";
pub const RETENTION_SAGAS_MOVED: &str = "saga_tracker_retention_sagas_moved_total";
pub const TELEMETRY_EXPORT_FAILURES: &str = "saga_tracker_telemetry_export_failures_total";
pub const TELEMETRY_DROPPED: &str = "saga_tracker_telemetry_dropped_total";

/// Most distinct `saga_type` label values exported before new ones become `other`.
pub const MAX_SAGA_TYPE_LABELS: usize = 200;
/// Most distinct `step` label values exported before new ones become `other`.
pub const MAX_STEP_LABELS: usize = 500;
/// The label value that overflowing values are folded into.
pub const OVERFLOW_LABEL: &str = "other";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LAG_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Saga and compensation durations: from 100 ms to a day.
const SAGA_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    21600.0, 86400.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// The process-wide recorder's handle, or why installing it failed. `OnceLock::get_or_init`
/// makes concurrent callers wait for the one installation instead of racing it.
static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the global Prometheus recorder once per process and returns its handle.
///
/// Idempotent and thread-safe because tests run several trackers in one process and the
/// `metrics` facade has exactly one global recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| build_and_install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the Prometheus recorder: {e}"))
}

fn build_and_install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(VISIBILITY_LAG_SECONDS.to_owned()),
            LAG_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_owned()), BATCH_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(SAGA_DURATION_SECONDS.to_owned()),
            SAGA_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(COMPENSATION_DURATION_SECONDS.to_owned()),
            SAGA_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_PROCESSED, "Kafka messages handled, by result: ok (stored), duplicate (eventId already stored), invalid (sent to the DLQ)");
    describe_counter!(
        DLQ_MESSAGES,
        "Messages sent to the dead-letter topic, by reason"
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "Messages per ingest batch");
    describe_counter!(
        SCHEMA_REGISTRY_LOOKUPS,
        "Schema Registry lookups of Avro writer schemas by id, by result: found, mismatch, not_found, error (retried; Avro events wait)"
    );
    describe_histogram!(
        DB_WRITE_SECONDS,
        Unit::Seconds,
        "Duration of one batch transaction, begin to commit"
    );
    describe_counter!(
        DB_WRITE_ERRORS,
        "Batch transactions that failed and were retried"
    );
    describe_histogram!(
        VISIBILITY_LAG_SECONDS,
        Unit::Seconds,
        "Event time (occurredAt) to the commit that made it visible"
    );
    describe_counter!(SAGAS_STARTED, "Sagas seen for the first time, by saga_type");
    describe_counter!(
        SAGAS_COMPLETED,
        "Sagas that reached COMPLETED, by saga_type"
    );
    describe_counter!(SAGAS_FAILED, "Sagas that reached FAILED, by saga_type");
    describe_counter!(
        SAGAS_COMPENSATED,
        "Sagas that reached COMPENSATED, by saga_type"
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request duration by method, route and status"
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Messages behind the log end, per partition (0 on replicas not fetching it)"
    );
    describe_gauge!(
        CONSUMER_UP,
        "1 while the consumer loop runs and the database accepts writes"
    );
    describe_gauge!(
        LAST_COMMIT_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last committed ingest batch"
    );
    describe_histogram!(
        SAGA_DURATION_SECONDS,
        Unit::Seconds,
        "Start to end of sagas that reached COMPLETED, FAILED or COMPENSATED, by saga_type"
    );
    describe_histogram!(
        COMPENSATION_DURATION_SECONDS,
        Unit::Seconds,
        "Start to end of compensations that finished (saga reached COMPENSATED), by saga_type"
    );
    describe_counter!(
        STEP_FAILURES,
        "Step events with stepStatus FAILED stored (each eventId once), by saga_type and step"
    );
    describe_gauge!(
        SAGAS_ACTIVE,
        "Sagas not yet finished (STARTED, IN_PROGRESS, COMPENSATING), by saga_type; read from the database, the same on every replica: aggregate with max"
    );
    describe_gauge!(
        SAGAS_STUCK,
        "Stuck sagas by saga_type and reason; read from the database, the same on every replica: aggregate with max"
    );
    describe_gauge!(
        GAUGES_REFRESHED_TIMESTAMP,
        Unit::Seconds,
        "Unix time the active/stuck gauges were last read from the database"
    );
    describe_gauge!(
        DB_REPLICA_UP,
        "1 while the read replica (database.read_url) answers, 0 when it does not; absent without a read replica"
    );
    describe_gauge!(
        DB_REPLICA_LAG_BYTES,
        Unit::Bytes,
        "WAL bytes written on the primary that the read replica has not replayed yet"
    );
    describe_gauge!(
        DB_REPLICA_LAG_SECONDS,
        Unit::Seconds,
        "How old the read replica's view is: age of its last replayed transaction while WAL is outstanding, 0 when caught up"
    );
    describe_counter!(
        RETENTION_DELETED,
        "Rows removed by retention, by table (sagas, saga_events)"
    );
    describe_counter!(RETENTION_ERRORS, "Retention passes that failed");
    describe_counter!(
        RETENTION_DAYS_DROPPED,
        "Day partitions of sagas and saga_events that retention dropped whole"
    );
    describe_counter!(
        RETENTION_SAGAS_MOVED,
        "Sagas not yet due that retention moved out of a day before dropping it"
    );
    describe_counter!(
        TELEMETRY_EXPORT_FAILURES,
        "Exports of the tracker's own telemetry that failed, by signal (traces: OTLP requests, logs: Loki pushes)"
    );
    describe_counter!(
        TELEMETRY_DROPPED,
        "Spans (signal=traces) or log lines (signal=logs) dropped because the export queue was full or the export failed"
    );
}

/// Caps the distinct values one label may take.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `value` if it is already exported or there is room for it, else `"other"`.
    pub fn label(&self, value: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return "other".to_owned();
        };
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OVERFLOW_LABEL.to_owned()
    }
}

fn saga_types() -> &'static LabelCap {
    static CAP: OnceLock<LabelCap> = OnceLock::new();
    CAP.get_or_init(|| LabelCap::new(MAX_SAGA_TYPE_LABELS))
}

fn steps() -> &'static LabelCap {
    static CAP: OnceLock<LabelCap> = OnceLock::new();
    CAP.get_or_init(|| LabelCap::new(MAX_STEP_LABELS))
}

/// A saga whose status changed in a committed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub saga_type: String,
    /// `None` for a saga seen for the first time.
    pub from: Option<SagaStatus>,
    pub to: SagaStatus,
    /// The saga's duration when `to` is terminal (`COMPLETED`, `FAILED`, `COMPENSATED`);
    /// observed once per saga, at its first terminal status.
    pub duration_ms: Option<i64>,
    /// The compensation's duration once it finished (`to` is `COMPENSATED`).
    pub compensation_duration_ms: Option<i64>,
}

/// What one committed batch did, for the counters.
#[derive(Debug, Default, Clone)]
pub struct CommittedBatch {
    pub ok: u64,
    pub duplicate: u64,
    pub size: usize,
    pub write_time: Duration,
    pub visibility_lags: Vec<f64>,
    /// Sagas whose status changed.
    pub transitions: Vec<Transition>,
    /// `(saga_type, step)` of every newly stored event with step status `FAILED`
    /// (redelivered duplicates are not in it).
    pub step_failures: Vec<(String, String)>,
    /// Sagas whose row was computed by continuing their stored fold (no stored event read).
    pub resumed: u64,
    /// Sagas refolded from all their stored events (out-of-order events, or no fold state).
    pub refolded: u64,
}

/// Records a committed batch. Call only after the commit succeeded.
pub fn batch_committed(b: &CommittedBatch) {
    counter!(EVENTS_PROCESSED, "result" => "ok").increment(b.ok);
    counter!(EVENTS_PROCESSED, "result" => "duplicate").increment(b.duplicate);
    histogram!(BATCH_SIZE).record(b.size as f64);
    histogram!(DB_WRITE_SECONDS).record(b.write_time.as_secs_f64());
    let lag = histogram!(VISIBILITY_LAG_SECONDS);
    for l in &b.visibility_lags {
        lag.record(l.max(0.0));
    }
    for tr in &b.transitions {
        let t = saga_types().label(&tr.saga_type);
        if tr.from.is_none() {
            counter!(SAGAS_STARTED, "saga_type" => t.clone()).increment(1);
        }
        if tr.from == Some(tr.to) {
            continue;
        }
        let name = match tr.to {
            SagaStatus::Completed => SAGAS_COMPLETED,
            SagaStatus::Failed => SAGAS_FAILED,
            SagaStatus::Compensated => SAGAS_COMPENSATED,
            _ => continue,
        };
        counter!(name, "saga_type" => t.clone()).increment(1);
        // Once per saga: a saga that failed and is then compensated was already observed
        // when it failed (its compensation has its own histogram).
        let was_finished = matches!(
            tr.from,
            Some(SagaStatus::Completed | SagaStatus::Failed | SagaStatus::Compensated)
        );
        if let (false, Some(ms)) = (was_finished, tr.duration_ms) {
            histogram!(SAGA_DURATION_SECONDS, "saga_type" => t.clone()).record(ms as f64 / 1e3);
        }
        if let (SagaStatus::Compensated, Some(ms)) = (tr.to, tr.compensation_duration_ms) {
            histogram!(COMPENSATION_DURATION_SECONDS, "saga_type" => t).record(ms as f64 / 1e3);
        }
    }
    let mut failures: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (saga_type, step) in &b.step_failures {
        let key = (saga_types().label(saga_type), steps().label(step));
        *failures.entry(key).or_default() += 1;
    }
    for ((saga_type, step), n) in failures {
        counter!(STEP_FAILURES, "saga_type" => saga_type, "step" => step).increment(n);
    }
    gauge!(LAST_COMMIT_TIMESTAMP).set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
}

/// Sets the database-derived gauges and zeroes every series this process exported before
/// that is absent now (a type with no more stuck sagas must read 0, not its last value).
///
/// Labels are capped like everywhere else; types folded into `other` are summed.
#[derive(Debug, Default)]
pub struct DbGauges {
    /// Series set by the previous refresh: `(saga_type)` and `(saga_type, reason)`.
    active: BTreeSet<String>,
    stuck: BTreeSet<(String, &'static str)>,
}

impl DbGauges {
    pub fn set(
        &mut self,
        active: &[(String, i64)],
        stuck: &[(String, &'static str, i64)],
        refreshed_at: chrono::DateTime<chrono::Utc>,
    ) {
        let mut now_active: BTreeMap<String, i64> = BTreeMap::new();
        for (saga_type, n) in active {
            *now_active.entry(saga_types().label(saga_type)).or_default() += n;
        }
        let mut now_stuck: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for (saga_type, reason, n) in stuck {
            *now_stuck
                .entry((saga_types().label(saga_type), *reason))
                .or_default() += n;
        }
        for gone in self.active.iter().filter(|t| !now_active.contains_key(*t)) {
            gauge!(SAGAS_ACTIVE, "saga_type" => gone.clone()).set(0.0);
        }
        for gone in self.stuck.iter().filter(|k| !now_stuck.contains_key(*k)) {
            gauge!(SAGAS_STUCK, "saga_type" => gone.0.clone(), "reason" => gone.1).set(0.0);
        }
        for (saga_type, n) in &now_active {
            gauge!(SAGAS_ACTIVE, "saga_type" => saga_type.clone()).set(*n as f64);
        }
        for ((saga_type, reason), n) in &now_stuck {
            gauge!(SAGAS_STUCK, "saga_type" => saga_type.clone(), "reason" => *reason)
                .set(*n as f64);
        }
        // Keep remembering zeroed series: they stay exported (at 0) and must stay at 0.
        self.active.extend(now_active.into_keys());
        self.stuck.extend(now_stuck.into_keys());
        gauge!(GAUGES_REFRESHED_TIMESTAMP).set(refreshed_at.timestamp_millis() as f64 / 1000.0);
    }
}

/// Sets the read-replica gauges from one measurement (`None`: the replica did not answer,
/// its lag gauges keep their last value and `up` drops to 0).
pub fn replica_observed(lag: Option<&crate::store::replica::ReplicaLag>) {
    gauge!(DB_REPLICA_UP).set(if lag.is_some() { 1.0 } else { 0.0 });
    if let Some(lag) = lag {
        gauge!(DB_REPLICA_LAG_BYTES).set(lag.bytes.unwrap_or(0) as f64);
        gauge!(DB_REPLICA_LAG_SECONDS).set(lag.seconds.unwrap_or(0.0));
    }
}

/// Counts rows removed by one committed retention batch.
pub fn retention_deleted(sagas: u64, events: u64) {
    counter!(RETENTION_DELETED, "table" => "sagas").increment(sagas);
    counter!(RETENTION_DELETED, "table" => "saga_events").increment(events);
}

/// Counts day partitions dropped and sagas moved out of them by one retention step.
pub fn retention_days(dropped: u64, moved: u64) {
    counter!(RETENTION_DAYS_DROPPED).increment(dropped);
    counter!(RETENTION_SAGAS_MOVED).increment(moved);
}

pub fn retention_failed() {
    counter!(RETENTION_ERRORS).increment(1);
}

/// Counts one message sent to the DLQ (after the DLQ producer acknowledged it).
pub fn dead_lettered(reason: &'static str) {
    counter!(EVENTS_PROCESSED, "result" => "invalid").increment(1);
    counter!(DLQ_MESSAGES, "reason" => reason).increment(1);
}

/// Messages between this replica's position and the log end of one partition.
pub fn consumer_lag(partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(lag as f64);
}

/// One Schema Registry lookup of a writer schema by id, by `result`: `found`, `mismatch`
/// (not a `SagaTracker` schema), `not_found`, or `error` (no answer; retried).
pub fn schema_registry_lookup(result: &'static str) {
    counter!(SCHEMA_REGISTRY_LOOKUPS, "result" => result).increment(1);
}

pub fn db_write_failed() {
    counter!(DB_WRITE_ERRORS).increment(1);
}

pub fn consumer_up(up: bool) {
    gauge!(CONSUMER_UP).set(if up { 1.0 } else { 0.0 });
}

/// One failed export of the tracker's own spans or logs (see [`crate::telemetry`]).
pub fn telemetry_export_failed(signal: crate::telemetry::Signal) {
    counter!(TELEMETRY_EXPORT_FAILURES, "signal" => signal.as_str()).increment(1);
}

/// Spans or log lines of the tracker's own telemetry that were never delivered.
pub fn telemetry_dropped(signal: crate::telemetry::Signal, items: u64) {
    counter!(TELEMETRY_DROPPED, "signal" => signal.as_str()).increment(items);
}

/// Records one HTTP request. `route` is the matched route template, never the raw path.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    histogram!(HTTP_REQUEST_SECONDS,
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string())
    .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cap_sends_overflow_to_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.label("A"), "A");
        assert_eq!(cap.label("B"), "B");
        assert_eq!(cap.label("C"), "other");
        assert_eq!(cap.label("A"), "A");
    }
}
