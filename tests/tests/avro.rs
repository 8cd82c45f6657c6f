//! End to end: the earlier design's emitters send Confluent-framed Avro, not JSON.
//!
//! An encoder independent of the tracker — fastavro with kafka-python
//! (`tests/python/produce_avro.py`), framing each record as Confluent's serializer does —
//! produces `SagaTracker` records through a real broker to a real tracker process, which
//! finds the writer schemas in a Schema Registry stand-in (`GET /schemas/ids/{id}` with
//! basic auth; no registry server is installable here) or in local `.avsc` files. Sagas are
//! asserted through the REST API, rejects through the dead-letter topic (read with
//! kafka-python) and `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use chrono::Utc;
use saga_tracker_tests::schema_registry::{RegisteredSchema, SchemaRegistryStandIn};
use saga_tracker_tests::{
    metric_value, migrate, poll_until, python_consume, python_produce_avro, tracker_bin,
    unique_suffix, workspace_root, ConsumedRecord, SagaDetail, Tansu, TestDb, TrackerOptions,
    TrackerProcess,
};
use serde_json::{json, Value};

/// Upper bound for any "eventually" in these tests.
const EVENTUALLY: Duration = Duration::from_secs(60);

/// Ids the writer schemas are registered under (as a registry would hand them out).
const SAGA_TRACKER_ID: u32 = 7;
const FOREIGN_ID: u32 = 8;
const EVOLVED_ID: u32 = 9;
const UNREGISTERED_ID: u32 = 99;

const USER: &str = "tracker";
const PASSWORD: &str = "s3cret-registry-password";

/// The earlier design's record, as shipped with the tracker.
fn sagatracker_avsc() -> anyhow::Result<Value> {
    let path = workspace_root().join("tracker/avro/SagaTracker.avsc");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// A later writer schema: one more field with a default, `metadata` gone.
fn evolved_avsc() -> anyhow::Result<Value> {
    let mut schema = sagatracker_avsc()?;
    let fields = schema["fields"]
        .as_array_mut()
        .context("fields of SagaTracker.avsc")?;
    fields.retain(|f| f["name"] != "metadata");
    fields.push(json!({"name": "channel", "type": "string", "default": "web"}));
    Ok(schema)
}

/// Another service's record, which is not `SagaTracker` at all.
fn foreign_avsc() -> Value {
    json!({"type": "record", "name": "PaymentCompleted",
           "namespace": "com.groom.ecommerce.payment.event.avro",
           "fields": [{"name": "paymentId", "type": "string"},
                      {"name": "amount", "type": "long"}]})
}

/// What the earlier SDK's `KafkaSagaTrackerClient` writes into `metadata`.
fn sdk_metadata(service: &str, trace_id: &str, span_id: &str) -> String {
    json!({
        "producerService": service,
        "producerTimestamp": Utc::now().to_rfc3339(),
        "traceId": trace_id,
        "spanId": span_id,
    })
    .to_string()
}

/// One `SagaTracker` record, keyed by its `sagaId` like the earlier SDK keys it.
fn avro_event(
    schema_id: u32,
    schema: &Value,
    saga_id: &str,
    step: &str,
    status: &str,
    offset_ms: i64,
    metadata: Option<String>,
) -> Value {
    let at = Utc::now().timestamp_millis() - 600_000 + offset_ms;
    let mut record = json!({
        "eventId": uuid::Uuid::new_v4().to_string(),
        "eventTimestamp": at,
        "sagaId": saga_id,
        "sagaType": "ORDER_CREATION",
        "step": step,
        "status": status,
        "orderId": saga_id.trim_start_matches("order-"),
        "recordedAt": at + 5,
    });
    if schema["fields"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["name"] == "metadata"))
    {
        record["metadata"] = metadata.map_or(Value::Null, Value::String);
    }
    json!({"key": saga_id, "avro": {"schema_id": schema_id, "schema": schema, "record": record}})
}

/// Bytes framed as Avro (magic byte, schema id) that decode to nothing.
fn garbage(schema_id: u32, saga_id: &str) -> Value {
    use base64::Engine as _;
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&schema_id.to_be_bytes());
    bytes.extend_from_slice(&[0xff; 9]);
    json!({"key": saga_id,
           "raw_base64": base64::engine::general_purpose::STANDARD.encode(bytes)})
}

/// A broker with the test's topics, a migrated database, tracker options (not started).
struct Stack {
    tansu: Tansu,
    db: Option<TestDb>,
    topic: String,
    dlq_topic: String,
    options: TrackerOptions,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.avro-{}", unique_suffix());
        let dlq_topic = format!("{topic}.dlq");
        tansu.create_topic(&topic, 2).await?;
        tansu.create_topic(&dlq_topic, 1).await?;
        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;
        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options.dlq_topic = dlq_topic.clone();
        // Short backoff, so a registry outage is retried several times within a test.
        options.extra_env.extend([
            ("TRACKER_INGEST__RETRY_INITIAL_MS".into(), "100".into()),
            ("TRACKER_INGEST__RETRY_MAX_MS".into(), "400".into()),
        ]);
        Ok(Self {
            tansu,
            db: Some(db),
            topic,
            dlq_topic,
            options,
        })
    }

    async fn tracker(&self, env: &[(&str, String)]) -> anyhow::Result<TrackerProcess> {
        let mut options = self.options.clone();
        options
            .extra_env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut tracker = TrackerProcess::spawn(options)?;
        tracker.wait_ready(EVENTUALLY).await?;
        Ok(tracker)
    }

    async fn produce(&self, records: &[Value]) -> anyhow::Result<()> {
        python_produce_avro(&self.tansu.brokers(), &self.topic, records).await
    }

    async fn dead_letters(&self, at_least: usize) -> anyhow::Result<Vec<ConsumedRecord>> {
        python_consume(&self.tansu.brokers(), &self.dlq_topic, at_least, EVENTUALLY).await
    }

    async fn drop_db(&mut self) -> anyhow::Result<()> {
        if let Some(db) = self.db.take() {
            db.drop_db().await?;
        }
        Ok(())
    }
}

async fn saga_when(
    tracker: &TrackerProcess,
    saga_id: &str,
    what: &str,
    done: impl Fn(&SagaDetail) -> bool,
) -> anyhow::Result<SagaDetail> {
    poll_until(EVENTUALLY, &format!("saga {saga_id} {what}"), || async {
        let detail = tracker
            .get_saga(saga_id)
            .await?
            .with_context(|| format!("saga {saga_id} not found yet"))?;
        ensure!(
            done(&detail),
            "saga {saga_id} not {what} yet: {}",
            detail.raw
        );
        Ok(detail)
    })
    .await
}

fn reasons(dlq: &[ConsumedRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in dlq {
        *counts
            .entry(r.header("dlq.reason").unwrap_or("<none>").to_owned())
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_events_of_the_earlier_design_are_tracked_like_json_and_rejects_are_dead_lettered(
) -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let sagatracker = sagatracker_avsc()?;
    let evolved = evolved_avsc()?;
    let avro = |s: &Value| RegisteredSchema {
        schema: s.to_string(),
        schema_type: None,
    };
    let registry = SchemaRegistryStandIn::start(
        BTreeMap::from([
            (SAGA_TRACKER_ID, avro(&sagatracker)),
            (FOREIGN_ID, avro(&foreign_avsc())),
            (EVOLVED_ID, avro(&evolved)),
        ]),
        Some((USER, PASSWORD)),
    )
    .await?;
    let registry_env = [
        ("TRACKER_SCHEMA_REGISTRY__URL", registry.url()),
        ("TRACKER_SCHEMA_REGISTRY__USERNAME", USER.to_owned()),
        ("TRACKER_SCHEMA_REGISTRY__PASSWORD", PASSWORD.to_owned()),
    ];

    // 1. The registry is down: an Avro event waits (retried, never dead-lettered), the
    //    tracker says why on /readyz, and a shutdown meanwhile stores no offset.
    registry.set_unavailable(true);
    let mut tracker = stack.tracker(&registry_env).await?;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    stack
        .produce(&[avro_event(
            SAGA_TRACKER_ID,
            &sagatracker,
            "order-7001",
            "ORDER_PLACED",
            "STARTED",
            0,
            Some(sdk_metadata("order-service", trace, "00f067aa0ba902b7")),
        )])
        .await?;
    poll_until(EVENTUALLY, "the tracker to retry the registry", || async {
        ensure!(
            registry.unavailable_answers() >= 3,
            "{} lookups answered 503 so far",
            registry.unavailable_answers()
        );
        let (status, body) = tracker.get_text("readyz", &[]).await?;
        ensure!(
            status == 503 && body.contains("Schema Registry"),
            "/readyz: {status} {body}"
        );
        Ok(())
    })
    .await?;
    let metrics = tracker.metrics_text().await?;
    ensure!(
        metric_value(
            &metrics,
            "saga_tracker_schema_registry_lookups_total",
            &[("result", "error")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "lookup errors not counted:\n{metrics}"
    );
    ensure!(
        tracker.get_saga("order-7001").await?.is_none(),
        "stored while its schema was unknown"
    );
    ensure!(
        metric_value(&metrics, "saga_tracker_dlq_messages_total", &[]).unwrap_or(0.0) == 0.0,
        "dead-lettered during a registry outage:\n{metrics}"
    );
    let status = tracker.stop(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "tracker exited with {status} during retries"
    );
    let log = tracker.log_text();
    ensure!(
        !log.contains(PASSWORD),
        "the registry password reached the log"
    );

    // 2. The registry is back; a new tracker of the same group re-reads the abandoned batch.
    registry.set_unavailable(false);
    let tracker = stack.tracker(&registry_env).await?;
    let placed = saga_when(&tracker, "order-7001", "stored", |d| {
        d.summary.event_count == 1
    })
    .await?;
    ensure!(placed.summary.status == "STARTED", "{}", placed.raw);

    // 3. A mixed topic: the rest of that saga in Avro (one event with an evolved writer
    //    schema), a legacy JSON event of the earlier SDK, a v1 JSON event, and rejects.
    let stock_meta = sdk_metadata("stock-service", trace, "b7ad6b7169203331");
    let pay_meta = sdk_metadata("payment-service", trace, "00f067aa0ba902b8");
    let legacy_json = json!({
        "key": "order-7001",
        "json": {
            "eventId": uuid::Uuid::new_v4().to_string(),
            "sagaId": "order-7001", "sagaType": "ORDER_CREATION", "step": "PAYMENT_CAPTURED",
            "status": "IN_PROGRESS", "orderId": "7001",
            "eventTimestamp": Utc::now().timestamp_millis() - 600_000 + 3_000,
            "recordedAt": Utc::now().timestamp_millis() - 600_000 + 3_005,
            "metadata": pay_meta,
        }
    });
    let v1_json = json!({
        "key": "order-7002",
        "json": {
            "schemaVersion": 1, "eventId": uuid::Uuid::new_v4().to_string(),
            "sagaId": "order-7002", "sagaType": "ORDER_CREATION", "step": "ORDER_PLACED",
            "stepStatus": "STARTED", "sagaStatus": "STARTED",
            "occurredAt": (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
            "service": "order-service-v2",
        }
    });
    stack
        .produce(&[
            avro_event(
                SAGA_TRACKER_ID,
                &sagatracker,
                "order-7001",
                "STOCK_RESERVED",
                "IN_PROGRESS",
                1_000,
                Some(stock_meta),
            ),
            v1_json,
            legacy_json,
            avro_event(
                EVOLVED_ID,
                &evolved,
                "order-7001",
                "ORDER_CONFIRMED",
                "COMPLETED",
                4_000,
                None,
            ),
            avro_event(
                UNREGISTERED_ID,
                &sagatracker,
                "order-7003",
                "ORDER_PLACED",
                "STARTED",
                0,
                None,
            ),
            json!({"key": "order-7004", "avro": {"schema_id": FOREIGN_ID, "schema": foreign_avsc(),
                   "record": {"paymentId": "p-1", "amount": 1299}}}),
            garbage(SAGA_TRACKER_ID, "order-7005"),
        ])
        .await?;

    let done = saga_when(&tracker, "order-7001", "completed", |d| {
        d.summary.status == "COMPLETED" && d.summary.event_count == 4
    })
    .await?;
    ensure!(
        done.step_names()
            == [
                "ORDER_PLACED",
                "STOCK_RESERVED",
                "PAYMENT_CAPTURED",
                "ORDER_CONFIRMED"
            ],
        "steps: {:?}",
        done.step_names()
    );
    ensure!(
        done.summary.business_key.as_deref() == Some("7001"),
        "{}",
        done.raw
    );
    // Services come from the metadata's producerService (Avro and legacy JSON alike); the
    // evolved event has no metadata, so its service is unknown.
    let mut services = done.summary.services.clone();
    services.sort();
    ensure!(
        services
            == [
                "order-service",
                "payment-service",
                "stock-service",
                "unknown"
            ],
        "services: {services:?}"
    );
    for (step, service) in [
        ("ORDER_PLACED", "order-service"),
        ("STOCK_RESERVED", "stock-service"),
        ("PAYMENT_CAPTURED", "payment-service"),
    ] {
        let s = done.step(step).with_context(|| format!("step {step}"))?;
        ensure!(s.service == service, "{step} by {}", s.service);
    }
    let events = tracker.saga_events("order-7001").await?;
    for e in &events {
        let want = if e.step == "ORDER_CONFIRMED" {
            None
        } else {
            Some(trace)
        };
        ensure!(
            e.extra.get("traceId").and_then(Value::as_str) == want,
            "event {} trace id: {:?}",
            e.step,
            e.extra
        );
    }
    ensure!(
        done.raw["traceIds"] == json!([trace]),
        "saga traceIds: {}",
        done.raw["traceIds"]
    );
    let span = events
        .iter()
        .find(|e| e.step == "STOCK_RESERVED")
        .and_then(|e| e.extra.get("spanId").and_then(Value::as_str));
    ensure!(span == Some("b7ad6b7169203331"), "spanId {span:?}");
    let json_saga = saga_when(&tracker, "order-7002", "stored", |d| {
        d.summary.event_count == 1
    })
    .await?;
    ensure!(
        json_saga.summary.services == ["order-service-v2"],
        "{}",
        json_saga.raw
    );

    let dlq = stack.dead_letters(3).await?;
    let counts = reasons(&dlq);
    ensure!(
        counts
            == BTreeMap::from([
                ("avro_malformed".to_owned(), 1),
                ("avro_schema_mismatch".to_owned(), 1),
                ("avro_unknown_schema".to_owned(), 1),
            ]),
        "DLQ reasons: {counts:?}"
    );
    for (reason, key) in [
        ("avro_unknown_schema", "order-7003"),
        ("avro_schema_mismatch", "order-7004"),
        ("avro_malformed", "order-7005"),
    ] {
        let r = dlq
            .iter()
            .find(|r| r.header("dlq.reason") == Some(reason))
            .with_context(|| format!("{reason} record"))?;
        ensure!(r.key.as_deref() == Some(key), "{reason}: key {:?}", r.key);
        ensure!(
            r.header("dlq.error").is_some_and(|e| !e.is_empty()),
            "{reason}: no dlq.error"
        );
    }
    for r in ["order-7003", "order-7004", "order-7005"] {
        ensure!(tracker.get_saga(r).await?.is_none(), "{r} stored");
    }
    let metrics = tracker.metrics_text().await?;
    for reason in [
        "avro_unknown_schema",
        "avro_schema_mismatch",
        "avro_malformed",
    ] {
        ensure!(
            metric_value(
                &metrics,
                "saga_tracker_dlq_messages_total",
                &[("reason", reason)]
            ) == Some(1.0),
            "{reason} not counted once:\n{metrics}"
        );
    }
    ensure!(
        metric_value(
            &metrics,
            "saga_tracker_schema_registry_lookups_total",
            &[("result", "not_found")]
        )
        .is_some_and(|n| n >= 1.0),
        "not_found lookups not counted"
    );
    // Every lookup carried the credentials; each usable id was fetched once per process.
    ensure!(registry.unauthorized() == 0, "requests without credentials");
    // Ids 7, 8 and 9, once each (8 is cached as a mismatch); 99 is asked again when seen.
    ensure!(
        registry.served() == 3,
        "schemas served {} times: the cache by id does not hold",
        registry.served()
    );
    drop(tracker);
    stack.drop_db().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_schema_file_mapped_to_an_id_needs_no_registry() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let avsc = workspace_root().join("tracker/avro/SagaTracker.avsc");
    let tracker = stack
        .tracker(&[(
            "TRACKER_SCHEMA_REGISTRY__SCHEMAS__42",
            avsc.display().to_string(),
        )])
        .await?;
    let sagatracker = sagatracker_avsc()?;
    stack
        .produce(&[
            avro_event(
                42,
                &sagatracker,
                "order-4201",
                "ORDER_PLACED",
                "STARTED",
                0,
                Some(sdk_metadata(
                    "order-service",
                    "0af7651916cd43dd8448eb211c80319c",
                    "b7ad6b7169203331",
                )),
            ),
            avro_event(
                42,
                &sagatracker,
                "order-4201",
                "PAYMENT_CAPTURED",
                "FAILED",
                1_000,
                Some(sdk_metadata(
                    "payment-service",
                    "0af7651916cd43dd8448eb211c80319c",
                    "b7ad6b7169203332",
                )),
            ),
            // The same record under an id no file maps, and no registry to ask.
            avro_event(
                SAGA_TRACKER_ID,
                &sagatracker,
                "order-4202",
                "ORDER_PLACED",
                "STARTED",
                0,
                None,
            ),
        ])
        .await?;
    let failed = saga_when(&tracker, "order-4201", "failed", |d| {
        d.summary.status == "FAILED" && d.summary.event_count == 2
    })
    .await?;
    ensure!(
        failed.summary.failed_step.as_deref() == Some("PAYMENT_CAPTURED"),
        "{}",
        failed.raw
    );
    let mut services = failed.summary.services.clone();
    services.sort();
    ensure!(
        services == ["order-service", "payment-service"],
        "services: {services:?}"
    );
    let dlq = stack.dead_letters(1).await?;
    ensure!(
        reasons(&dlq) == BTreeMap::from([("avro_unknown_schema".to_owned(), 1)]),
        "DLQ reasons: {:?}",
        reasons(&dlq)
    );
    ensure!(
        dlq[0]
            .header("dlq.error")
            .is_some_and(|e| e.contains("schema id 7")),
        "dlq.error: {:?}",
        dlq[0].header("dlq.error")
    );
    drop(tracker);
    stack.drop_db().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_over_https_is_trusted_through_ssl_root_cert_and_an_untrusted_one_only_waits(
) -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let ca = saga_tracker_tests::pki::TestCa::new("registry-ca")?;
    let cert = ca.server("registry", &["127.0.0.1"])?;
    let sagatracker = sagatracker_avsc()?;
    let registry = SchemaRegistryStandIn::start_tls(
        BTreeMap::from([(
            SAGA_TRACKER_ID,
            RegisteredSchema {
                schema: sagatracker.to_string(),
                schema_type: None,
            },
        )]),
        Some((USER, PASSWORD)),
        &cert,
    )
    .await?;
    ensure!(registry.url().starts_with("https://"), "{}", registry.url());
    let env = [
        ("TRACKER_SCHEMA_REGISTRY__URL", registry.url()),
        ("TRACKER_SCHEMA_REGISTRY__USERNAME", USER.to_owned()),
        ("TRACKER_SCHEMA_REGISTRY__PASSWORD", PASSWORD.to_owned()),
    ];

    // 1. Without the CA the certificate is not trusted: the lookup fails like an outage —
    //    retried, /readyz says so, nothing dead-lettered, nothing stored, no request served.
    let mut untrusting = stack.tracker(&env).await?;
    stack
        .produce(&[avro_event(
            SAGA_TRACKER_ID,
            &sagatracker,
            "order-7301",
            "ORDER_PLACED",
            "STARTED",
            0,
            None,
        )])
        .await?;
    poll_until(
        EVENTUALLY,
        "an untrusted registry to be retried",
        || async {
            let metrics = untrusting.metrics_text().await?;
            let errors = metric_value(
                &metrics,
                "saga_tracker_schema_registry_lookups_total",
                &[("result", "error")],
            )
            .unwrap_or(0.0);
            ensure!(errors >= 2.0, "{errors} failed lookups so far");
            let (status, body) = untrusting.get_text("readyz", &[]).await?;
            ensure!(
                status == 503 && body.contains("Schema Registry"),
                "/readyz: {status} {body}"
            );
            Ok(())
        },
    )
    .await?;
    ensure!(
        registry.served() == 0,
        "an untrusted registry was asked anyway ({} answers)",
        registry.served()
    );
    ensure!(
        untrusting.get_saga("order-7301").await?.is_none(),
        "stored without its writer schema"
    );
    let metrics = untrusting.metrics_text().await?;
    ensure!(
        metric_value(&metrics, "saga_tracker_dlq_messages_total", &[]).unwrap_or(0.0) == 0.0,
        "dead-lettered because the registry's certificate was not trusted:\n{metrics}"
    );
    let status = untrusting.stop(Duration::from_secs(30)).await?;
    ensure!(status.success(), "tracker exited with {status}");
    ensure!(
        !untrusting.log_text().contains(PASSWORD),
        "the registry password reached the log"
    );

    // 2. With `ssl_root_cert` naming the CA, the same group's next tracker stores it.
    let mut trusted_env = env.to_vec();
    trusted_env.push((
        "TRACKER_SCHEMA_REGISTRY__SSL_ROOT_CERT",
        ca.ca_file.display().to_string(),
    ));
    let tracker = stack.tracker(&trusted_env).await?;
    saga_when(&tracker, "order-7301", "stored via HTTPS", |d| {
        d.summary.event_count == 1
    })
    .await?;
    ensure!(
        registry.served() == 1,
        "schemas served {} times over HTTPS",
        registry.served()
    );
    drop(tracker);
    stack.drop_db().await
}
