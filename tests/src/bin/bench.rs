//! End-to-end throughput bench: SDK → broker → `saga-tracker` process → PostgreSQL, and the
//! bound the database sets for the same events.
//!
//! Phases, each against its own topic (and the tracker phases against their own database):
//!
//! 1. **live** — a tracker runs while the SDK produces `--events` events as fast as it can;
//!    we time from the first send until the last event is visible in PostgreSQL, and read
//!    the visibility lag (`ingested_at - occurred_at`) percentiles from the stored events.
//! 2. **backlog** — with no tracker running, another `--events` are produced into a second
//!    topic.
//! 3. **limit** — the same events, generated again from the same seed, are `COPY`ed into
//!    `saga_events` of a fresh migrated database (every index in place), then one
//!    `insert … select … group by saga_id` folds them into `sagas`. Both timed: what
//!    PostgreSQL on this machine can absorb for these events in bulk, with no broker, no
//!    batching and no per-batch reload. An upper bound the tracker cannot reach, not a goal.
//! 4. **catch-up** — a tracker starts on the backlog topic with a fresh database and we time
//!    how long it takes to drain it (pure consume + write throughput); its rate over the
//!    limit's is the figure to watch.
//! 5. **steady** — a fixed rate the tracker can sustain, for a lag not dominated by queueing.
//!
//! Every phase checks that the broker kept every produced message (the low watermark of
//! every partition is still 0 and the high watermarks add up to what was sent) and that
//! PostgreSQL holds exactly the events and sagas produced; a shortfall fails the run instead
//! of reporting a rate. librdkafka's mock cluster keeps only a few MiB per partition, hence
//! the many partitions by default.
//!
//! Run it with `scripts/bench.sh` (release build) and copy the printed tables into
//! `docs/BENCHMARKS.md`. It asserts nothing about speed: numbers on a shared 2-core machine
//! are noisy, so compare figures taken in one run.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use saga_tracker_sdk::{SagaTracker, TrackerConfig};
use saga_tracker_tests::{log_tail, migrate, unique_suffix, Tansu, TrackerOptions, TrackerProcess};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;

/// Most messages per partition we let a mock-cluster phase put in one partition. The mock
/// trims a partition to ~5 MiB of batches: 40k bench messages into 4 partitions kept 33,819,
/// i.e. ≈ 8.4k per partition; 6k leaves a margin for bigger messages.
const MOCK_MAX_PER_PARTITION: u64 = 6_000;

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
    /// Events per phase [default: 1000000 with the mock broker, 10000 with tansu, which
    /// stalls above ≈ 20k in-flight events].
    #[arg(long)]
    events: Option<u64>,
    /// Events per saga (one STARTED, then step events, the last one COMPLETED).
    #[arg(long, default_value_t = 5)]
    events_per_saga: u64,
    /// Sagas in progress at once: events are produced round-robin over this many sagas, so
    /// with W sagas of E events each saga's events are spread over W × E events of the
    /// stream (many tracker batches). 1 produces each saga's events back to back.
    #[arg(long, default_value_t = 1)]
    concurrent_sagas: u64,
    /// Partitions of each bench topic [default: 256 with the mock broker (1M events are
    /// ≈ 3.9k a partition; the mock trims partitions beyond ≈ 8k messages), 3 with tansu].
    #[arg(long)]
    partitions: Option<i32>,
    /// `ingest.batch_size` of the tracker (2000 is the tracker's default; 500 was, before
    /// issue #15).
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// `ingest.in_flight` of the tracker: batches written at once (4 is the tracker's
    /// default; 1 writes one batch at a time, as before issue #15).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Events per second in the steady phase (a rate the tracker can sustain).
    #[arg(long, default_value_t = 2000)]
    steady_rate: u64,
    /// Length of the steady phase in seconds.
    #[arg(long, default_value_t = 15)]
    steady_secs: u64,
    /// Which broker to run against: `tansu` (a separate broker process with SQLite storage)
    /// or `mock` (librdkafka's in-memory mock cluster, hosted by this process: it isolates
    /// the tracker's own cost from the broker's).
    #[arg(long, default_value = "mock", value_parser = ["tansu", "mock"])]
    broker: String,
    /// Give up on any one phase (produce, drain, COPY, fold) after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Fail when the stored event count does not move for this many seconds while draining
    /// (lost messages, a stalled broker or tracker), rather than wait for the timeout.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Skip the limit phase (COPY + fold).
    #[arg(long)]
    no_limit: bool,
}

/// Which events a phase produces: event `k` of the phase belongs to one saga and is that
/// saga's `i`-th event, the same whenever it is generated (the limit regenerates the
/// backlog's events).
#[derive(Debug, Clone, Copy)]
struct Workload {
    per_saga: u64,
    concurrent: u64,
}

impl Workload {
    /// (saga number, index of the event in its saga) of the phase's event `k`. The W slots
    /// advance in lockstep: round `r` emits event `r % E` of every slot's saga, and a slot
    /// takes a new saga every E rounds.
    fn position(&self, k: u64) -> (u64, u64) {
        let round = k / self.concurrent;
        let slot = k % self.concurrent;
        let generation = round / self.per_saga;
        (generation * self.concurrent + slot, round % self.per_saga)
    }

    /// How many distinct sagas the first `n` events of a phase touch.
    fn sagas_in(&self, n: u64) -> u64 {
        let per_generation = self.concurrent * self.per_saga;
        let full = n / per_generation;
        full * self.concurrent + (n % per_generation).min(self.concurrent)
    }
}

/// The `k`-th event of phase `tag`. `seed` makes the event ids unique per phase and run yet
/// reproducible; `occurred_at` is the time to stamp (now, for the phases that measure lag).
fn saga_event(
    tag: &str,
    seed: u64,
    workload: Workload,
    k: u64,
    occurred_at: DateTime<Utc>,
) -> SagaEvent {
    let (saga_no, i) = workload.position(k);
    let last = workload.per_saga - 1;
    let saga = format!("bench-{tag}-{saga_no}");
    let status = if i == last {
        Some(SagaStatus::Completed)
    } else if i == 0 {
        Some(SagaStatus::Started)
    } else {
        None
    };
    SagaEvent {
        schema_version: SCHEMA_VERSION,
        event_id: uuid::Uuid::from_u64_pair(seed, k).to_string(),
        business_key: Some(format!("bk-{saga}")),
        saga_id: saga,
        saga_type: "BENCH_ORDER".to_owned(),
        step: format!("STEP_{i}"),
        step_status: if i == 0 {
            StepStatus::Started
        } else {
            StepStatus::Succeeded
        },
        saga_status: status,
        occurred_at,
        service: "bench".to_owned(),
        sequence: Some(i as i64),
        trace_id: None,
        span_id: None,
        error: None,
        // What a saga's metadata usually says, the same on each of its events: a value that
        // changed with every event would change the saga's merged metadata (an indexed
        // column) on every batch, so no rewrite of its row could be heap-only.
        metadata: serde_json::json!({"region": "eu-west", "tier": saga_no % 3})
            .as_object()
            .cloned(),
    }
}

/// The backlog's events carry `base + k µs`, so the limit can regenerate them exactly and
/// each saga's events are in time order.
fn backlog_time(base: DateTime<Utc>, k: u64) -> DateTime<Utc> {
    base + chrono::Duration::microseconds(k as i64)
}

/// What a phase produces: its tag, the seed of its event ids, and the timestamp base
/// (`None`: stamp each event with the time it is built).
struct Phase<'a> {
    tag: &'a str,
    seed: u64,
    base: Option<DateTime<Utc>>,
}

/// Produces the phase's `n` events with up to 1000 in flight; returns the elapsed time.
async fn produce(
    sdk: &SagaTracker,
    n: u64,
    workload: Workload,
    phase: &Phase<'_>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    for k in 0..n {
        let at = phase.base.map_or_else(Utc::now, |b| backlog_time(b, k));
        let event = saga_event(phase.tag, phase.seed, workload, k, at);
        let sdk = sdk.clone();
        in_flight.spawn(async move { sdk.send_event(&event).await });
        if in_flight.len() >= 1000 {
            if let Some(r) = in_flight.join_next().await {
                r.context("send task")?
                    .map_err(|e| anyhow::anyhow!("delivery failed: {e:?}"))?;
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
    workload: Workload,
    seed: u64,
) -> anyhow::Result<u64> {
    let per_tick = (rate / 10).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    for tick in 0..secs * 10 {
        ticker.tick().await;
        let mut in_flight = JoinSet::new();
        for j in 0..per_tick {
            let event = saga_event("steady", seed, workload, tick * per_tick + j, Utc::now());
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

/// Fails unless the broker still holds every message produced to `topic`: each partition
/// starts at offset 0 (nothing trimmed) and the partitions add up to `expected`. The mock
/// cluster drops the oldest batches of a partition past a few MiB without telling anyone;
/// this is where such a loss shows, before any rate is reported.
fn check_broker_kept(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: u64,
) -> anyhow::Result<()> {
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-watermarks-{}", unique_suffix()))
        .create()
        .context("creating the watermark client")?;
    let mut total = 0u64;
    let mut trimmed = Vec::new();
    let mut busiest = 0i64;
    for p in 0..partitions {
        let (low, high) = client
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if low > 0 {
            trimmed.push((p, low));
        }
        busiest = busiest.max(high);
        total += u64::try_from(high - low).unwrap_or(0);
    }
    if !trimmed.is_empty() {
        bail!(
            "the broker dropped messages of {topic}: {} of {partitions} partitions no longer \
             start at offset 0 (e.g. partition {} starts at {}); it holds {total} of {expected}. \
             The mock cluster keeps only a few MiB per partition: use more --partitions",
            trimmed.len(),
            trimmed[0].0,
            trimmed[0].1
        );
    }
    ensure!(
        total == expected,
        "the broker holds {total} messages in {topic}, {expected} were produced"
    );
    println!("broker check: {topic} holds all {expected} messages (busiest partition {busiest})");
    Ok(())
}

/// A fresh database of our own, `bench_scale_<phase>_<run>`, dropped by [`BenchDb::drop_db`]
/// (and by [`drop_run_databases`] when a phase fails).
struct BenchDb {
    name: String,
    url: String,
    admin_url: String,
}

impl BenchDb {
    async fn create(phase: &str, run: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url()?;
        let mut server = saga_tracker_tests::TestDb::server_url()?;
        let name = format!("bench_scale_{phase}_{run}");
        server.set_path(&format!("/{name}"));
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL (run scripts/ensure-postgres.sh)")?;
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        let db = Self {
            name,
            url: server.to_string(),
            admin_url,
        };
        migrate(&db.url)
            .await
            .with_context(|| format!("migrating {}", db.name))?;
        Ok(db)
    }

    async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.url)
            .await
            .with_context(|| format!("connecting to {}", self.name))
    }

    async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let mut c = self.connect().await?;
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&mut c)
            .await?;
        c.close().await?;
        Ok(n)
    }

    /// Fails unless exactly `events` events and `sagas` sagas are stored.
    async fn check_stored(&self, events: u64, sagas: u64) -> anyhow::Result<()> {
        let (e, s) = (self.count("saga_events").await?, self.count("sagas").await?);
        ensure!(
            e == events as i64 && s == sagas as i64,
            "{} holds {e} events and {s} sagas; {events} events of {sagas} sagas were produced",
            self.name
        );
        Ok(())
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        drop_database(&self.admin_url, &self.name).await
    }
}

/// The server's `postgres` database, for creating and dropping ours.
fn admin_url() -> anyhow::Result<String> {
    let mut server = saga_tracker_tests::TestDb::server_url()?;
    server.set_path("/postgres");
    Ok(server.to_string())
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    conn.close().await.ok();
    Ok(())
}

/// Drops whatever databases of this run a failed phase left behind.
async fn drop_run_databases(run: &str) -> anyhow::Result<()> {
    let admin = admin_url()?;
    let mut conn = PgConnection::connect(&admin).await?;
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like $1")
            .bind(format!("bench\\_scale\\_%\\_{run}"))
            .fetch_all(&mut conn)
            .await?;
    conn.close().await.ok();
    for name in names {
        drop_database(&admin, &name).await?;
    }
    Ok(())
}

/// Waits until `target` events are stored; returns when that happened. Fails when the
/// count stops moving for `stall`, when the tracker exits, or after `timeout`.
///
/// The count is the tracker's own `saga_tracker_events_processed_total{result="ok"}`, which
/// moves right after each commit: polling `count(*)` of `saga_events` every 50 ms instead
/// cost PostgreSQL 70 ms a poll at 1M events (16 s of its CPU during a 1M-event run), taken
/// from the very catch-up being measured. Each phase still ends with [`BenchDb::check_stored`]
/// counting the rows.
async fn wait_for(
    _db: &BenchDb,
    tracker: &mut TrackerProcess,
    target: i64,
    stall: Duration,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let (mut last_n, mut last_move) = (-1, Instant::now());
    loop {
        let n = match tracker.metrics_text().await {
            Ok(text) => saga_tracker_tests::metric_value(
                &text,
                "saga_tracker_events_processed_total",
                &[("result", "ok")],
            )
            .map_or(0, |v| v as i64),
            // Not answering yet (starting) or any more (exited: reported below).
            Err(_) => last_n.max(0),
        };
        if n >= target {
            return Ok(Instant::now());
        }
        if n != last_n {
            (last_n, last_move) = (n, Instant::now());
        }
        if !tracker.is_running() {
            bail!(
                "the tracker exited with {n} of {target} events stored; its log ({}):\n{}",
                tracker.log_path().display(),
                log_tail(tracker.log_path(), 40)
            );
        }
        ensure!(
            last_move.elapsed() < stall,
            "stored events stuck at {n} of {target} for {stall:?}: messages lost by the broker \
             or a stalled tracker (log {})",
            tracker.log_path().display()
        );
        ensure!(
            Instant::now() < deadline,
            "only {n} of {target} events stored after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lag_percentiles(db: &BenchDb, tag: &str) -> anyhow::Result<(f64, f64, f64, f64)> {
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

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Mean of a histogram from the tracker's `/metrics` text.
fn metric_mean(metrics: &str, name: &str) -> f64 {
    let sum = saga_tracker_tests::metric_value(metrics, &format!("{name}_sum"), &[]);
    let count = saga_tracker_tests::metric_value(metrics, &format!("{name}_count"), &[]);
    match (sum, count) {
        (Some(s), Some(c)) if c > 0.0 => s / c,
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------
// The limit: COPY + one fold
// ---------------------------------------------------------------------------------------

/// The columns the tracker's insert fills (`ingested_at` takes its default, `now()`, as in
/// the tracker; `tracker_trace_id` is null, as with export off).
const COPY_EVENTS: &str = "copy saga_events (event_id, saga_id, saga_type, step, step_status, \
    saga_status, occurred_at, received_at, service, sequence, business_key, trace_id, span_id, \
    error_code, error_message, metadata, kafka_topic, kafka_partition, kafka_offset) from stdin";

/// Every saga row from its events in one statement: a plausible SQL fold of what the
/// tracker's aggregate computes (status of the last event that set one, first and last
/// times, current and failed step, counts, the first non-null business key, trace id and
/// metadata, the services). It leaves out the rules a bulk statement cannot express cheaply
/// (late events, compensation timings) and the statistics rollups; it is the bulk bound,
/// not a second implementation.
const FOLD_SAGAS: &str = r#"
insert into sagas (
    saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms, current_step,
    failed_step, failure_code, failure_message, event_count, business_key, trace_id, metadata,
    services, first_received_at, last_received_at)
select
    saga_id, saga_type, status, started_at, updated_at,
    case when status in ('COMPLETED', 'COMPENSATED', 'FAILED') then updated_at end,
    case when status in ('COMPLETED', 'COMPENSATED', 'FAILED')
         then (extract(epoch from updated_at - started_at) * 1000)::bigint end,
    current_step, failed_step, failure_code, failure_message, event_count, business_key,
    trace_id, coalesce(metadata, '{}'::jsonb), services, first_received_at, last_received_at
from (
    select
        saga_id,
        min(saga_type) as saga_type,
        coalesce((array_agg(saga_status order by occurred_at desc, sequence desc nulls last)
                  filter (where saga_status is not null))[1], 'IN_PROGRESS') as status,
        min(occurred_at) as started_at,
        max(occurred_at) as updated_at,
        (array_agg(step order by occurred_at desc, sequence desc nulls last))[1] as current_step,
        (array_agg(step order by occurred_at desc)
            filter (where step_status = 'FAILED'))[1] as failed_step,
        (array_agg(error_code order by occurred_at desc)
            filter (where step_status = 'FAILED'))[1] as failure_code,
        (array_agg(error_message order by occurred_at desc)
            filter (where step_status = 'FAILED'))[1] as failure_message,
        count(*)::integer as event_count,
        min(business_key) as business_key,
        min(trace_id) as trace_id,
        (array_agg(metadata order by occurred_at, sequence)
            filter (where metadata is not null))[1] as metadata,
        array_agg(distinct service) as services,
        min(received_at) as first_received_at,
        max(received_at) as last_received_at
    from saga_events
    group by saga_id
) folded
"#;

/// One value of a text-format COPY row: `\N` for null, backslash escapes for the rest.
fn copy_field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// The COPY text of the phase's events, in chunks of about 1 MiB.
fn copy_chunks(
    n: u64,
    workload: Workload,
    phase: &Phase<'_>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<String>> {
    let base = phase
        .base
        .context("the limit needs the backlog's timestamp base")?;
    let received = Utc::now().to_rfc3339();
    let parts = partitions.max(1) as u64;
    let mut chunks = Vec::new();
    let mut out = String::with_capacity(1 << 20);
    for k in 0..n {
        let e = saga_event(phase.tag, phase.seed, workload, k, backlog_time(base, k));
        let fields: [Option<String>; 19] = [
            Some(e.event_id),
            Some(e.saga_id),
            Some(e.saga_type),
            Some(e.step),
            Some(wire_name(&e.step_status)),
            e.saga_status.map(|s| wire_name(&s)),
            Some(e.occurred_at.to_rfc3339()),
            Some(received.clone()),
            Some(e.service),
            e.sequence.map(|s| s.to_string()),
            e.business_key,
            e.trace_id,
            e.span_id,
            None,
            None,
            e.metadata.map(|m| serde_json::Value::Object(m).to_string()),
            Some(topic.to_owned()),
            Some((k % parts).to_string()),
            Some((k / parts).to_string()),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            copy_field(&mut out, f.as_deref());
        }
        out.push('\n');
        if out.len() >= 1 << 20 {
            chunks.push(std::mem::replace(&mut out, String::with_capacity(1 << 20)));
        }
    }
    if !out.is_empty() {
        chunks.push(out);
    }
    Ok(chunks)
}

/// The wire name of a contract enum (`"SUCCEEDED"`), as the tracker stores it.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

struct Limit {
    copy: Duration,
    fold: Duration,
}

/// COPYs the phase's `n` events into a fresh migrated database and folds them into sagas
/// in one statement; checks both row counts.
async fn measure_limit(
    n: u64,
    workload: Workload,
    phase: &Phase<'_>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    run_id: &str,
) -> anyhow::Result<Limit> {
    let chunks = copy_chunks(n, workload, phase, topic, partitions)?;
    let db = BenchDb::create("limit", run_id).await?;
    let result = async {
        let mut c = db.connect().await?;
        let start = Instant::now();
        let mut copy = c.copy_in_raw(COPY_EVENTS).await.context("starting COPY")?;
        for chunk in &chunks {
            copy.send(chunk.as_bytes()).await.context("COPY data")?;
        }
        let copied = copy.finish().await.context("finishing COPY")?;
        let copy_time = start.elapsed();
        ensure!(copied == n, "COPY stored {copied} of {n} events");
        let start = Instant::now();
        let folded = sqlx::query(FOLD_SAGAS)
            .execute(&mut c)
            .await
            .context("folding the events into sagas")?
            .rows_affected();
        let fold_time = start.elapsed();
        let sagas = workload.sagas_in(n);
        ensure!(folded == sagas, "the fold wrote {folded} of {sagas} sagas");
        c.close().await?;
        db.check_stored(n, sagas).await?;
        Ok(Limit {
            copy: copy_time,
            fold: fold_time,
        })
    };
    let result = tokio::time::timeout(timeout, result)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the limit phase took over {timeout:?}")));
    db.drop_db().await?;
    result
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

struct Settings {
    n: u64,
    partitions: i32,
    workload: Workload,
    timeout: Duration,
    stall: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = args.broker == "mock";
    let n = args.events.unwrap_or(if mock { 1_000_000 } else { 10_000 });
    let partitions = args.partitions.unwrap_or(if mock { 256 } else { 3 });
    ensure!(
        n > 0 && partitions > 0,
        "--events and --partitions must be positive"
    );
    ensure!(
        args.events_per_saga > 0 && args.concurrent_sagas > 0,
        "--events-per-saga and --concurrent-sagas must be positive"
    );
    let per_partition = n.div_ceil(partitions as u64);
    ensure!(
        !mock || per_partition <= MOCK_MAX_PER_PARTITION,
        "{n} events into {partitions} partitions is {per_partition} a partition; the mock \
         cluster trims partitions past ≈ 8k bench messages: use --partitions {} or more",
        n.div_ceil(MOCK_MAX_PER_PARTITION)
    );
    let settings = Settings {
        n,
        partitions,
        workload: Workload {
            per_saga: args.events_per_saga,
            concurrent: args.concurrent_sagas,
        },
        timeout: Duration::from_secs(args.timeout_secs),
        stall: Duration::from_secs(args.stall_secs),
    };
    println!(
        "bench: {} broker, {n} events per phase in sagas of {} ({} in progress at once), \
         {partitions} partitions, tracker batch size {}, {} in flight",
        args.broker, args.events_per_saga, args.concurrent_sagas, args.batch_size, args.in_flight
    );

    let suffix = unique_suffix();
    let topics = Topics {
        live: format!("bench.{suffix}.live"),
        backlog: format!("bench.{suffix}.backlog"),
        dlq: format!("bench.{suffix}.dlq"),
    };
    // Whichever broker runs must outlive the bench: keep its owner in scope until the end.
    let (_tansu, _mock, brokers) = if mock {
        let broker = MockBroker::start(&[
            (&topics.live, partitions),
            (&topics.backlog, partitions),
            (&topics.dlq, 1),
        ])?;
        let brokers = broker.bootstrap.clone();
        (None, Some(broker), brokers)
    } else {
        let tansu = Tansu::start().await.context("starting tansu")?;
        for (topic, p) in [(&topics.live, partitions), (&topics.backlog, partitions)] {
            tansu.create_topic(topic, p).await?;
        }
        tansu.create_topic(&topics.dlq, 1).await?;
        let brokers = tansu.brokers();
        (Some(tansu), None, brokers)
    };
    let result = run(&args, &settings, &topics, &brokers, &suffix).await;
    // The trackers are stopped (dropped) by now; a failed phase may have left a database.
    let cleanup = drop_run_databases(&suffix).await;
    result.and(cleanup)
}

struct Topics {
    live: String,
    backlog: String,
    dlq: String,
}

async fn run(
    args: &Args,
    s: &Settings,
    topics: &Topics,
    brokers: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    let n = s.n;
    let sagas = s.workload.sagas_in(n);
    let tracker_opts = |topic: &str, db: &BenchDb| {
        let mut opts = TrackerOptions::new(brokers, db.url.clone(), topic);
        opts.dlq_topic = topics.dlq.clone();
        opts.batch_size = args.batch_size;
        opts.linger_ms = 20;
        opts.extra_env
            .push(("TRACKER_LOG__LEVEL".to_owned(), "warn".to_owned()));
        // A tracker before `ingest.in_flight` existed refuses the unknown key; leave it unset
        // at 4 (the default) so such a binary can be measured as the base.
        if args.in_flight != 4 {
            opts.extra_env.push((
                "TRACKER_INGEST__IN_FLIGHT".to_owned(),
                args.in_flight.to_string(),
            ));
        }
        opts
    };
    // Bigger producer batches: the broker pays per request, not per message.
    let sdk_for = |topic: &str| {
        SagaTracker::new(
            TrackerConfig::new(brokers, "bench")
                .with_topic(topic)
                .with_producer_property("linger.ms", "20"),
        )
    };
    let seeds: [u64; 3] = std::array::from_fn(|_| uuid::Uuid::new_v4().as_u64_pair().0);

    // Phase 1: live.
    let live = Phase {
        tag: "live",
        seed: seeds[0],
        base: None,
    };
    let db = BenchDb::create("live", run_id).await?;
    let mut tracker = TrackerProcess::spawn(tracker_opts(&topics.live, &db))?;
    tracker.wait_ready(Duration::from_secs(60)).await?;
    let sdk = sdk_for(&topics.live)?;
    let t0 = Instant::now();
    let produce_time = tokio::time::timeout(s.timeout, produce(&sdk, n, s.workload, &live))
        .await
        .context("producing the live phase timed out")??;
    check_broker_kept(brokers, &topics.live, s.partitions, n)?;
    let done = wait_for(&db, &mut tracker, n as i64, s.stall, s.timeout).await?;
    let live_time = done - t0;
    db.check_stored(n, sagas).await?;
    let (p50, p95, p99, max) = lag_percentiles(&db, "live").await?;
    let status = tracker.stop(Duration::from_secs(60)).await?;
    ensure!(status.success(), "the live tracker exited with {status}");
    db.drop_db().await?;

    // Phase 2: a backlog, with no tracker running.
    let backlog = Phase {
        tag: "backlog",
        seed: seeds[1],
        base: Some(Utc::now()),
    };
    let sdk = sdk_for(&topics.backlog)?;
    let backlog_time = tokio::time::timeout(s.timeout, produce(&sdk, n, s.workload, &backlog))
        .await
        .context("producing the backlog timed out")??;
    check_broker_kept(brokers, &topics.backlog, s.partitions, n)?;

    // Phase 3: what PostgreSQL absorbs of the same events in bulk, nothing else running.
    let limit = if args.no_limit {
        None
    } else {
        Some(
            measure_limit(
                n,
                s.workload,
                &backlog,
                &topics.backlog,
                s.partitions,
                s.timeout,
                run_id,
            )
            .await?,
        )
    };

    // Phase 4: catch-up, into a fresh database like the limit's.
    let db = BenchDb::create("catchup", run_id).await?;
    let mut tracker = TrackerProcess::spawn(tracker_opts(&topics.backlog, &db))?;
    let t1 = Instant::now();
    tracker.wait_ready(Duration::from_secs(60)).await?;
    // Measure the drain from the first stored event, so process start-up and the group join
    // do not count as ingest time.
    let first = wait_for(&db, &mut tracker, 1, s.stall, s.timeout).await?;
    let last = wait_for(&db, &mut tracker, n as i64, s.stall, s.timeout).await?;
    let startup = first - t1;
    let drained = last - first;
    db.check_stored(n, sagas).await?;
    let metrics = tracker.metrics_text().await?;
    let mean_batch = metric_mean(&metrics, "saga_tracker_batch_size");
    let mean_write_ms = metric_mean(&metrics, "saga_tracker_db_write_seconds") * 1000.0;

    // Phase 5: steady load at a sustainable rate, for a lag figure not dominated by queueing.
    let steady = produce_steady(
        &sdk,
        args.steady_rate,
        args.steady_secs,
        s.workload,
        seeds[2],
    )
    .await?;
    check_broker_kept(brokers, &topics.backlog, s.partitions, n + steady)?;
    wait_for(&db, &mut tracker, (n + steady) as i64, s.stall, s.timeout).await?;
    db.check_stored(n + steady, sagas + s.workload.sagas_in(steady))
        .await?;
    let (s50, s95, s99, smax) = lag_percentiles(&db, "steady").await?;
    let tracker_rss = peak_rss_mib(&tracker.pid().to_string());
    let status = tracker.stop(Duration::from_secs(60)).await?;
    ensure!(
        status.success(),
        "the catch-up tracker exited with {status}"
    );
    db.drop_db().await?;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let rows = [
        ("produce only (SDK → broker, tracker running)", produce_time),
        (
            "live end-to-end (first send → last event in PostgreSQL)",
            live_time,
        ),
        ("produce backlog (tracker stopped)", backlog_time),
    ];
    println!();
    println!("| phase | events | elapsed (s) | events/s |");
    println!("|---|---:|---:|---:|");
    for (what, d) in rows {
        println!("| {what} | {n} | {:.2} | {:.0} |", d.as_secs_f64(), rate(d));
    }
    if let Some(l) = &limit {
        println!(
            "| limit: COPY into `saga_events` (all indexes) | {n} | {:.2} | {:.0} |",
            l.copy.as_secs_f64(),
            rate(l.copy)
        );
        println!(
            "| limit: one `insert into sagas … group by saga_id` ({sagas} sagas) | {n} | {:.2} | {:.0} |",
            l.fold.as_secs_f64(),
            rate(l.fold)
        );
        println!(
            "| **limit** (COPY + fold) | {n} | {:.2} | **{:.0}** |",
            (l.copy + l.fold).as_secs_f64(),
            rate(l.copy + l.fold)
        );
    }
    println!(
        "| **catch-up** (first → last backlog event stored; start-up {:.1} s excluded) | {n} | {:.2} | **{:.0}** |",
        startup.as_secs_f64(),
        drained.as_secs_f64(),
        rate(drained)
    );
    println!();
    if let Some(l) = &limit {
        println!(
            "catch-up / limit: {:.1} %",
            100.0 * rate(drained) / rate(l.copy + l.fold)
        );
    }
    println!(
        "tracker during catch-up: mean batch {mean_batch:.0} events, mean write transaction {mean_write_ms:.1} ms"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |m| format!("{m:.0} MiB"));
    println!(
        "peak RSS: bench process (SDK producer{}) {}, catch-up tracker {}",
        if args.broker == "mock" {
            " + mock cluster"
        } else {
            ""
        },
        show(peak_rss_mib("self")),
        show(tracker_rss)
    );
    println!();
    println!("| lag phase | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| steady {} events/s for {} s | {s50:.0} | {s95:.0} | {s99:.0} | {smax:.0} |",
        args.steady_rate, args.steady_secs
    );
    println!("| live, producer flat out (includes queueing) | {p50:.0} | {p95:.0} | {p99:.0} | {max:.0} |");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Workload;

    #[test]
    fn back_to_back_sagas_take_consecutive_events() {
        let w = Workload {
            per_saga: 5,
            concurrent: 1,
        };
        assert_eq!(w.position(0), (0, 0));
        assert_eq!(w.position(4), (0, 4));
        assert_eq!(w.position(5), (1, 0));
        assert_eq!(w.sagas_in(11), 3);
    }

    #[test]
    fn interleaved_sagas_advance_round_robin_and_are_counted() {
        let w = Workload {
            per_saga: 3,
            concurrent: 4,
        };
        let seen: Vec<_> = (0..14).map(|k| w.position(k)).collect();
        assert_eq!(&seen[..5], &[(0, 0), (1, 0), (2, 0), (3, 0), (0, 1)]);
        // After 3 rounds of 4 the slots take sagas 4.. .
        assert_eq!(seen[12], (4, 0));
        assert_eq!(w.sagas_in(14), 6);
        // Every saga gets its events 0..E in order, each exactly once.
        let mut per_saga = std::collections::BTreeMap::<u64, Vec<u64>>::new();
        for k in 0..24 {
            let (s, i) = w.position(k);
            per_saga.entry(s).or_default().push(i);
        }
        assert_eq!(per_saga.len() as u64, w.sagas_in(24));
        assert!(per_saga.values().all(|v| v == &[0, 1, 2]));
    }
}
