//! Benchmark (ignored): the cost of the ingest transaction, in process, against the real
//! PostgreSQL — no broker, so the figure is the write path alone.
//!
//! `cargo test -p saga-tracker --test write_cost -- --ignored --nocapture`
//!
//! Writes `WRITE_COST_SAGAS` sagas (default 10 000) of five events each, in time order with
//! 200 sagas running at once (so a saga spans several batches, as in live traffic), in
//! batches of 500 through `store::write::write_batch`, and prints events/s and the batch
//! time percentiles. It uses only `write_batch` and `migrate`, so the same file measures an
//! older revision of the write path for an A/B comparison in one session.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use saga_tracker::store::write::{write_batch, IncomingEvent};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};

use common::{migrated_pool, TestDb};

fn live_traffic(sagas: usize) -> Vec<IncomingEvent> {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let plan = [
        ("RESERVE", StepStatus::Started, Some(SagaStatus::Started)),
        (
            "RESERVE",
            StepStatus::Succeeded,
            Some(SagaStatus::InProgress),
        ),
        ("PAY", StepStatus::Started, None),
        ("PAY", StepStatus::Succeeded, None),
        ("SHIP", StepStatus::Succeeded, Some(SagaStatus::Completed)),
    ];
    let mut out = Vec::with_capacity(sagas * plan.len());
    for i in 0..sagas {
        for (k, (step, status, saga_status)) in plan.iter().enumerate() {
            // Saga i starts at i × 50 ms and takes 2 s per step (plus a little jitter), so
            // about 200 sagas overlap; the final sort interleaves them.
            let ms = i as i64 * 50 + k as i64 * 2_000 + (i as i64 * 37 + k as i64 * 11) % 700;
            let at = start + chrono::Duration::milliseconds(ms);
            out.push(IncomingEvent {
                event: SagaEvent {
                    schema_version: SCHEMA_VERSION,
                    event_id: format!("w{i}-{k}"),
                    saga_id: format!("w{i}"),
                    saga_type: ["ORDER", "REFUND", "TRANSFER", "PAYOUT"][i % 4].to_owned(),
                    step: (*step).to_owned(),
                    step_status: *status,
                    saga_status: *saga_status,
                    occurred_at: at,
                    service: ["orders", "payments", "shipping"][k % 3].to_owned(),
                    sequence: Some(k as i64 + 1),
                    business_key: Some(format!("order-{i}")),
                    trace_id: None,
                    span_id: None,
                    error: None,
                    metadata: None,
                },
                received_at: at,
                source: None,
            });
        }
    }
    out.sort_by_key(|e| e.event.occurred_at);
    out
}

#[tokio::test]
#[ignore = "benchmark: writes tens of thousands of events"]
async fn write_path_cost() {
    let sagas: usize = common::env_or("WRITE_COST_SAGAS", 10_000);
    let db = TestDb::create("saga_wcost").await;
    let pool = migrated_pool(&db.name).await;
    let events = live_traffic(sagas);
    // The first half fills the tables; `analyze` then gives the planner the statistics
    // autovacuum keeps in a running system (without them it scans whole tables and the
    // figure only measures that). The second half is timed.
    let (warm, timed) = events.split_at(events.len() / 2 / 500 * 500);
    for batch in warm.chunks(500) {
        write_batch(&pool, batch).await.expect("write");
    }
    sqlx::query("analyze")
        .execute(&pool)
        .await
        .expect("analyze");
    let mut times: Vec<Duration> = Vec::new();
    let started = Instant::now();
    for batch in timed.chunks(500) {
        let t0 = Instant::now();
        let committed = write_batch(&pool, batch).await.expect("write");
        times.push(t0.elapsed());
        assert_eq!(committed.ok as usize, batch.len());
    }
    let total = started.elapsed();
    let stored: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored as usize, events.len());
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{} events in {} batches of 500 after {} stored: {:.0} events/s; batch p50 {:.1?}, \
         p95 {:.1?}, mean {:.1?}",
        timed.len(),
        times.len(),
        warm.len(),
        timed.len() as f64 / total.as_secs_f64(),
        pct(0.5),
        pct(0.95),
        total / times.len() as u32
    );
}
