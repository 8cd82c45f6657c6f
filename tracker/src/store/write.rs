//! The ingest transaction: one batch of valid events → one PostgreSQL transaction.
//!
//! Steps, all inside one transaction and each a single statement whatever the batch size:
//!
//! 1. take a transaction-scoped advisory lock per touched saga, in sorted order — two
//!    replicas briefly owning the same partition during a rebalance then serialise per saga
//!    instead of computing a saga row from each other's half-visible events (sorted order
//!    rules out deadlocks);
//! 2. read the touched sagas' rows as they were (status for the counters, fold state, day);
//! 3. store the events — those known to be new with a binary `COPY`, the rest with an
//!    insert that checks each against the stored ones — so a redelivered event is stored
//!    once and reported as a duplicate, either skipped by `on conflict do nothing` or, had it
//!    been taken for new, refused by the primary key, which sends the batch round again with
//!    every event checked;
//! 4. continue each saga's fold from its stored state when its new events sort after the
//!    folded ones, else refold it from *all* its stored events with the pure
//!    [`aggregate::fold`], and upsert the rows;
//! 5. apply the net change of the touched sagas' contributions to the statistics rollups
//!    ([`rollup::apply_ingest`]), so `/api/v1/stats` is exact the moment the batch commits.
//!
//! The saga row is a pure function of the set of its events however they arrive: a resumed
//! fold gives exactly what a refold of every stored event would ([`aggregate::resume`]), and
//! anything it cannot vouch for is refolded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::{Query, QueryScalar};
use sqlx::{PgPool, Postgres, Transaction};

use super::rows::{EventRow, EVENT_COLUMNS};
use super::{copy, partitions, rollup};
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

/// The columns both ways of storing events fill, in the order they bind or copy them.
macro_rules! event_columns {
    () => {
        "event_id, saga_id, saga_type, step, step_status, saga_status, occurred_at, received_at,
    service, sequence, business_key, trace_id, span_id, error_code, error_message, metadata,
    kafka_topic, kafka_partition, kafka_offset, bucket_day, tracker_trace_id"
    };
}

/// Inserts events from typed arrays (one per column, `unnest`ed in one statement), each
/// checked against the stored ones: a redelivery is a no-op. Each event goes to its saga's
/// day partition (`bucket_day`), where the primary key `(saga_id, event_id, bucket_day)`
/// refuses a second copy. Returns only the keys of the rows it stored: the fold takes those
/// events from the batch itself, with their times cut to the microsecond as they were bound
/// ([`as_stored`]), which is exactly what PostgreSQL holds. Sending every column back and
/// decoding it again (metadata JSON included) cost more than the insert's index work.
///
/// Events the write path knows are new skip this for [`COPY_EVENTS`] ([`write_batch_on`]):
/// the check is a second descent of the primary key per event, and the statement's arrays
/// are decoded and `unnest`ed before a row is written (docs/BENCHMARKS.md).
const INSERT_EVENTS_CHECKED: &str = concat!(
    "insert into saga_events (",
    event_columns!(),
    ")
select x.*, $21::text
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bigint[], $11::text[],
            $12::text[], $13::text[], $14::text[], $15::text[], $16::jsonb[], $17::text[],
            $18::integer[], $19::bigint[], $20::date[]) as x
on conflict (saga_id, event_id, bucket_day) do nothing
returning event_id"
);

/// The same columns as [`INSERT_EVENTS_CHECKED`], in binary `COPY` ([`copy_events`]).
const COPY_EVENTS: &str = concat!(
    "copy saga_events (",
    event_columns!(),
    ") from stdin (format binary)"
);

const UPSERT_SAGAS: &str = r#"
insert into sagas (
    saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms, current_step,
    failed_step, failure_code, failure_message, compensation_started_at, compensation_ended_at,
    compensation_duration_ms, event_count, late_event_count, business_key, trace_id, metadata,
    services, first_received_at, last_received_at, bucket_day, fold_state)
select saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms,
    current_step, failed_step, failure_code, failure_message, compensation_started_at,
    compensation_ended_at, compensation_duration_ms, event_count, late_event_count,
    business_key, trace_id, metadata, string_to_array(services, E'\x1f'), first_received_at,
    last_received_at, bucket_day, fold_state
from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[],
            $12::timestamptz[], $13::timestamptz[], $14::bigint[], $15::integer[],
            $16::integer[], $17::text[], $18::text[], $19::jsonb[], $20::text[],
            $21::timestamptz[], $22::timestamptz[], $23::date[], $24::text[])
    as x(saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms,
         current_step, failed_step, failure_code, failure_message, compensation_started_at,
         compensation_ended_at, compensation_duration_ms, event_count, late_event_count,
         business_key, trace_id, metadata, services, first_received_at, last_received_at,
         bucket_day, fold_state)
on conflict (saga_id, bucket_day) do update set
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
    fold_state = excluded.fold_state,
    row_updated_at = now()
"#;

/// Separator of the services of one saga in the `text[]` the upsert splits again: a 2-D
/// array would need every saga to have as many services as the others. ASCII unit
/// separator, which the contract never lets into a service name (control characters are
/// rejected).
const SERVICE_SEPARATOR: char = '\u{1f}';

/// A touched saga's row as it was before the batch: what the rollups counted for it, the
/// rest of its state (to resume the fold from) and its day.
#[derive(Debug, Clone, sqlx::FromRow)]
struct StoredSaga {
    #[sqlx(flatten)]
    facts: rollup::SagaFacts,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    current_step: String,
    failed_step: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    compensation_ended_at: Option<DateTime<Utc>>,
    event_count: i32,
    late_event_count: i32,
    business_key: Option<String>,
    trace_id: Option<String>,
    metadata: Value,
    first_received_at: DateTime<Utc>,
    last_received_at: DateTime<Utc>,
    bucket_day: NaiveDate,
    fold_state: Option<String>,
}

impl StoredSaga {
    /// The stored fold state, if there is one this build can continue from.
    fn fold_state(&self) -> Option<aggregate::FoldState> {
        let value: Value = serde_json::from_str(self.fold_state.as_deref()?).ok()?;
        aggregate::FoldState::from_json(&value)
    }

    /// The row as the aggregate's state (what `fold` gave when it was written).
    fn state(&self) -> Result<SagaState, ()> {
        let f = &self.facts;
        Ok(SagaState {
            saga_id: f.saga_id.clone(),
            saga_type: f.saga_type.clone(),
            status: SagaStatus::parse(&f.status).ok_or(())?,
            started_at: f.started_at,
            updated_at: self.updated_at,
            ended_at: self.ended_at,
            duration_ms: f.duration_ms,
            current_step: self.current_step.clone(),
            failed_step: self.failed_step.clone(),
            failure: self.failure_code.as_ref().map(|code| StepError {
                code: code.clone(),
                message: self.failure_message.clone().unwrap_or_default(),
            }),
            compensation_started_at: f.compensation_started_at,
            compensation_ended_at: self.compensation_ended_at,
            compensation_duration_ms: f.compensation_duration_ms,
            event_count: self.event_count,
            late_event_count: self.late_event_count,
            business_key: self.business_key.clone(),
            trace_id: self.trace_id.clone(),
            metadata: match &self.metadata {
                Value::Object(m) => m.clone(),
                _ => return Err(()),
            },
            services: f.services.clone(),
            first_received_at: self.first_received_at,
            last_received_at: self.last_received_at,
        })
    }
}

fn stored_sagas_sql() -> String {
    format!(
        "select {}, updated_at, ended_at, current_step, failed_step, failure_code, \
           failure_message, compensation_ended_at, event_count, late_event_count, business_key, \
           trace_id, metadata, first_received_at, last_received_at, bucket_day, fold_state \
         from sagas where saga_id = any($1)",
        rollup::SAGA_COLUMNS
    )
}

/// The aggregate's step facts as the rollups take them.
fn rollup_steps(steps: Vec<aggregate::StepFacts>) -> Vec<rollup::StepFacts> {
    steps
        .into_iter()
        .map(|s| rollup::StepFacts {
            step: s.step,
            failed: s.failed,
            duration_us: s.duration_us,
        })
        .collect()
}

/// The touched sagas' rows and the day partitions the batch writes to, locked `for share`
/// (see [`partitions`]). A saga whose day was retired between reading its row and locking
/// the day has been moved (or removed): its row is read again, at most a few times.
async fn stored_sagas_and_days(
    tx: &mut Transaction<'_, Postgres>,
    saga_ids: &[String],
    today: NaiveDate,
) -> Result<(HashMap<String, StoredSaga>, NaiveDate), sqlx::Error> {
    for _ in 0..3 {
        let rows: Vec<StoredSaga> = sqlx::query_as(&stored_sagas_sql())
            .bind(saga_ids)
            .fetch_all(&mut **tx)
            .await?;
        let Some(new_day) = partitions::lock_new_day(tx, today).await? else {
            return Err(sqlx::Error::Protocol(
                "no day partition of `sagas` exists: run `saga-tracker migrate` \
                 (it creates them)"
                    .into(),
            ));
        };
        let days: Vec<NaiveDate> = rows
            .iter()
            .map(|r| r.bucket_day)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let locked: HashSet<NaiveDate> = partitions::lock_days(tx, &days)
            .await?
            .into_iter()
            .collect();
        if days.iter().all(|d| locked.contains(d)) {
            let rows = rows
                .into_iter()
                .map(|r| (r.facts.saga_id.clone(), r))
                .collect();
            return Ok((rows, new_day));
        }
    }
    // Retention retired three days under this batch in a row: give up this attempt, the
    // batch is retried (40001 is transient).
    Err(sqlx::Error::Protocol(
        "day partitions kept being retired while the batch read its sagas".into(),
    ))
}

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
    write_batch_on(pool, events, tracker_trace_id, Utc::now().date_naive()).await
}

/// [`write_batch_traced`] as if today (UTC) were `today`: new sagas go to the newest day
/// partition not after it. The ingest path passes the real date; tests of the day partitions
/// pass others to store sagas "days apart" without waiting for days.
///
/// Events the batch knows are new — every event of a saga without a row (such a saga has no
/// stored events: every batch that stores an event writes its saga's row, and retention
/// removes both together), and events sorting after everything a saga's fold state has folded
/// ([`aggregate::FoldState::precedes`]) — are stored with a binary `COPY`, without the
/// duplicate check. Should that knowledge be wrong (an `eventId` reused with other content,
/// so it sorts elsewhere than its stored copy), the primary key still refuses the second copy
/// (`23505`), and the batch is written again from the start with every event checked: the
/// result is the same, only slower.
pub async fn write_batch_on(
    pool: &PgPool,
    events: &[IncomingEvent],
    tracker_trace_id: Option<&str>,
    today: NaiveDate,
) -> Result<CommittedBatch, sqlx::Error> {
    let started = Instant::now();
    if events.is_empty() {
        return Ok(CommittedBatch::default());
    }
    match write_attempt(pool, events, tracker_trace_id, today, started, true).await {
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            tracing::debug!(
                error = %db,
                "an event thought new was stored already: writing the batch again, checked"
            );
            write_attempt(pool, events, tracker_trace_id, today, started, false).await
        }
        result => result,
    }
}

/// One try of [`write_batch_on`]; `trust_new` lets it store the events it knows are new
/// without the duplicate check.
async fn write_attempt(
    pool: &PgPool,
    events: &[IncomingEvent],
    tracker_trace_id: Option<&str>,
    today: NaiveDate,
    started: Instant,
    trust_new: bool,
) -> Result<CommittedBatch, sqlx::Error> {
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

    // Every read of this transaction is a lookup by saga id, which the primary keys serve.
    // Without this, a day partition filled faster than autovacuum analyzes it (every new
    // day, and any catch-up) has no statistics, and the planner seq-scans it for each batch:
    // 6 ms a batch at 20k sagas, growing with the day.
    sqlx::query("set local enable_seqscan = off")
        .execute(&mut *tx)
        .await?;

    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended(id, 7461)) \
         from unnest($1::text[]) with ordinality as t(id, n) order by n",
    )
    .bind(&saga_ids)
    .execute(&mut *tx)
    .await?;

    // The rows as they were before this batch: their status feeds the transition counters,
    // their statistics contribution is subtracted from the rollups below, and their day is
    // where the saga's new events go.
    let (previous, new_day) = stored_sagas_and_days(&mut tx, &saga_ids, today).await?;
    let day_of = |saga_id: &str| previous.get(saga_id).map_or(new_day, |p| p.bucket_day);

    // The stored fold states, read once: they decide which events are known new, and the
    // sagas they belong to resume from them below.
    let stored_folds: HashMap<&str, aggregate::FoldState> = previous
        .iter()
        .filter_map(|(id, prev)| Some((id.as_str(), prev.fold_state()?)))
        .collect();
    /// A saga's events in this batch, each with its stored form, and whether all are known new.
    type SagaBatch<'a> = (Vec<(&'a IncomingEvent, EventRecord)>, bool);
    let mut batch_by_saga: HashMap<&str, SagaBatch<'_>> = HashMap::new();
    for e in &unique {
        let record = as_stored(e);
        let saga_id = e.event.saga_id.as_str();
        let known_new = trust_new
            && match previous.get(saga_id) {
                None => true,
                Some(prev) => stored_folds
                    .get(saga_id)
                    .is_some_and(|fold| fold.precedes(prev.event_count, &record)),
            };
        let (records, all_new) = batch_by_saga.entry(saga_id).or_insert((Vec::new(), true));
        records.push((*e, record));
        *all_new &= known_new;
    }
    let (known_new, maybe_stored): (Vec<&IncomingEvent>, Vec<&IncomingEvent>) = unique
        .iter()
        .partition(|e| batch_by_saga[e.event.saga_id.as_str()].1);
    // Event ids are unique within `unique` (deduplicated above), so they name the rows.
    let mut stored_ids: HashSet<String> = HashSet::with_capacity(unique.len());
    if !known_new.is_empty() {
        copy_events(&mut tx, &known_new, &day_of, tracker_trace_id).await?;
        // All stored, or the copy failed with the key's 23505 and this attempt is over.
        stored_ids.extend(known_new.iter().map(|e| e.event.event_id.clone()));
    }
    if !maybe_stored.is_empty() {
        stored_ids.extend(
            bind_events(
                sqlx::query_scalar(INSERT_EVENTS_CHECKED),
                &maybe_stored,
                &day_of,
            )
            .bind(tracker_trace_id)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    // What this batch newly stored (redeliveries are not among them), as stored, per saga.
    let new_by_saga: HashMap<&str, Vec<EventRecord>> = batch_by_saga
        .into_iter()
        .filter_map(|(saga_id, (records, _))| {
            let new: Vec<EventRecord> = records
                .into_iter()
                .filter(|(e, _)| stored_ids.contains(e.event.event_id.as_str()))
                .map(|(_, record)| record)
                .collect();
            (!new.is_empty()).then_some((saga_id, new))
        })
        .collect();
    let inserted = || new_by_saga.values().flatten();

    // Each saga that gained events: continue its stored fold when every new event sorts after
    // the ones folded so far (the usual, in-order case: no stored event is read), else refold
    // from all its stored events (out-of-order or late events, rows from before fold states).
    struct Folded {
        state: SagaState,
        fold: aggregate::FoldState,
        /// The step facts the saga's previous contribution had, when it had one.
        old_steps: Option<Vec<rollup::StepFacts>>,
    }
    let mut folded: Vec<Folded> = Vec::with_capacity(new_by_saga.len());
    let mut refold: Vec<String> = Vec::new();
    for (saga_id, new) in &new_by_saga {
        let resumed = previous.get(*saga_id).and_then(|prev| {
            let stored = stored_folds.get(*saga_id)?;
            let (state, fold) = aggregate::resume(&prev.state().ok()?, stored, new)?;
            Some(Folded {
                state,
                fold,
                old_steps: Some(rollup_steps(stored.step_facts())),
            })
        });
        match resumed {
            Some(f) => folded.push(f),
            // A saga without a row has no stored events either (every batch that stores an
            // event writes its saga's row, and retention removes both together), so what
            // this batch stored is all of it: fold that, without reading it back.
            None if !previous.contains_key(*saga_id) => {
                if let Some((state, fold)) = aggregate::fold_with_state(new) {
                    folded.push(Folded {
                        state,
                        fold,
                        old_steps: None,
                    });
                }
            }
            None => refold.push((*saga_id).to_owned()),
        }
    }
    let resumed = folded.iter().filter(|f| f.old_steps.is_some()).count() as u64;
    if !refold.is_empty() {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from saga_events where saga_id = any($1)"
        ))
        .bind(&refold)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_saga: HashMap<&str, Vec<EventRecord>> = HashMap::new();
        for row in &rows {
            by_saga
                .entry(row.saga_id.as_str())
                .or_default()
                .push(row.to_record()?);
        }
        for (saga_id, records) in &by_saga {
            let Some((state, fold)) = aggregate::fold_with_state(records) else {
                continue;
            };
            let old_steps = previous.contains_key(*saga_id).then(|| {
                let new: HashSet<&str> = new_by_saga
                    .get(saga_id)
                    .map(|n| n.iter().map(|r| r.event.event_id.as_str()).collect())
                    .unwrap_or_default();
                rollup::step_facts(
                    records
                        .iter()
                        .filter(|r| !new.contains(r.event.event_id.as_str()))
                        .map(step_of),
                )
            });
            folded.push(Folded {
                state,
                fold,
                old_steps,
            });
        }
    }

    let mut transitions = Vec::new();
    for f in &folded {
        let state = &f.state;
        let before = previous
            .get(state.saga_id.as_str())
            .and_then(|s| SagaStatus::parse(&s.facts.status));
        if before != Some(state.status) {
            transitions.push(Transition {
                saga_type: state.saga_type.clone(),
                from: before,
                to: state.status,
                duration_ms: state.duration_ms,
                compensation_duration_ms: state.compensation_duration_ms,
            });
        }
    }
    let fold_states: HashMap<&str, String> = folded
        .iter()
        .map(|f| (f.state.saga_id.as_str(), f.fold.to_json().to_string()))
        .collect();
    let states: Vec<SagaState> = folded.iter().map(|f| f.state.clone()).collect();
    bind_sagas(sqlx::query(UPSERT_SAGAS), &states, &day_of, |s| {
        fold_states.get(s.saga_id.as_str()).cloned()
    })
    .execute(&mut *tx)
    .await?;

    // Statistics rollups: each touched saga's contribution as it is now, minus the one it
    // had before this batch (its old row, with the step facts before this batch).
    let mut delta = rollup::Delta::default();
    for f in &folded {
        let old = match (previous.get(f.state.saga_id.as_str()), &f.old_steps) {
            (Some(prev), Some(old_steps)) => Some((&prev.facts, old_steps.as_slice())),
            _ => None,
        };
        delta.change(
            old,
            (
                &rollup::SagaFacts::from(&f.state),
                &rollup_steps(f.fold.step_facts()),
            ),
        );
    }
    delta.apply(&mut tx).await?;

    tx.commit().await?;

    let committed_at = Utc::now();
    let ok = inserted().count() as u64;
    let step_failures = inserted()
        .filter(|r| r.event.step_status == StepStatus::Failed)
        .map(|r| (r.event.saga_type.clone(), r.event.step.clone()))
        .collect();
    Ok(CommittedBatch {
        resumed,
        refolded: refold.len() as u64,
        ok,
        duplicate: events.len() as u64 - ok,
        size: events.len(),
        write_time: started.elapsed(),
        visibility_lags: inserted()
            .map(|r| {
                (committed_at - r.event.occurred_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1e6
            })
            .collect(),
        transitions,
        step_failures,
    })
}

/// `t` as PostgreSQL stores it when sqlx binds it or [`copy_events`] copies it: whole
/// microseconds since 2000-01-01, counted the way sqlx's encoder counts them
/// (`TimeDelta::num_microseconds`, which rounds toward zero), so the fold sees the very values
/// a later refold reads back.
fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    match copy::pg_micros(t) {
        Some(us) => copy::epoch() + chrono::TimeDelta::microseconds(us),
        // Beyond ±292,000 years: neither path can write it, so the batch fails before this
        // value could matter.
        None => t,
    }
}

/// The event as the row [`copy_events`] or [`INSERT_EVENTS_CHECKED`] stores for it reads back.
fn as_stored(e: &IncomingEvent) -> EventRecord {
    let mut event = e.event.clone();
    event.occurred_at = stored_time(event.occurred_at);
    EventRecord {
        event,
        received_at: stored_time(e.received_at),
    }
}

/// Stores events known to be new with one binary `COPY` ([`COPY_EVENTS`]). An event that
/// is stored after all fails the copy with the primary key's `23505`.
async fn copy_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&IncomingEvent],
    day_of: &impl Fn(&str) -> NaiveDate,
    tracker_trace_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let encode = |e: copy::OutOfRange| sqlx::Error::Encode(Box::new(e));
    // About 400 bytes an event in the bench's workload; the buffer grows if need be.
    let mut rows = copy::BinaryRows::new(21, events.len() * 512);
    for e in events {
        let ev = &e.event;
        rows.row();
        rows.text(&ev.event_id);
        rows.text(&ev.saga_id);
        rows.text(&ev.saga_type);
        rows.text(&ev.step);
        rows.text(ev.step_status.as_str());
        rows.opt_text(ev.saga_status.map(SagaStatus::as_str));
        rows.timestamptz(ev.occurred_at).map_err(encode)?;
        rows.timestamptz(e.received_at).map_err(encode)?;
        rows.text(&ev.service);
        rows.opt_int8(ev.sequence);
        rows.opt_text(ev.business_key.as_deref());
        rows.opt_text(ev.trace_id.as_deref());
        rows.opt_text(ev.span_id.as_deref());
        rows.opt_text(ev.error.as_ref().map(|x| x.code.as_str()));
        rows.opt_text(ev.error.as_ref().map(|x| x.message.as_str()));
        rows.opt_jsonb(ev.metadata.as_ref());
        rows.opt_text(e.source.as_ref().map(|s| s.topic.as_str()));
        rows.opt_int4(e.source.as_ref().map(|s| s.partition));
        rows.opt_int8(e.source.as_ref().map(|s| s.offset));
        rows.date(day_of(&ev.saga_id)).map_err(encode)?;
        rows.opt_text(tracker_trace_id);
    }
    let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// Binds the events as the first 20 parameters of [`INSERT_EVENTS_CHECKED`], one array per
/// column.
fn bind_events<'q, O>(
    query: QueryScalar<'q, Postgres, O, PgArguments>,
    events: &[&IncomingEvent],
    day_of: &impl Fn(&str) -> NaiveDate,
) -> QueryScalar<'q, Postgres, O, PgArguments> {
    fn col<'a, T>(events: &[&'a IncomingEvent], f: impl Fn(&'a IncomingEvent) -> T) -> Vec<T> {
        events.iter().map(|e| f(e)).collect()
    }
    query
        .bind(col(events, |e| e.event.event_id.clone()))
        .bind(col(events, |e| e.event.saga_id.clone()))
        .bind(col(events, |e| e.event.saga_type.clone()))
        .bind(col(events, |e| e.event.step.clone()))
        .bind(col(events, |e| e.event.step_status.as_str()))
        .bind(col(events, |e| e.event.saga_status.map(SagaStatus::as_str)))
        .bind(col(events, |e| e.event.occurred_at))
        .bind(col(events, |e| e.received_at))
        .bind(col(events, |e| e.event.service.clone()))
        .bind(col(events, |e| e.event.sequence))
        .bind(col(events, |e| e.event.business_key.clone()))
        .bind(col(events, |e| e.event.trace_id.clone()))
        .bind(col(events, |e| e.event.span_id.clone()))
        .bind(col(events, |e| {
            e.event.error.as_ref().map(|x| x.code.clone())
        }))
        .bind(col(events, |e| {
            e.event.error.as_ref().map(|x| x.message.clone())
        }))
        .bind(col(events, |e| {
            e.event.metadata.as_ref().map(|m| Value::Object(m.clone()))
        }))
        .bind(col(events, |e| e.source.as_ref().map(|s| s.topic.clone())))
        .bind(col(events, |e| e.source.as_ref().map(|s| s.partition)))
        .bind(col(events, |e| e.source.as_ref().map(|s| s.offset)))
        .bind(col(events, |e| day_of(&e.event.saga_id)))
}

/// Binds the saga rows as the parameters of [`UPSERT_SAGAS`], one array per column.
fn bind_sagas<'q>(
    query: Query<'q, Postgres, PgArguments>,
    states: &[SagaState],
    day_of: &impl Fn(&str) -> NaiveDate,
    fold_state: impl Fn(&SagaState) -> Option<String>,
) -> Query<'q, Postgres, PgArguments> {
    fn col<T>(states: &[SagaState], f: impl Fn(&SagaState) -> T) -> Vec<T> {
        states.iter().map(f).collect()
    }
    let separator = SERVICE_SEPARATOR.to_string();
    query
        .bind(col(states, |s| s.saga_id.clone()))
        .bind(col(states, |s| s.saga_type.clone()))
        .bind(col(states, |s| s.status.as_str()))
        .bind(col(states, |s| s.started_at))
        .bind(col(states, |s| s.updated_at))
        .bind(col(states, |s| s.ended_at))
        .bind(col(states, |s| s.duration_ms))
        .bind(col(states, |s| s.current_step.clone()))
        .bind(col(states, |s| s.failed_step.clone()))
        .bind(col(states, |s| s.failure.as_ref().map(|f| f.code.clone())))
        .bind(col(states, |s| {
            s.failure.as_ref().map(|f| f.message.clone())
        }))
        .bind(col(states, |s| s.compensation_started_at))
        .bind(col(states, |s| s.compensation_ended_at))
        .bind(col(states, |s| s.compensation_duration_ms))
        .bind(col(states, |s| s.event_count))
        .bind(col(states, |s| s.late_event_count))
        .bind(col(states, |s| s.business_key.clone()))
        .bind(col(states, |s| s.trace_id.clone()))
        .bind(col(states, |s| Value::Object(s.metadata.clone())))
        .bind(col(states, |s| s.services.join(&separator)))
        .bind(col(states, |s| s.first_received_at))
        .bind(col(states, |s| s.last_received_at))
        .bind(col(states, |s| day_of(&s.saga_id)))
        .bind(col(states, fold_state))
}
