//! Retention: removing finished sagas (and their events) once they are old.
//!
//! Storage is partitioned by day ([`super::partitions`]), so a pass first *retires* every day
//! that ended before the cutoff: the day's sagas that are not due yet move to the current
//! day, the rest leave with their partitions, dropped whole — no row is deleted one by one.
//! Most sagas are stored on the day they end, so they go with their day, at most a day
//! after they became due.
//!
//! Two kinds of due sagas are not in such a day and are deleted row by row instead: those of
//! the *legacy* partition (the rows stored before the database was partitioned: it covers
//! many days, so only what is not due yet waits for its own day), and those stored at least
//! two days after the cutoff's day — old events imported or replayed long after they
//! happened, whose day would otherwise keep them for weeks. The sagas of the cutoff's day
//! and the day after are left to their day's retirement: deleting them row by row as the
//! cutoff moves through them is exactly the work partitioning saves.
//!
//! The row-by-row path deletes in bounded batches, each its own short transaction: pick at most
//! `batch_size` finished sagas whose `ended_at` is before the cutoff, oldest first, with
//! `for update skip locked`, then delete their events and rows, and subtract them from the
//! statistics rollups, in the same statement. A saga the ingest transaction holds (it is
//! being updated right now) is skipped, not waited for, so retention never blocks
//! ingestion; it is picked up by a later pass. Skipping also covers the moment before the
//! ingest transaction touches the row: it takes the saga's advisory lock first, and
//! retention only takes sagas whose advisory lock is free, so the two never both compute a
//! rollup change for one saga.
//!
//! A late event for a saga removed here is stored as usual and recreates a (short) saga
//! from the events that remain — the same "pure function of the stored events" rule as
//! everywhere else.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::partitions;
use super::rollup;

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Rows of `sagas`.
    pub sagas: u64,
    /// Rows of `saga_events`.
    pub events: u64,
    /// Day partitions dropped.
    pub days: u64,
    /// Sagas not due yet, moved out of a retired day.
    pub moved: u64,
}

/// The sagas one batch removes: finished before the cutoff, oldest first, and neither being
/// written by an ingest transaction right now (its row lock, or its per-saga advisory lock
/// taken before the row is touched) — skipped, never waited for.
const DOOMED: &str = "doomed as materialized (
    select saga_id from sagas
    where status in ('COMPLETED', 'COMPENSATED', 'FAILED') and ended_at < $1
      and (bucket_day >= $3 or bucket_day = $4)
      and pg_try_advisory_xact_lock(hashtextextended(saga_id, 7461))
    order by ended_at
    limit $2
    for update skip locked)";

/// Deletes one batch of at most `batch_size` finished sagas that ended before `cutoff` and
/// are stored in a day from `from_day` on or in the partition of `legacy_day`, with their
/// events, and subtracts them from the statistics rollups, in one statement
/// (every part sees the rows as they were before the deletes); then, in the same
/// transaction, drops the rollup rows that subtraction brought to zero.
pub async fn delete_batch(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_size: i64,
    from_day: NaiveDate,
    legacy_day: Option<NaiveDate>,
) -> Result<Removed, sqlx::Error> {
    let sql = format!(
        "with {DOOMED}, {rollups}, \
         events as (delete from saga_events e using doomed d \
                    where e.saga_id = d.saga_id and (e.bucket_day >= $3 or e.bucket_day = $4) \
                    returning 1), \
         gone as (delete from sagas s using doomed d \
                  where s.saga_id = d.saga_id and (s.bucket_day >= $3 or s.bucket_day = $4) \
                  returning 1) \
         select (select count(*) from gone), (select count(*) from events), {emptied}",
        rollups = rollup::subtract_doomed(),
        emptied = rollup::emptied_keys(),
    );
    let mut tx = pool.begin().await?;
    let (sagas, events, a, b, c, d): (i64, i64, Value, Value, Value, Value) = sqlx::query_as(&sql)
        .bind(cutoff)
        .bind(batch_size)
        .bind(from_day)
        .bind(legacy_day)
        .fetch_one(&mut *tx)
        .await?;
    rollup::delete_emptied(&mut tx, (a, b, c, d)).await?;
    tx.commit().await?;
    Ok(Removed {
        sagas: sagas.max(0) as u64,
        events: events.max(0) as u64,
        ..Removed::default()
    })
}

/// One retention pass: retires every day that is due (see the module docs), then deletes the
/// due sagas that are not in such a day in batches until a batch comes back short (nothing more is
/// due, or the rest is locked by ingestion right now). `on_batch` sees each step's counts as
/// it commits, so the counters move even if a later step fails.
pub async fn run_pass(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_size: i64,
    mut on_batch: impl FnMut(Removed),
) -> Result<Removed, sqlx::Error> {
    let mut total = Removed::default();
    let today = Utc::now().date_naive();
    let retired = partitions::retire_due(pool, cutoff, today).await?;
    let step = Removed {
        sagas: retired.sagas,
        events: retired.events,
        days: retired.days,
        moved: retired.moved,
    };
    on_batch(step);
    total = total.plus(step);
    let legacy_day = partitions::days(pool)
        .await?
        .into_iter()
        .find(|d| d.legacy)
        .map(|d| d.day);
    let from_day = cutoff.date_naive() + Days::new(2);
    loop {
        let batch = delete_batch(pool, cutoff, batch_size, from_day, legacy_day).await?;
        on_batch(batch);
        total = total.plus(batch);
        if (batch.sagas as i64) < batch_size {
            break;
        }
        // Let ingestion and queries have the connection and the disk between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}

impl Removed {
    fn plus(self, other: Self) -> Self {
        Self {
            sagas: self.sagas + other.sagas,
            events: self.events + other.events,
            days: self.days + other.days,
            moved: self.moved + other.moved,
        }
    }
}
