//! End to end: services record saga steps through the SDK (and through an independent Kafka
//! client), a real `saga-tracker` process consumes them from a real Kafka-protocol broker
//! into a real PostgreSQL database, and everything is asserted from the outside — through
//! the REST API, `/metrics` and the dead-letter topic — the way an operator would look.
//!
//! Each test brings its own broker, topics, database and tracker process, so tests run in
//! parallel and a failure leaves logs under `target/test-logs/`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use saga_tracker_sdk::contract::{self, SagaEvent, SagaStatus, StepStatus};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::{
    metric_value, migrate, poll_until, python_consume, python_produce, tracker_bin, unique_suffix,
    SagaDetail, Tansu, TestDb, TrackerOptions, TrackerProcess,
};
use serde_json::{json, Value};

/// Upper bound for any "eventually" in these tests.
const EVENTUALLY: Duration = Duration::from_secs(60);

const ORDER: &str = "ORDER_CREATION";
const REFUND: &str = "PAYMENT.REFUND";

/// A broker with the test's topics, a migrated database and a ready tracker.
struct Stack {
    tansu: Tansu,
    db: Option<TestDb>,
    tracker: TrackerProcess,
    topic: String,
    dlq_topic: String,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with_env(&[]).await
    }

    /// [`Stack::start`] with extra `TRACKER_…` settings for the tracker process.
    async fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        // Fail before creating anything when the binary under test is missing.
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.e2e-{}", unique_suffix());
        let dlq_topic = format!("{topic}.dlq");
        tansu.create_topic(&topic, 3).await?;
        tansu.create_topic(&dlq_topic, 1).await?;

        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;

        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options.dlq_topic = dlq_topic.clone();
        options
            .extra_env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut tracker = TrackerProcess::spawn(options)?;
        tracker.wait_ready(EVENTUALLY).await?;
        Ok(Self {
            tansu,
            db: Some(db),
            tracker,
            topic,
            dlq_topic,
        })
    }

    /// An SDK client for `service`, producing to this test's topic.
    fn sdk(&self, service: &str) -> anyhow::Result<SagaTracker> {
        Ok(SagaTracker::new(
            TrackerConfig::new(self.tansu.brokers(), service).with_topic(&self.topic),
        )?)
    }

    /// Polls the saga until `done` holds for it; returns the detail that satisfied it.
    async fn saga_when(
        &self,
        saga_id: &str,
        what: &str,
        done: impl Fn(&SagaDetail) -> bool,
    ) -> anyhow::Result<SagaDetail> {
        poll_until(
            EVENTUALLY,
            &format!("saga {saga_id} to be {what}"),
            || async {
                let detail = self
                    .tracker
                    .get_saga(saga_id)
                    .await?
                    .with_context(|| format!("saga {saga_id} not found yet"))?;
                ensure!(
                    done(&detail),
                    "saga {saga_id} is not {what} yet: {}",
                    detail.raw
                );
                Ok(detail)
            },
        )
        .await
    }
}

fn has(detail: &SagaDetail, status: &str, events: i64) -> bool {
    detail.summary.status == status && detail.summary.event_count == events
}

/// `occurredAt` in the contract's text form, for events built by hand.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A v1 event as any emitter would write it by hand.
fn v1_event(
    saga_id: &str,
    saga_type: &str,
    step: &str,
    step_status: &str,
    saga_status: Option<&str>,
    sequence: i64,
    at: DateTime<Utc>,
) -> Value {
    let mut v = json!({
        "schemaVersion": 1,
        "eventId": uuid::Uuid::new_v4().to_string(),
        "sagaId": saga_id,
        "sagaType": saga_type,
        "step": step,
        "stepStatus": step_status,
        "occurredAt": rfc3339(at),
        "service": "refund-service-py",
        "sequence": sequence,
        "businessKey": format!("refund-{saga_id}"),
    });
    if let Some(s) = saga_status {
        v["sagaStatus"] = json!(s);
    }
    v
}

/// A record for `tests/python/produce.py`.
fn record(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value, "headers": { "content-type": "application/json" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_recorded_by_services_can_be_followed_through_the_api() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let base = Utc::now() - chrono::Duration::minutes(30);

    let orders = stack.sdk("order-service")?;
    let stock = stack.sdk("stock-service")?;
    let payments = stack.sdk("payment-service")?;

    // 1. A saga that completes: order → stock → payment → confirm.
    let t = base;
    let s = move |step: &str, status: StepStatus, seq: i64| {
        Step::new("order-8812", ORDER, step, status)
            .with_sequence(seq)
            .with_business_key("8812")
            .at(t + secs(seq))
    };
    orders
        .record(s("ORDER_PLACED", StepStatus::Started, 1).with_saga_status(SagaStatus::Started))
        .await?;
    orders
        .record(s("ORDER_PLACED", StepStatus::Succeeded, 2))
        .await?;
    stock
        .record(
            s("STOCK_RESERVED", StepStatus::Started, 3).with_saga_status(SagaStatus::InProgress),
        )
        .await?;
    stock
        .record(s("STOCK_RESERVED", StepStatus::Succeeded, 4))
        .await?;
    payments
        .record(s("PAYMENT_CAPTURED", StepStatus::Started, 5))
        .await?;
    payments
        .record(s("PAYMENT_CAPTURED", StepStatus::Succeeded, 6))
        .await?;
    orders
        .record(
            s("ORDER_CONFIRMED", StepStatus::Succeeded, 7).with_saga_status(SagaStatus::Completed),
        )
        .await?;

    // 2. A saga whose payment fails and whose stock reservation is compensated.
    let t = base + secs(100);
    let s = move |step: &str, status: StepStatus, seq: i64| {
        Step::new("order-8813", ORDER, step, status)
            .with_sequence(seq)
            .with_business_key("8813")
            .at(t + secs(seq))
    };
    orders
        .record(s("ORDER_PLACED", StepStatus::Succeeded, 1).with_saga_status(SagaStatus::Started))
        .await?;
    stock
        .record(
            s("STOCK_RESERVED", StepStatus::Succeeded, 2).with_saga_status(SagaStatus::InProgress),
        )
        .await?;
    payments
        .record(
            s("PAYMENT_CAPTURED", StepStatus::Failed, 3)
                .with_saga_status(SagaStatus::Failed)
                .with_error("INSUFFICIENT_FUNDS", "card declined"),
        )
        .await?;
    stock
        .record(
            s("STOCK_RESERVED", StepStatus::Compensating, 4)
                .with_saga_status(SagaStatus::Compensating),
        )
        .await?;
    stock
        .record(
            s("STOCK_RESERVED", StepStatus::Compensated, 5)
                .with_saga_status(SagaStatus::Compensated),
        )
        .await?;

    // 3. A saga whose events arrive out of order, three of them twice: the same event ids
    //    resent, as a producer retry or a replay would.
    let t = base + secs(200);
    let steps = [
        ("ORDER_PLACED", None),
        ("STOCK_RESERVED", Some(SagaStatus::InProgress)),
        ("PAYMENT_CAPTURED", None),
        ("ORDER_CONFIRMED", Some(SagaStatus::Completed)),
    ];
    let mut events: Vec<SagaEvent> = Vec::new();
    for (i, (step, saga_status)) in steps.iter().enumerate() {
        let seq = i as i64 + 1;
        let mut st = Step::new("order-8814", ORDER, *step, StepStatus::Succeeded)
            .with_sequence(seq)
            .with_business_key("8814")
            .at(t + secs(seq));
        if let Some(ss) = saga_status {
            st = st.with_saga_status(*ss);
        }
        events.push(st.into_event("order-service")?);
    }
    for i in [3, 1, 1, 0, 2, 3, 0] {
        orders.send_event(&events[i]).await?;
    }

    // 4. A saga that completes, then hears of a failure after the fact.
    let t = base + secs(300);
    let s = move |step: &str, status: StepStatus, seq: i64| {
        Step::new("order-8815", ORDER, step, status)
            .with_sequence(seq)
            .with_business_key("8815")
            .at(t + secs(seq))
    };
    orders
        .record(s("ORDER_PLACED", StepStatus::Succeeded, 1).with_saga_status(SagaStatus::Started))
        .await?;
    payments
        .record(s("PAYMENT_CAPTURED", StepStatus::Succeeded, 2))
        .await?;
    orders
        .record(
            s("ORDER_CONFIRMED", StepStatus::Succeeded, 3).with_saga_status(SagaStatus::Completed),
        )
        .await?;
    stack
        .saga_when("order-8815", "COMPLETED with 3 events", |d| {
            has(d, "COMPLETED", 3)
        })
        .await?;
    payments
        .record(
            s("REFUND_ISSUED", StepStatus::Failed, 4)
                .with_saga_status(SagaStatus::Failed)
                .with_error("LATE_CHARGEBACK", "chargeback after confirmation"),
        )
        .await?;

    // 5. Through an independent client (kafka-python): the legacy shape, a hand-written v1
    //    saga, then poison messages followed by good events on the same partition.
    let ms = |offset_secs: i64| (base + secs(400 + offset_secs)).timestamp_millis();
    let legacy_placed = json!({
        "sagaId": "legacy-9001", "sagaType": ORDER, "step": "ORDER_PLACED",
        "status": "STARTED", "orderId": "9001", "eventTimestamp": ms(1),
        "service": "legacy-orders", "metadata": "{\"channel\":\"web\"}"
    });
    let legacy = vec![
        record("legacy-9001", legacy_placed.clone()),
        // recordedAt stands in for a missing eventTimestamp.
        record(
            "legacy-9001",
            json!({
                "sagaId": "legacy-9001", "sagaType": ORDER, "step": "STOCK_RESERVED",
                "status": "IN_PROGRESS", "orderId": "9001", "recordedAt": ms(2),
                "service": "legacy-stock"
            }),
        ),
        record(
            "legacy-9001",
            json!({
                "sagaId": "legacy-9001", "sagaType": ORDER, "step": "ORDER_CONFIRMED",
                "status": "COMPLETED", "orderId": "9001", "eventTimestamp": ms(3),
                "service": "legacy-orders"
            }),
        ),
        // Redelivered verbatim: no eventId, so dedup relies on the derived UUIDv5.
        record("legacy-9001", legacy_placed),
    ];
    python_produce(&stack.tansu.brokers(), &stack.topic, &legacy).await?;

    let t = base + secs(500);
    let py_saga = vec![
        record(
            "py-9100",
            v1_event(
                "py-9100",
                REFUND,
                "REFUND_REQUESTED",
                "STARTED",
                Some("STARTED"),
                1,
                t,
            ),
        ),
        record(
            "py-9100",
            v1_event(
                "py-9100",
                REFUND,
                "REFUND_PAID",
                "SUCCEEDED",
                Some("COMPLETED"),
                2,
                t + secs(1),
            ),
        ),
    ];
    python_produce(&stack.tansu.brokers(), &stack.topic, &py_saga).await?;

    let poison_key = "py-after-poison";
    let t = base + secs(600);
    let mut wrong_version = v1_event(
        poison_key,
        REFUND,
        "REFUND_REQUESTED",
        "STARTED",
        None,
        1,
        t,
    );
    wrong_version["schemaVersion"] = json!(2);
    let poison_and_good = vec![
        json!({ "key": poison_key, "value": "this is not json {" }),
        record(poison_key, wrong_version),
        json!({ "key": poison_key, "raw_base64": "//79" }),
        record(
            poison_key,
            json!({ "schemaVersion": 1, "sagaId": poison_key }),
        ),
        record(
            poison_key,
            v1_event(
                poison_key,
                REFUND,
                "REFUND_REQUESTED",
                "STARTED",
                Some("STARTED"),
                1,
                t,
            ),
        ),
        record(
            poison_key,
            v1_event(
                poison_key,
                REFUND,
                "REFUND_PAID",
                "SUCCEEDED",
                Some("COMPLETED"),
                2,
                t + secs(1),
            ),
        ),
    ];
    let poison_reasons = [
        "not_json",
        "unsupported_schema_version",
        "not_utf8",
        "missing_field",
    ];
    python_produce(&stack.tansu.brokers(), &stack.topic, &poison_and_good).await?;

    // ---- What an operator sees ----

    // The completed saga: every step, in order, all succeeded.
    let d = stack
        .saga_when("order-8812", "COMPLETED with 7 events", |d| {
            has(d, "COMPLETED", 7)
        })
        .await?;
    assert_eq!(d.summary.saga_type, ORDER);
    assert_eq!(d.summary.business_key.as_deref(), Some("8812"));
    assert_eq!(d.summary.late_event_count, 0, "{}", d.raw);
    // occurredAt of the first and last events are 6 s apart.
    assert_eq!(d.summary.duration_ms, Some(6000), "{}", d.raw);
    assert!(d.summary.ended_at.is_some(), "{}", d.raw);
    assert_eq!(
        d.step_names(),
        [
            "ORDER_PLACED",
            "STOCK_RESERVED",
            "PAYMENT_CAPTURED",
            "ORDER_CONFIRMED"
        ]
    );
    for step in &d.steps {
        assert_eq!(step.status, "SUCCEEDED", "step {} in {}", step.step, d.raw);
    }
    let services: BTreeSet<&str> = d.summary.services.iter().map(String::as_str).collect();
    assert_eq!(
        services,
        BTreeSet::from(["order-service", "payment-service", "stock-service"]),
        "{}",
        d.raw
    );

    // The compensated saga: where it failed, why, and what was undone.
    let d = stack
        .saga_when("order-8813", "COMPENSATED with 5 events", |d| {
            has(d, "COMPENSATED", 5)
        })
        .await?;
    assert_eq!(
        d.summary.failed_step.as_deref(),
        Some("PAYMENT_CAPTURED"),
        "{}",
        d.raw
    );
    assert_eq!(
        d.summary.failure.as_ref().map(|f| f.code.as_str()),
        Some("INSUFFICIENT_FUNDS"),
        "{}",
        d.raw
    );
    // Compensation ran from sequence 4 to sequence 5, one second apart.
    assert_eq!(d.summary.compensation_duration_ms, Some(1000), "{}", d.raw);
    assert_eq!(
        d.step_names(),
        ["ORDER_PLACED", "STOCK_RESERVED", "PAYMENT_CAPTURED"]
    );
    let payment = d.step("PAYMENT_CAPTURED").context("payment step")?;
    assert_eq!(payment.status, "FAILED", "{}", d.raw);
    assert!(
        payment
            .error
            .as_ref()
            .is_some_and(|e| e.code == "INSUFFICIENT_FUNDS" && e.message == "card declined"),
        "payment step error: {}",
        d.raw
    );
    let reserved = d.step("STOCK_RESERVED").context("stock step")?;
    assert_eq!(reserved.status, "COMPENSATED", "{}", d.raw);
    assert!(
        reserved.compensation.is_some(),
        "stock reservation should show its compensation: {}",
        d.raw
    );

    // Out of order and duplicated: the same saga as if delivered cleanly.
    let d = stack
        .saga_when("order-8814", "COMPLETED with 4 events", |d| {
            has(d, "COMPLETED", 4)
        })
        .await?;
    assert_eq!(
        d.step_names(),
        [
            "ORDER_PLACED",
            "STOCK_RESERVED",
            "PAYMENT_CAPTURED",
            "ORDER_CONFIRMED"
        ]
    );
    let stored = stack.tracker.saga_events("order-8814").await?;
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    let expected: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, expected, "events should be stored once, in saga order");

    // The late event is in the timeline but does not reopen the saga.
    let d = stack
        .saga_when("order-8815", "COMPLETED with 4 events", |d| {
            has(d, "COMPLETED", 4)
        })
        .await?;
    assert_eq!(d.summary.late_event_count, 1, "{}", d.raw);
    assert!(
        d.step_names().contains(&"REFUND_ISSUED"),
        "late step missing from the timeline: {}",
        d.raw
    );
    let stored = stack.tracker.saga_events("order-8815").await?;
    assert_eq!(stored.len(), 4);
    assert_eq!(
        (stored[3].step.as_str(), stored[3].saga_status.as_deref()),
        ("REFUND_ISSUED", Some("FAILED"))
    );

    // The legacy saga, mapped onto v1.
    let d = stack
        .saga_when("legacy-9001", "COMPLETED with 3 events", |d| {
            has(d, "COMPLETED", 3)
        })
        .await?;
    assert_eq!(d.summary.business_key.as_deref(), Some("9001"));
    assert_eq!(
        d.summary.metadata.get("channel"),
        Some(&json!("web")),
        "legacy metadata string should be merged: {}",
        d.raw
    );
    assert_eq!(
        d.step_names(),
        ["ORDER_PLACED", "STOCK_RESERVED", "ORDER_CONFIRMED"]
    );

    // The hand-written v1 saga and the good events behind the poison.
    stack
        .saga_when("py-9100", "COMPLETED with 2 events", |d| {
            has(d, "COMPLETED", 2)
        })
        .await?;
    stack
        .saga_when(poison_key, "COMPLETED with 2 events", |d| {
            has(d, "COMPLETED", 2)
        })
        .await?;

    // Unknown sagas are a 404, not an empty 200.
    assert!(stack.tracker.get_saga("order-0000").await?.is_none());

    // Search: by business key, by type and status.
    let page = stack.tracker.search(&[("businessKey", "8812")]).await?;
    assert_eq!(page.ids(), ["order-8812"]);
    let page = stack
        .tracker
        .search(&[("sagaType", ORDER), ("status", "COMPENSATED")])
        .await?;
    assert_eq!(page.ids(), ["order-8813"]);
    let page = stack
        .tracker
        .search(&[("sagaType", REFUND), ("limit", "50")])
        .await?;
    let refunds: BTreeSet<&str> = page.ids().into_iter().collect();
    assert_eq!(refunds, BTreeSet::from(["py-9100", poison_key]));

    // Metrics: every message accounted for exactly once.
    let unique_valid = 7 + 5 + 4 + 4 + 3 + 2 + 2;
    let duplicates = 3 + 1;
    let metrics = poll_until(EVENTUALLY, "the event counters to settle", || async {
        let text = stack.tracker.metrics_text().await?;
        let processed = |result: &str| {
            metric_value(
                &text,
                "saga_tracker_events_processed_total",
                &[("result", result)],
            )
            .unwrap_or(0.0)
        };
        ensure!(
            processed("ok") + processed("duplicate") >= f64::from(unique_valid + duplicates)
                && processed("invalid") >= poison_reasons.len() as f64,
            "ok={} duplicate={} invalid={}",
            processed("ok"),
            processed("duplicate"),
            processed("invalid")
        );
        Ok(text)
    })
    .await?;
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&metrics, name, labels);
    assert_eq!(
        m("saga_tracker_events_processed_total", &[("result", "ok")]),
        Some(f64::from(unique_valid))
    );
    assert_eq!(
        m(
            "saga_tracker_events_processed_total",
            &[("result", "duplicate")]
        ),
        Some(f64::from(duplicates))
    );
    assert!(
        m(
            "saga_tracker_events_processed_total",
            &[("result", "invalid")]
        ) >= Some(poison_reasons.len() as f64)
    );
    for reason in poison_reasons {
        assert!(
            m("saga_tracker_dlq_messages_total", &[("reason", reason)]) >= Some(1.0),
            "no saga_tracker_dlq_messages_total{{reason=\"{reason}\"}}"
        );
    }
    assert_eq!(
        m(
            "saga_tracker_sagas_completed_total",
            &[("saga_type", ORDER)]
        ),
        Some(4.0),
        "order-8812, order-8814, order-8815 and legacy-9001 completed"
    );
    assert_eq!(
        m(
            "saga_tracker_sagas_completed_total",
            &[("saga_type", REFUND)]
        ),
        Some(2.0)
    );
    assert_eq!(
        m(
            "saga_tracker_sagas_compensated_total",
            &[("saga_type", ORDER)]
        ),
        Some(1.0)
    );
    assert!(m("saga_tracker_sagas_started_total", &[]) >= Some(7.0));

    // The dead-letter topic holds the poison, byte for byte, with the reason attached.
    let dlq = python_consume(
        &stack.tansu.brokers(),
        &stack.dlq_topic,
        poison_reasons.len(),
        EVENTUALLY,
    )
    .await?;
    let reasons: BTreeSet<&str> = dlq.iter().filter_map(|r| r.header("dlq.reason")).collect();
    for reason in poison_reasons {
        assert!(
            reasons.contains(reason),
            "no DLQ record with dlq.reason={reason}; got {dlq:?}"
        );
    }
    for r in &dlq {
        assert_eq!(
            r.header("dlq.original.topic"),
            Some(stack.topic.as_str()),
            "{r:?}"
        );
        assert!(r.header("dlq.original.partition").is_some(), "{r:?}");
        assert!(r.header("dlq.original.offset").is_some(), "{r:?}");
        assert!(r.header("dlq.error").is_some(), "{r:?}");
        assert_eq!(r.key.as_deref(), Some(poison_key), "{r:?}");
    }
    let not_utf8 = dlq
        .iter()
        .find(|r| r.header("dlq.reason") == Some("not_utf8"))
        .context("not_utf8 record")?;
    assert_eq!(
        not_utf8.value_base64, "//79",
        "the DLQ must keep the original bytes"
    );
    let missing = dlq
        .iter()
        .find(|r| r.header("dlq.reason") == Some("missing_field"))
        .context("missing_field record")?;
    assert!(
        missing.header("dlq.field").is_some(),
        "a missing field is named: {missing:?}"
    );

    // A graceful stop: SIGTERM drains and exits 0.
    let status = stack.tracker.stop(Duration::from_secs(30)).await?;
    assert!(
        status.success(),
        "saga-tracker exited with {status} after SIGTERM"
    );

    if let Some(db) = stack.db.take() {
        db.drop_db().await?;
    }
    Ok(())
}

/// The harness itself, without the tracker: what the SDK produces to tansu is readable by an
/// independent client and decodes under the contract. When the big test fails, this one
/// says whether the broker side works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_events_reach_the_broker_and_an_independent_client() -> anyhow::Result<()> {
    let tansu = Tansu::start().await?;
    let topic = format!("saga.tracker.smoke-{}", unique_suffix());
    tansu.create_topic(&topic, 3).await?;

    let sdk =
        SagaTracker::new(TrackerConfig::new(tansu.brokers(), "smoke-service").with_topic(&topic))?;
    let mut ids = Vec::new();
    for (step, status) in [
        ("ORDER_PLACED", StepStatus::Started),
        ("ORDER_PLACED", StepStatus::Succeeded),
    ] {
        let id = sdk
            .record(Step::new("smoke-1", ORDER, step, status).with_business_key("1"))
            .await?
            .context("an enabled tracker returns the event id")?;
        ids.push(id);
    }

    let records = python_consume(&tansu.brokers(), &topic, 2, EVENTUALLY).await?;
    assert_eq!(records.len(), 2, "{records:?}");
    let mut seen = Vec::new();
    for r in &records {
        assert_eq!(r.key.as_deref(), Some("smoke-1"), "key = sagaId");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let value = r.value.as_deref().context("UTF-8 value")?;
        let event = contract::decode(value.as_bytes(), Utc::now())
            .map_err(|e| anyhow::anyhow!("{e}: {value}"))?;
        assert_eq!(event.service, "smoke-service");
        assert_eq!(event.business_key.as_deref(), Some("1"));
        seen.push(event.event_id);
    }
    // Same key, same partition: order is preserved.
    assert_eq!(seen, ids);
    Ok(())
}

/// The label caps documented in `docs/metrics.md` (`saga_type` 200, `step` 500 per process).
const SAGA_TYPE_LABEL_CAP: usize = 200;
const STEP_LABEL_CAP: usize = 500;

/// One emitter that invents a new saga type and a new step for every saga must not create a
/// series per value: past the caps the values are reported as `other`, and nothing is lost
/// from the totals. Half the sagas fail (counted, with a duration), half keep running (the
/// database-read `saga_tracker_sagas_active` gauge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_inventing_types_and_steps_cannot_explode_the_metric_series(
) -> anyhow::Result<()> {
    const SAGAS: usize = 600;
    let mut stack =
        Stack::start_with_env(&[("TRACKER_STUCK__EVALUATE_INTERVAL_SECS", "1")]).await?;
    let sdk = stack.sdk("inventive-service")?;
    let base = Utc::now() - chrono::Duration::minutes(5);
    for i in 0..SAGAS {
        let (saga_id, saga_type, step) = (
            format!("wild-{i}"),
            format!("WILD_{i}"),
            format!("STEP_{i}"),
        );
        let ev = |status: StepStatus, seq: i64| {
            Step::new(&saga_id, &saga_type, &step, status)
                .with_sequence(seq)
                .at(base + secs(seq))
        };
        sdk.record(ev(StepStatus::Started, 1).with_saga_status(SagaStatus::Started))
            .await?;
        // Even sagas fail for good; odd ones report a failed attempt and, explicitly, that
        // the saga goes on (a step failure alone would make it FAILED).
        let saga_status = if i % 2 == 0 {
            SagaStatus::Failed
        } else {
            SagaStatus::InProgress
        };
        sdk.record(
            ev(StepStatus::Failed, 2)
                .with_error("WILD", "invented")
                .with_saga_status(saga_status),
        )
        .await?;
    }
    sdk.flush(Duration::from_secs(30))?;

    // Wait on the database's view (not on the metrics under test): every saga stored with
    // both of its events.
    poll_until(EVENTUALLY, "all invented sagas to be stored", || async {
        let types: Value = stack.tracker.get_json("api/v1/saga-types", &[]).await?;
        let items = types["items"].as_array().context("items")?;
        let failed: i64 = items
            .iter()
            .filter_map(|t| t["byStatus"]["FAILED"].as_i64())
            .sum();
        ensure!(
            items.len() == SAGAS && failed == (SAGAS / 2) as i64,
            "{} types, {failed} failed so far",
            items.len()
        );
        let last = stack
            .tracker
            .saga_events(&format!("wild-{}", SAGAS - 1))
            .await?;
        ensure!(last.len() == 2, "last saga has {} events", last.len());
        Ok(())
    })
    .await?;

    // The gauges are refreshed every second; wait for one refresh that sees every saga.
    let text = poll_until(
        EVENTUALLY,
        "the active gauge to count every saga",
        || async {
            let text = stack.tracker.metrics_text().await?;
            let active = metric_value(&text, "saga_tracker_sagas_active", &[]).unwrap_or(0.0);
            ensure!(active == (SAGAS / 2) as f64, "active = {active}");
            Ok(text)
        },
    )
    .await?;
    let samples = saga_tracker_tests::parse_metrics(&text);
    let label_values = |name: &str, label: &str| -> BTreeSet<String> {
        samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let total = |name: &str| metric_value(&text, name, &[]).unwrap_or(0.0);

    for (name, label, cap) in [
        (
            "saga_tracker_sagas_started_total",
            "saga_type",
            SAGA_TYPE_LABEL_CAP,
        ),
        (
            "saga_tracker_sagas_failed_total",
            "saga_type",
            SAGA_TYPE_LABEL_CAP,
        ),
        (
            "saga_tracker_saga_duration_seconds_count",
            "saga_type",
            SAGA_TYPE_LABEL_CAP,
        ),
        (
            "saga_tracker_sagas_active",
            "saga_type",
            SAGA_TYPE_LABEL_CAP,
        ),
        (
            "saga_tracker_step_failures_total",
            "saga_type",
            SAGA_TYPE_LABEL_CAP,
        ),
        ("saga_tracker_step_failures_total", "step", STEP_LABEL_CAP),
    ] {
        let values = label_values(name, label);
        assert!(
            values.len() <= cap + 1,
            "{name} has {} {label} values, more than the cap {cap} + `other`",
            values.len()
        );
        assert!(
            values.contains("other"),
            "{name}: values past the cap are reported as `other`; got {} values",
            values.len()
        );
    }
    // Folding loses nothing: the totals still count every saga and every failure.
    assert_eq!(total("saga_tracker_sagas_started_total"), SAGAS as f64);
    assert_eq!(total("saga_tracker_sagas_failed_total"), (SAGAS / 2) as f64);
    assert_eq!(
        total("saga_tracker_saga_duration_seconds_count"),
        (SAGAS / 2) as f64
    );
    assert_eq!(total("saga_tracker_step_failures_total"), SAGAS as f64);
    // The whole exposition stays bounded. Capped, the saga-type series are at most 201 × 23
    // (three counters, the gauge and the 20 series of a duration histogram) plus one step
    // failure series per saga; uncapped they would be 600 × 23 + 600 = 14,400.
    assert!(
        samples.len() < 6_000,
        "{} samples exported after {SAGAS} invented types and steps",
        samples.len()
    );

    let status = stack.tracker.stop(Duration::from_secs(30)).await?;
    assert!(status.success(), "saga-tracker exited with {status}");
    if let Some(db) = stack.db.take() {
        db.drop_db().await?;
    }
    Ok(())
}
