//! The tracker's own spans, as an OpenTelemetry exporter receives them: the shape of an
//! ingest batch (its children and its links to the producers' spans), the saga detail's way
//! back to both traces, and an HTTP request continuing the caller's `traceparent`.
//!
//! The real tracker runs in process (mock Kafka cluster, real PostgreSQL) under a global
//! subscriber whose `tracing-opentelemetry` layer exports to an in-memory exporter; one
//! binary of its own because that subscriber is process-wide. Each test tells its spans
//! apart by its own consumer group or trace id. The export pipeline itself (OTLP to a real
//! receiver) is tested in `tests/tests/`.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{unique, InProcessTracker, MockKafka, TrackerSetup};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;

const TOPIC: &str = "saga.tracker";
const DLQ: &str = "saga.tracker.dlq";

/// The exporter behind the process-wide subscriber, installed on first use.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("saga-tracker")));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber here");
        exporter
    })
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::I64(n)) => Some(*n),
        _ => None,
    }
}

/// Polls the exporter (bounded: 30 s) until `pred` holds for the finished spans.
async fn wait_spans(what: &str, pred: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let mut spans = Vec::new();
    for _ in 0..300 {
        spans = exporter().get_finished_spans().expect("spans");
        if pred(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let brief: Vec<String> = spans.iter().map(brief).collect();
    panic!("timed out waiting for {what}; finished spans: {brief:#?}");
}

/// A span in one line: name, ids, attributes.
fn brief(s: &SpanData) -> String {
    let attrs: Vec<String> = s
        .attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    format!(
        "{} {}/{} parent {} [{}]",
        s.name,
        s.span_context.trace_id(),
        s.span_context.span_id(),
        s.parent_span_id,
        attrs.join(" ")
    )
}

/// A producer span's trace context as the SDK would send it.
fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn event(saga: &str, step: &str, status: &str, trace: &str, span: &str) -> serde_json::Value {
    json!({
        "schemaVersion": 1,
        "eventId": uuid::Uuid::now_v7().to_string(),
        "sagaId": saga,
        "sagaType": "ORDER_CREATION",
        "step": step,
        "stepStatus": status,
        "occurredAt": chrono::Utc::now().to_rfc3339(),
        "service": "order-service",
        "traceId": trace,
        "spanId": span,
    })
}

async fn send(kafka: &MockKafka, key: &str, payload: &[u8], traceparent: Option<&str>) {
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC).key(key).payload(payload);
    if let Some(tp) = traceparent {
        rec = rec.headers(OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(tp),
        }));
    }
    kafka
        .producer
        .send(rec, Duration::from_secs(10))
        .await
        .expect("delivered");
}

/// Waits until the batch spans of consumer group `group` account for `messages` messages,
/// and returns every span recorded so far.
async fn batches_holding(group: &str, messages: i64) -> Vec<SpanData> {
    wait_spans("the batch span", |spans| {
        spans
            .iter()
            .filter(|s| {
                s.name == "ingest.batch"
                    && attr_str(s, "messaging.consumer.group.name").as_deref() == Some(group)
            })
            .filter_map(|s| attr_i64(s, "messaging.batch.message_count"))
            .sum::<i64>()
            == messages
    })
    .await
}

#[tokio::test]
async fn a_batch_span_has_its_children_and_links_to_the_producers_spans() {
    exporter();
    let kafka = MockKafka::start(&[(TOPIC, 3), (DLQ, 1)]);
    let group = unique("spans");
    // One batch: everything below is sent before the consumer has joined, and 500 ms of
    // linger collects it.
    let producers = [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
    ];
    let saga = unique("order");
    for (i, (trace, span)) in producers.iter().enumerate() {
        let step = if i == 0 { "STARTED" } else { "SUCCEEDED" };
        let ev = event(&saga, "ORDER_PLACED", step, trace, span);
        send(
            &kafka,
            &saga,
            ev.to_string().as_bytes(),
            Some(&traceparent(trace, span)),
        )
        .await;
    }
    send(&kafka, "poison", b"not json", None).await;
    let tracker = InProcessTracker::spawn(TrackerSetup {
        group: group.clone(),
        linger_ms: 500,
        // One lane: the saga's and the poison message's partitions would otherwise be
        // written as two batches (each lane batches its own partitions).
        in_flight: 1,
        ..TrackerSetup::new(&kafka.bootstrap, "saga_spans")
    })
    .await;

    let in_group =
        |s: &SpanData| attr_str(s, "messaging.consumer.group.name").as_deref() == Some(&group);
    let spans = batches_holding(&group, 3).await;
    let batches: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "ingest.batch" && in_group(s))
        .collect();
    assert_eq!(batches.len(), 1, "one batch: {batches:#?}");
    let batch = batches[0];

    // The batch span: a consumer root with the messaging conventions and our counts.
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    assert_eq!(batch.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(
        attr_str(batch, "messaging.system").as_deref(),
        Some("kafka")
    );
    assert_eq!(
        attr_str(batch, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr_str(batch, "messaging.destination.name").as_deref(),
        Some(TOPIC)
    );
    assert_eq!(attr_i64(batch, "dead_letters"), Some(1));
    assert_eq!(attr_i64(batch, "duplicates"), Some(0));
    assert_eq!(attr_i64(batch, "links"), Some(2));
    assert!(attr_i64(batch, "partitions").is_some_and(|p| (1..=3).contains(&p)));
    assert!(attr_i64(batch, "oldest_event_lag_ms").is_some_and(|ms| ms >= 0));
    assert_eq!(attr_str(batch, "outcome").as_deref(), Some("committed"));

    // Its links are the producers' spans named by the `traceparent` headers.
    let mut linked: Vec<(String, String)> = batch
        .links
        .links
        .iter()
        .map(|l| {
            (
                l.span_context.trace_id().to_string(),
                l.span_context.span_id().to_string(),
            )
        })
        .collect();
    linked.sort();
    let mut want: Vec<(String, String)> = producers
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    want.sort();
    assert_eq!(linked, want);

    // Its children, in the batch's trace.
    let batch_id = batch.span_context.span_id();
    let children: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.parent_span_id == batch_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_ref()).collect();
    for name in [
        "ingest.decode",
        "ingest.dead_letter",
        "ingest.db_transaction",
        "ingest.store_offsets",
    ] {
        assert!(
            names.contains(&name),
            "{name} is a child of the batch: {names:?}"
        );
    }
    assert!(children
        .iter()
        .all(|c| c.span_context.trace_id() == batch.span_context.trace_id()));
    let db = children
        .iter()
        .find(|s| s.name == "ingest.db_transaction")
        .expect("db span");
    assert_eq!(db.span_kind, SpanKind::Client);
    assert_eq!(
        attr_str(db, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        attr_str(db, "db.operation.name").as_deref(),
        Some("write_batch")
    );
    assert_eq!(attr_i64(db, "events"), Some(2));
    let decode = children
        .iter()
        .find(|s| s.name == "ingest.decode")
        .expect("decode");
    assert_eq!(
        (attr_i64(decode, "valid"), attr_i64(decode, "invalid")),
        (Some(2), Some(1))
    );

    // The saga leads to the emitters' traces and to the batch that stored it.
    let (status, detail) = tracker.get(&format!("/api/v1/sagas/{saga}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["traceIds"], json!([producers[0].0, producers[1].0]));
    assert_eq!(
        detail["trackerTraceIds"],
        json!([batch.span_context.trace_id().to_string()])
    );
    let (_, events) = tracker.get(&format!("/api/v1/sagas/{saga}/events")).await;
    assert!(events["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["trackerTraceId"] == json!(batch.span_context.trace_id().to_string())));
    tracker.stop().await;
}

#[tokio::test]
async fn beyond_128_producers_a_batch_links_the_128_its_fixed_rule_chooses() {
    use saga_tracker::ingest::trace::{choose_links, MAX_LINKS};

    exporter();
    let kafka = MockKafka::start(&[(TOPIC, 2), (DLQ, 1)]);
    let group = unique("spans-cap");
    let n = MAX_LINKS + 12;
    let mut sent = Vec::new();
    for i in 0..n {
        let trace = format!("{:032x}", 0x5a61_u128 << 64 | (i as u128 * 7919 + 1));
        let span = format!("{:016x}", i as u64 + 1);
        let saga = format!("cap-{i}");
        let ev = event(&saga, "ORDER_PLACED", "STARTED", &trace, &span);
        send(
            &kafka,
            &saga,
            ev.to_string().as_bytes(),
            Some(&traceparent(&trace, &span)),
        )
        .await;
        sent.push((trace, span));
    }
    let tracker = InProcessTracker::spawn(TrackerSetup {
        group: group.clone(),
        batch_size: 500,
        linger_ms: 1000,
        // One lane, so the producers' messages over every partition make one batch.
        in_flight: 1,
        ..TrackerSetup::new(&kafka.bootstrap, "saga_spans")
    })
    .await;

    let in_group =
        |s: &SpanData| attr_str(s, "messaging.consumer.group.name").as_deref() == Some(&group);
    let spans = batches_holding(&group, n as i64).await;
    let batches: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "ingest.batch" && in_group(s))
        .collect();
    assert_eq!(batches.len(), 1, "one batch of {n}");
    let batch = batches[0];
    assert_eq!(batch.links.links.len(), MAX_LINKS);
    assert_eq!(attr_i64(batch, "links"), Some(MAX_LINKS as i64));
    assert_eq!(attr_i64(batch, "links_dropped"), Some(12));

    // Exactly the ones the rule picks, whatever order the partitions were read in.
    let candidates = sent.iter().map(|(t, s)| {
        opentelemetry::trace::SpanContext::new(
            TraceId::from_hex(t).expect("hex"),
            SpanId::from_hex(s).expect("hex"),
            opentelemetry::trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        )
    });
    let (want, dropped) = choose_links(candidates);
    assert_eq!(dropped, 12);
    let ids = |scs: &mut dyn Iterator<Item = &opentelemetry::trace::SpanContext>| {
        let mut v: Vec<(String, String)> = scs
            .map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&mut batch.links.links.iter().map(|l| &l.span_context)),
        ids(&mut want.iter())
    );
    tracker.stop().await;
}

#[tokio::test]
async fn an_http_request_span_continues_the_incoming_traceparent() {
    exporter();
    let kafka = MockKafka::start(&[(TOPIC, 1), (DLQ, 1)]);
    let tracker = InProcessTracker::spawn(TrackerSetup::new(&kafka.bootstrap, "saga_spans")).await;
    let trace = format!(
        "{:032x}",
        u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes())
    );
    let parent = "00f067aa0ba902b7";
    let r = tracker
        .http
        .get(format!("{}/api/v1/sagas/nope", tracker.base))
        .header("traceparent", traceparent(&trace, parent))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 404);

    let trace_id = TraceId::from_hex(&trace).expect("hex");
    let spans = wait_spans("the request span", |spans| {
        spans.iter().any(|s| s.span_context.trace_id() == trace_id)
    })
    .await;
    let span = spans
        .iter()
        .find(|s| s.span_context.trace_id() == trace_id)
        .expect("found above");
    assert_eq!(span.name, "GET /api/v1/sagas/{sagaId}");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.parent_span_id, SpanId::from_hex(parent).expect("hex"));
    assert_eq!(
        attr_str(span, "route").as_deref(),
        Some("/api/v1/sagas/{sagaId}")
    );
    assert_eq!(attr_str(span, "method").as_deref(), Some("GET"));
    assert_eq!(attr_i64(span, "http.response.status_code"), Some(404));
    assert_eq!(
        attr_str(span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr_str(span, "http.route").as_deref(),
        Some("/api/v1/sagas/{sagaId}")
    );
    assert_eq!(
        attr_str(span, "url.path").as_deref(),
        Some("/api/v1/sagas/nope")
    );
    assert!(
        attr_str(span, "caller").is_some(),
        "the auth code names the caller"
    );

    // Without the header, a request is a trace of its own.
    let before = exporter().get_finished_spans().expect("spans").len();
    let r = tracker
        .http
        .get(format!("{}/api/v1/whoami", tracker.base))
        .send()
        .await
        .expect("answered");
    assert!(r.status().is_success());
    let spans = wait_spans("a second request span", |spans| {
        spans[before.min(spans.len())..]
            .iter()
            .any(|s| s.name == "GET /api/v1/whoami")
    })
    .await;
    let root = spans
        .iter()
        .rev()
        .find(|s| s.name == "GET /api/v1/whoami")
        .expect("found above");
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    tracker.stop().await;
}
