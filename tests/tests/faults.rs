//! Fault scenarios, with real processes: the tracker binary (one or several processes),
//! PostgreSQL, and a Kafka-protocol broker.
//!
//! The broker is librdkafka's mock cluster running inside the test process (the tracker
//! processes reach it over TCP like any broker). Not tansu: tansu 0.6 never expels a group
//! member that died without leaving, so after a `kill -9` the dead member's partitions are
//! never reassigned — a real Kafka (and the mock) expels it after `session.timeout.ms`. The
//! mock truncates partitions beyond ≈16k messages, so loads stay under 10k per partition.
//!
//! Each test produces a known set of events at a steady, bounded rate while something breaks — the tracker is `kill -9`ed, its database becomes
//! unreachable, the broker dies, replicas come and go, a SIGTERM lands mid-batch — and then
//! checks the only thing that matters: **every produced event is stored exactly once**, and
//! every saga row agrees with its stored events.
//!
//! Sizes are CI-sized by default; `SOAK=1` runs the full sizes (50 000 events for the
//! kill -9 test, longer loads for the others). Every wait is bounded.

// The mock cluster's initial-rebalance delay is only reachable through the raw C API.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use saga_tracker_tests::{
    migrate, poll_until, tracker_bin, unique_suffix, PgProxy, TestDb, TrackerOptions,
    TrackerProcess,
};
use sqlx::PgConnection;
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 8;
/// Events per saga: STARTED, two steps, COMPLETED.
const STEPS: usize = 4;
const READY: Duration = Duration::from_secs(60);

fn soak() -> bool {
    std::env::var("SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `default` events, or `soak` under `SOAK=1`; always a multiple of [`STEPS`].
fn size(default: usize, soak_size: usize) -> usize {
    let n = if soak() { soak_size } else { default };
    n / STEPS * STEPS
}

/// A broker, a topic, a database and a group; trackers are started by the tests.
struct Rig {
    /// Owns the mock cluster (it lives as long as this client) and produces the load.
    kafka: FutureProducer,
    db: TestDb,
    topic: String,
    options: TrackerOptions,
    _config: tempfile::TempDir,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        tracker_bin()?;
        let kafka: FutureProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("message.timeout.ms", "120000")
            .set("linger.ms", "5")
            .create()
            .context("starting the mock cluster")?;
        // SAFETY: the pointer comes from a live client and is only used while it lives.
        unsafe {
            let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(kafka.client().native_ptr());
            ensure!(!raw.is_null(), "the client has no mock cluster");
            // Join groups at once instead of after the 3 s default delay.
            rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
        let topic = format!("saga.tracker.faults-{}", unique_suffix());
        let bootstrap = {
            let mock = kafka
                .client()
                .mock_cluster()
                .context("mock cluster handle")?;
            mock.create_topic(&topic, PARTITIONS, 1)?;
            mock.create_topic(&format!("{topic}.dlq"), 1, 1)?;
            mock.bootstrap_servers()
        };
        let db = TestDb::create().await?;
        migrate(&db.url()).await?;
        // A dead replica's partitions move after its session times out: keep that short so
        // a kill -9 costs 3 s, not the 10 s default.
        let config = tempfile::tempdir()?;
        let path = config.path().join("tracker.toml");
        std::fs::write(
            &path,
            "[kafka.properties]\n\"session.timeout.ms\" = \"3000\"\n\
             \"heartbeat.interval.ms\" = \"500\"\n",
        )?;
        let mut options = TrackerOptions::new(bootstrap, db.url(), &topic);
        options.batch_size = 500;
        options.extra_env.push((
            "TRACKER_CONFIG".to_owned(),
            path.to_string_lossy().into_owned(),
        ));
        Ok(Self {
            kafka,
            db,
            topic,
            options,
            _config: config,
        })
    }

    /// Takes the (only) broker down or brings it back.
    fn broker(&self, up: bool) -> anyhow::Result<()> {
        let mock = self
            .kafka
            .client()
            .mock_cluster()
            .context("mock cluster handle")?;
        if up {
            mock.broker_up(1)?;
        } else {
            mock.broker_down(1)?;
        }
        Ok(())
    }

    async fn tracker(&self) -> anyhow::Result<TrackerProcess> {
        self.tracker_with(self.options.clone()).await
    }

    async fn tracker_with(&self, options: TrackerOptions) -> anyhow::Result<TrackerProcess> {
        let mut t = TrackerProcess::spawn(options)?;
        t.wait_ready(READY).await?;
        Ok(t)
    }

    async fn sql(&self) -> anyhow::Result<PgConnection> {
        self.db.connect().await
    }

    /// Starts producing `n` events (n / STEPS completed sagas) at `rate` per second in the
    /// background; the task returns the event ids once all are acknowledged.
    fn produce(
        &self,
        n: usize,
        rate: usize,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<BTreeSet<String>>>> {
        let producer = self.kafka.clone();
        let topic = self.topic.clone();
        let run = unique_suffix();
        Ok(tokio::spawn(async move {
            let events = load(&run, n);
            let mut ids = BTreeSet::new();
            let chunk = (rate / 10).max(1);
            let started = Instant::now();
            for (i, part) in events.chunks(chunk).enumerate() {
                // Enqueue the whole chunk, then wait for every acknowledgement.
                let mut pending = Vec::with_capacity(part.len());
                for e in part {
                    let payload = e.to_json();
                    let record = FutureRecord::to(&topic).key(&e.saga_id).payload(&payload);
                    pending.push(
                        producer
                            .send_result(record)
                            .map_err(|(e, _)| anyhow::anyhow!("enqueueing: {e}"))?,
                    );
                }
                for delivery in pending {
                    delivery
                        .await
                        .context("producer dropped")?
                        .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?;
                }
                ids.extend(part.iter().map(|e| e.event_id.clone()));
                // Pace: chunk i+1 not before (i+1)/10 s.
                let due = started + Duration::from_millis(100 * (i as u64 + 1));
                tokio::time::sleep_until(due.into()).await;
            }
            Ok(ids)
        }))
    }

    /// How many events are stored right now.
    async fn stored(&self) -> anyhow::Result<i64> {
        let mut c = self.sql().await?;
        Ok(sqlx::query_scalar("select count(*) from saga_events")
            .fetch_one(&mut c)
            .await?)
    }

    /// Waits (bounded) until `ids.len()` events are stored, then checks exactly-once.
    async fn assert_exactly_once(
        &self,
        ids: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        poll_until(within, "every produced event to be stored", || async {
            let mut c = self.sql().await?;
            let n: i64 = sqlx::query_scalar("select count(*) from saga_events")
                .fetch_one(&mut c)
                .await?;
            ensure!(n >= ids.len() as i64, "{n} of {} stored", ids.len());
            Ok(())
        })
        .await?;
        let drained_after = started.elapsed();
        let mut c = self.sql().await?;
        let stored: Vec<String> = sqlx::query_scalar("select event_id from saga_events")
            .fetch_all(&mut c)
            .await?;
        let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
        ensure!(
            stored.len() == stored_set.len(),
            "duplicated event ids stored"
        );
        let lost: Vec<_> = ids.difference(&stored_set).take(5).collect();
        let extra: Vec<_> = stored_set.difference(ids).take(5).collect();
        ensure!(
            lost.is_empty() && extra.is_empty(),
            "lost {lost:?}, unexpected {extra:?}"
        );
        let (sagas, counted, completed): (i64, i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(event_count), 0)::bigint, \
             count(*) filter (where status = 'COMPLETED') from sagas",
        )
        .fetch_one(&mut c)
        .await?;
        let want_sagas = (ids.len() / STEPS) as i64;
        ensure!(
            sagas == want_sagas && completed == want_sagas,
            "{sagas} sagas, {completed} completed; expected {want_sagas}"
        );
        ensure!(
            counted == ids.len() as i64,
            "saga rows count {counted} events, {} stored",
            ids.len()
        );
        // Per saga: its row's count equals its stored events (no half-applied batch).
        let mismatched: i64 = sqlx::query_scalar(
            "select count(*) from sagas s where s.event_count <> \
             (select count(*) from saga_events e where e.saga_id = s.saga_id)",
        )
        .fetch_one(&mut c)
        .await?;
        ensure!(
            mismatched == 0,
            "{mismatched} saga rows disagree with their events"
        );
        let partitions: Vec<i32> =
            sqlx::query_scalar("select distinct kafka_partition from saga_events order by 1")
                .fetch_all(&mut c)
                .await?;
        ensure!(
            partitions == (0..PARTITIONS).collect::<Vec<_>>(),
            "partitions processed: {partitions:?}"
        );
        Ok(Report {
            events: ids.len(),
            drained_after,
        })
    }
}

/// What a scenario measured, printed for docs/reliability.md.
#[derive(Debug)]
struct Report {
    events: usize,
    drained_after: Duration,
}

/// `n` events: n / STEPS sagas, each STARTED → RESERVE_STOCK → CHARGE_PAYMENT → CONFIRM
/// (COMPLETED), interleaved so consecutive messages belong to different sagas.
fn load(run: &str, n: usize) -> Vec<SagaEvent> {
    let sagas = n / STEPS;
    let base = Utc::now() - chrono::Duration::minutes(5);
    let mut out = Vec::with_capacity(n);
    for round in 0..STEPS {
        for s in 0..sagas {
            let (step, status, saga_status) = match round {
                0 => (
                    "ORDER_CREATED",
                    StepStatus::Started,
                    Some(SagaStatus::Started),
                ),
                1 => ("RESERVE_STOCK", StepStatus::Succeeded, None),
                2 => ("CHARGE_PAYMENT", StepStatus::Succeeded, None),
                _ => (
                    "CONFIRM",
                    StepStatus::Succeeded,
                    Some(SagaStatus::Completed),
                ),
            };
            out.push(SagaEvent {
                schema_version: SCHEMA_VERSION,
                event_id: format!("{run}-{s}-{round}"),
                saga_id: format!("fault-{run}-{s}"),
                saga_type: "ORDER_CREATION".to_owned(),
                step: step.to_owned(),
                step_status: status,
                saga_status,
                occurred_at: base + chrono::Duration::milliseconds(round as i64 * 10),
                service: "orders".to_owned(),
                sequence: Some(round as i64),
                business_key: None,
                trace_id: None,
                span_id: None,
                error: None,
                metadata: None,
            });
        }
    }
    out
}

fn log(scenario: &str, report: &Report, extra: &str) {
    eprintln!(
        "[faults] {scenario}: {} events, 0 lost, 0 duplicated; all stored {:.1} s after the \
         load ended{extra}",
        report.events,
        report.drained_after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_during_a_load_loses_and_duplicates_nothing() -> anyhow::Result<()>
{
    let rig = Rig::start().await?;
    // The full size even in CI: it costs under a minute.
    let n = 50_000;
    let kills = 5;
    let started = Instant::now();
    let mut tracker = rig.tracker().await?;
    // Slow enough that the load outlasts the five kill/restart cycles (≈5 s each).
    let producing = rig.produce(n, 1_000)?;
    let mut seed = u64::from(std::process::id()) | 1;
    let mut at_kill = Vec::new();
    for _ in 0..kills {
        // Kill while this replica is actually writing: wait for progress, then a random
        // 100–1100 ms more, so the kill lands anywhere in the poll/write/commit cycle.
        wait_progress(&rig, "the replica to make progress", n).await?;
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1442695040888963407);
        // The load lasts about 50 s: spread the kills over it.
        tokio::time::sleep(Duration::from_millis(100 + (seed >> 33) % 6_000)).await;
        tracker.kill();
        at_kill.push(rig.stored().await?);
        tracker = rig.tracker().await?;
    }
    let ids = producing.await??;
    let report = rig
        .assert_exactly_once(&ids, Duration::from_secs(180))
        .await?;
    log(
        "kill -9 x5",
        &report,
        &format!(
            "; stored when killed: {at_kill:?}; total {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    // And through the REST API, as a user would see it: every saga, completed, with all of
    // its events counted once.
    assert_all_sagas_complete_via_rest(&tracker, ids.len() / STEPS).await?;
    tracker.stop(Duration::from_secs(30)).await?;
    rig.db.drop_db().await?;
    Ok(())
}

/// Pages through `GET /api/v1/sagas` (keyset cursor, 500 a page) and checks that exactly
/// `want` sagas exist, each `COMPLETED` with [`STEPS`] events.
async fn assert_all_sagas_complete_via_rest(
    tracker: &TrackerProcess,
    want: usize,
) -> anyhow::Result<()> {
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    // Bounded: one page more than the sagas can fill.
    for _ in 0..=want / 500 + 1 {
        let mut query = vec![("limit", "500")];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = tracker.search(&query).await?;
        for s in &page.items {
            ensure!(
                s.status == "COMPLETED" && s.event_count == STEPS as i64,
                "saga {} is {} with {} events via REST",
                s.saga_id,
                s.status,
                s.event_count
            );
        }
        seen += page.items.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure!(seen == want, "REST lists {seen} sagas, expected {want}");
    Ok(())
}

/// Waits (bounded) until the stored count has grown past what it was on entry — or all
/// `total` events of the load are stored already (a slow machine may finish the load before
/// the last fault; the fault then lands on an idle replica, which must be harmless too).
async fn wait_progress(rig: &Rig, what: &str, total: usize) -> anyhow::Result<()> {
    let before = rig.stored().await?;
    poll_until(Duration::from_secs(60), what, || async {
        let now = rig.stored().await?;
        ensure!(
            now > before || now >= total as i64,
            "no progress yet ({now} stored)"
        );
        Ok(())
    })
    .await
}

async fn readyz(tracker: &TrackerProcess) -> u16 {
    match tracker.get_text("readyz", &[]).await {
        Ok((status, _)) => status.as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_unreachable_for_10_s_during_a_load_pauses_ingestion_and_loses_nothing(
) -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    // The tracker reaches PostgreSQL through a proxy the test can cut; the shared server
    // itself is never touched.
    let proxy = PgProxy::start().await?;
    let mut options = rig.options.clone();
    options.database_url = proxy.url_for(&rig.db.url())?;
    let mut tracker = rig.tracker_with(options).await?;
    let n = size(8_000, 40_000);
    let producing = rig.produce(n, 800)?;
    wait_progress(&rig, "ingestion to start", n).await?;

    let outage = Duration::from_secs(10);
    proxy.set_cut(true);
    let cut_at = Instant::now();
    poll_until(Duration::from_secs(10), "/readyz to report 503", || async {
        let s = readyz(&tracker).await;
        ensure!(s == 503, "/readyz answers {s}");
        Ok(())
    })
    .await?;
    let not_ready_after = cut_at.elapsed();
    tokio::time::sleep(outage.saturating_sub(cut_at.elapsed())).await;
    ensure!(tracker.is_running(), "the tracker exited during the outage");
    proxy.set_cut(false);
    let restored_at = Instant::now();
    poll_until(Duration::from_secs(60), "/readyz to recover", || async {
        let s = readyz(&tracker).await;
        ensure!(s == 200, "/readyz answers {s}");
        Ok(())
    })
    .await?;
    let ready_after = restored_at.elapsed();

    let ids = producing.await??;
    let report = rig
        .assert_exactly_once(&ids, Duration::from_secs(120))
        .await?;
    ensure!(tracker.is_running(), "the tracker exited");
    log(
        "database unreachable 10 s",
        &report,
        &format!(
            "; /readyz 503 {:.1} s after the cut, 200 again {:.1} s after the repair",
            not_ready_after.as_secs_f64(),
            ready_after.as_secs_f64()
        ),
    );
    tracker.stop(Duration::from_secs(30)).await?;
    rig.db.drop_db().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_for_8_s_during_a_load_loses_nothing() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut tracker = rig.tracker().await?;
    let n = size(8_000, 40_000);
    let producing = rig.produce(n, 800)?;
    wait_progress(&rig, "ingestion to start", n).await?;
    rig.broker(false)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    ensure!(
        tracker.is_running(),
        "the tracker exited while the broker was down"
    );
    rig.broker(true)?;
    let ids = producing.await??;
    let report = rig
        .assert_exactly_once(&ids, Duration::from_secs(120))
        .await?;
    ensure!(tracker.is_running(), "the tracker exited");
    log("broker down 8 s", &report, "");
    tracker.stop(Duration::from_secs(30)).await?;
    rig.db.drop_db().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_three_replicas_and_back_during_a_load_loses_and_duplicates_nothing(
) -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut first = rig.tracker().await?;
    let n = size(12_000, 60_000);
    let producing = rig.produce(n, 1_000)?;
    wait_progress(&rig, "ingestion to start", n).await?;

    let mut second = rig.tracker().await?;
    let mut third = rig.tracker().await?;
    // Each new replica must take a share of the partitions and write some of the load.
    for (name, t) in [("second", &second), ("third", &third)] {
        poll_until(
            Duration::from_secs(60),
            &format!("the {name} replica to store events"),
            || async {
                let ok = t
                    .metric("saga_tracker_events_processed_total", &[("result", "ok")])
                    .await?
                    .unwrap_or(0.0);
                // (Unless a very slow machine let the first replica finish the load alone.)
                let done = rig.stored().await? >= n as i64;
                ensure!(ok > 0.0 || done, "the {name} replica stored nothing yet");
                Ok(())
            },
        )
        .await?;
    }
    wait_progress(&rig, "ingestion with three replicas", n).await?;
    // Back to one, in the middle of the load.
    for t in [&mut second, &mut third] {
        let status = t.stop(Duration::from_secs(30)).await?;
        ensure!(status.success(), "a replica exited with {status}");
    }
    let ids = producing.await??;
    let report = rig
        .assert_exactly_once(&ids, Duration::from_secs(120))
        .await?;
    log("replicas 1 → 3 → 1", &report, "");
    first.stop(Duration::from_secs(30)).await?;
    rig.db.drop_db().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_batches_commits_or_redelivers_them_never_half(
) -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let mut options = rig.options.clone();
    // Big batches, so a SIGTERM is likely to land while one is being written.
    options.batch_size = 2_000;
    options.linger_ms = 200;
    let mut tracker = rig.tracker_with(options.clone()).await?;
    let n = size(10_000, 40_000);
    let producing = rig.produce(n, 1_000)?;
    let mut seed = u64::from(std::process::id()) | 1;
    for _ in 0..3 {
        wait_progress(&rig, "the replica to make progress", n).await?;
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(Duration::from_millis((seed >> 33) % 500)).await;
        let status = tracker.stop(Duration::from_secs(30)).await?;
        ensure!(status.success(), "SIGTERM exit status {status}");
        tracker = rig.tracker_with(options.clone()).await?;
    }
    let ids = producing.await??;
    // assert_exactly_once also checks every saga row against its stored events: a batch
    // half applied would show as a row whose count disagrees with its events.
    let report = rig
        .assert_exactly_once(&ids, Duration::from_secs(120))
        .await?;
    log("SIGTERM x3 mid-batch", &report, "");
    tracker.stop(Duration::from_secs(30)).await?;
    rig.db.drop_db().await?;
    Ok(())
}
