//! With the `opentelemetry` feature and a tracer provider installed, each recorded step is a
//! producer span (messaging conventions), a child of the caller's span, and the event's ids
//! and `traceparent` header name that span — what the tracker's batch span links to.
//!
//! Its own binary: it installs the global tracer provider, which would change the ids the
//! other tests of `delivery.rs` expect from the no-op default.

#![cfg(feature = "opentelemetry")]

mod support;

use chrono::Utc;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use saga_tracker_sdk::{contract, SagaContext, SagaTracker, Step, TrackerConfig};
use support::{header, Kafka};

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

#[tokio::test]
async fn each_step_is_a_producer_span_whose_context_travels_as_traceparent() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let kafka = Kafka::start();
    let topic = kafka.topic("producer-span");
    let tracker =
        SagaTracker::new(TrackerConfig::new(&kafka.bootstrap, "order-service").with_topic(&topic))
            .expect("tracker");
    let ctx = SagaContext::new("order-8812", "ORDER_CREATION");

    // 1. Inside a span of the service: the producer span is its child.
    let service_tracer = provider.tracer("order-service");
    let parent = service_tracer.start("place order");
    let parent_sc = opentelemetry::trace::Span::span_context(&parent).clone();
    let cx = opentelemetry::Context::current_with_span(parent);
    let guard = cx.clone().attach();
    tracker
        .saga(&ctx)
        .step_started("ORDER_PLACED")
        .await
        .expect("delivered");
    drop(guard);

    // 2. With explicit ids of a caller (e.g. an incoming `traceparent`): a remote parent.
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
        SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    tracker
        .record(
            Step::new(
                "order-8812",
                "ORDER_CREATION",
                "STOCK_RESERVED",
                contract::StepStatus::Started,
            )
            .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        )
        .await
        .expect("delivered");

    let messages = kafka.read(&topic, 2).await;
    let spans = exporter.get_finished_spans().expect("spans");
    let producers: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Producer)
        .collect();
    assert_eq!(
        producers.len(),
        2,
        "one producer span per recorded step: {spans:#?}"
    );

    for (m, (parent_trace, parent_span)) in messages.iter().zip([
        (parent_sc.trace_id(), parent_sc.span_id()),
        (remote.trace_id(), remote.span_id()),
    ]) {
        use rdkafka::Message as _;
        let event = contract::decode(m.payload().expect("payload"), Utc::now()).expect("valid");
        let span = producers
            .iter()
            .find(|s| Some(s.span_context.span_id().to_string()) == event.span_id)
            .unwrap_or_else(|| panic!("the event's spanId names a producer span: {event:?}"));
        assert_eq!(
            span.span_context.trace_id(),
            parent_trace,
            "same trace as the caller"
        );
        assert_eq!(
            span.parent_span_id, parent_span,
            "a child of the caller's span"
        );
        assert_eq!(
            header(m, "traceparent"),
            Some(format!(
                "00-{}-{}-01",
                span.span_context.trace_id(),
                span.span_context.span_id()
            )),
            "the header names the producer span"
        );
        assert_eq!(event.trace_id, Some(parent_trace.to_string()));
        assert_eq!(span.name, format!("send {topic}"));
        assert_eq!(
            attribute(span, "messaging.system"),
            Some(&Value::from("kafka"))
        );
        assert_eq!(
            attribute(span, "messaging.operation.type"),
            Some(&Value::from("send"))
        );
        assert_eq!(
            attribute(span, "messaging.destination.name"),
            Some(&Value::from(topic.clone()))
        );
        assert_eq!(
            attribute(span, "messaging.kafka.message.key"),
            Some(&Value::from("order-8812"))
        );
        assert_eq!(
            attribute(span, "messaging.message.id"),
            Some(&Value::from(event.event_id.clone()))
        );
        assert_eq!(span.status, Status::Unset);
    }
    tracker
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .expect("flushed");
}
