//! Two batches of the same saga committed at the same time — what happens when a rebalance
//! briefly lets two replicas own one partition, or a redelivery races the original — still
//! leave the saga row equal to the pure fold of the full set of its events, and every event
//! stored once.
//!
//! Real PostgreSQL, the real write path (`store::write::write_batch`), one database per test.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use saga_tracker::aggregate::{self, EventRecord};
use saga_tracker::store::write::{write_batch, IncomingEvent};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use sqlx::PgPool;

async fn fresh_db() -> (String, PgPool) {
    let name = common::create_database("saga_conc").await;
    let pool = common::migrated_pool(&name).await;
    (name, pool)
}

async fn drop_db(name: &str, pool: PgPool) {
    pool.close().await;
    common::drop_database(name).await;
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_763_700_000_000 + ms)
        .single()
        .expect("valid instant")
}

/// 3–12 random events of one saga, with ties and every status represented.
fn random_saga(rng: &mut StdRng, saga_id: &str) -> Vec<IncomingEvent> {
    let n = rng.gen_range(3..=12);
    (0..n)
        .map(|i| {
            let step_status = StepStatus::ALL[rng.gen_range(0..StepStatus::ALL.len())];
            let saga_status = rng
                .gen_bool(0.35)
                .then(|| SagaStatus::ALL[rng.gen_range(0..SagaStatus::ALL.len())]);
            let occurred = t(rng.gen_range(0..8) * 100);
            IncomingEvent {
                event: SagaEvent {
                    schema_version: SCHEMA_VERSION,
                    event_id: format!("{saga_id}-e{i:02}"),
                    saga_id: saga_id.to_owned(),
                    saga_type: "ORDER_CREATION".to_owned(),
                    step: ["RESERVE_STOCK", "CHARGE_PAYMENT", "CONFIRM"][rng.gen_range(0..3)]
                        .to_owned(),
                    step_status,
                    saga_status,
                    occurred_at: occurred,
                    service: ["orders", "stock", "payment"][rng.gen_range(0..3)].to_owned(),
                    sequence: rng.gen_bool(0.5).then(|| rng.gen_range(0..4)),
                    business_key: rng.gen_bool(0.3).then(|| "8812".to_owned()),
                    trace_id: None,
                    span_id: None,
                    error: (step_status == StepStatus::Failed).then(|| StepError {
                        code: "DECLINED".to_owned(),
                        message: "card declined".to_owned(),
                    }),
                    metadata: None,
                },
                received_at: t(10_000 + i64::from(i)),
                source: None,
            }
        })
        .collect()
}

/// The columns the fold derives, as stored: compared field by field with the fold's result.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    status: String,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    current_step: String,
    failed_step: Option<String>,
    failure_code: Option<String>,
    compensation_started_at: Option<DateTime<Utc>>,
    compensation_ended_at: Option<DateTime<Utc>>,
    compensation_duration_ms: Option<i64>,
    event_count: i32,
    late_event_count: i32,
    business_key: Option<String>,
    services: Vec<String>,
}

fn expected(events: &[IncomingEvent]) -> Row {
    let records: Vec<EventRecord> = events
        .iter()
        .map(|e| EventRecord {
            event: e.event.clone(),
            received_at: e.received_at,
        })
        .collect();
    let s = aggregate::fold(&records).expect("a non-empty saga folds");
    Row {
        status: s.status.as_str().to_owned(),
        started_at: s.started_at,
        updated_at: s.updated_at,
        ended_at: s.ended_at,
        duration_ms: s.duration_ms,
        current_step: s.current_step,
        failed_step: s.failed_step,
        failure_code: s.failure.map(|f| f.code),
        compensation_started_at: s.compensation_started_at,
        compensation_ended_at: s.compensation_ended_at,
        compensation_duration_ms: s.compensation_duration_ms,
        event_count: s.event_count,
        late_event_count: s.late_event_count,
        business_key: s.business_key,
        services: s.services,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_of_one_saga_committed_concurrently_give_the_fold_of_the_full_set() {
    let (db, pool) = fresh_db().await;
    let iterations: u64 = common::env_or("CONCURRENT_WRITE_ITERATIONS", 200);
    let mut rng = StdRng::seed_from_u64(0x5a6a_7e57);
    for i in 0..iterations {
        let saga_id = format!("conc-{i}");
        let events = random_saga(&mut rng, &saga_id);
        // Two overlapping (sometimes disjoint, sometimes identical) subsets covering all.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for e in &events {
            match rng.gen_range(0..3) {
                0 => a.push(e.clone()),
                1 => b.push(e.clone()),
                _ => {
                    a.push(e.clone());
                    b.push(e.clone());
                }
            }
        }
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let pool = pool.clone();
                async move { write_batch(&pool, &a).await }
            }),
            tokio::spawn({
                let pool = pool.clone();
                async move { write_batch(&pool, &b).await }
            }),
        );
        let ca = ra.expect("task a").expect("batch a commits");
        let cb = rb.expect("task b").expect("batch b commits");
        assert_eq!(
            ca.ok + cb.ok,
            events.len() as u64,
            "saga {saga_id}: each event newly stored by exactly one of the two batches"
        );

        let stored: Vec<String> =
            sqlx::query_scalar("select event_id from saga_events where saga_id = $1")
                .bind(&saga_id)
                .fetch_all(&pool)
                .await
                .expect("stored ids");
        let want: BTreeSet<String> = events.iter().map(|e| e.event.event_id.clone()).collect();
        assert_eq!(stored.len(), want.len(), "saga {saga_id}: every event once");
        assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), want);

        let row: Row = sqlx::query_as(
            "select status, started_at, updated_at, ended_at, duration_ms, current_step, \
             failed_step, failure_code, compensation_started_at, compensation_ended_at, \
             compensation_duration_ms, event_count, late_event_count, business_key, services \
             from sagas where saga_id = $1",
        )
        .bind(&saga_id)
        .fetch_one(&pool)
        .await
        .expect("saga row");
        assert_eq!(
            row,
            expected(&events),
            "saga {saga_id} differs from the fold"
        );
    }
    drop_db(&db, pool).await;
}
