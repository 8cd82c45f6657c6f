//! A traffic generator: realistic sagas through the real SDK, for the local run command's
//! `--demo` flag and for the throughput bench.
//!
//! Sagas mostly complete; some fail and are compensated, some fail without compensation and
//! a few simply stop (so "stuck" has something to find). Steps are emitted with explicit
//! `sequence` and, at the end, an explicit `sagaStatus`, the way a well-behaved orchestrator
//! would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use saga_tracker_sdk::{SagaTracker, TrackerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Saga shapes the demo emits: a type, its steps and the service owning each step.
const SHAPES: &[(&str, &[(&str, &str)])] = &[
    (
        "ORDER_CREATION",
        &[
            ("ORDER_PLACED", "order-service"),
            ("STOCK_RESERVED", "stock-service"),
            ("PAYMENT_CAPTURED", "payment-service"),
            ("ORDER_CONFIRMED", "order-service"),
        ],
    ),
    (
        "REFUND",
        &[
            ("REFUND_REQUESTED", "order-service"),
            ("PAYMENT_REFUNDED", "payment-service"),
            ("CUSTOMER_NOTIFIED", "notification-service"),
        ],
    ),
    (
        "SHIPMENT",
        &[
            ("PARCEL_PACKED", "warehouse-service"),
            ("CARRIER_BOOKED", "shipping-service"),
            ("LABEL_PRINTED", "warehouse-service"),
        ],
    ),
];

fn event(
    saga_id: &str,
    saga_type: &str,
    (step, service): (&str, &str),
    status: StepStatus,
    seq: &mut i64,
    at: DateTime<Utc>,
) -> SagaEvent {
    *seq += 1;
    SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7().to_string(),
        saga_id: saga_id.to_owned(),
        saga_type: saga_type.to_owned(),
        step: step.to_owned(),
        step_status: status,
        saga_status: None,
        occurred_at: at,
        service: service.to_owned(),
        sequence: Some(*seq),
        business_key: None,
        trace_id: None,
        span_id: None,
        error: None,
        metadata: None,
    }
}

/// The full event list of one generated saga, in emission order, times starting at `start`.
pub fn saga_events(rng: &mut impl Rng, start: DateTime<Utc>) -> Vec<SagaEvent> {
    let (saga_type, steps) = SHAPES[rng.gen_range(0..SHAPES.len())];
    let saga_id = format!(
        "{}-{}",
        saga_type.to_ascii_lowercase().replace('_', "-"),
        Uuid::now_v7().simple()
    );
    let business_key = format!("{}", rng.gen_range(1000..100_000));
    let region = ["eu-west", "us-east", "ap-south"][rng.gen_range(0..3)];
    let roll: f64 = rng.gen();
    // Where it goes wrong, if anywhere.
    let fail_at = (roll < 0.17).then(|| rng.gen_range(1..steps.len()));
    let compensate = roll < 0.12;
    let stall_at = (0.17..0.20)
        .contains(&roll)
        .then(|| rng.gen_range(1..steps.len()));

    let mut out = Vec::new();
    let mut seq = 0;
    let mut t = start;
    let mut tick = |rng: &mut dyn rand::RngCore| {
        t += chrono::Duration::milliseconds(rng.gen_range(5..400));
        t
    };
    for (i, &step) in steps.iter().enumerate() {
        if stall_at == Some(i) {
            break;
        }
        let mut started = event(
            &saga_id,
            saga_type,
            step,
            StepStatus::Started,
            &mut seq,
            tick(rng),
        );
        if i == 0 {
            started.saga_status = Some(SagaStatus::Started);
            started.business_key = Some(business_key.clone());
            started.metadata = json!({"region": region, "channel": "web"})
                .as_object()
                .cloned();
        }
        out.push(started);
        if fail_at == Some(i) {
            let mut failed = event(
                &saga_id,
                saga_type,
                step,
                StepStatus::Failed,
                &mut seq,
                tick(rng),
            );
            failed.error = Some(StepError {
                code: ["TIMEOUT", "INSUFFICIENT_FUNDS", "OUT_OF_STOCK"][rng.gen_range(0..3)]
                    .to_owned(),
                message: format!("{} failed", step.0),
            });
            failed.saga_status = Some(SagaStatus::Failed);
            out.push(failed);
            if compensate {
                for (j, &done) in steps[..i].iter().enumerate().rev() {
                    let mut c = event(
                        &saga_id,
                        saga_type,
                        done,
                        StepStatus::Compensating,
                        &mut seq,
                        tick(rng),
                    );
                    if j + 1 == i {
                        c.saga_status = Some(SagaStatus::Compensating);
                    }
                    out.push(c);
                    let mut c = event(
                        &saga_id,
                        saga_type,
                        done,
                        StepStatus::Compensated,
                        &mut seq,
                        tick(rng),
                    );
                    if j == 0 {
                        c.saga_status = Some(SagaStatus::Compensated);
                    }
                    out.push(c);
                }
            }
            return out;
        }
        let mut ok = event(
            &saga_id,
            saga_type,
            step,
            StepStatus::Succeeded,
            &mut seq,
            tick(rng),
        );
        if i + 1 == steps.len() {
            ok.saga_status = Some(SagaStatus::Completed);
        }
        out.push(ok);
    }
    out
}

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub brokers: String,
    pub topic: String,
    /// Target events per second.
    pub rate: u32,
    /// Stop after this many sagas (`None`: until shutdown).
    pub sagas: Option<u64>,
    pub seed: u64,
}

/// Emits sagas at roughly `rate` events/s until `sagas` are done or `shutdown` fires.
/// Each event is sent when its `occurredAt` comes due, so sagas unfold in real time and
/// interleave like real traffic. Returns the number of events delivered.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<u64> {
    let tracker =
        SagaTracker::new(TrackerConfig::new(&opts.brokers, "demo").with_topic(&opts.topic))
            .context("creating the demo producer")?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    // About six events per saga on average across the shapes above.
    let sagas_per_tick = f64::from(opts.rate.max(1)) / 10.0 / 6.0;
    let mut credit = 0.0;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut due: BinaryHeap<Reverse<(DateTime<Utc>, u64)>> = BinaryHeap::new();
    let mut by_key: HashMap<u64, SagaEvent> = HashMap::new();
    let mut next_key = 0u64;
    let mut sagas = 0u64;
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        credit += sagas_per_tick;
        while credit >= 1.0 && opts.sagas.is_none_or(|n| sagas < n) {
            credit -= 1.0;
            sagas += 1;
            for e in saga_events(&mut rng, Utc::now()) {
                due.push(Reverse((e.occurred_at, next_key)));
                by_key.insert(next_key, e);
                next_key += 1;
            }
        }
        if due.is_empty() && opts.sagas.is_some_and(|n| sagas >= n) {
            break;
        }
        let now = Utc::now();
        let mut batch = Vec::new();
        while let Some(Reverse((at, key))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            if let Some(e) = by_key.remove(&key) {
                batch.push(e);
            }
        }
        let results: Vec<_> = stream::iter(batch.iter().map(|e| tracker.send_event(e)))
            .buffer_unordered(256)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(()) => sent += 1,
                Err(e) => tracing::warn!(error = %e, "demo event not delivered"),
            }
        }
    }
    tracing::info!(sagas, events = sent, "demo finished");
    Ok(sent)
}
