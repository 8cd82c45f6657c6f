//! In-process integration tests: the real tracker (consumer + API) against librdkafka's mock
//! Kafka cluster (a real Kafka-protocol broker running inside the test process) and a real
//! PostgreSQL, one fresh database and one fresh cluster per test so tests run in parallel.
//!
//! Events come from the SDK or a raw producer; results are read back through the REST API,
//! `/metrics`, SQL and the DLQ topic.

mod common;

use common::{unique, InProcessTracker, MockKafka, TrackerSetup};

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::ClientConfig;
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use serde_json::{json, Value};

const TOPIC: &str = "saga.tracker";
const DLQ: &str = "saga.tracker.dlq";

/// The test's topics on a fresh mock cluster.
type Kafka = MockKafka;

fn start_kafka() -> Kafka {
    Kafka::start(&[(TOPIC, 3), (DLQ, 1)])
}

impl Kafka {
    async fn send_raw(&self, key: Option<&str>, payload: &[u8]) {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        self.producer
            .send(rec, Duration::from_secs(10))
            .await
            .expect("raw message delivered");
    }

    async fn send_json(&self, key: &str, v: &Value) {
        self.send_raw(Some(key), v.to_string().as_bytes()).await;
    }

    fn sdk(&self) -> SagaTracker {
        SagaTracker::new(TrackerConfig::new(&self.bootstrap, "test-service")).expect("sdk")
    }
}

type Tracker = InProcessTracker;

async fn spawn_tracker(kafka: &Kafka, group: &str, db_name: Option<&str>) -> Tracker {
    Tracker::spawn(TrackerSetup {
        group: group.to_owned(),
        db_name: db_name.map(str::to_owned),
        ..TrackerSetup::new(&kafka.bootstrap, "saga_ingest")
    })
    .await
}

impl Tracker {
    async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from saga_events")
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }

    /// Polls the saga until `pred` holds (bounded: 30 s), returning its detail.
    async fn wait_saga(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, body) = self.get(&format!("/api/v1/sagas/{id}")).await;
            if status == 200 && pred(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("saga {id} never reached the expected state; last seen: {last:#}");
    }

    async fn wait_events(&self, n: i64) {
        for _ in 0..300 {
            if self.event_count().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "expected {n} stored events, have {}",
            self.event_count().await
        );
    }
}

async fn drop_db(name: &str) {
    common::drop_database(name).await;
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_763_700_000_000 + ms)
        .single()
        .expect("valid instant")
}

fn ev(saga: &str, step: &str, status: StepStatus, at_ms: i64) -> SagaEvent {
    SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: uuid::Uuid::now_v7().to_string(),
        saga_id: saga.to_owned(),
        saga_type: "ORDER_CREATION".to_owned(),
        step: step.to_owned(),
        step_status: status,
        saga_status: None,
        occurred_at: t(at_ms),
        service: "order-service".to_owned(),
        sequence: None,
        business_key: None,
        trace_id: None,
        span_id: None,
        error: None,
        metadata: None,
    }
}

fn with_status(mut e: SagaEvent, s: SagaStatus) -> SagaEvent {
    e.saga_status = Some(s);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_and_a_compensated_saga_are_visible_through_the_api_and_metrics() {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &unique("g"), None).await;
    let sdk = kafka.sdk();

    let ok = unique("order");
    sdk.record(
        Step::new(&ok, "ORDER_CREATION", "ORDER_PLACED", StepStatus::Started)
            .with_saga_status(SagaStatus::Started)
            .with_business_key("8812")
            .with_sequence(1),
    )
    .await
    .expect("delivered");
    sdk.record(
        Step::new(&ok, "ORDER_CREATION", "ORDER_PLACED", StepStatus::Succeeded).with_sequence(2),
    )
    .await
    .expect("delivered");
    sdk.record(
        Step::new(&ok, "ORDER_CREATION", "PAYMENT", StepStatus::Succeeded)
            .with_saga_status(SagaStatus::Completed)
            .with_sequence(3),
    )
    .await
    .expect("delivered");

    let bad = unique("order");
    let events = [
        with_status(
            ev(&bad, "STOCK", StepStatus::Succeeded, 0),
            SagaStatus::Started,
        ),
        {
            let mut e = with_status(
                ev(&bad, "PAYMENT", StepStatus::Failed, 100),
                SagaStatus::Failed,
            );
            e.error = Some(saga_tracker_sdk::contract::StepError {
                code: "INSUFFICIENT_FUNDS".into(),
                message: "card declined".into(),
            });
            e
        },
        with_status(
            ev(&bad, "STOCK", StepStatus::Compensating, 200),
            SagaStatus::Compensating,
        ),
        with_status(
            ev(&bad, "STOCK", StepStatus::Compensated, 450),
            SagaStatus::Compensated,
        ),
    ];
    for e in &events {
        sdk.send_event(e).await.expect("delivered");
    }

    let done = tracker.wait_saga(&ok, |s| s["status"] == "COMPLETED").await;
    assert_eq!(done["eventCount"], 3);
    assert_eq!(done["businessKey"], "8812");
    assert_eq!(done["currentStep"], "PAYMENT");

    let comp = tracker
        .wait_saga(&bad, |s| s["status"] == "COMPENSATED")
        .await;
    assert_eq!(comp["failedStep"], "PAYMENT");
    assert_eq!(comp["failure"]["code"], "INSUFFICIENT_FUNDS");
    assert_eq!(comp["compensationDurationMs"], 250);
    assert_eq!(comp["durationMs"], 450);
    let steps = comp["steps"].as_array().expect("timeline");
    assert_eq!(steps.len(), 2, "{steps:#?}");

    let (status, found) = tracker
        .get("/api/v1/sagas?businessKey=8812&status=COMPLETED")
        .await;
    assert_eq!(status, 200);
    assert!(found["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|s| s["sagaId"] == ok.as_str()));

    let metrics = tracker.metrics().await;
    for name in [
        "saga_tracker_events_processed_total{result=\"ok\"}",
        "saga_tracker_sagas_completed_total{saga_type=\"ORDER_CREATION\"}",
        "saga_tracker_sagas_compensated_total{saga_type=\"ORDER_CREATION\"}",
        "saga_tracker_visibility_lag_seconds_bucket",
        "saga_tracker_db_write_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // librdkafka statistics arrive every 5 s and feed the per-partition lag gauge.
    let mut lag_seen = false;
    for _ in 0..150 {
        let text = tracker.metrics().await;
        if text.contains("saga_tracker_consumer_lag{partition=\"0\"}") {
            lag_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lag_seen, "no per-partition consumer lag within 15 s");
    let db = tracker.stop().await;
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicated_delivery_gives_the_same_saga_as_in_order_delivery() {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &unique("g"), None).await;
    let sdk = kafka.sdk();

    let in_order = unique("io");
    let shuffled = unique("oo");
    let template = |id: &str| {
        vec![
            with_status(ev(id, "A", StepStatus::Started, 0), SagaStatus::Started),
            ev(id, "A", StepStatus::Succeeded, 10),
            ev(id, "B", StepStatus::Started, 20),
            ev(id, "B", StepStatus::Failed, 30),
            with_status(
                ev(id, "A", StepStatus::Compensating, 40),
                SagaStatus::Compensating,
            ),
            with_status(
                ev(id, "A", StepStatus::Compensated, 90),
                SagaStatus::Compensated,
            ),
        ]
    };
    for e in template(&in_order) {
        sdk.send_event(&e).await.expect("delivered");
    }
    let mut mixed = template(&shuffled);
    mixed.reverse();
    let dupes: Vec<SagaEvent> = mixed.iter().step_by(2).cloned().collect();
    mixed.extend(dupes);
    for e in &mixed {
        sdk.send_event(e).await.expect("delivered");
    }

    let a = tracker.wait_saga(&in_order, |s| s["eventCount"] == 6).await;
    let b = tracker.wait_saga(&shuffled, |s| s["eventCount"] == 6).await;
    tracker.wait_events(12).await;
    // Give the duplicates time to arrive; they must not change anything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = {
        let (_, again) = tracker.get(&format!("/api/v1/sagas/{shuffled}")).await;
        assert_eq!(again["eventCount"], b["eventCount"]);
        again
    };
    for field in [
        "status",
        "eventCount",
        "durationMs",
        "failedStep",
        "currentStep",
        "compensationDurationMs",
        "startedAt",
        "endedAt",
    ] {
        assert_eq!(a[field], b[field], "field {field} differs: {a:#} vs {b:#}");
    }
    assert_eq!(b["status"], "COMPENSATED");
    assert_eq!(tracker.event_count().await, 12, "duplicates stored once");
    let metrics = tracker.metrics().await;
    assert!(metrics.contains("saga_tracker_events_processed_total{result=\"duplicate\"}"));
    let db = tracker.stop().await;
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_after_completion_is_kept_but_does_not_reopen_the_saga() {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &unique("g"), None).await;
    let sdk = kafka.sdk();
    let id = unique("late");
    sdk.send_event(&with_status(
        ev(&id, "A", StepStatus::Started, 0),
        SagaStatus::Started,
    ))
    .await
    .expect("delivered");
    sdk.send_event(&with_status(
        ev(&id, "A", StepStatus::Succeeded, 10),
        SagaStatus::Completed,
    ))
    .await
    .expect("delivered");
    tracker.wait_saga(&id, |s| s["status"] == "COMPLETED").await;
    // A retry of a failed step arrives after completion (e.g. a stuck consumer upstream).
    sdk.send_event(&ev(&id, "B", StepStatus::Failed, 20))
        .await
        .expect("delivered");
    let s = tracker.wait_saga(&id, |s| s["eventCount"] == 3).await;
    assert_eq!(s["status"], "COMPLETED");
    assert_eq!(s["lateEventCount"], 1);
    assert_eq!(s["durationMs"], 10);
    let (status, events) = tracker.get(&format!("/api/v1/sagas/{id}/events")).await;
    assert_eq!(status, 200);
    assert_eq!(
        events["items"].as_array().map_or(0, Vec::len),
        3,
        "{events:#}"
    );
    let db = tracker.stop().await;
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_events_are_mapped_onto_v1() {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &unique("g"), None).await;
    let id = unique("legacy");
    let base = 1_763_700_000_000_i64;
    for (i, (step, status)) in [
        ("ORDER_PLACED", "STARTED"),
        ("PAYMENT", "IN_PROGRESS"),
        ("CONFIRM", "COMPLETED"),
    ]
    .iter()
    .enumerate()
    {
        kafka
            .send_json(
                &id,
                &json!({
                    "sagaId": id, "sagaType": "ORDER_CREATION", "step": step, "status": status,
                    "orderId": "ORD-77", "eventTimestamp": base + i as i64 * 1000,
                    "recordedAt": base + i as i64 * 1000 + 5,
                    "metadata": "{\"channel\":\"mobile\"}"
                }),
            )
            .await;
    }
    let s = tracker.wait_saga(&id, |s| s["status"] == "COMPLETED").await;
    assert_eq!(s["businessKey"], "ORD-77");
    assert_eq!(s["durationMs"], 2000);
    assert_eq!(s["metadata"]["channel"], "mobile");
    let (_, found) = tracker.get("/api/v1/sagas?meta.channel=mobile").await;
    assert!(
        found["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|x| x["sagaId"] == id.as_str()),
        "{found:#}"
    );
    let db = tracker.stop().await;
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_with_reasons_and_later_events_are_still_processed() {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &unique("g"), None).await;
    let id = unique("after-poison");
    kafka.send_raw(Some(&id), b"this is not json").await;
    kafka
        .send_json(&id, &json!({"schemaVersion": 99, "sagaId": id}))
        .await;
    // Key differs from sagaId.
    let mut wrong_key = ev(&id, "A", StepStatus::Started, 0);
    wrong_key.saga_id = format!("{id}-other");
    kafka.send_raw(Some(&id), &wrong_key.to_json()).await;
    kafka.send_raw(Some(&id), &[0xff, 0xfe, 0x00]).await;
    // And good events for the same partition after the poison.
    let good = with_status(
        ev(&id, "A", StepStatus::Succeeded, 5),
        SagaStatus::Completed,
    );
    kafka.send_raw(Some(&id), &good.to_json()).await;

    let s = tracker.wait_saga(&id, |s| s["status"] == "COMPLETED").await;
    assert_eq!(s["eventCount"], 1);

    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq consumer");
    dlq.subscribe(&[DLQ]).expect("subscribe");
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("DLQ message within 20 s")
            .expect("DLQ message");
        let headers = m.headers().expect("DLQ headers");
        let mut reason = None;
        let mut has_origin = false;
        for h in headers.iter() {
            if h.key == "dlq.reason" {
                reason = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            }
            if h.key == "dlq.original.offset" {
                has_origin = true;
            }
        }
        assert!(has_origin, "DLQ message carries its original offset");
        reasons.push(reason.expect("dlq.reason header"));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "key_mismatch",
            "not_json",
            "not_utf8",
            "unsupported_schema_version"
        ]
    );
    let metrics = tracker.metrics().await;
    for r in [
        "not_json",
        "not_utf8",
        "key_mismatch",
        "unsupported_schema_version",
    ] {
        let needle = format!("saga_tracker_dlq_messages_total{{reason=\"{r}\"}}");
        assert!(metrics.contains(&needle), "/metrics lacks {needle}");
    }
    let db = tracker.stop().await;
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_offsets_so_a_restart_reprocesses_nothing() {
    let kafka = start_kafka();
    let group = unique("g");
    let tracker = spawn_tracker(&kafka, &group, None).await;
    let sdk = kafka.sdk();
    let id = unique("restart");
    for i in 0..20 {
        sdk.send_event(&ev(&id, &format!("S{i}"), StepStatus::Succeeded, i))
            .await
            .expect("delivered");
    }
    tracker.wait_events(20).await;
    let db = tracker.stop().await;

    // Everything consumed must be committed: the group's offsets equal the log end.
    let probe: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", &group)
        .create()
        .expect("probe consumer");
    let mut committed_total = 0;
    let mut end_total = 0;
    let md = probe
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(TOPIC, p.id());
        let (_, high) = probe
            .fetch_watermarks(TOPIC, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        end_total += high;
    }
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    for e in committed.elements() {
        if let rdkafka::Offset::Offset(o) = e.offset() {
            committed_total += o;
        }
    }
    assert_eq!(
        committed_total, end_total,
        "all consumed offsets committed on shutdown"
    );
    drop(probe);

    // A restarted tracker in the same group sees only the new event.
    let tracker = spawn_tracker(&kafka, &group, Some(&db)).await;
    sdk.send_event(&ev(&id, "LAST", StepStatus::Succeeded, 100))
        .await
        .expect("delivered");
    let s = tracker.wait_saga(&id, |s| s["eventCount"] == 21).await;
    assert_eq!(s["currentStep"], "LAST");
    let db = tracker.stop().await;
    drop_db(&db).await;
    kafka.producer.flush(Duration::from_secs(5)).expect("flush");
}
