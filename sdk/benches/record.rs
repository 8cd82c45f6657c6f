//! Cost of one recording call, as a service on its request path sees it.
//!
//! ```text
//! cargo bench -p saga-tracker-sdk --bench record
//! cargo bench -p saga-tracker-sdk --bench record -- --measurement-time 3 --warm-up-time 1
//! ```
//!
//! - `record/async`: an `Async` tracker producing to an in-process mock Kafka cluster. The
//!   overflow policy is `Wait`, so if the broker cannot keep up the figure includes the
//!   back-pressure instead of silently measuring drops (the bench asserts nothing was dropped).
//! - `record/disabled`: the same call with recording switched off.
//! - `step/into_event`: building, validating and serializing one event, without Kafka.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rdkafka::mocking::MockCluster;
use saga_tracker_sdk::contract::StepStatus;
use saga_tracker_sdk::{DeliveryMode, OverflowPolicy, SagaContext, SagaTracker, TrackerConfig};

fn record(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("bench", 3, 1).expect("create topic");
    let tracker = SagaTracker::new(
        TrackerConfig::new(cluster.bootstrap_servers(), "bench-service")
            .with_topic("bench")
            .with_delivery(DeliveryMode::Async)
            .with_overflow(OverflowPolicy::Wait(Duration::from_secs(10))),
    )
    .expect("tracker");
    let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");

    let mut group = c.benchmark_group("record");
    group.bench_function("async", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                tracker
                    .saga(&ctx)
                    .step_succeeded("STOCK_RESERVED")
                    .meta("warehouse", "eu-west-1")
                    .await,
            )
        })
    });
    let disabled = SagaTracker::disabled();
    group.bench_function("disabled", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                disabled
                    .saga(&ctx)
                    .step_succeeded("STOCK_RESERVED")
                    .meta("warehouse", "eu-west-1")
                    .await,
            )
        })
    });
    group.finish();

    c.bench_function("step/into_event", |b| {
        b.iter(|| {
            black_box(
                ctx.step("STOCK_RESERVED", StepStatus::Succeeded)
                    .with_metadata_entry("warehouse", "eu-west-1")
                    .into_event("bench-service")
                    .map(|e| e.to_json()),
            )
        })
    });

    rt.block_on(tracker.shutdown(Duration::from_secs(60)))
        .expect("drained");
    let stats = tracker.stats();
    assert_eq!(stats.dropped, 0, "the async figure must not include drops");
    eprintln!("record/async delivered {} events: {stats:?}", stats.sent);
}

criterion_group!(benches, record);
criterion_main!(benches);
