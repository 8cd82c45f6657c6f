//! `database.read_url`: the tracker ingests into a primary and serves the API from a real
//! streaming replica of it (the test's own pair of PostgreSQL clusters, the replica made
//! with `pg_basebackup -R`), and `/readyz` reports the replica's state and lag.
//!
//! That the API really reads from the replica is shown by pausing the replica's WAL replay:
//! a saga the primary already holds stays invisible through the API until replay resumes.

use std::time::Duration;

use anyhow::{ensure, Context};
use reqwest::StatusCode;
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::replica::ReplicatedPg;
use saga_tracker_tests::{
    metric_value, migrate, poll_until, tracker_bin, unique_suffix, Tansu, TrackerOptions,
    TrackerProcess,
};
use serde_json::Value;

const EVENTUALLY: Duration = Duration::from_secs(60);
const ORDER: &str = "ORDER_CREATION";

async fn record_saga(sdk: &SagaTracker, saga_id: &str) -> anyhow::Result<()> {
    sdk.record(
        Step::new(saga_id, ORDER, "ORDER_PLACED", StepStatus::Succeeded)
            .with_sequence(1)
            .with_saga_status(SagaStatus::Started),
    )
    .await?;
    sdk.flush(Duration::from_secs(10))?;
    Ok(())
}

async fn readyz(tracker: &TrackerProcess) -> anyhow::Result<(StatusCode, Value)> {
    let (status, body) = tracker.get_text("readyz", &[]).await?;
    let json: Value =
        serde_json::from_str(&body).with_context(|| format!("/readyz is not JSON: {body}"))?;
    Ok((status, json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_by_the_replica_and_readiness_reports_it() -> anyhow::Result<()> {
    tracker_bin()?;
    let pg = tokio::task::spawn_blocking(ReplicatedPg::start).await??;
    migrate(&pg.primary_url())
        .await
        .context("migrate the primary")?;

    let tansu = Tansu::start().await?;
    let topic = format!("saga.tracker.replica-{}", unique_suffix());
    tansu.create_topic(&topic, 2).await?;
    tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
    let mut options = TrackerOptions::new(tansu.brokers(), pg.primary_url(), &topic);
    options
        .extra_env
        .push(("TRACKER_DATABASE__READ_URL".into(), pg.replica_url()));
    let mut tracker = TrackerProcess::spawn(options)?;
    tracker.wait_ready(EVENTUALLY).await?;

    let (status, ready) = readyz(&tracker).await?;
    ensure!(status == StatusCode::OK, "/readyz: {status} {ready}");
    let replica = &ready["checks"]["read_database"];
    ensure!(replica["status"] == "ok", "read_database check: {ready}");
    ensure!(replica["lag_bytes"].is_i64(), "no lag_bytes in {ready}");

    // 1. A saga written through Kafka into the primary becomes visible through the replica.
    let sdk =
        SagaTracker::new(TrackerConfig::new(tansu.brokers(), "order-service").with_topic(&topic))?;
    record_saga(&sdk, "replica-1").await?;
    poll_until(EVENTUALLY, "saga replica-1 in the API", || async {
        tracker
            .get_saga("replica-1")
            .await?
            .context("not visible yet")
    })
    .await?;

    // 2. With the replica's replay paused, a saga the primary holds is not served.
    pg.replica_query("select pg_wal_replay_pause()")?;
    record_saga(&sdk, "replica-2").await?;
    poll_until(
        EVENTUALLY,
        "saga replica-2 committed on the primary",
        || async {
            let n = pg.primary_query("select count(*) from sagas where saga_id = 'replica-2'")?;
            ensure!(n == "1", "not on the primary yet ({n})");
            Ok(())
        },
    )
    .await?;
    // The primary holds it; the API must keep answering 404 while replay is paused.
    for _ in 0..10 {
        ensure!(
            tracker.get_saga("replica-2").await?.is_none(),
            "saga replica-2 visible through the API while the replica's replay is paused: the \
             API is not reading from the replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, ready) = readyz(&tracker).await?;
    ensure!(
        status == StatusCode::OK,
        "a paused replica is still ready: {ready}"
    );
    let replica = &ready["checks"]["read_database"];
    ensure!(
        replica["detail"]
            .as_str()
            .unwrap_or("")
            .contains("replay paused"),
        "the pause is not reported: {ready}"
    );
    ensure!(
        replica["lag_bytes"].as_i64().unwrap_or(0) > 0,
        "a paused replica with WAL outstanding reports no lag: {ready}"
    );
    ensure!(
        replica["lag_seconds"].as_f64().unwrap_or(0.0) >= 0.0,
        "lag_seconds missing: {ready}"
    );
    pg.replica_query("select pg_wal_replay_resume()")?;
    poll_until(
        EVENTUALLY,
        "saga replica-2 in the API after replay resumed",
        || async {
            tracker
                .get_saga("replica-2")
                .await?
                .context("not visible yet")
        },
    )
    .await?;
    poll_until(
        Duration::from_secs(20),
        "the replica-lag gauges",
        || async {
            let text = tracker.metrics_text().await?;
            let up = metric_value(&text, "saga_tracker_db_replica_up", &[]);
            ensure!(up == Some(1.0), "saga_tracker_db_replica_up = {up:?}");
            ensure!(
                metric_value(&text, "saga_tracker_db_replica_lag_bytes", &[]).is_some(),
                "no saga_tracker_db_replica_lag_bytes"
            );
            Ok(())
        },
    )
    .await?;

    // 3. A stopped replica makes the tracker unready, in words naming the read database.
    tokio::task::block_in_place(|| pg.stop_replica())?;
    let (status, ready) = readyz(&tracker).await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "/readyz with the replica down: {status} {ready}"
    );
    ensure!(
        ready["checks"]["read_database"]["status"] == "fail",
        "{ready}"
    );
    ensure!(
        ready["checks"]["read_database"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("read database (database.read_url)"),
        "{ready}"
    );
    ensure!(
        ready["checks"]["database"]["status"] == "ok",
        "the primary is fine: {ready}"
    );
    poll_until(
        Duration::from_secs(20),
        "saga_tracker_db_replica_up 0",
        || async {
            let up = tracker.metric("saga_tracker_db_replica_up", &[]).await?;
            ensure!(up == Some(0.0), "saga_tracker_db_replica_up = {up:?}");
            Ok(())
        },
    )
    .await?;

    // 4. Back up: ready again, and reads work.
    tokio::task::block_in_place(|| pg.start_replica())?;
    tracker.wait_ready(EVENTUALLY).await?;
    ensure!(
        tracker.get_saga("replica-1").await?.is_some(),
        "reads after the restart"
    );
    tracker.stop(Duration::from_secs(20)).await?;
    Ok(())
}
