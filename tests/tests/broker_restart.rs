//! A real broker *process* crashing and restarting during a load: tansu (SQLite storage) is
//! killed with SIGKILL while the SDK is producing and the tracker process consuming, then
//! started again on the same port with the same data file. Every event produced must end up
//! stored exactly once.
//!
//! (The kill -9 / rebalance scenarios in `faults.rs` run against librdkafka's mock cluster
//! because tansu 0.6 never expires a group member that died without leaving; here the
//! tracker stays alive, so that limitation does not apply.)

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use saga_tracker_sdk::{SagaTracker, TrackerConfig};
use saga_tracker_tests::{
    migrate, poll_until, unique_suffix, Tansu, TestDb, TrackerOptions, TrackerProcess,
};
use tokio::task::JoinSet;

const EVENTS_PER_SAGA: u64 = 4;

fn event(saga: &str, i: u64) -> SagaEvent {
    SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: uuid::Uuid::now_v7().to_string(),
        saga_id: saga.to_owned(),
        saga_type: "BROKER_RESTART".to_owned(),
        step: format!("STEP_{i}"),
        step_status: StepStatus::Succeeded,
        saga_status: (i + 1 == EVENTS_PER_SAGA).then_some(SagaStatus::Completed),
        occurred_at: chrono::Utc::now(),
        service: "restart-test".to_owned(),
        sequence: Some(i as i64),
        business_key: None,
        trace_id: None,
        span_id: None,
        error: None,
        metadata: None,
    }
}

/// Sends `sagas` sagas with up to 100 events in flight; returns the ids of the events the
/// broker acknowledged. Fails if any event is not acknowledged (the SDK retries through the
/// restart within its delivery timeout).
async fn produce(sdk: SagaTracker, tag: String, sagas: u64) -> anyhow::Result<Vec<String>> {
    let mut in_flight = JoinSet::new();
    let mut ids = Vec::new();
    for s in 0..sagas {
        let saga = format!("{tag}-{s}");
        for i in 0..EVENTS_PER_SAGA {
            let e = event(&saga, i);
            let sdk = sdk.clone();
            in_flight.spawn(async move { sdk.send_event(&e).await.map(|()| e.event_id) });
            if in_flight.len() >= 100 {
                if let Some(r) = in_flight.join_next().await {
                    ids.push(r.context("send task")??);
                }
            }
        }
        // A steady load (~400 events/s) so the restart lands in the middle of it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while let Some(r) = in_flight.join_next().await {
        ids.push(r.context("send task")??);
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_process_killed_and_restarted_during_a_load_loses_and_duplicates_nothing(
) -> anyhow::Result<()> {
    let mut tansu = Tansu::start().await?;
    let topic = format!("restart.{}", unique_suffix());
    tansu.create_topic(&topic, 3).await?;
    tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
    let db = TestDb::create().await?;
    migrate(&db.url()).await?;
    let mut tracker =
        TrackerProcess::spawn(TrackerOptions::new(tansu.brokers(), db.url(), &topic))?;
    tracker.wait_ready(Duration::from_secs(60)).await?;

    let sdk = SagaTracker::new(
        TrackerConfig::new(tansu.brokers(), "restart-test")
            .with_topic(&topic)
            .with_delivery_timeout(Duration::from_secs(120)),
    )?;
    let sagas = 500;
    let producing = tokio::spawn(produce(sdk, format!("r-{}", unique_suffix()), sagas));

    // Let the load get going, then crash and restart the broker under it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        !producing.is_finished(),
        "the load ended before the broker restart: the test would prove nothing"
    );
    tansu.restart().await?;

    let ids = producing.await.context("producer task")??;
    let expected = (sagas * EVENTS_PER_SAGA) as usize;
    ensure!(
        ids.len() == expected,
        "{} of {expected} events acknowledged",
        ids.len()
    );

    let mut conn = db.connect().await?;
    let stored: Vec<String> = poll_until(
        Duration::from_secs(120),
        "every acknowledged event to be stored",
        || async {
            let mut c = db.connect().await?;
            let rows: Vec<String> = sqlx::query_scalar(
                "select event_id from saga_events where saga_type = 'BROKER_RESTART'",
            )
            .fetch_all(&mut c)
            .await?;
            ensure!(
                rows.len() >= expected,
                "{} of {expected} stored",
                rows.len()
            );
            Ok(rows)
        },
    )
    .await?;
    let stored: HashSet<String> = stored.into_iter().collect();
    let produced: HashSet<String> = ids.into_iter().collect();
    ensure!(
        produced.len() == expected,
        "the producer reported duplicate ids"
    );
    let missing = produced.difference(&stored).count();
    let unexpected = stored.difference(&produced).count();
    ensure!(
        missing == 0 && unexpected == 0,
        "{missing} lost, {unexpected} unexpected"
    );

    let incomplete: i64 = sqlx::query_scalar(
        "select count(*) from sagas where saga_type = 'BROKER_RESTART' \
         and (status <> 'COMPLETED' or event_count <> $1)",
    )
    .bind(EVENTS_PER_SAGA as i32)
    .fetch_one(&mut conn)
    .await?;
    ensure!(
        incomplete == 0,
        "{incomplete} sagas are not complete with all their events"
    );

    let status = tracker.stop(Duration::from_secs(60)).await?;
    ensure!(status.success(), "tracker exited with {status}");
    drop(conn);
    db.drop_db().await?;
    Ok(())
}
