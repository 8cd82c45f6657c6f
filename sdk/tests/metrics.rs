//! The SDK's self-metrics reach the process's `metrics` recorder under the documented names.
//!
//! One test in its own binary: it installs a global recorder.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use saga_tracker_sdk::contract::StepStatus;
use saga_tracker_sdk::stats::{BUFFER_DEPTH, EVENTS_DROPPED, EVENTS_SENT};
use saga_tracker_sdk::{DeliveryMode, OverflowPolicy, SagaContext, SagaTracker, TrackerConfig};
use support::Kafka;

/// Kind, name and labels of one series.
type MetricId = (MetricKind, String, Vec<(String, String)>);

#[tokio::test]
async fn events_sent_dropped_and_buffered_are_exported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let kafka = Kafka::start();
    let topic = kafka.topic("metrics");
    let tracker = SagaTracker::new(
        TrackerConfig::new(&kafka.bootstrap, "svc")
            .with_topic(&topic)
            .with_delivery(DeliveryMode::Async)
            .with_buffer_capacity(2)
            .with_overflow(OverflowPolicy::Drop),
    )
    .expect("tracker");
    let ctx = SagaContext::new("order-1", "ORDER_CREATION");

    // Three delivered…
    for _ in 0..3 {
        tracker
            .send_event(
                &ctx.step("A", StepStatus::Started)
                    .into_event("svc")
                    .expect("valid"),
            )
            .await
            .expect("delivered");
    }
    // …two buffered and one dropped for lack of room while the broker is down…
    kafka.broker_down();
    for _ in 0..3 {
        tracker.saga(&ctx).step_started("B").await.expect("valid");
    }
    // …and one refused as invalid.
    let bad = SagaContext::new("order-1", "not a type");
    assert!(tracker.saga(&bad).step_started("C").await.is_err());

    let snapshot: HashMap<MetricId, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            ((kind, key.name().to_owned(), labels), value)
        })
        .collect();
    let get = |kind, name: &str, labels: &[(&str, &str)]| {
        let owned: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        snapshot
            .get(&(kind, name.to_owned(), owned))
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from {snapshot:#?}"))
    };
    assert_eq!(
        get(MetricKind::Counter, EVENTS_SENT, &[]),
        &DebugValue::Counter(3)
    );
    assert_eq!(
        get(
            MetricKind::Counter,
            EVENTS_DROPPED,
            &[("reason", "buffer_full")]
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get(
            MetricKind::Counter,
            EVENTS_DROPPED,
            &[("reason", "invalid")]
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get(MetricKind::Gauge, BUFFER_DEPTH, &[]),
        &DebugValue::Gauge(2.0.into())
    );
    assert_eq!(EVENTS_SENT, "saga_tracker_sdk_events_sent_total");
    assert_eq!(EVENTS_DROPPED, "saga_tracker_sdk_events_dropped_total");
    assert_eq!(BUFFER_DEPTH, "saga_tracker_sdk_buffer_depth");

    kafka.broker_up();
    tracker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("drained");
}
