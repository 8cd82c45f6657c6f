//! Day partitions of `sagas` and `saga_events` (migration `20261203000001`): creating them
//! ahead, finding the day a new saga is written to, and retiring a day whose sagas are due.
//!
//! A saga's `bucket_day` is the UTC day its first event was stored; all its events share it.
//! The write path reads a touched saga's bucket under the saga's advisory lock and locks the
//! `storage_partitions` rows of the days it writes to `for share`. Retiring a day locks its
//! row `for update` — so it waits for batches writing to that day and is never seen half done
//! by one — then, in one transaction: moves the day's sagas that are not due (running, or
//! ended after the cutoff) with their events to the current day, subtracts the due ones from
//! the statistics rollups, deletes the row and drops both tables. A batch that had read a
//! saga's bucket just before finds the day's row gone, reads the bucket again and writes where
//! the saga is now.
//!
//! Partitions are created as plain tables and then attached: `attach partition` needs only a
//! `share update exclusive` lock on the parent, so reads and ingest go on, while `create
//! table … partition of` would take an `access exclusive` one. Dropping a retired day does
//! take `access exclusive` on the parents for an instant; every statement here runs with a
//! lock timeout, so a long export delays retention (retried next pass), never the reverse
//! for more than that timeout.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::rollup::{self, SAGA_COLUMNS};

/// The partitioned tables, in the order partitions are created and dropped.
pub const TABLES: [&str; 2] = ["sagas", "saga_events"];

/// How many days ahead of today partitions exist (creation runs at start-up and hourly, so a
/// tracker that is down for this long still finds its days when it comes back).
pub const DAYS_AHEAD: u64 = 3;

/// How long a partition statement waits for a table lock before giving up (retried on the
/// next pass).
const LOCK_TIMEOUT: &str = "5s";

/// Key of the advisory lock that serialises partition creation across trackers.
const CREATE_LOCK: i64 = 7_462;

/// The name of `table`'s partition for `day` (`sagas_p20261203`), or of the legacy partition.
pub fn partition_name(table: &str, day: NaiveDate, legacy: bool) -> String {
    if legacy {
        format!("{table}_legacy")
    } else {
        format!("{table}_p{}", day.format("%Y%m%d"))
    }
}

/// Midnight UTC at the start of `day`.
pub fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// A row of `storage_partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Day {
    pub day: NaiveDate,
    /// The partition of rows stored before partitioning; it covers every earlier day too.
    pub legacy: bool,
}

/// The days that have a partition, oldest first.
pub async fn days(pool: &PgPool) -> Result<Vec<Day>, sqlx::Error> {
    sqlx::query_as("select day, legacy from storage_partitions order by day")
        .fetch_all(pool)
        .await
}

/// Creates the partitions of every day from yesterday to `today + DAYS_AHEAD` that does not
/// have one (days covered by the legacy partition excepted). Idempotent and safe to run from
/// several trackers at once. Returns the days it created.
pub async fn ensure(pool: &PgPool, today: NaiveDate) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let mut created = Vec::new();
    let first = today - Days::new(1);
    for offset in 0..=DAYS_AHEAD + 1 {
        let day = first + Days::new(offset);
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(CREATE_LOCK)
            .execute(&mut *tx)
            .await?;
        let covered: bool = sqlx::query_scalar(
            "select exists (select 1 from storage_partitions \
             where day = $1 or (legacy and day >= $1))",
        )
        .bind(day)
        .fetch_one(&mut *tx)
        .await?;
        if covered {
            continue;
        }
        sqlx::query(&format!("set local lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        let next = day + Days::new(1);
        for table in TABLES {
            let name = partition_name(table, day, false);
            // Saga rows are updated in place by every batch of a running saga: room on
            // their pages keeps those updates heap-only (migration `20261207000001`).
            let storage = if table == "sagas" {
                " with (fillfactor = 80)"
            } else {
                ""
            };
            sqlx::query(&format!(
                "create table {name} (like {table} including defaults including constraints \
                 including generated){storage}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "alter table {table} attach partition {name} \
                 for values from ('{day}') to ('{next}')"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("insert into storage_partitions (day) values ($1)")
            .bind(day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        created.push(day);
    }
    Ok(created)
}

/// The day a saga seen for the first time is written to: the newest partition not after
/// `today` (today's, unless partition creation has not caught up — then an earlier day, which
/// only makes the saga's retention a little later). Locks that day's row `for share`, so it
/// cannot be retired before the batch commits. `None` when no such day exists (the database
/// was not migrated by this binary's `migrate`).
pub async fn lock_new_day(
    tx: &mut Transaction<'_, Postgres>,
    today: NaiveDate,
) -> Result<Option<NaiveDate>, sqlx::Error> {
    sqlx::query_scalar(
        "select day from storage_partitions \
         where day = (select max(day) from storage_partitions where day <= $1) for share",
    )
    .bind(today)
    .fetch_optional(&mut **tx)
    .await
}

/// Locks the rows of `days` `for share` and returns the ones that still exist (a day missing
/// from the answer was retired since its sagas were read).
pub async fn lock_days(
    tx: &mut Transaction<'_, Postgres>,
    days: &[NaiveDate],
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("select day from storage_partitions where day = any($1) for share")
        .bind(days)
        .fetch_all(&mut **tx)
        .await
}

/// What retiring days did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Days whose partitions were dropped.
    pub days: u64,
    /// Due sagas dropped with them.
    pub sagas: u64,
    /// Their events.
    pub events: u64,
    /// Sagas not yet due that were moved to the current day first.
    pub moved: u64,
}

/// Retires every day whose partitions hold nothing newer than `cutoff`'s day, i.e. every day
/// that ended before `cutoff` (`today` picks the day that receives the sagas that stay).
/// A day whose lock cannot be had within the lock timeout is left for the next pass.
pub async fn retire_due(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    today: NaiveDate,
) -> Result<Retired, sqlx::Error> {
    let all = days(pool).await?;
    let Some(target) = all.iter().rev().find(|d| d.day <= today).copied() else {
        return Ok(Retired::default());
    };
    let mut total = Retired::default();
    for day in all {
        if day.day >= target.day || start_of(day.day + Days::new(1)) > cutoff {
            continue;
        }
        let done = retire_day(pool, day, target.day, cutoff).await?;
        total.days += done.days;
        total.sagas += done.sagas;
        total.events += done.events;
        total.moved += done.moved;
    }
    Ok(total)
}

/// Retires one day (see the module docs), moving its sagas that are not due to `target`.
pub async fn retire_day(
    pool: &PgPool,
    day: Day,
    target: NaiveDate,
    cutoff: DateTime<Utc>,
) -> Result<Retired, sqlx::Error> {
    let sagas_p = partition_name("sagas", day.day, day.legacy);
    let events_p = partition_name("saga_events", day.day, day.legacy);
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("set local lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // The subtraction aggregates a whole day of events at once.
    sqlx::query("set local work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    let present: Option<NaiveDate> =
        sqlx::query_scalar("select day from storage_partitions where day = $1 for update")
            .bind(day.day)
            .fetch_optional(&mut *tx)
            .await?;
    if present.is_none() {
        return Ok(Retired::default());
    }
    if lock_days(&mut tx, &[target]).await?.is_empty() {
        return Ok(Retired::default());
    }
    sqlx::query(&format!(
        "create temporary table retire_sagas on commit drop as \
         select saga_id, (status in ('COMPLETED', 'COMPENSATED', 'FAILED') and ended_at < $1) \
           as due \
         from {sagas_p}"
    ))
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    let columns = |table: &str| {
        format!("(select string_agg(quote_ident(attname), ', ' order by attnum) from pg_attribute where attrelid = '{table}'::regclass and attnum > 0 and not attisdropped and attgenerated = '' and attname <> 'bucket_day')")
    };
    let (saga_cols, event_cols): (String, String) = sqlx::query_as(&format!(
        "select {}, {}",
        columns("sagas"),
        columns("saga_events")
    ))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("analyze retire_sagas")
        .execute(&mut *tx)
        .await?;
    let kept: i64 = sqlx::query_scalar("select count(*) from retire_sagas where not due")
        .fetch_one(&mut *tx)
        .await?;
    let keep = "(select saga_id from retire_sagas where not due)";
    // Usually every saga of a due day is due: then the day's tables are the source as they
    // are, without a semi-join per row.
    let leave_filter = if kept == 0 {
        String::new()
    } else {
        " where saga_id in (select saga_id from retire_sagas where due)".to_owned()
    };
    let moved = if kept == 0 {
        0
    } else {
        let moved = sqlx::query(&format!(
            "insert into sagas ({saga_cols}, bucket_day) \
         select {saga_cols}, $1 from {sagas_p} where saga_id in {keep}"
        ))
        .bind(target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(&format!(
            "insert into saga_events ({event_cols}, bucket_day) \
         select {event_cols}, $1 from {events_p} where saga_id in {keep}"
        ))
        .bind(target)
        .execute(&mut *tx)
        .await?;
        moved
    };
    let sql = format!(
        "with {rollups} select \
           (select count(*) from retire_sagas where due), \
           (select count(*) from {events_p}{leave_filter}), {emptied}",
        rollups = rollup::delta_ctes(
            None,
            Some(rollup::Source {
                sagas: &format!("select {SAGA_COLUMNS} from {sagas_p}{leave_filter}"),
                events: &format!(
                    "select {} from {events_p}{leave_filter}",
                    rollup::EVENT_COLUMNS
                ),
            }),
        ),
        emptied = rollup::emptied_keys(),
    );
    let (sagas, events, a, b, c, d): (i64, i64, Value, Value, Value, Value) =
        sqlx::query_as(&sql).fetch_one(&mut *tx).await?;
    rollup::delete_emptied(&mut tx, (a, b, c, d)).await?;
    sqlx::query("delete from storage_partitions where day = $1")
        .bind(day.day)
        .execute(&mut *tx)
        .await?;
    // Dropping a table fires no row trigger: the running sagas it held (all moved to
    // `target` above, where the trigger listed them again) leave `saga_activity` here. The
    // legacy partition holds every day up to its own.
    sqlx::query(if day.legacy {
        "delete from saga_activity where bucket_day <= $1"
    } else {
        "delete from saga_activity where bucket_day = $1"
    })
    .bind(day.day)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("drop table {events_p}, {sagas_p}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Retired {
        days: 1,
        sagas: sagas.max(0) as u64,
        events: events.max(0) as u64,
        moved,
    })
}
