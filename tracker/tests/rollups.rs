//! The statistics rollups against a real PostgreSQL.
//!
//! The rollups are maintained incrementally — every ingest batch adds and subtracts saga
//! contributions, retention subtracts what it deletes — and must equal, at every commit,
//! the rollups rebuilt from scratch from the stored sagas. These tests drive the real write
//! path with an adversarial stream (random order, duplicates, late events that move a saga
//! to an earlier hour, failures and compensations, several services, two concurrent
//! writers sharing sagas), then compare:
//!
//! 1. the incremental rollups with a rebuild, row for row;
//! 2. `/api/v1/stats`'s numbers (`store::insight::stats`) with the same numbers computed
//!    directly from `sagas`/`saga_events`, for filters with and without partial hours;
//! 3. both again after retention removed the finished sagas, and after `migrate` backfilled
//!    emptied rollups.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use saga_tracker::store::insight::{self, Stats, StatsFilter};
use saga_tracker::store::write::{is_permanent, write_batch_on, IncomingEvent};
use saga_tracker::store::{partitions, retention, rollup};
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use sqlx::{PgPool, Postgres, QueryBuilder};

use common::{migrated_pool, Saga, TestDb};

/// A small deterministic generator (xorshift64*), so a failure replays with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SERVICES: [&str; 4] = ["svc-a", "svc-b", "svc-c", "svc-d"];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// `sagas` sagas over 60 hours (three days): completed, failed, compensated (fully or not), running;
/// 10 % get a late event an hour or two before their start. Shuffled, with 5 % duplicates.
fn stream(rng: &mut Rng, sagas: usize) -> Vec<IncomingEvent> {
    let steps = ["RESERVE", "PAY", "SHIP", "NOTIFY"];
    let mut out = Vec::new();
    for i in 0..sagas {
        let ty = ["ORDER", "REFUND", "TRANSFER"][i % 3];
        let mut at = base() + Duration::milliseconds(rng.below(60 * 3_600_000) as i64);
        let mut saga = Saga::new(&format!("r{i}"), ty);
        let push = |saga: Saga, rng: &mut Rng, step: &str, st, saga_st, at| {
            let svc = SERVICES[rng.below(SERVICES.len() as u64) as usize];
            saga.ev(step, st, at, svc, saga_st)
        };
        let planned = 1 + rng.below(steps.len() as u64) as usize;
        let mut done = Vec::new();
        let mut failed = false;
        for (k, step) in steps.iter().take(planned).enumerate() {
            saga = push(
                saga,
                rng,
                step,
                StepStatus::Started,
                Some(SagaStatus::InProgress),
                at,
            );
            // From under a millisecond to about a minute: many histogram buckets.
            at += Duration::microseconds(rng.below(60_000_000) as i64 + 300);
            if rng.chance(3) {
                break; // left running
            }
            if rng.chance(12) {
                saga = push(
                    saga,
                    rng,
                    step,
                    StepStatus::Failed,
                    Some(SagaStatus::Failed),
                    at,
                );
                failed = true;
                break;
            }
            let last = k + 1 == planned;
            let saga_st = last.then_some(SagaStatus::Completed);
            saga = push(saga, rng, step, StepStatus::Succeeded, saga_st, at);
            done.push(*step);
        }
        if failed && !done.is_empty() && rng.chance(70) {
            let finish = rng.chance(80);
            for (k, step) in done.iter().rev().enumerate() {
                at += Duration::milliseconds(rng.below(5_000) as i64 + 1);
                let st = Some(SagaStatus::Compensating);
                saga = push(saga, rng, step, StepStatus::Compensating, st, at);
                if !finish && k == 0 {
                    break;
                }
                at += Duration::milliseconds(rng.below(5_000) as i64 + 1);
                let last = k + 1 == done.len();
                let saga_st = if last {
                    SagaStatus::Compensated
                } else {
                    SagaStatus::Compensating
                };
                saga = push(saga, rng, step, StepStatus::Compensated, Some(saga_st), at);
            }
        }
        if rng.chance(10) {
            let early = base() - Duration::minutes(30 + rng.below(90) as i64);
            saga = push(saga, rng, "PRECHECK", StepStatus::Succeeded, None, early);
        }
        out.extend(saga.events);
    }
    // Fisher–Yates, then duplicates spread through the stream.
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    let copies: Vec<IncomingEvent> = out.iter().filter(|_| rng.chance(5)).cloned().collect();
    for c in copies {
        let at = rng.below(out.len() as u64 + 1) as usize;
        out.insert(at, c);
    }
    out
}

/// Writes `events` in random batches from two concurrent writers, retrying transient
/// errors (deadlocks between the writers) like the ingest loop does.
///
/// The sagas are stored in the day partition of [`base`] (as if ingested then), so the
/// retention below retires whole days: the path that matters at scale.
async fn ingest_concurrently(pool: &PgPool, rng: &mut Rng, events: Vec<IncomingEvent>) {
    let day = base().date_naive();
    partitions::ensure(pool, day).await.expect("day partitions");
    let mut batches = VecDeque::new();
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let n = (1 + rng.below(40) as usize).min(rest.len());
        batches.push_back(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let queue = Arc::new(Mutex::new(batches));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, queue) = (pool.clone(), queue.clone());
            tokio::spawn(async move {
                loop {
                    let Some(batch) = queue.lock().expect("queue").pop_front() else {
                        return;
                    };
                    let mut attempts = 0;
                    loop {
                        match write_batch_on(&pool, &batch, None, day).await {
                            Ok(_) => break,
                            Err(e) if !is_permanent(&e) && attempts < 20 => attempts += 1,
                            Err(e) => panic!("batch failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task");
    }
}

/// Every rollup row as text, sorted. Rows that went back to zero are included: the write
/// path and retention delete them, so the incremental tables must hold exactly the rows a
/// rebuild does, no dead keys left behind.
async fn rollup_rows(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "select row_to_json(t)::text from stats_hourly t \
         union all \
         select row_to_json(t)::text from stats_daily t \
         union all \
         select row_to_json(t)::text from stats_hourly_durations t \
         union all \
         select row_to_json(t)::text from stats_daily_durations t",
    )
    .fetch_all(pool)
    .await
    .expect("read rollups");
    rows.sort();
    rows
}

/// Fails with the first rows that differ (not two dumps of thousands of rows).
fn assert_same_rows(left: &[String], right: &[String], what: &str) {
    let a: BTreeSet<&String> = left.iter().collect();
    let b: BTreeSet<&String> = right.iter().collect();
    let only_left: Vec<_> = a.difference(&b).take(10).collect();
    let only_right: Vec<_> = b.difference(&a).take(10).collect();
    assert!(
        only_left.is_empty() && only_right.is_empty() && left.len() == right.len(),
        "{what} ({} vs {} rows)\nonly in the first: {only_left:#?}\nonly in the second: \
         {only_right:#?}",
        left.len(),
        right.len()
    );
}

/// The incremental rollups equal a rebuild from the stored sagas.
async fn assert_rollups_match_rebuild(pool: &PgPool, when: &str) {
    let incremental = rollup_rows(pool).await;
    rollup::rebuild(pool).await.expect("rebuild");
    let rebuilt = rollup_rows(pool).await;
    assert_same_rows(
        &incremental,
        &rebuilt,
        &format!("{when}: incremental rollups differ from a rebuild"),
    );
    assert!(!rebuilt.is_empty(), "{when}: the rollups are empty");
}

/// `where` clause text of a statistics filter over `sagas s`, for the direct queries.
fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &StatsFilter) {
    qb.push(" where true");
    if let Some(t) = &f.saga_type {
        qb.push(" and s.saga_type = ").push_bind(t.clone());
    }
    if let Some(svc) = &f.service {
        qb.push(" and s.services @> array[")
            .push_bind(svc.clone())
            .push("]::text[]");
    }
    if let Some(a) = f.started_after {
        qb.push(" and s.started_at >= ").push_bind(a);
    }
    if let Some(b) = f.started_before {
        qb.push(" and s.started_at < ").push_bind(b);
    }
}

type TypeRow = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64);

/// What the statistics must say, computed from `sagas` and `saga_events` directly.
async fn assert_stats_match_direct(pool: &PgPool, f: &StatsFilter) {
    let stats: Stats = insight::stats(pool, f, std::time::Duration::from_secs(60))
        .await
        .expect("stats");

    let mut qb = QueryBuilder::new(
        "select s.saga_type, count(*), \
           count(*) filter (where status = 'STARTED'), \
           count(*) filter (where status = 'IN_PROGRESS'), \
           count(*) filter (where status = 'COMPLETED'), \
           count(*) filter (where status = 'FAILED'), \
           count(*) filter (where status = 'COMPENSATING'), \
           count(*) filter (where status = 'COMPENSATED'), \
           count(*) filter (where compensation_started_at is not null), \
           count(*) filter (where compensation_started_at is not null and status = 'FAILED') \
         from sagas s",
    );
    push_filter(&mut qb, f);
    qb.push(" group by s.saga_type order by s.saga_type");
    let direct: Vec<TypeRow> = qb.build_query_as().fetch_all(pool).await.expect("direct");
    let ours: Vec<TypeRow> = stats
        .by_type
        .iter()
        .map(|t| {
            (
                t.saga_type.clone().unwrap_or_default(),
                t.total,
                t.started,
                t.in_progress,
                t.completed,
                t.failed,
                t.compensating,
                t.compensated,
                t.compensation_started,
                t.compensation_failed,
            )
        })
        .collect();
    assert_eq!(ours, direct, "per-type counts for {f:?}");
    assert_eq!(
        stats.overall.total,
        direct.iter().map(|r| r.1).sum::<i64>(),
        "overall total for {f:?}"
    );

    let mut qb = QueryBuilder::new(
        "select s.saga_type, e.step, count(distinct s.saga_id), \
           count(distinct s.saga_id) filter (where e.step_status = 'FAILED') \
         from sagas s join saga_events e on e.saga_id = s.saga_id",
    );
    push_filter(&mut qb, f);
    qb.push(" group by 1, 2");
    let direct: BTreeMap<(String, String), (i64, i64)> = qb
        .build_query_as::<(String, String, i64, i64)>()
        .fetch_all(pool)
        .await
        .expect("direct steps")
        .into_iter()
        .map(|(t, s, n, f)| ((t, s), (n, f)))
        .collect();
    let ours: BTreeMap<(String, String), (i64, i64)> = stats
        .steps
        .iter()
        .map(|s| ((s.saga_type.clone(), s.step.clone()), (s.sagas, s.failures)))
        .collect();
    assert_eq!(ours, direct, "per-step counts for {f:?}");

    // Percentiles: within one histogram bucket (9.05 %) of the exact percentile_cont.
    for (column, pick) in [
        ("duration_ms", 0usize),
        ("compensation_duration_ms", 1usize),
    ] {
        let mut qb = QueryBuilder::new(format!(
            "select s.saga_type, percentile_cont(array[0.5, 0.95, 0.99]) within group \
               (order by s.{column}) from sagas s"
        ));
        push_filter(&mut qb, f);
        qb.push(format!(" and s.{column} is not null group by s.saga_type"));
        let exact: Vec<(String, Vec<f64>)> =
            qb.build_query_as().fetch_all(pool).await.expect("exact");
        for (ty, exact) in exact {
            let t = stats
                .by_type
                .iter()
                .find(|t| t.saga_type.as_deref() == Some(ty.as_str()))
                .expect("type present");
            let est = if pick == 0 {
                t.duration_ms.clone()
            } else {
                t.compensation_duration_ms.clone()
            }
            .expect("percentiles present");
            for (e, x) in est.iter().zip(&exact) {
                let err = (e - x).abs() / x.max(1.0);
                assert!(
                    err < 0.0906,
                    "{column} of {ty} for {f:?}: estimate {est:?}, exact {exact:?}"
                );
            }
        }
    }
}

fn filters() -> Vec<StatsFilter> {
    let at = |m: i64| Some(base() + Duration::minutes(m) + Duration::seconds(17));
    vec![
        StatsFilter::default(),
        StatsFilter {
            saga_type: Some("REFUND".to_owned()),
            ..StatsFilter::default()
        },
        StatsFilter {
            service: Some("svc-b".to_owned()),
            ..StatsFilter::default()
        },
        // Partial hours at both ends, whole hours between.
        StatsFilter {
            started_after: at(37),
            started_before: at(192),
            ..StatsFilter::default()
        },
        // Partial hours, hours of a partial day, a whole day, and back.
        StatsFilter {
            started_after: at(37),
            started_before: at(53 * 60 + 12),
            ..StatsFilter::default()
        },
        StatsFilter {
            service: Some("svc-a".to_owned()),
            started_after: at(23 * 60 + 5),
            started_before: at(49 * 60),
            ..StatsFilter::default()
        },
        // Inside one hour.
        StatsFilter {
            started_after: at(65),
            started_before: at(100),
            ..StatsFilter::default()
        },
        // Open-ended, on an hour boundary, with type and service.
        StatsFilter {
            saga_type: Some("ORDER".to_owned()),
            service: Some("svc-c".to_owned()),
            started_after: Some(base() + Duration::hours(2)),
            ..StatsFilter::default()
        },
        StatsFilter {
            started_before: at(-20),
            ..StatsFilter::default()
        },
    ]
}

#[tokio::test]
async fn incremental_rollups_equal_a_rebuild_and_the_stats_equal_direct_queries() {
    let db = TestDb::create("saga_rollup").await;
    let pool = migrated_pool(&db.name).await;
    let seed = common::env_or("ROLLUP_TEST_SEED", 0x5eed_2026_u64);
    println!("seed {seed} (set ROLLUP_TEST_SEED to replay)");
    let mut rng = Rng(seed);
    let events = stream(&mut rng, 600);
    ingest_concurrently(&pool, &mut rng, events).await;

    let moved: i64 = sqlx::query_scalar("select count(*) from sagas where started_at < $1")
        .bind(base())
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(
        moved > 0,
        "the stream must move some sagas to earlier hours"
    );

    for f in filters() {
        assert_stats_match_direct(&pool, &f).await;
    }
    assert_rollups_match_rebuild(&pool, "after ingest").await;

    // Retention removes every finished saga; what stays is the running ones.
    let removed = retention::run_pass(&pool, base() + Duration::days(30), 37, |_| {})
        .await
        .expect("retention");
    assert!(removed.sagas > 0 && removed.days > 0, "{removed:?}");
    for f in filters() {
        assert_stats_match_direct(&pool, &f).await;
    }
    assert_rollups_match_rebuild(&pool, "after retention").await;
}

#[tokio::test]
async fn migrate_backfills_rollups_for_sagas_stored_before_they_existed() {
    let db = TestDb::create("saga_rollup").await;
    let pool = migrated_pool(&db.name).await;
    let mut rng = Rng(7);
    let events = stream(&mut rng, 60);
    ingest_concurrently(&pool, &mut rng, events).await;
    let before = rollup_rows(&pool).await;
    assert!(!before.is_empty());

    // A database upgraded from a version without rollups: sagas, no rollups, no version.
    sqlx::query(
        "truncate stats_hourly, stats_hourly_durations, stats_daily, stats_daily_durations, \
         stats_rollup_version",
    )
    .execute(&pool)
    .await
    .expect("empty the rollups");
    assert!(insight::stats(
        &pool,
        &StatsFilter::default(),
        std::time::Duration::from_secs(10)
    )
    .await
    .expect("stats")
    .by_type
    .is_empty());
    saga_tracker::store::migrate(&pool).await.expect("migrate");
    assert_same_rows(
        &rollup_rows(&pool).await,
        &before,
        "backfilled rollups differ from the incremental ones",
    );
    let version: i32 = sqlx::query_scalar("select version from stats_rollup_version")
        .fetch_one(&pool)
        .await
        .expect("version");
    assert_eq!(version, rollup::ROLLUP_VERSION);
    // And a second migrate leaves current rollups alone.
    let built_at: DateTime<Utc> = sqlx::query_scalar("select built_at from stats_rollup_version")
        .fetch_one(&pool)
        .await
        .expect("built_at");
    saga_tracker::store::migrate(&pool)
        .await
        .expect("migrate again");
    let again: DateTime<Utc> = sqlx::query_scalar("select built_at from stats_rollup_version")
        .fetch_one(&pool)
        .await
        .expect("built_at");
    assert_eq!(built_at, again);
}
