//! The ingest transaction: one batch of valid events → one PostgreSQL transaction.
//!
//! Steps, all inside one transaction and each a single statement whatever the batch size:
//!
//! 1. take a transaction-scoped advisory lock per touched saga, in sorted order — two
//!    replicas briefly owning the same partition during a rebalance then serialise per saga
//!    instead of computing a saga row from each other's half-visible events (sorted order
//!    rules out deadlocks);
//! 2. insert the events, `on conflict (event_id) do nothing` — a redelivered event is stored
//!    once and reported as a duplicate;
//! 3. read the touched sagas' previous status (for the counters) and *all* their events;
//! 4. fold each saga with the pure [`aggregate::fold`] and upsert the rows;
//! 5. apply the net change of the touched sagas' contributions to the statistics rollups
//!    ([`rollup::apply_ingest`]), so `/api/v1/stats` is exact the moment the batch commits.
//!
//! Recomputing from every stored event, rather than patching the old row, is what makes the
//! saga row a pure function of the set of its events however they arrive.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus};
use serde_json::{json, Value};
use sqlx::PgPool;

use super::rollup;
use super::rows::{EventRow, EVENT_COLUMNS};
use crate::aggregate::{self, EventRecord, SagaState};
use crate::metrics::{CommittedBatch, Transition};

/// Where a message came from, stored with the event for audits and DLQ replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A validated event on its way into the database.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub event: SagaEvent,
    pub received_at: DateTime<Utc>,
    pub source: Option<KafkaSource>,
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn event_json(e: &IncomingEvent) -> Value {
    let ev = &e.event;
    json!({
        "event_id": ev.event_id,
        "saga_id": ev.saga_id,
        "saga_type": ev.saga_type,
        "step": ev.step,
        "step_status": ev.step_status.as_str(),
        "saga_status": ev.saga_status.map(SagaStatus::as_str),
        "occurred_at": ts(&ev.occurred_at),
        "received_at": ts(&e.received_at),
        "service": ev.service,
        "sequence": ev.sequence,
        "business_key": ev.business_key,
        "trace_id": ev.trace_id,
        "span_id": ev.span_id,
        "error_code": ev.error.as_ref().map(|x| &x.code),
        "error_message": ev.error.as_ref().map(|x| &x.message),
        "metadata": ev.metadata,
        "kafka_topic": e.source.as_ref().map(|s| &s.topic),
        "kafka_partition": e.source.as_ref().map(|s| s.partition),
        "kafka_offset": e.source.as_ref().map(|s| s.offset),
    })
}

fn saga_json(s: &SagaState) -> Value {
    json!({
        "saga_id": s.saga_id,
        "saga_type": s.saga_type,
        "status": s.status.as_str(),
        "started_at": ts(&s.started_at),
        "updated_at": ts(&s.updated_at),
        "ended_at": s.ended_at.as_ref().map(ts),
        "duration_ms": s.duration_ms,
        "current_step": s.current_step,
        "failed_step": s.failed_step,
        "failure_code": s.failure.as_ref().map(|f| &f.code),
        "failure_message": s.failure.as_ref().map(|f| &f.message),
        "compensation_started_at": s.compensation_started_at.as_ref().map(ts),
        "compensation_ended_at": s.compensation_ended_at.as_ref().map(ts),
        "compensation_duration_ms": s.compensation_duration_ms,
        "event_count": s.event_count,
        "late_event_count": s.late_event_count,
        "business_key": s.business_key,
        "trace_id": s.trace_id,
        "metadata": s.metadata,
        "services": s.services,
        "first_received_at": ts(&s.first_received_at),
        "last_received_at": ts(&s.last_received_at),
    })
}

const INSERT_EVENTS: &str = r#"
insert into saga_events (
    event_id, saga_id, saga_type, step, step_status, saga_status, occurred_at, received_at,
    service, sequence, business_key, trace_id, span_id, error_code, error_message, metadata,
    kafka_topic, kafka_partition, kafka_offset, tracker_trace_id)
select
    event_id, saga_id, saga_type, step, step_status, saga_status, occurred_at, received_at,
    service, sequence, business_key, trace_id, span_id, error_code, error_message, metadata,
    kafka_topic, kafka_partition, kafka_offset, $2::text
from jsonb_to_recordset($1) as x(
    event_id text, saga_id text, saga_type text, step text, step_status text, saga_status text,
    occurred_at timestamptz, received_at timestamptz, service text, sequence bigint,
    business_key text, trace_id text, span_id text, error_code text, error_message text,
    metadata jsonb, kafka_topic text, kafka_partition integer, kafka_offset bigint)
on conflict (event_id) do nothing
returning event_id, occurred_at
"#;

const UPSERT_SAGAS: &str = r#"
insert into sagas (
    saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms, current_step,
    failed_step, failure_code, failure_message, compensation_started_at, compensation_ended_at,
    compensation_duration_ms, event_count, late_event_count, business_key, trace_id, metadata,
    services, first_received_at, last_received_at)
select
    saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms, current_step,
    failed_step, failure_code, failure_message, compensation_started_at, compensation_ended_at,
    compensation_duration_ms, event_count, late_event_count, business_key, trace_id,
    coalesce(metadata, '{}'::jsonb), coalesce(services, '{}'), first_received_at, last_received_at
from jsonb_to_recordset($1) as x(
    saga_id text, saga_type text, status text, started_at timestamptz, updated_at timestamptz,
    ended_at timestamptz, duration_ms bigint, current_step text, failed_step text,
    failure_code text, failure_message text, compensation_started_at timestamptz,
    compensation_ended_at timestamptz, compensation_duration_ms bigint, event_count integer,
    late_event_count integer, business_key text, trace_id text, metadata jsonb, services text[],
    first_received_at timestamptz, last_received_at timestamptz)
on conflict (saga_id) do update set
    saga_type = excluded.saga_type,
    status = excluded.status,
    started_at = excluded.started_at,
    updated_at = excluded.updated_at,
    ended_at = excluded.ended_at,
    duration_ms = excluded.duration_ms,
    current_step = excluded.current_step,
    failed_step = excluded.failed_step,
    failure_code = excluded.failure_code,
    failure_message = excluded.failure_message,
    compensation_started_at = excluded.compensation_started_at,
    compensation_ended_at = excluded.compensation_ended_at,
    compensation_duration_ms = excluded.compensation_duration_ms,
    event_count = excluded.event_count,
    late_event_count = excluded.late_event_count,
    business_key = excluded.business_key,
    trace_id = excluded.trace_id,
    metadata = excluded.metadata,
    services = excluded.services,
    first_received_at = excluded.first_received_at,
    last_received_at = excluded.last_received_at,
    row_updated_at = now()
"#;

/// What the rollups need of an event: its step, step status and time.
fn step_of(r: &EventRecord) -> (&str, &str, DateTime<Utc>) {
    (
        r.event.step.as_str(),
        r.event.step_status.as_str(),
        r.event.occurred_at,
    )
}

/// Whether a failed [`write_batch`] can never succeed with the same events: PostgreSQL said
/// the *data* is wrong — SQLSTATE class 22 (data exception, e.g. `22P05` untranslatable
/// character, `22021` bad encoding) or class 23 (integrity violation, e.g. `23514` check).
/// Retrying such a batch would wedge its partition forever, so ingest isolates the offending
/// event instead. Everything else — lost connections, pool timeouts, `40001`/`40P01`
/// serialisation failures and deadlocks, `57P01` admin shutdown, `53xxx` out of resources,
/// `08xxx` connection exceptions — is transient and retried.
pub fn is_permanent(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// Stores the events (each `eventId` once) and recomputes every saga they touch, in one
/// transaction. Returns what to count once the commit happened (it has, when this returns
/// `Ok`). An empty slice is a no-op. The events are stored without a tracker trace id; see
/// [`write_batch_traced`].
pub async fn write_batch(
    pool: &PgPool,
    events: &[IncomingEvent],
) -> Result<CommittedBatch, sqlx::Error> {
    write_batch_traced(pool, events, None).await
}

/// [`write_batch`], recording `tracker_trace_id` (the trace of the ingest batch doing the
/// write, when it is sampled) on every event it newly stores, so the saga detail can lead to
/// the tracker's own work. A redelivered event keeps the trace id of the batch that stored it
/// first. One value per batch, so it is one bind beside the events' JSON, not a field per row.
pub async fn write_batch_traced(
    pool: &PgPool,
    events: &[IncomingEvent],
    tracker_trace_id: Option<&str>,
) -> Result<CommittedBatch, sqlx::Error> {
    let started = Instant::now();
    if events.is_empty() {
        return Ok(CommittedBatch::default());
    }
    // Dedup within the batch too: keep the first copy of each eventId.
    let mut seen = HashSet::with_capacity(events.len());
    let unique: Vec<&IncomingEvent> = events
        .iter()
        .filter(|e| seen.insert(e.event.event_id.as_str()))
        .collect();
    let saga_ids: Vec<String> = unique
        .iter()
        .map(|e| e.event.saga_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut tx = pool.begin().await?;

    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended(id, 7461)) \
         from unnest($1::text[]) with ordinality as t(id, n) order by n",
    )
    .bind(&saga_ids)
    .execute(&mut *tx)
    .await?;

    let payload = Value::Array(unique.iter().map(|e| event_json(e)).collect());
    let inserted: Vec<(String, DateTime<Utc>)> = sqlx::query_as(INSERT_EVENTS)
        .bind(&payload)
        .bind(tracker_trace_id)
        .fetch_all(&mut *tx)
        .await?;

    // The rows as they were before this batch: their status feeds the transition counters,
    // and their statistics contribution is subtracted from the rollups below.
    let previous: HashMap<String, rollup::SagaFacts> = rollup::previous_rows(&mut tx, &saga_ids)
        .await?
        .into_iter()
        .map(|row| (row.saga_id.clone(), row))
        .collect();

    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from saga_events where saga_id = any($1)"
    ))
    .bind(&saga_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_saga: HashMap<&str, Vec<EventRecord>> = HashMap::new();
    for row in &rows {
        by_saga
            .entry(row.saga_id.as_str())
            .or_default()
            .push(row.to_record()?);
    }

    let mut states = Vec::with_capacity(by_saga.len());
    let mut transitions = Vec::new();
    for (saga_id, records) in &by_saga {
        let Some(state) = aggregate::fold(records) else {
            continue;
        };
        let before = previous
            .get(*saga_id)
            .and_then(|s| SagaStatus::parse(&s.status));
        if before != Some(state.status) {
            transitions.push(Transition {
                saga_type: state.saga_type.clone(),
                from: before,
                to: state.status,
                duration_ms: state.duration_ms,
                compensation_duration_ms: state.compensation_duration_ms,
            });
        }
        states.push(state);
    }
    let sagas = Value::Array(states.iter().map(saga_json).collect());
    sqlx::query(UPSERT_SAGAS)
        .bind(&sagas)
        .execute(&mut *tx)
        .await?;

    // Statistics rollups: each touched saga's contribution as it is now, minus the one it
    // had before this batch (its old row, with the events stored before this batch).
    let newly_stored: HashSet<&str> = inserted.iter().map(|(id, _)| id.as_str()).collect();
    let mut delta = rollup::Delta::default();
    for state in &states {
        let records = by_saga
            .get(state.saga_id.as_str())
            .map_or(&[][..], Vec::as_slice);
        delta.add(
            1,
            &rollup::SagaFacts::from(state),
            &rollup::step_facts(records.iter().map(step_of)),
        );
        if let Some(old) = previous.get(&state.saga_id) {
            let before = records
                .iter()
                .filter(|r| !newly_stored.contains(r.event.event_id.as_str()));
            delta.add(-1, old, &rollup::step_facts(before.map(step_of)));
        }
    }
    delta.apply(&mut tx).await?;

    tx.commit().await?;

    let committed_at = Utc::now();
    let ok = inserted.len() as u64;
    let step_failures = unique
        .iter()
        .map(|e| &e.event)
        .filter(|e| {
            e.step_status == StepStatus::Failed && newly_stored.contains(e.event_id.as_str())
        })
        .map(|e| (e.saga_type.clone(), e.step.clone()))
        .collect();
    Ok(CommittedBatch {
        ok,
        duplicate: events.len() as u64 - ok,
        size: events.len(),
        write_time: started.elapsed(),
        visibility_lags: inserted
            .iter()
            .map(|(_, occurred)| {
                (committed_at - *occurred).num_microseconds().unwrap_or(0) as f64 / 1e6
            })
            .collect(),
        transitions,
        step_failures,
    })
}
