//! Day partitions of `sagas` and `saga_events` against a real PostgreSQL: idempotency across
//! partitions, retention by dropping whole days, and the in-place conversion of a database
//! created before partitioning.
//!
//! "Days apart" is real storage days: the write path is told which day it is
//! (`write_batch_on`), so a saga stored "three days ago" lives in that day's partition.

mod common;

use chrono::{DateTime, Days, Duration, NaiveDate, Timelike, Utc};
use saga_tracker::store::write::{write_batch_on, IncomingEvent};
use saga_tracker::store::{partitions, retention, rollup};
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use sqlx::PgPool;

use common::{migrated_test_db, server_options, Saga, TestDb};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// A saga of two steps that began at `start`; completed at `end` when given.
fn saga(id: &str, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Vec<IncomingEvent> {
    let mut s = Saga::new(id, "ORDER")
        .ev("RESERVE", StepStatus::Started, start, "stock", None)
        .ev(
            "RESERVE",
            StepStatus::Succeeded,
            start + Duration::seconds(1),
            "stock",
            None,
        );
    if let Some(end) = end {
        s = s.ev(
            "SHIP",
            StepStatus::Succeeded,
            end,
            "shipping",
            Some(SagaStatus::Completed),
        );
    }
    s.events
}

/// Saga `long`: six steps of one service from `start`, a second apart, each started then
/// succeeded; the last event completes it.
fn long_saga(start: DateTime<Utc>) -> Vec<IncomingEvent> {
    let mut s = Saga::new("long", "ORDER");
    for n in 0..12 {
        let status = if n % 2 == 0 {
            StepStatus::Started
        } else {
            StepStatus::Succeeded
        };
        let last = (n == 11).then_some(SagaStatus::Completed);
        let step = format!("STEP_{}", n / 2);
        s = s.ev(&step, status, start + Duration::seconds(n), "svc", last);
    }
    s.events
}

async fn write_on(pool: &PgPool, events: &[IncomingEvent], day: NaiveDate) -> (u64, u64) {
    let b = write_batch_on(pool, events, None, day)
        .await
        .expect("batch commits");
    (b.ok, b.duplicate)
}

/// The partition each of the saga's rows and events is in (`tableoid`), deduplicated.
async fn homes(pool: &PgPool, saga_id: &str) -> (Vec<String>, Vec<String>) {
    let sagas: Vec<String> = sqlx::query_scalar(
        "select distinct tableoid::regclass::text from sagas where saga_id = $1",
    )
    .bind(saga_id)
    .fetch_all(pool)
    .await
    .expect("sagas");
    let events: Vec<String> = sqlx::query_scalar(
        "select distinct tableoid::regclass::text from saga_events where saga_id = $1",
    )
    .bind(saga_id)
    .fetch_all(pool)
    .await
    .expect("events");
    (sagas, events)
}

async fn count(pool: &PgPool, sql: &str, saga_id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(saga_id)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn events_of(pool: &PgPool, saga_id: &str) -> i64 {
    count(
        pool,
        "select count(*) from saga_events where saga_id = $1",
        saga_id,
    )
    .await
}

async fn saga_rows(pool: &PgPool, saga_id: &str) -> i64 {
    count(
        pool,
        "select count(*) from sagas where saga_id = $1",
        saga_id,
    )
    .await
}

async fn table_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("to_regclass")
}

/// Every rollup row, as text, in a stable order.
async fn rollup_snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in [
        "stats_hourly",
        "stats_hourly_durations",
        "stats_daily",
        "stats_daily_durations",
    ] {
        let part: Vec<String> = sqlx::query_scalar(&format!(
            "select '{table} ' || to_jsonb(t)::text from {table} t order by 1"
        ))
        .fetch_all(pool)
        .await
        .expect("rollup rows");
        rows.extend(part);
    }
    rows
}

/// `saga_activity` lists exactly the running sagas (no `settled_at`), each at its
/// `updated_at` and on its day.
async fn assert_activity_lists_the_running_sagas(pool: &PgPool, when: &str) {
    let (running, differ): (i64, i64) = sqlx::query_as(
        "select (select count(*) from sagas where settled_at is null), \
                (select count(*) from ( \
                   (select saga_id, bucket_day, updated_at from sagas where settled_at is null \
                    except all select saga_id, bucket_day, active_at from saga_activity) \
                   union all \
                   (select saga_id, bucket_day, active_at from saga_activity \
                    except all select saga_id, bucket_day, updated_at from sagas \
                    where settled_at is null)) d)",
    )
    .fetch_one(pool)
    .await
    .expect("saga_activity against sagas");
    assert_eq!(
        differ, 0,
        "{when}: saga_activity differs from the {running} running sagas"
    );
}

async fn assert_rollups_equal_rebuild(pool: &PgPool, when: &str) {
    let incremental = rollup_snapshot(pool).await;
    rollup::rebuild(pool).await.expect("rebuild");
    let rebuilt = rollup_snapshot(pool).await;
    assert_eq!(
        incremental, rebuilt,
        "{when}: rollups differ from a rebuild"
    );
}

#[tokio::test]
async fn a_redelivery_days_later_is_stored_once_in_the_sagas_day() {
    let (_db, pool) = migrated_test_db("partitions_dup").await;
    let first_day = today() - Days::new(3);
    partitions::ensure(&pool, first_day)
        .await
        .expect("partitions");
    let start = Utc::now() - Duration::days(3);
    let events = saga("order-1", start, Some(start + Duration::seconds(5)));

    // Day 1: the first event only.
    assert_eq!(write_on(&pool, &events[..1], first_day).await, (1, 0));
    let day1 = format!("{}", first_day.format("%Y%m%d"));
    assert_eq!(
        homes(&pool, "order-1").await,
        (
            vec![format!("sagas_p{day1}")],
            vec![format!("saga_events_p{day1}")]
        )
    );

    // Three days later: the first event again (a redelivery, received later) and the rest.
    let mut later: Vec<IncomingEvent> = events.clone();
    for e in &mut later {
        e.received_at = Utc::now();
    }
    assert_eq!(write_on(&pool, &later, today()).await, (2, 1));
    assert_eq!(events_of(&pool, "order-1").await, 3, "each event once");
    assert_eq!(saga_rows(&pool, "order-1").await, 1, "one saga row");
    assert_eq!(
        homes(&pool, "order-1").await,
        (
            vec![format!("sagas_p{day1}")],
            vec![format!("saga_events_p{day1}")]
        ),
        "the saga and all its events stay in the day it was first stored"
    );
    let (status, event_count): (String, i32) =
        sqlx::query_as("select status, event_count from sagas where saga_id = 'order-1'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!((status.as_str(), event_count), ("COMPLETED", 3));

    // The whole saga redelivered once more, yet another day: nothing new.
    assert_eq!(write_on(&pool, &later, today()).await, (0, 3));
    assert_eq!(events_of(&pool, "order-1").await, 3);

    // Event ids are unique per saga: the same id on another saga is that saga's event.
    let mut other = saga("order-2", start, None);
    other[0].event.event_id = events[0].event.event_id.clone();
    assert_eq!(write_on(&pool, &other[..1], today()).await, (1, 0));
    assert_eq!(events_of(&pool, "order-2").await, 1);
    assert_rollups_equal_rebuild(&pool, "after the redeliveries").await;
    assert_activity_lists_the_running_sagas(&pool, "after the redeliveries").await;
}

#[tokio::test]
async fn retention_drops_a_due_day_whole_and_moves_the_sagas_not_yet_due() {
    let (_db, pool) = migrated_test_db("partitions_retire").await;
    let old_day = today() - Days::new(10);
    partitions::ensure(&pool, old_day)
        .await
        .expect("partitions");
    let long_ago = Utc::now() - Duration::days(10);
    let due = saga("due", long_ago, Some(long_ago + Duration::seconds(5)));
    let running = saga("running", long_ago, None);
    let recent_end = saga(
        "ended-recently",
        long_ago,
        Some(Utc::now() - Duration::days(1)),
    );
    let mut batch = due.clone();
    batch.extend(running.clone());
    batch.extend(recent_end.clone());
    assert_eq!(write_on(&pool, &batch, old_day).await, (8, 0));
    // Stored today, although its events are as old.
    let fresh = saga(
        "stored-today",
        long_ago,
        Some(long_ago + Duration::seconds(5)),
    );
    assert_eq!(write_on(&pool, &fresh, today()).await, (3, 0));

    let old = format!("{}", old_day.format("%Y%m%d"));
    assert!(table_exists(&pool, &format!("sagas_p{old}")).await);
    let cutoff = Utc::now() - Duration::days(5);
    let removed = retention::run_pass(&pool, cutoff, 1000, |_| {})
        .await
        .expect("retention pass");
    // The empty days around it that `ensure` created are due as well.
    assert!(removed.days >= 1, "{removed:?}");
    // "stored-today" ended as long ago but was stored today (an import of old events): its
    // day is far from due, so it is deleted row by row.
    assert_eq!(
        (removed.sagas, removed.events, removed.moved),
        (2, 6, 2),
        "{removed:?}"
    );
    assert!(!table_exists(&pool, &format!("sagas_p{old}")).await);
    assert!(!table_exists(&pool, &format!("saga_events_p{old}")).await);
    let days = partitions::days(&pool).await.expect("days");
    assert!(days.iter().all(|d| d.day != old_day), "{days:?}");

    assert_eq!(saga_rows(&pool, "due").await, 0);
    assert_eq!(events_of(&pool, "due").await, 0);
    let now_day = format!("{}", today().format("%Y%m%d"));
    assert_eq!(saga_rows(&pool, "stored-today").await, 0);
    for (id, n) in [("running", 2), ("ended-recently", 3)] {
        assert_eq!(saga_rows(&pool, id).await, 1, "{id}");
        assert_eq!(
            events_of(&pool, id).await,
            n,
            "{id}: every event moved along"
        );
        assert_eq!(
            homes(&pool, id).await,
            (
                vec![format!("sagas_p{now_day}")],
                vec![format!("saga_events_p{now_day}")]
            ),
            "{id}"
        );
    }
    assert_rollups_equal_rebuild(&pool, "after retiring a day").await;
    assert_activity_lists_the_running_sagas(&pool, "after retiring a day").await;

    // A moved saga still deduplicates, and goes on in its new day.
    let mut again = running.clone();
    again.extend(
        saga("running", long_ago, Some(Utc::now()))
            .into_iter()
            .skip(2),
    );
    assert_eq!(write_on(&pool, &again, today()).await, (1, 2));
    assert_eq!(events_of(&pool, "running").await, 3);
    // A late event of a removed saga starts it again from what remains (as before).
    assert_eq!(write_on(&pool, &due[2..], today()).await, (1, 0));
    assert_eq!(saga_rows(&pool, "due").await, 1);
    assert_rollups_equal_rebuild(&pool, "after writing to moved sagas").await;
    assert_activity_lists_the_running_sagas(&pool, "after writing to moved sagas").await;

    // The next pass: no day is due any more; the recreated "due" saga (its late event ended
    // it long ago, and it was stored today) goes row by row, and nothing else.
    let again = retention::run_pass(&pool, cutoff, 1000, |_| {})
        .await
        .expect("second pass");
    assert_eq!(
        (again.days, again.sagas, again.events),
        (0, 1, 1),
        "{again:?}"
    );
    assert_eq!(saga_rows(&pool, "due").await, 0);
    assert_eq!(saga_rows(&pool, "running").await, 1);
    let third = retention::run_pass(&pool, cutoff, 1000, |_| {})
        .await
        .expect("third pass");
    assert_eq!((third.days, third.sagas), (0, 0), "{third:?}");
}

/// The column list of `table` as it was before partitioning, for checksums that compare the
/// same columns before and after.
async fn columns(pool: &PgPool, table: &str) -> String {
    sqlx::query_scalar(
        "select string_agg(quote_ident(column_name), ', ' order by ordinal_position) \
         from information_schema.columns where table_name = $1 and table_schema = 'public'",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("columns")
}

async fn checksum(pool: &PgPool, table: &str, cols: &str, key: &str) -> (i64, String) {
    sqlx::query_as(&format!(
        "select count(*), md5(coalesce(string_agg(row({cols})::text, '|' order by {key}), '')) \
         from {table}"
    ))
    .fetch_one(pool)
    .await
    .expect("checksum")
}

#[tokio::test]
async fn a_database_from_before_partitioning_is_converted_in_place_without_losing_a_row() {
    let db = TestDb::create("partitions_convert").await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(server_options().database(&db.name))
        .await
        .expect("connect");
    // The schema as the previous release left it: the migrations before partitioning.
    let old_migrations = std::env::temp_dir().join(format!("{}_migrations", db.name));
    std::fs::create_dir_all(&old_migrations).expect("temp dir");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(&dir).expect("migrations dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.as_str() < "20261203000001" {
            std::fs::copy(&path, old_migrations.join(&name)).expect("copy migration");
        }
    }
    let before = sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .expect("old migrations");
    before.run(&pool).await.expect("old migrations apply");
    std::fs::remove_dir_all(&old_migrations).ok();
    // 400 sagas of 5 events, written the way that release wrote them (one row per event id,
    // one per saga), three days old and finished.
    sqlx::query(
        "insert into saga_events (event_id, saga_id, saga_type, step, step_status, saga_status, \
           occurred_at, received_at, service, sequence, metadata, kafka_topic, kafka_partition, \
           kafka_offset) \
         select 'ev-' || s || '-' || n, 'legacy-' || s, 'ORDER', 'STEP_' || n, \
           case when n = 5 then 'SUCCEEDED' else 'STARTED' end, \
           case when n = 5 then 'COMPLETED' end, \
           now() - interval '3 days' + n * interval '1 second', \
           now() - interval '3 days' + n * interval '1 second', 'svc-' || (n % 2), n, \
           jsonb_build_object('n', n), 'saga.tracker', s % 4, s * 10 + n \
         from generate_series(1, 400) s, generate_series(1, 5) n",
    )
    .execute(&pool)
    .await
    .expect("old events");
    sqlx::query(
        "insert into sagas (saga_id, saga_type, status, started_at, updated_at, ended_at, \
           duration_ms, current_step, event_count, services, first_received_at, \
           last_received_at) \
         select saga_id, 'ORDER', 'COMPLETED', min(occurred_at), max(occurred_at), \
           max(occurred_at), 4000, 'STEP_5', count(*), array['svc-0', 'svc-1'], \
           min(received_at), max(received_at) \
         from saga_events group by saga_id",
    )
    .execute(&pool)
    .await
    .expect("old sagas");
    let saga_cols = columns(&pool, "sagas").await;
    let event_cols = columns(&pool, "saga_events").await;
    let sagas_before = checksum(&pool, "sagas", &saga_cols, "saga_id").await;
    let events_before = checksum(&pool, "saga_events", &event_cols, "event_id").await;
    assert_eq!((sagas_before.0, events_before.0), (400, 2000));

    saga_tracker::store::migrate(&pool).await.expect("migrate");

    assert_eq!(
        checksum(&pool, "sagas", &saga_cols, "saga_id").await,
        sagas_before,
        "every saga row, column for column"
    );
    assert_eq!(
        checksum(&pool, "saga_events", &event_cols, "event_id").await,
        events_before,
        "every event row, column for column"
    );
    let days = partitions::days(&pool).await.expect("days");
    let yesterday = today() - Days::new(1);
    assert!(
        days.contains(&partitions::Day {
            day: yesterday,
            legacy: true
        }),
        "{days:?}"
    );
    assert!(
        days.iter().any(|d| d.day == today() && !d.legacy),
        "{days:?}"
    );
    // The old indexes were adopted by the partitioned tables, not built again.
    let adopted: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
         where c.relkind = 'i' and c.relname like '%\\_legacy' order by 1",
    )
    .fetch_all(&pool)
    .await
    .expect("adopted indexes");
    assert!(
        adopted.contains(&"sagas_started_idx_legacy".to_owned())
            && adopted.contains(&"saga_events_step_idx_legacy".to_owned())
            && adopted.contains(&"sagas_metadata_idx_legacy".to_owned()),
        "{adopted:?}"
    );
    let legacy_indexes: i64 = sqlx::query_scalar(
        "select count(*) from pg_index where indrelid = 'sagas_legacy'::regclass",
    )
    .fetch_one(&pool)
    .await
    .expect("indexes");
    let parent_indexes: i64 =
        sqlx::query_scalar("select count(*) from pg_index where indrelid = 'sagas'::regclass")
            .fetch_one(&pool)
            .await
            .expect("indexes");
    assert_eq!(legacy_indexes, parent_indexes, "no index twice");

    // Ingest goes on over the converted data: a redelivered old event is a duplicate, a new
    // event of an old saga joins it in the legacy partition, a new saga goes to today's day.
    let old = Saga::new("legacy-7", "ORDER")
        .ev(
            "STEP_1",
            StepStatus::Started,
            Utc::now() - Duration::days(3),
            "svc-1",
            None,
        )
        .events;
    let mut redelivered = old.clone();
    redelivered[0].event.event_id = "ev-7-1".to_owned();
    let mut late = old.clone();
    late[0].event.event_id = "ev-7-6".to_owned();
    late[0].event.sequence = Some(6);
    let mut batch = redelivered;
    batch.extend(late);
    batch.extend(saga("new-saga", Utc::now(), None));
    assert_eq!(write_on(&pool, &batch, today()).await, (3, 1));
    assert_eq!(events_of(&pool, "legacy-7").await, 6);
    assert_eq!(saga_rows(&pool, "legacy-7").await, 1);
    assert_eq!(
        homes(&pool, "legacy-7").await,
        (
            vec!["sagas_legacy".to_owned()],
            vec!["saga_events_legacy".to_owned()]
        )
    );
    let now_day = format!("{}", today().format("%Y%m%d"));
    assert_eq!(
        homes(&pool, "new-saga").await,
        (
            vec![format!("sagas_p{now_day}")],
            vec![format!("saga_events_p{now_day}")]
        )
    );
    assert_rollups_equal_rebuild(&pool, "after converting").await;
    assert_activity_lists_the_running_sagas(&pool, "after converting").await;

    // Until the legacy day itself is due, its due sagas are deleted row by row, as before.
    let removed = retention::run_pass(&pool, Utc::now() - Duration::days(2), 100, |_| {})
        .await
        .expect("retention");
    assert_eq!(
        (removed.days, removed.sagas, removed.events),
        (0, 400, 2001)
    );
    assert_eq!(saga_rows(&pool, "new-saga").await, 1, "running: kept");
    assert_rollups_equal_rebuild(&pool, "after deleting legacy rows").await;
    assert_activity_lists_the_running_sagas(&pool, "after deleting legacy rows").await;
    // Then the legacy day goes like any other; what is not due moves to today.
    let removed = retention::run_pass(&pool, Utc::now(), 100, |_| {})
        .await
        .expect("retention");
    assert_eq!(removed.days, 1, "{removed:?}");
    assert!(!table_exists(&pool, "sagas_legacy").await);
    assert_eq!(saga_rows(&pool, "new-saga").await, 1);
    assert_rollups_equal_rebuild(&pool, "after retiring the legacy day").await;
    assert_activity_lists_the_running_sagas(&pool, "after retiring the legacy day").await;
    pool.close().await;
}

/// In-order batches continue the stored fold instead of re-reading the saga's events, and
/// give exactly the row one fold of all events gives; an out-of-order event falls back to a
/// refold and still gives that row.
#[tokio::test]
async fn in_order_batches_resume_the_fold_and_out_of_order_ones_refold() {
    let (_db, pool) = migrated_test_db("partitions_resume").await;
    // Nanoseconds PostgreSQL cannot hold: the resumed fold works on the batch's own events
    // cut to the microsecond as bound, the refold on rows read back; both must agree.
    let start = (Utc::now() - Duration::minutes(10))
        .with_nanosecond(123_456_789)
        .expect("valid nanosecond");
    let events = long_saga(start);
    let row = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i32, Option<i64>, String, Option<String>, String)>(
            "select status, event_count, duration_ms, current_step, fold_state, \
                    concat_ws(' ', started_at, updated_at, ended_at, first_received_at, \
                              last_received_at) \
             from sagas where saga_id = 'long'",
        )
        .fetch_one(&pool)
        .await
        .expect("row")
    };
    let mut resumed = 0;
    for chunk in events.chunks(3) {
        let b = write_batch_on(&pool, chunk, None, today())
            .await
            .expect("batch");
        resumed += b.resumed;
    }
    assert_eq!(resumed, 3, "every batch after the first continues the fold");
    let in_order = row(pool.clone()).await;
    assert_eq!(
        (&in_order.0, in_order.1, in_order.2, in_order.3.as_str()),
        (&"COMPLETED".to_owned(), 12, Some(11_000), "STEP_5")
    );
    assert!(in_order.4.is_some(), "the row keeps its fold state");
    assert!(
        in_order.5.contains(".123456+00"),
        "times are the events' cut to the microsecond: {}",
        in_order.5
    );
    assert_rollups_equal_rebuild(&pool, "after resumed batches").await;
    assert_activity_lists_the_running_sagas(&pool, "after resumed batches").await;

    // The same saga, its middle event arriving last: that batch refolds, same row.
    let (_db2, pool2) = migrated_test_db("partitions_refold").await;
    let mut shuffled: Vec<IncomingEvent> = events.clone();
    let middle = shuffled.remove(5);
    shuffled.push(middle);
    let mut refolded = 0;
    for chunk in shuffled.chunks(4) {
        let b = write_batch_on(&pool2, chunk, None, today())
            .await
            .expect("batch");
        refolded += b.refolded;
    }
    assert_eq!(refolded, 1, "only the batch with the late event refolds");
    assert_eq!(row(pool2.clone()).await, in_order);
    assert_rollups_equal_rebuild(&pool2, "after a refold").await;
    assert_activity_lists_the_running_sagas(&pool2, "after a refold").await;
}

/// A running saga's row is rewritten by every batch with one of its events. None of the
/// values those batches change is indexed, so the rewrites are heap-only (no index entry
/// each; migration `20261207000001`), and the saga is `settled` — listed by
/// `sagas_settled_idx` — only once it ends, at its last event's time.
#[tokio::test]
async fn a_running_sagas_row_is_rewritten_heap_only_until_it_settles() {
    let (db, pool) = migrated_test_db("partitions_hot").await;
    // One connection, so every write is one backend's, flushed when the pool closes.
    pool.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(server_options().database(&db.name))
        .await
        .expect("one connection");
    let events = long_saga(Utc::now() - Duration::minutes(10));
    let settled = |pool: PgPool| async move {
        sqlx::query_as::<_, (Option<DateTime<Utc>>, DateTime<Utc>)>(
            "select settled_at, updated_at from sagas where saga_id = 'long'",
        )
        .fetch_one(&pool)
        .await
        .expect("row")
    };
    let batches: Vec<&[IncomingEvent]> = events.chunks(2).collect();
    for (i, chunk) in batches.iter().enumerate() {
        write_on(&pool, chunk, today()).await;
        assert_activity_lists_the_running_sagas(&pool, &format!("after batch {i}")).await;
        let (settled_at, updated_at) = settled(pool.clone()).await;
        if i + 1 < batches.len() {
            assert_eq!(settled_at, None, "running after batch {i}");
        } else {
            assert_eq!(settled_at, Some(updated_at), "settled at its last event");
        }
    }
    // Table statistics reach `pg_stat_user_tables` when a backend flushes them: close the
    // pool (each backend flushes as it ends), then read them, polling while the last
    // flushes land.
    pool.close().await;
    let pool = PgPool::connect_with(server_options().database(&db.name))
        .await
        .expect("reconnect");
    let partition = partitions::partition_name("sagas", today(), false);
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = sqlx::query_as::<_, (i64, i64)>(
            "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relname = $1",
        )
        .bind(&partition)
        .fetch_one(&pool)
        .await
        .expect("table statistics");
        if counts.0 >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Six batches: an insert, four rewrites mid-saga, and the end, which changes the status
    // and the end time (indexed) and so cannot be heap-only.
    assert_eq!(
        counts,
        (5, 4),
        "(updates, heap-only updates) of {partition}"
    );
}

/// Events known to be new (after the saga's folded events) are stored without the duplicate
/// check; an `eventId` reused with a later time looks new by that rule, so the primary key
/// refuses it and the batch is written again checked: stored once, counted as a duplicate,
/// nothing else of the batch lost, the row and rollups as a refold gives them.
#[tokio::test]
async fn an_event_id_reused_after_the_last_event_is_still_stored_once() {
    let (_db, pool) = migrated_test_db("partitions_reused_id").await;
    let start = Utc::now() - Duration::minutes(5);
    let events = saga("order-9", start, Some(start + Duration::seconds(5)));
    assert_eq!(write_on(&pool, &events[..2], today()).await, (2, 0));

    // The first event's id again, now claiming to be the latest, beside a genuinely new event.
    let mut reused = events[0].clone();
    reused.event.occurred_at = start + Duration::seconds(3);
    reused.event.step = "FORGED".to_owned();
    let batch = vec![reused, events[2].clone()];
    let b = write_batch_on(&pool, &batch, None, today())
        .await
        .expect("the batch commits despite the reused id");
    assert_eq!((b.ok, b.duplicate), (1, 1));
    assert_eq!(events_of(&pool, "order-9").await, 3, "each eventId once");
    let kept: (String, DateTime<Utc>) = sqlx::query_as(
        "select step, occurred_at from saga_events where saga_id = 'order-9' and event_id = $1",
    )
    .bind(&events[0].event.event_id)
    .fetch_one(&pool)
    .await
    .expect("the first copy");
    assert_eq!(kept.0, "RESERVE", "the first copy is the one kept");
    let (status, event_count, current_step): (String, i32, String) = sqlx::query_as(
        "select status, event_count, current_step from sagas where saga_id = 'order-9'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(
        (status.as_str(), event_count, current_step.as_str()),
        ("COMPLETED", 3, "SHIP")
    );

    // A plain redelivery of everything is caught by the check, not the key: nothing new.
    let b = write_batch_on(&pool, &events, None, today())
        .await
        .expect("batch");
    assert_eq!((b.ok, b.duplicate), (0, 3));
    assert_rollups_equal_rebuild(&pool, "after the reused id").await;
    assert_activity_lists_the_running_sagas(&pool, "after the reused id").await;
}

/// The binary `COPY` (events known new) and the checked insert (the rest) store the same
/// values: one richly filled event — every optional field set, metadata with nesting and
/// characters the text formats escape, a time with nanoseconds — written once each way, reads
/// back identically, column by column, and as the fold saw it.
#[tokio::test]
async fn a_copied_event_and_an_inserted_one_read_back_alike() {
    let (_db, pool) = migrated_test_db("partitions_copy_roundtrip").await;
    let at = (Utc::now() - Duration::minutes(3))
        .with_nanosecond(987_654_321)
        .expect("valid nanosecond");
    let rich = |saga_id: &str, event_id: &str| {
        let mut e = Saga::new(saga_id, "ORDER")
            .ev(
                "PAY",
                StepStatus::Failed,
                at,
                "billing",
                Some(SagaStatus::Failed),
            )
            .events
            .remove(0);
        e.event.event_id = event_id.to_owned();
        e.event.sequence = Some(i64::MAX);
        e.event.business_key = Some("order-8812".to_owned());
        e.event.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned());
        e.event.span_id = Some("00f067aa0ba902b7".to_owned());
        e.event.error = Some(saga_tracker_sdk::contract::StepError {
            code: "CARD_DECLINED".to_owned(),
            message: "tab\there, newline\nthere, backslash \\ and ünïcødé ✓".to_owned(),
        });
        e.event.metadata = serde_json::json!({
            "region": "eu-west-1",
            "nested": {"list": [1, 2.5, null, true], "quote": "a \"b\" \\ c\td"},
            "emoji": "🧾"
        })
        .as_object()
        .cloned();
        e.received_at = at + Duration::microseconds(1_500);
        e.source = Some(saga_tracker::store::write::KafkaSource {
            topic: "saga-events".to_owned(),
            partition: 7,
            offset: 1 << 40,
        });
        e
    };
    // Saga "copied": its only event is known new, so it is copied.
    let b = write_batch_on(&pool, &[rich("copied", "ev-1")], None, today())
        .await
        .expect("batch");
    assert_eq!(b.ok, 1);
    // Saga "inserted": a later event first, then the rich one sorting before it, which is
    // not known new and takes the checked insert.
    // (The canonical order is by sequence first: the later event needs the rich one's.)
    let mut later = Saga::new("inserted", "ORDER")
        .ev(
            "SHIP",
            StepStatus::Started,
            at + Duration::seconds(5),
            "shipping",
            None,
        )
        .events;
    later[0].event.sequence = Some(i64::MAX);
    assert_eq!(write_on(&pool, &later, today()).await, (1, 0));
    let b = write_batch_on(&pool, &[rich("inserted", "ev-1")], None, today())
        .await
        .expect("batch");
    assert_eq!(
        (b.ok, b.refolded),
        (1, 1),
        "the early event was refolded in"
    );

    let stored = |saga_id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select concat_ws(' | ', event_id, saga_type, step, step_status, saga_status, \
                        occurred_at, received_at, service, sequence, business_key, trace_id, \
                        span_id, error_code, error_message, metadata::text, kafka_topic, \
                        kafka_partition, kafka_offset, bucket_day, tracker_trace_id) \
                 from saga_events where saga_id = $1 and event_id = 'ev-1'",
            )
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .expect("the event")
        }
    };
    let copied = stored("copied").await;
    assert_eq!(copied, stored("inserted").await);
    for expected in [
        ".987654+00",
        "9223372036854775807",
        "ünïcødé ✓",
        "\"emoji\": \"🧾\"",
        "1099511627776",
        "CARD_DECLINED",
    ] {
        assert!(copied.contains(expected), "{expected} in {copied}");
    }
    // The resumed fold of the copied saga used the event as stored: a refold agrees.
    let row = |saga_id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select concat_ws(' | ', status, started_at, first_received_at, failed_step, \
                        failure_message, business_key, metadata::text) \
                 from sagas where saga_id = $1",
            )
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .expect("the row")
        }
    };
    let folded = row("copied").await;
    assert!(
        folded.contains(".987654+00") && folded.contains(".989154+00"),
        "{folded}"
    );
    assert!(folded.starts_with("FAILED | "), "{folded}");
    assert_rollups_equal_rebuild(&pool, "after copy and insert").await;
    assert_activity_lists_the_running_sagas(&pool, "after copy and insert").await;
}

/// Retention cost, both ways, in one run (docs/BENCHMARKS.md): two days each holding
/// `RETENTION_SAGAS` finished sagas of 5 events (default 200,000 = 1M events), one retired
/// whole, the other deleted row by row in batches of 1,000 as before partitioning (the path
/// the legacy partition still takes). Prints the times; asserts only what was removed.
///
/// `cargo test --release -p saga-tracker --test partitions retention_cost -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a benchmark: minutes, not a check"]
async fn retention_cost() {
    let n: i64 = common::env_or("RETENTION_SAGAS", 200_000);
    let (_db, pool) = migrated_test_db("partitions_cost").await;
    let day_a = today() - Days::new(20);
    let day_b = today() - Days::new(10);
    partitions::ensure(&pool, day_a).await.expect("partitions");
    partitions::ensure(&pool, day_b).await.expect("partitions");
    for (day, prefix) in [(day_a, "a"), (day_b, "b")] {
        sqlx::query(
            "insert into saga_events (event_id, saga_id, saga_type, step, step_status, \
               saga_status, occurred_at, received_at, service, sequence, bucket_day) \
             select 'e' || n, $1 || s, 'ORDER', 'STEP_' || n, \
               case when n = 5 then 'SUCCEEDED' else 'STARTED' end, \
               case when n = 5 then 'COMPLETED' end, \
               $2::date - interval '1 day' + n * interval '1 second', \
               $2::date - interval '1 day' + n * interval '1 second', 'svc-' || (n % 2), n, $2 \
             from generate_series(1, $3::bigint) s, generate_series(1, 5) n",
        )
        .bind(prefix)
        .bind(day)
        .bind(n)
        .execute(&pool)
        .await
        .expect("events");
        sqlx::query(
            "insert into sagas (saga_id, saga_type, status, started_at, updated_at, ended_at, \
               duration_ms, current_step, event_count, services, first_received_at, \
               last_received_at, bucket_day) \
             select saga_id, 'ORDER', 'COMPLETED', min(occurred_at), max(occurred_at), \
               max(occurred_at), 4000, 'STEP_5', count(*), array['svc-0', 'svc-1'], \
               min(received_at), max(received_at), $1 \
             from saga_events where bucket_day = $1 group by saga_id",
        )
        .bind(day)
        .execute(&pool)
        .await
        .expect("sagas");
    }
    sqlx::query("vacuum analyze")
        .execute(&pool)
        .await
        .expect("vacuum");
    rollup::rebuild(&pool).await.expect("rollups");
    let cutoff = Utc::now() - Duration::days(5);

    let started = std::time::Instant::now();
    let mut rows = retention::Removed::default();
    loop {
        let b = retention::delete_batch(&pool, cutoff, 1000, day_b, None)
            .await
            .expect("delete batch");
        rows.sagas += b.sagas;
        rows.events += b.events;
        if b.sagas < 1000 {
            break;
        }
    }
    let by_rows = started.elapsed();

    let started = std::time::Instant::now();
    let day = partitions::days(&pool)
        .await
        .expect("days")
        .into_iter()
        .find(|d| d.day == day_a)
        .expect("day a");
    let retired = partitions::retire_day(&pool, day, today(), cutoff)
        .await
        .expect("retire");
    let by_day = started.elapsed();
    assert_eq!((rows.sagas, rows.events), (n as u64, 5 * n as u64));
    assert_eq!((retired.sagas, retired.events), (n as u64, 5 * n as u64));
    assert_rollups_equal_rebuild(&pool, "after both").await;
    assert_activity_lists_the_running_sagas(&pool, "after both").await;
    println!(
        "retention of {n} sagas / {} events: row by row {:.2} s, dropping the day {:.2} s \
         ({:.1}x faster)",
        5 * n,
        by_rows.as_secs_f64(),
        by_day.as_secs_f64(),
        by_rows.as_secs_f64() / by_day.as_secs_f64()
    );
}

/// Every saga id of a search through `store::read::search_sagas`, `limit` per page,
/// following the keyset of each page's last row to the end.
async fn search_all(
    pool: &PgPool,
    filter: &saga_tracker::store::read::SagaFilter,
    sort: saga_tracker::store::read::SortKey,
    limit: i64,
) -> Vec<String> {
    use saga_tracker::store::read::{search_sagas, Keyset, Page, StuckAt};
    let policy = saga_tracker::stuck::StuckPolicy::default();
    let at = StuckAt {
        policy: &policy,
        now: Utc::now(),
    };
    let mut out = Vec::new();
    let mut after: Option<Keyset> = None;
    for _ in 0..1_000 {
        let rows = search_sagas(
            pool,
            Page {
                filter,
                sort,
                after: after.as_ref(),
                limit,
            },
            at,
        )
        .await
        .expect("search");
        assert!(rows.len() as i64 <= limit);
        let Some(last) = rows.last() else {
            return out;
        };
        after = Some(Keyset {
            sort,
            at: sort.value_of(last),
            saga_id: last.saga_id.clone(),
        });
        out.extend(rows.into_iter().map(|r| r.saga_id));
    }
    panic!("paging did not end");
}

// A search reads the days stored since yesterday first, and the older days only when one of
// them may hold a saga that belongs on the page (the first saga of each older day's order,
// compared with the page's last). Whatever day a saga is stored on, and however start times
// straddle days — an import of old events stored today, a saga stored days ago whose clock
// ran ahead — every page is the exact next slice of the whole order.
#[tokio::test]
async fn a_search_across_day_partitions_pages_in_the_exact_order() {
    use saga_tracker::store::read::{SagaFilter, SortKey};
    let (_db, pool) = migrated_test_db("partitions_search").await;
    for d in [2, 6] {
        partitions::ensure(&pool, today() - Days::new(d))
            .await
            .expect("partitions");
    }
    let now = Utc::now();
    for d in 0..6u64 {
        let day = today() - Days::new(d);
        let mut events = Vec::new();
        for i in 0..25 {
            let start = now - Duration::days(d as i64) - Duration::minutes(i);
            let end = (i % 2 == 0).then(|| start + Duration::seconds(30));
            events.extend(saga(&format!("d{d}-{i:02}"), start, end));
        }
        write_on(&pool, &events, day).await;
    }
    // Stored today, started long before everything else; stored five days ago, started (by
    // its clock) after everything else.
    let old = now - Duration::days(20);
    write_on(&pool, &saga("imported", old, Some(old)), today()).await;
    let ahead = now + Duration::hours(2);
    write_on(
        &pool,
        &saga("clock-ahead", ahead, Some(ahead + Duration::seconds(1))),
        today() - Days::new(5),
    )
    .await;

    // Running and finished sagas of the last four days, and the saga whose clock ran ahead.
    let recent = now - Duration::days(4);
    let recent_sql = format!("updated_at >= '{}'", recent.to_rfc3339());
    for (sort, column) in [
        (SortKey::StartedAt, "started_at"),
        (SortKey::UpdatedAt, "updated_at"),
    ] {
        for (filter, condition) in [
            (SagaFilter::default(), "true"),
            (
                SagaFilter {
                    service: Some("shipping".into()),
                    ..SagaFilter::default()
                },
                "services @> '{shipping}'",
            ),
            (
                SagaFilter {
                    statuses: vec!["IN_PROGRESS".into()],
                    ..SagaFilter::default()
                },
                "status = 'IN_PROGRESS'",
            ),
            (
                SagaFilter {
                    statuses: vec!["IN_PROGRESS".into(), "COMPLETED".into()],
                    ..SagaFilter::default()
                },
                "status in ('IN_PROGRESS', 'COMPLETED')",
            ),
            (
                SagaFilter {
                    updated_after: Some(recent),
                    ..SagaFilter::default()
                },
                recent_sql.as_str(),
            ),
            (
                SagaFilter {
                    min_duration_ms: Some(30_000),
                    ..SagaFilter::default()
                },
                "duration_ms >= 30000",
            ),
            (
                SagaFilter {
                    step: Some("SHIP".into()),
                    min_duration_ms: Some(20_000),
                    ..SagaFilter::default()
                },
                "status = 'COMPLETED' and duration_ms >= 20000",
            ),
        ] {
            let want: Vec<String> = sqlx::query_scalar(&format!(
                "select saga_id from sagas where {condition} order by {column} desc, saga_id desc"
            ))
            .fetch_all(&pool)
            .await
            .expect("the order");
            assert!(want.len() > 50, "{condition}: {}", want.len());
            for limit in [1, 7, 40, 500] {
                assert_eq!(
                    search_all(&pool, &filter, sort, limit).await,
                    want,
                    "{column}, {condition}, limit {limit}"
                );
            }
        }
    }
    assert_activity_lists_the_running_sagas(&pool, "after the writes").await;
    // The sagas stored on the older days are there, so the second round was needed.
    let days: i64 = sqlx::query_scalar("select count(distinct bucket_day) from sagas")
        .fetch_one(&pool)
        .await
        .expect("days");
    assert_eq!(days, 6);
}

// `sort=updatedAt` reads the running sagas from `saga_activity`: the newest 2,000 of them,
// then their rows. A filter that none of those match but older running sagas do must still
// find them (the search then collects every running match), in the exact order.
#[tokio::test]
async fn a_search_by_update_finds_running_matches_beyond_the_newest_two_thousand() {
    use saga_tracker::store::read::{SagaFilter, SortKey};
    let (_db, pool) = migrated_test_db("partitions_running").await;
    let now = Utc::now();
    let mut events = Vec::new();
    for i in 0..2_100 {
        events.extend(saga(
            &format!("busy-{i:04}"),
            now - Duration::seconds(i),
            None,
        ));
    }
    for chunk in events.chunks(1_000) {
        write_on(&pool, chunk, today()).await;
    }
    // Three running sagas older than all of those, with a service none of them has.
    for i in 0..3 {
        let start = now - Duration::hours(3) - Duration::minutes(i);
        let s = Saga::new(&format!("rare-{i}"), "ORDER")
            .ev("RESERVE", StepStatus::Started, start, "stock", None)
            .ev(
                "SHIP",
                StepStatus::Started,
                start + Duration::seconds(1),
                "shipping",
                None,
            );
        write_on(&pool, &s.events, today()).await;
    }
    assert_activity_lists_the_running_sagas(&pool, "after the writes").await;
    let shipping = SagaFilter {
        service: Some("shipping".into()),
        ..SagaFilter::default()
    };
    for limit in [1, 2, 50] {
        assert_eq!(
            search_all(&pool, &shipping, SortKey::UpdatedAt, limit).await,
            ["rare-0", "rare-1", "rare-2"],
            "limit {limit}"
        );
    }
    // Unfiltered, the first pages are the newest running sagas.
    let want: Vec<String> = sqlx::query_scalar(
        "select saga_id from sagas order by updated_at desc, saga_id desc limit 120",
    )
    .fetch_all(&pool)
    .await
    .expect("the order");
    let mut got = search_all(&pool, &SagaFilter::default(), SortKey::UpdatedAt, 60).await;
    got.truncate(120);
    assert_eq!(got, want);
}
