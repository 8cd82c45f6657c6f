//! From a service's trace to the tracker's and back, on a real OpenTelemetry collector
//! (rotel): the SDK sends each event with the `traceparent` of its producer span; the
//! tracker's `ingest.batch` span, as the collector receives it, links to exactly those spans
//! and has its children; and the saga detail names both the emitters' traces and the batch's.
//!
//! The real tracker binary, a real Kafka-protocol broker (tansu) and PostgreSQL, as in
//! `telemetry.rs`, whose receivers (`saga_tracker_tests::otel`) this reuses.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::otel::{spans_named, ReceivedSpan, Rotel};
use saga_tracker_tests::{
    migrate, poll_until, tracker_bin, unique_suffix, Tansu, TestDb, TrackerOptions, TrackerProcess,
};
use serde_json::{json, Value};

/// Upper bound for any "eventually" here.
const EVENTUALLY: Duration = Duration::from_secs(90);

/// Two producer spans of two services' traces, as their `traceparent` headers name them.
const PRODUCERS: [(&str, &str); 2] = [
    ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
];

fn linked(span: &ReceivedSpan) -> BTreeSet<(&str, &str)> {
    span.links
        .iter()
        .map(|l| (l.trace_id.as_str(), l.span_id.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_leads_to_the_tracker_batch_that_links_the_sdks_producer_spans() -> anyhow::Result<()>
{
    tracker_bin()?;
    let rotel = Rotel::start().await?;
    let tansu = Tansu::start().await?;
    let topic = format!("saga.tracker.traces-{}", unique_suffix());
    tansu.create_topic(&topic, 2).await?;
    tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
    let db = TestDb::create().await?;
    migrate(&db.url()).await.context("saga-tracker migrate")?;
    let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
    options.extra_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        (
            "TRACKER_TELEMETRY__OTLP__SCHEDULED_DELAY_MS",
            "200".to_owned(),
        ),
        // One batch for both events, so one batch span links both producers.
        ("TRACKER_INGEST__LINGER_MS", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut tracker = TrackerProcess::spawn(options)?;
    tracker.wait_ready(EVENTUALLY).await?;

    // The SDK, as a service calls it with the context of its own spans.
    let sdk =
        SagaTracker::new(TrackerConfig::new(tansu.brokers(), "order-service").with_topic(&topic))?;
    let saga_id = format!("order-{}", unique_suffix());
    let (trace_a, span_a) = PRODUCERS[0];
    let (trace_b, span_b) = PRODUCERS[1];
    sdk.record(
        Step::new(
            &saga_id,
            "ORDER_CREATION",
            "ORDER_PLACED",
            StepStatus::Started,
        )
        .with_sequence(1)
        .with_saga_status(SagaStatus::Started)
        .with_traceparent(&format!("00-{trace_a}-{span_a}-01")),
    )
    .await?;
    sdk.record(
        Step::new(
            &saga_id,
            "ORDER_CREATION",
            "ORDER_PLACED",
            StepStatus::Succeeded,
        )
        .with_sequence(2)
        .with_traceparent(&format!("00-{trace_b}-{span_b}-01")),
    )
    .await?;

    let path = format!("api/v1/sagas/{saga_id}");
    let detail: Value = poll_until(EVENTUALLY, "the saga with both events", || async {
        let detail: Value = tracker.get_json(&path, &[]).await?;
        ensure!(detail["eventCount"] == json!(2), "not yet: {detail}");
        Ok(detail)
    })
    .await?;

    // At the collector: the batch span linking both producer spans…
    let want: BTreeSet<(&str, &str)> = PRODUCERS.into_iter().collect();
    let spans = rotel
        .wait_for_spans(EVENTUALLY, "a batch span linking the producers", |spans| {
            ensure!(
                spans_named(spans, "ingest.batch")
                    .iter()
                    .any(|b| linked(b) == want),
                "no ingest.batch span links {want:?} yet"
            );
            Ok(())
        })
        .await?;
    let batch = spans_named(&spans, "ingest.batch")
        .into_iter()
        .find(|b| linked(b) == want)
        .context("found above")?;
    ensure!(batch.kind == 5, "a consumer span: {batch:?}");
    ensure!(batch.parent_span_id.is_empty(), "a root span: {batch:?}");
    ensure!(
        batch.attr_str("messaging.system") == Some("kafka"),
        "{batch:?}"
    );
    ensure!(
        batch.attr_str("messaging.destination.name") == Some(topic.as_str()),
        "{batch:?}"
    );
    ensure!(batch.attr_str("outcome") == Some("committed"), "{batch:?}");
    ensure!(
        batch.attributes.get("messaging.batch.message_count") == Some(&json!(2)),
        "{batch:?}"
    );
    // …with its children…
    let children = batch.children(&spans);
    let names: BTreeSet<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "ingest.decode",
        "ingest.db_transaction",
        "ingest.store_offsets",
    ] {
        ensure!(
            names.contains(name),
            "{name} missing under the batch: {names:?}"
        );
    }
    let db_span = children
        .iter()
        .find(|s| s.name == "ingest.db_transaction")
        .context("found above")?;
    ensure!(
        db_span.attr_str("db.system.name") == Some("postgresql") && db_span.kind == 3,
        "{db_span:?}"
    );

    // …and the saga names both sides.
    ensure!(
        detail["traceIds"] == json!([trace_a, trace_b]),
        "traceIds: {}",
        detail["traceIds"]
    );
    ensure!(
        detail["trackerTraceIds"] == json!([batch.trace_id]),
        "trackerTraceIds {} should be the batch's trace {}",
        detail["trackerTraceIds"],
        batch.trace_id
    );

    sdk.shutdown(Duration::from_secs(5)).await?;
    let status = tracker.stop(Duration::from_secs(30)).await?;
    ensure!(status.success(), "tracker exited with {status}");
    db.drop_db().await?;
    Ok(())
}
