//! The SDK against a real Kafka-protocol broker (librdkafka's in-process mock cluster): both
//! delivery modes, the overflow policies, shutdown, an unreachable broker, and saga context
//! travelling through Kafka headers.
//!
//! Timing assertions are deliberately generous ("returns within 10× its timeout"); the
//! behaviour is asserted through returned values and counters.

mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use saga_tracker_sdk::contract::{self, SagaStatus, StepStatus};
use saga_tracker_sdk::{
    DeliveryMode, Error, OverflowPolicy, SagaContext, SagaTracker, Step, TrackerConfig,
};
use support::{header, Kafka};

fn config(kafka: &Kafka, topic: &str, service: &str) -> TrackerConfig {
    TrackerConfig::new(&kafka.bootstrap, service).with_topic(topic)
}

fn async_config(kafka: &Kafka, topic: &str) -> TrackerConfig {
    config(kafka, topic, "order-service").with_delivery(DeliveryMode::Async)
}

#[tokio::test]
async fn sync_mode_delivers_json_keyed_by_saga_id_with_headers() {
    let kafka = Kafka::start();
    let topic = kafka.topic("sync");
    let tracker = SagaTracker::new(config(&kafka, &topic, "order-service")).expect("tracker");
    let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");

    let started = tracker
        .saga(&ctx)
        .saga_started("ORDER_PLACED")
        .meta("channel", "web")
        .await
        .expect("delivered");
    let failed = tracker
        .saga(&ctx)
        .saga_failed("PAYMENT_CAPTURED", "INSUFFICIENT_FUNDS", "card declined")
        .trace_ids("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        .await
        .expect("delivered");
    assert_eq!(
        tracker.stats().sent,
        2,
        "Sync returns after the broker's ack"
    );
    assert_eq!(tracker.stats().buffered, 0);

    let messages = kafka.read(&topic, 2).await;
    let now = Utc::now();
    let mut seen = Vec::new();
    for m in &messages {
        assert_eq!(m.key(), Some(&b"order-8812"[..]), "key = sagaId");
        assert_eq!(
            header(m, "content-type").as_deref(),
            Some("application/json")
        );
        let event = contract::decode(m.payload().expect("payload"), now).expect("valid v1");
        assert_eq!(event.saga_id, "order-8812");
        assert_eq!(event.service, "order-service");
        assert_eq!(event.business_key.as_deref(), Some("8812"));
        seen.push((event, header(m, "traceparent")));
    }
    assert!(
        messages
            .iter()
            .all(|m| m.partition() == messages[0].partition()),
        "one saga, one partition"
    );
    seen.sort_by_key(|(e, _)| e.event_id.clone());
    let (placed, no_trace) = &seen[0];
    assert_eq!(Some(&placed.event_id), started.as_ref());
    assert_eq!(placed.step_status, StepStatus::Started);
    assert_eq!(placed.saga_status, Some(SagaStatus::Started));
    assert_eq!(
        placed.metadata.as_ref().and_then(|m| m.get("channel")),
        Some(&serde_json::json!("web"))
    );
    assert_eq!(no_trace, &None, "no trace, no traceparent");
    let (payment, traceparent) = &seen[1];
    assert_eq!(Some(&payment.event_id), failed.as_ref());
    assert_eq!(payment.saga_status, Some(SagaStatus::Failed));
    let err = payment.error.as_ref().expect("error");
    assert_eq!(err.code, "INSUFFICIENT_FUNDS");
    assert_eq!(
        traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        payment.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[tokio::test]
async fn concurrent_sync_calls_each_get_their_own_acknowledgement() {
    let kafka = Kafka::start();
    let topic = kafka.topic("sync-many");
    let tracker = SagaTracker::new(config(&kafka, &topic, "order-service")).expect("tracker");
    let mut calls = tokio::task::JoinSet::new();
    for saga in 0..50 {
        let tracker = tracker.clone();
        calls.spawn(async move {
            let ctx = SagaContext::new(format!("order-{saga}"), "ORDER_CREATION");
            tracker.saga(&ctx).step_started("ORDER_PLACED").await
        });
    }
    let mut ids = Vec::new();
    while let Some(call) = calls.join_next().await {
        ids.push(call.expect("task").expect("delivered").expect("an id"));
    }
    let stats = tracker.stats();
    assert_eq!((stats.sent, stats.failed, stats.buffered), (50, 0, 0));

    let mut got: Vec<String> = kafka
        .read(&topic, 50)
        .await
        .iter()
        .map(|m| {
            contract::decode(m.payload().expect("payload"), Utc::now())
                .expect("valid")
                .event_id
        })
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every caller was told about its own event");
}

#[tokio::test]
async fn async_mode_buffers_and_shutdown_delivers_everything() {
    let kafka = Kafka::start();
    let topic = kafka.topic("async");
    let tracker = SagaTracker::new(async_config(&kafka, &topic)).expect("tracker");
    let mut ids = Vec::new();
    for saga in 0..10 {
        let ctx = SagaContext::new(format!("order-{saga}"), "ORDER_CREATION");
        for step in ["ORDER_PLACED", "STOCK_RESERVED", "PAYMENT_CAPTURED"] {
            let id = tracker
                .saga(&ctx)
                .step_succeeded(step)
                .await
                .expect("valid")
                .expect("buffered");
            ids.push(id);
        }
    }
    tracker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("everything delivered before the deadline");
    let stats = tracker.stats();
    assert_eq!((stats.sent, stats.failed, stats.dropped), (30, 0, 0));
    assert_eq!(stats.buffered, 0);

    let messages = kafka.read(&topic, 30).await;
    let mut got: Vec<String> = messages
        .iter()
        .map(|m| {
            let e = contract::decode(m.payload().expect("payload"), Utc::now()).expect("valid");
            assert_eq!(m.key(), Some(e.saga_id.as_bytes()));
            e.event_id
        })
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn send_event_awaits_delivery_even_in_async_mode() {
    let kafka = Kafka::start();
    let topic = kafka.topic("send-event");
    let tracker = SagaTracker::new(async_config(&kafka, &topic)).expect("tracker");
    let event = Step::new("s-1", "ORDER_CREATION", "A", StepStatus::Started)
        .into_event("tool")
        .expect("valid");
    tracker.send_event(&event).await.expect("delivered");
    assert_eq!(tracker.stats().sent, 1);
    let m = &kafka.read(&topic, 1).await[0];
    assert_eq!(m.key(), Some(&b"s-1"[..]));
}

#[tokio::test]
async fn overflow_drop_counts_what_a_full_buffer_refuses() {
    let kafka = Kafka::start();
    let topic = kafka.topic("drop");
    let tracker = SagaTracker::new(
        async_config(&kafka, &topic)
            .with_buffer_capacity(5)
            .with_overflow(OverflowPolicy::Drop),
    )
    .expect("tracker");
    kafka.broker_down();

    let ctx = SagaContext::new("order-1", "ORDER_CREATION");
    let started = Instant::now();
    let mut accepted = 0;
    let mut dropped = 0;
    for i in 0..12 {
        match tracker
            .saga(&ctx)
            .step_succeeded("STEP")
            .sequence(i)
            .await
            .expect("never an error in Async mode")
        {
            Some(_) => accepted += 1,
            None => dropped += 1,
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Drop never waits: {:?}",
        started.elapsed()
    );
    assert_eq!((accepted, dropped), (5, 7));
    let stats = tracker.stats();
    assert_eq!((stats.dropped, stats.buffered, stats.sent), (7, 5, 0));

    // When the broker comes back, what was buffered is delivered.
    kafka.broker_up();
    tracker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("drained");
    assert_eq!(tracker.stats().sent, 5);
    assert_eq!(kafka.read(&topic, 5).await.len(), 5);
}

#[tokio::test]
async fn overflow_wait_gives_up_after_its_timeout() {
    let kafka = Kafka::start();
    let topic = kafka.topic("wait-timeout");
    let wait = Duration::from_millis(200);
    let tracker = SagaTracker::new(
        async_config(&kafka, &topic)
            .with_buffer_capacity(1)
            .with_overflow(OverflowPolicy::Wait(wait)),
    )
    .expect("tracker");
    kafka.broker_down();
    let ctx = SagaContext::new("order-1", "ORDER_CREATION");

    let first = tracker.saga(&ctx).step_started("A").await.expect("valid");
    assert!(first.is_some(), "the buffer had room");
    let started = Instant::now();
    let second = tracker.saga(&ctx).step_succeeded("A").await.expect("valid");
    let took = started.elapsed();
    assert_eq!(second, None, "dropped after waiting");
    assert!(took >= wait / 2, "it did wait: {took:?}");
    assert!(
        took < wait * 10,
        "but not much longer than its limit: {took:?}"
    );
    assert_eq!(tracker.stats().dropped, 1);

    kafka.broker_up();
    tracker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("drained");
    assert_eq!(tracker.stats().sent, 1);
}

#[tokio::test]
async fn overflow_wait_proceeds_once_the_broker_drains_the_buffer() {
    let kafka = Kafka::start();
    let topic = kafka.topic("wait-ok");
    let tracker = SagaTracker::new(
        async_config(&kafka, &topic)
            .with_buffer_capacity(1)
            .with_overflow(OverflowPolicy::Wait(Duration::from_secs(30))),
    )
    .expect("tracker");
    kafka.broker_down();
    let ctx = SagaContext::new("order-1", "ORDER_CREATION");
    assert!(tracker
        .saga(&ctx)
        .step_started("A")
        .await
        .expect("valid")
        .is_some());

    let waiting = {
        let tracker = tracker.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { tracker.saga(&ctx).step_succeeded("A").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still waiting for room");
    kafka.broker_up();
    let second = waiting.await.expect("task").expect("valid");
    assert!(second.is_some(), "accepted once the first was delivered");
    tracker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("drained");
    let stats = tracker.stats();
    assert_eq!((stats.sent, stats.dropped), (2, 0));
}

#[tokio::test]
async fn shutdown_wakes_waiters_and_refuses_later_events() {
    let kafka = Kafka::start();
    let topic = kafka.topic("closed");
    let tracker = SagaTracker::new(
        async_config(&kafka, &topic)
            .with_buffer_capacity(1)
            .with_overflow(OverflowPolicy::Wait(Duration::from_secs(60))),
    )
    .expect("tracker");
    kafka.broker_down();
    let ctx = SagaContext::new("order-1", "ORDER_CREATION");
    tracker.saga(&ctx).step_started("A").await.expect("valid");
    let waiting = {
        let tracker = tracker.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { tracker.saga(&ctx).step_succeeded("A").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let result = tracker.shutdown(Duration::from_millis(300)).await;
    assert!(
        matches!(result, Err(Error::FlushTimeout { pending: 1 })),
        "{result:?}"
    );
    let woken = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter gave up at shutdown")
        .expect("task");
    assert_eq!(woken.expect("valid"), None);
    assert_eq!(
        tracker.saga(&ctx).step_succeeded("B").await.expect("valid"),
        None
    );
    let sync = SagaTracker::new(config(&kafka, &topic, "svc")).expect("tracker");
    sync.shutdown(Duration::from_secs(1)).await.expect("empty");
    let e = sync
        .record(ctx.step("C", StepStatus::Started))
        .await
        .expect_err("closed");
    assert!(matches!(e, Error::Closed), "{e:?}");
    kafka.broker_up();
}

#[tokio::test]
async fn sync_mode_reports_an_unreachable_broker_within_its_timeout() {
    let timeout = Duration::from_secs(1);
    let tracker = SagaTracker::new(
        TrackerConfig::new("127.0.0.1:1", "order-service").with_delivery_timeout(timeout),
    )
    .expect("creating a producer does not connect");
    let started = Instant::now();
    let e = tracker
        .record(Step::new(
            "order-1",
            "ORDER_CREATION",
            "A",
            StepStatus::Started,
        ))
        .await
        .expect_err("nobody is listening");
    assert!(matches!(e, Error::Delivery(_)), "{e:?}");
    assert!(
        started.elapsed() < timeout * 10,
        "took {:?}",
        started.elapsed()
    );
    let stats = tracker.stats();
    assert_eq!((stats.sent, stats.failed, stats.buffered), (0, 1, 0));
}

#[tokio::test]
async fn async_mode_never_blocks_on_an_unreachable_broker() {
    let tracker = SagaTracker::new(
        TrackerConfig::new("127.0.0.1:1", "order-service")
            .with_delivery(DeliveryMode::Async)
            .with_delivery_timeout(Duration::from_secs(1))
            .with_buffer_capacity(10),
    )
    .expect("tracker");
    let ctx = SagaContext::new("order-1", "ORDER_CREATION");
    let started = Instant::now();
    let mut results = Vec::new();
    for _ in 0..25 {
        results.push(tracker.saga(&ctx).step_started("A").await.expect("valid"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 10);
    assert_eq!(tracker.stats().dropped, 15);

    // The buffered ten fail after the delivery timeout; shutdown sees them settle.
    tracker
        .shutdown(Duration::from_secs(10))
        .await
        .expect("settled");
    let stats = tracker.stats();
    assert_eq!((stats.sent, stats.failed, stats.buffered), (0, 10, 0));
}

#[tokio::test]
async fn saga_context_travels_through_kafka_headers() {
    let kafka = Kafka::start();
    let orders = kafka.topic("orders");
    let tracker_topic = kafka.topic("tracker");

    // The order service starts the saga and publishes a command carrying the context.
    let order_service =
        SagaTracker::new(config(&kafka, &tracker_topic, "order-service")).expect("tracker");
    let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");
    order_service
        .saga(&ctx)
        .saga_started("ORDER_PLACED")
        .await
        .expect("delivered");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .expect("producer");
    let headers = ctx
        .inject_kafka(OwnedHeaders::new().insert(Header {
            key: "command",
            value: Some("reserve-stock"),
        }))
        .expect("valid context");
    producer
        .send(
            FutureRecord::to(&orders)
                .key("8812")
                .payload("{}")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("command sent");

    // The stock service consumes it and records into the same saga.
    let command = &kafka.read(&orders, 1).await[0];
    let received = SagaContext::from_kafka_message(command)
        .expect("valid headers")
        .expect("context present");
    assert_eq!(received, ctx);
    let stock_service =
        SagaTracker::new(config(&kafka, &tracker_topic, "stock-service")).expect("tracker");
    stock_service
        .saga(&received)
        .step_succeeded("STOCK_RESERVED")
        .await
        .expect("delivered");

    let events: Vec<_> = kafka
        .read(&tracker_topic, 2)
        .await
        .iter()
        .map(|m| contract::decode(m.payload().expect("payload"), Utc::now()).expect("valid"))
        .collect();
    assert!(events
        .iter()
        .all(|e| e.saga_id == "order-8812" && e.business_key.as_deref() == Some("8812")));
    let mut services: Vec<_> = events.iter().map(|e| e.service.as_str()).collect();
    services.sort_unstable();
    assert_eq!(services, ["order-service", "stock-service"]);
}

#[cfg(feature = "opentelemetry")]
#[tokio::test]
async fn the_current_opentelemetry_span_becomes_traceparent_and_ids() {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let kafka = Kafka::start();
    let topic = kafka.topic("otel");
    let tracker = SagaTracker::new(config(&kafka, &topic, "svc")).expect("tracker");
    let ctx = SagaContext::new("s-1", "ORDER_CREATION");
    let span = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex"),
        SpanId::from_hex("b7ad6b7169203331").expect("hex"),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let guard = opentelemetry::Context::current()
        .with_remote_span_context(span)
        .attach();
    tracker
        .saga(&ctx)
        .step_started("A")
        .await
        .expect("delivered");
    drop(guard);

    let m = &kafka.read(&topic, 1).await[0];
    assert_eq!(
        header(m, "traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    let e = contract::decode(m.payload().expect("payload"), Utc::now()).expect("valid");
    assert_eq!(
        e.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(e.span_id.as_deref(), Some("b7ad6b7169203331"));
}
