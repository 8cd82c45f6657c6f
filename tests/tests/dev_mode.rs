//! `saga-tracker dev`: the tracker with its Kafka-protocol broker embedded (librdkafka's mock
//! cluster, reached through a stated loopback port), PostgreSQL as usual and demo traffic.
//!
//! One real process, started as a person would, on free ports and a database of its own that
//! it must create: its printed bootstrap address takes a saga from an independent Kafka
//! client (plain rdkafka, not the SDK), the demo's sagas show up in the API, and SIGTERM stops
//! it cleanly.

use std::time::Duration;

use anyhow::{ensure, Context};
use chrono::{SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use saga_tracker_tests::{
    free_port, poll_until, tracker_bin, unique_suffix, TestDb, TrackerOptions, TrackerProcess,
};
use serde_json::json;

const EVENTUALLY: Duration = Duration::from_secs(60);

/// The value after `label` on the first line of the process's output that has it.
fn printed(tracker: &TrackerProcess, label: &str) -> anyhow::Result<String> {
    let log = tracker.log_text();
    log.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no `{label}` line printed yet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_the_tracker_with_an_embedded_broker_and_demo_traffic() -> anyhow::Result<()>
{
    tracker_bin()?;
    // Not created: `dev` creates the database it is pointed at.
    let db = TestDb::not_created()?;
    let broker_port = free_port()?;
    let topic = format!("saga.tracker.dev-{}", unique_suffix());
    // `brokers` is what `dev` replaces with its embedded broker's address.
    let options = TrackerOptions::new("unused:1", db.url(), &topic);
    let port_arg = broker_port.to_string();
    let mut tracker = TrackerProcess::spawn_args(
        options,
        &["dev", "--broker-port", &port_arg, "--demo-rate", "50"],
    )?;
    tracker.wait_ready(EVENTUALLY).await?;

    let bootstrap = poll_until(Duration::from_secs(10), "the printed bootstrap", || async {
        printed(&tracker, "Bootstrap:")
    })
    .await?;
    ensure!(
        bootstrap == format!("127.0.0.1:{broker_port}"),
        "bootstrap printed as {bootstrap}, asked for port {broker_port}"
    );
    let ui = printed(&tracker, "UI:")?;
    ensure!(
        ui == format!("{}ui", tracker.base_url()),
        "UI printed as {ui}, the tracker is at {}",
        tracker.base_url()
    );

    // (a) The demo's sagas arrive.
    poll_until(EVENTUALLY, "demo sagas in the API", || async {
        let page = tracker.search(&[("limit", "5")]).await?;
        ensure!(!page.items.is_empty(), "no sagas yet");
        Ok(())
    })
    .await?;

    // (b) An independent client produces to the printed address.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "15000")
        .create()
        .context("creating the rdkafka producer")?;
    let saga_id = format!("dev-order-{}", unique_suffix());
    let event = json!({
        "schemaVersion": 1,
        "eventId": format!("evt-{}", unique_suffix()),
        "sagaId": saga_id,
        "sagaType": "ORDER_CREATION",
        "step": "ORDER_PLACED",
        "stepStatus": "STARTED",
        "occurredAt": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "service": "kafka-client",
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(&topic).key(&saga_id).payload(&event),
            Duration::from_secs(15),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing to the embedded broker")?;
    let detail = poll_until(EVENTUALLY, "the produced saga in the API", || async {
        tracker.get_saga(&saga_id).await?.context("not visible yet")
    })
    .await?;
    ensure!(detail.summary.status == "STARTED", "{}", detail.raw);

    // (c) SIGTERM: a clean exit, having committed.
    let status = tracker.stop(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "dev exited with {status}: {}",
        tracker.log_text()
    );
    let log = tracker.log_text();
    ensure!(
        log.contains("shutdown complete"),
        "no clean shutdown in the log:\n{log}"
    );
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err(),
        "the embedded broker's port still accepts connections after exit"
    );
    db.drop_db().await?;
    Ok(())
}
