//! End-to-end throughput bench: SDK → tansu → `saga-tracker` process → PostgreSQL.
//!
//! Two phases against one fresh broker, topic and database:
//!
//! 1. **live** — the tracker runs while the SDK produces `--events` events as fast as it can;
//!    we time from the first send until the last event is visible in PostgreSQL, and read
//!    the visibility lag (`ingested_at - occurred_at`) percentiles from the stored events.
//! 2. **catch-up** — the tracker is stopped, another `--events` are produced into a backlog,
//!    then a tracker starts and we time how long it takes to drain it (pure consume + write
//!    throughput, independent of the producer).
//!
//! Run it with `scripts/bench.sh` (release build) and copy the printed table into
//! `docs/BENCHMARKS.md`. It asserts nothing about speed: numbers on a shared 2-core machine
//! are noisy, so compare figures taken in one run.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use saga_tracker_sdk::{SagaTracker, TrackerConfig};
use saga_tracker_tests::{migrate, unique_suffix, Tansu, TestDb, TrackerOptions, TrackerProcess};
use sqlx::Connection;
use tokio::task::JoinSet;

/// librdkafka's mock cluster, owned by a producer handle that keeps it alive. Other
/// processes (the tracker) reach it through its loopback bootstrap address.
struct MockBroker {
    _owner: rdkafka::producer::FutureProducer,
    bootstrap: String,
}

impl MockBroker {
    #[allow(unsafe_code)]
    fn start(topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        use rdkafka::producer::Producer;
        let owner: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .context("starting the mock cluster")?;
        // SAFETY: the handle comes from a live client and is used only while it lives.
        unsafe {
            let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            ensure!(!raw.is_null(), "the client has no mock cluster");
            // Join consumer groups at once rather than after the default 3 s delay.
            rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
        let bootstrap = {
            let mock = owner
                .client()
                .mock_cluster()
                .context("mock cluster handle")?;
            for (name, partitions) in topics {
                mock.create_topic(name, *partitions, 1)
                    .with_context(|| format!("creating {name}"))?;
            }
            mock.bootstrap_servers()
        };
        Ok(Self {
            _owner: owner,
            bootstrap,
        })
    }
}

#[derive(Debug, Parser)]
#[command(about = "Saga Tracker end-to-end throughput bench")]
struct Args {
    /// Events per phase.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per saga (one STARTED, then step events, the last one COMPLETED).
    #[arg(long, default_value_t = 5)]
    events_per_saga: u64,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// `ingest.batch_size` of the tracker.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Events per second in the steady phase (a rate the tracker can sustain).
    #[arg(long, default_value_t = 2000)]
    steady_rate: u64,
    /// Length of the steady phase in seconds.
    #[arg(long, default_value_t = 15)]
    steady_secs: u64,
    /// Which broker to run against: `tansu` (a separate broker process with SQLite storage)
    /// or `mock` (librdkafka's in-memory mock cluster, hosted by this process: it isolates
    /// the tracker's own cost from the broker's).
    #[arg(long, default_value = "tansu", value_parser = ["tansu", "mock"])]
    broker: String,
    /// Give up waiting for ingestion after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

fn saga_event(saga: &str, i: u64, last: u64) -> SagaEvent {
    let status = if i == last {
        Some(SagaStatus::Completed)
    } else if i == 0 {
        Some(SagaStatus::Started)
    } else {
        None
    };
    SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: uuid::Uuid::now_v7().to_string(),
        saga_id: saga.to_owned(),
        saga_type: "BENCH_ORDER".to_owned(),
        step: format!("STEP_{i}"),
        step_status: if i == 0 {
            StepStatus::Started
        } else {
            StepStatus::Succeeded
        },
        saga_status: status,
        occurred_at: chrono::Utc::now(),
        service: "bench".to_owned(),
        sequence: Some(i as i64),
        business_key: Some(format!("bk-{saga}")),
        trace_id: None,
        span_id: None,
        error: None,
        metadata: serde_json::json!({"region": "eu-west", "tier": i % 3})
            .as_object()
            .cloned(),
    }
}

/// Produces `n` events (in sagas of `per_saga`) with up to 1000 in flight; returns the
/// elapsed time. Each event's `occurredAt` is taken when it is built, just before sending.
async fn produce(sdk: &SagaTracker, n: u64, per_saga: u64, tag: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut sent = 0u64;
    let mut saga_no = 0u64;
    while sent < n {
        let saga = format!("bench-{tag}-{saga_no}");
        saga_no += 1;
        for i in 0..per_saga.min(n - sent) {
            let event = saga_event(&saga, i, per_saga - 1);
            let sdk = sdk.clone();
            in_flight.spawn(async move { sdk.send_event(&event).await });
            sent += 1;
            if in_flight.len() >= 1000 {
                if let Some(r) = in_flight.join_next().await {
                    r.context("send task")?
                        .map_err(|e| anyhow::anyhow!("delivery failed: {e:?}"))?;
                }
            }
        }
    }
    while let Some(r) = in_flight.join_next().await {
        r.context("send task")?
            .map_err(|e| anyhow::anyhow!("delivery failed: {e:?}"))?;
    }
    Ok(start.elapsed())
}

/// Produces `rate` events/s for `secs` seconds in 100 ms ticks; returns the number sent.
async fn produce_steady(
    sdk: &SagaTracker,
    rate: u64,
    secs: u64,
    per_saga: u64,
) -> anyhow::Result<u64> {
    let per_tick = (rate / 10).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    for tick in 0..secs * 10 {
        ticker.tick().await;
        let mut in_flight = JoinSet::new();
        for j in 0..per_tick {
            let k = tick * per_tick + j;
            let event = saga_event(
                &format!("bench-steady-{}", k / per_saga),
                k % per_saga,
                per_saga - 1,
            );
            let sdk = sdk.clone();
            in_flight.spawn(async move { sdk.send_event(&event).await });
        }
        while let Some(r) = in_flight.join_next().await {
            r.context("send task")?
                .map_err(|e| anyhow::anyhow!("delivery failed: {e:?}"))?;
            sent += 1;
        }
    }
    Ok(sent)
}

async fn count_events(db: &TestDb) -> anyhow::Result<i64> {
    let mut c = db.connect().await?;
    let n: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&mut c)
        .await?;
    c.close().await?;
    Ok(n)
}

/// Waits until `target` events are stored; returns when that happened.
async fn wait_for(db: &TestDb, target: i64, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count_events(db).await?;
        if n >= target {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < deadline,
            "only {n} of {target} events stored after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lag_percentiles(db: &TestDb, tag: &str) -> anyhow::Result<(f64, f64, f64, f64)> {
    let mut c = db.connect().await?;
    let row: (f64, f64, f64, f64) = sqlx::query_as(
        "select \
           percentile_cont(0.5) within group (order by lag), \
           percentile_cont(0.95) within group (order by lag), \
           percentile_cont(0.99) within group (order by lag), \
           max(lag) \
         from (select extract(epoch from ingested_at - occurred_at)::float8 * 1000 as lag \
               from saga_events where saga_id like $1) t",
    )
    .bind(format!("bench-{tag}-%"))
    .fetch_one(&mut c)
    .await?;
    c.close().await?;
    Ok(row)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = format!("bench.{}", unique_suffix());
    let dlq = format!("{topic}.dlq");
    // Whichever broker runs must outlive the bench: keep its owner in scope until the end.
    let (_tansu, _mock, brokers) = if args.broker == "mock" {
        let mock = MockBroker::start(&[(&topic, args.partitions), (&dlq, 1)])?;
        let brokers = mock.bootstrap.clone();
        (None, Some(mock), brokers)
    } else {
        let tansu = Tansu::start().await.context("starting tansu")?;
        tansu.create_topic(&topic, args.partitions).await?;
        tansu.create_topic(&dlq, 1).await?;
        let brokers = tansu.brokers();
        (Some(tansu), None, brokers)
    };
    let db = TestDb::create().await?;
    migrate(&db.url()).await?;

    let mut opts = TrackerOptions::new(brokers.clone(), db.url(), &topic);
    opts.batch_size = args.batch_size;
    opts.linger_ms = 20;
    opts.extra_env
        .push(("TRACKER_LOG__LEVEL".to_owned(), "warn".to_owned()));
    // Bigger producer batches: the broker pays per request, not per message.
    let sdk = SagaTracker::new(
        TrackerConfig::new(brokers.clone(), "bench")
            .with_topic(&topic)
            .with_producer_property("linger.ms", "20"),
    )?;
    let n = args.events;
    let timeout = Duration::from_secs(args.timeout_secs);

    // Phase 1: live.
    let mut tracker = TrackerProcess::spawn(opts.clone())?;
    tracker.wait_ready(Duration::from_secs(60)).await?;
    let t0 = Instant::now();
    let produce_time = produce(&sdk, n, args.events_per_saga, "live").await?;
    let done = wait_for(&db, n as i64, timeout).await?;
    let live = done - t0;
    let (p50, p95, p99, max) = lag_percentiles(&db, "live").await?;
    tracker.stop(Duration::from_secs(60)).await?;

    // Phase 2: catch-up from a backlog.
    let backlog_time = produce(&sdk, n, args.events_per_saga, "backlog").await?;
    let mut tracker = TrackerProcess::spawn(opts.clone())?;
    let t1 = Instant::now();
    tracker.wait_ready(Duration::from_secs(60)).await?;
    // Measure the drain from the first stored backlog event, so process start-up and the
    // group join (the broker's initial rebalance delay) do not count as ingest time.
    let first = wait_for(&db, n as i64 + 1, timeout).await?;
    let last = wait_for(&db, 2 * n as i64, timeout).await?;
    let startup = first - t1;
    let drained = last - first;
    let metrics = tracker.metrics_text().await?;
    let mean = |name: &str| {
        let sum = saga_tracker_tests::metric_value(&metrics, &format!("{name}_sum"), &[]);
        let count = saga_tracker_tests::metric_value(&metrics, &format!("{name}_count"), &[]);
        match (sum, count) {
            (Some(s), Some(c)) if c > 0.0 => s / c,
            _ => f64::NAN,
        }
    };
    let mean_batch = mean("saga_tracker_batch_size");
    let mean_write_ms = mean("saga_tracker_db_write_seconds") * 1000.0;

    // Phase 3: steady load at a sustainable rate, for a lag figure not dominated by queueing.
    let steady = produce_steady(
        &sdk,
        args.steady_rate,
        args.steady_secs,
        args.events_per_saga,
    )
    .await?;
    wait_for(&db, 2 * n as i64 + steady as i64, timeout).await?;
    let (s50, s95, s99, smax) = lag_percentiles(&db, "steady").await?;
    let status = tracker.stop(Duration::from_secs(60)).await?;
    ensure!(status.success(), "tracker exited with {status}");

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| phase | events | elapsed (s) | events/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| produce only (SDK → broker, tracker running) | {n} | {:.2} | {:.0} |",
        produce_time.as_secs_f64(),
        rate(produce_time)
    );
    println!(
        "| live end-to-end (first send → last event in PostgreSQL) | {n} | {:.2} | {:.0} |",
        live.as_secs_f64(),
        rate(live)
    );
    println!(
        "| produce backlog (tracker stopped) | {n} | {:.2} | {:.0} |",
        backlog_time.as_secs_f64(),
        rate(backlog_time)
    );
    println!(
        "| catch-up (first → last backlog event stored; start-up {:.1} s excluded) | {n} | {:.2} | {:.0} |",
        startup.as_secs_f64(),
        drained.as_secs_f64(),
        rate(drained)
    );
    println!();
    println!(
        "tracker during catch-up: mean batch {mean_batch:.0} events, mean write transaction {mean_write_ms:.1} ms"
    );
    println!();
    println!("| lag phase | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| steady {} events/s for {} s | {s50:.0} | {s95:.0} | {s99:.0} | {smax:.0} |",
        args.steady_rate, args.steady_secs
    );
    println!("| live, producer flat out (includes queueing) | {p50:.0} | {p95:.0} | {p99:.0} | {max:.0} |");
    db.drop_db().await?;
    Ok(())
}
