//! The tracker's own telemetry on real receivers: its spans reach a real OpenTelemetry
//! collector (rotel) over gRPC and over HTTP/protobuf, its log lines reach a Loki push API
//! (a stand-in that decodes exactly what Loki would) with a fixed label set and the trace
//! ids of their spans, and when both receivers die mid-load the tracker goes on ingesting
//! with its memory bounded.
//!
//! Each test brings its own broker, topic, database, collector and tracker process.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::otel::{BlackHole, LokiStandIn, ReceivedSpan, Rotel};
use saga_tracker_tests::{
    migrate, poll_until, python_produce, tracker_bin, unique_suffix, Tansu, TestDb, TrackerOptions,
    TrackerProcess,
};
use serde_json::{json, Value};

/// Upper bound for any "eventually" in these tests.
const EVENTUALLY: Duration = Duration::from_secs(90);

/// A broker with the test's topics, a migrated database and a ready tracker configured by
/// `env` (on top of the harness's `TRACKER_*` settings).
struct Stack {
    tansu: Tansu,
    db: Option<TestDb>,
    tracker: TrackerProcess,
    topic: String,
}

impl Stack {
    async fn start(env: Vec<(String, String)>) -> anyhow::Result<Self> {
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.telemetry-{}", unique_suffix());
        tansu.create_topic(&topic, 2).await?;
        tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;
        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options.extra_env = env;
        let mut tracker = TrackerProcess::spawn(options)?;
        tracker.wait_ready(EVENTUALLY).await?;
        Ok(Self {
            tansu,
            db: Some(db),
            tracker,
            topic,
        })
    }

    fn sdk(&self, service: &str) -> anyhow::Result<SagaTracker> {
        Ok(SagaTracker::new(
            TrackerConfig::new(self.tansu.brokers(), service).with_topic(&self.topic),
        )?)
    }

    /// Records a three-step completed saga `saga_id` through the SDK.
    async fn record_saga(&self, sdk: &SagaTracker, saga_id: &str) -> anyhow::Result<()> {
        let step = |name: &str, status: StepStatus, seq: i64| {
            Step::new(saga_id, "ORDER_CREATION", name, status).with_sequence(seq)
        };
        sdk.record(
            step("ORDER_PLACED", StepStatus::Started, 1).with_saga_status(SagaStatus::Started),
        )
        .await?;
        sdk.record(step("ORDER_PLACED", StepStatus::Succeeded, 2))
            .await?;
        sdk.record(
            step("ORDER_CONFIRMED", StepStatus::Succeeded, 3)
                .with_saga_status(SagaStatus::Completed),
        )
        .await?;
        Ok(())
    }

    /// Waits until `saga_id` is visible through the API with all three events.
    async fn saga_visible(&self, saga_id: &str) -> anyhow::Result<()> {
        poll_until(
            EVENTUALLY,
            &format!("saga {saga_id} to be stored"),
            || async {
                let detail = self.tracker.get_saga(saga_id).await?;
                ensure!(
                    detail.as_ref().is_some_and(|d| d.summary.event_count == 3),
                    "not yet: {detail:?}"
                );
                Ok(())
            },
        )
        .await
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        let status = self.tracker.stop(Duration::from_secs(30)).await?;
        ensure!(status.success(), "tracker exited with {status}");
        if let Some(db) = self.db.take() {
            db.drop_db().await?;
        }
        Ok(())
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Settings that make the tracker export quickly, so the tests do not wait on batching.
fn quick_export(endpoint: &str, protocol: &str, environment: &str) -> Vec<(String, String)> {
    env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!("deployment.environment.name={environment}"),
        ),
        ("TRACKER_TELEMETRY__OTLP__SCHEDULED_DELAY_MS", "200"),
        ("TRACKER_LOG__FORMAT", "json"),
    ])
}

/// The tracker's JSON log lines (stdout and stderr share the file; non-JSON lines skipped).
fn json_log_lines(tracker: &TrackerProcess) -> Vec<Value> {
    tracker
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Runs a tracker exporting to rotel over `protocol` (named `service_name` through
/// `OTEL_SERVICE_NAME` when given), drives ingest and the API, and checks what the collector
/// received.
async fn spans_reach_the_collector(
    protocol: &str,
    service_name: Option<&str>,
) -> anyhow::Result<()> {
    let rotel = Rotel::start().await?;
    let endpoint = match protocol {
        "grpc" => rotel.grpc_endpoint(),
        _ => rotel.http_endpoint(),
    };
    let environment = format!("e2e-{}", unique_suffix());
    let mut vars = quick_export(&endpoint, protocol, &environment);
    if let Some(name) = service_name {
        vars.extend(env(&[("OTEL_SERVICE_NAME", name)]));
    }
    let expected_service = service_name.unwrap_or("saga-tracker");
    let stack = Stack::start(vars).await?;
    let sdk = stack.sdk("order-service")?;
    let saga_id = format!("order-{}", unique_suffix());
    stack.record_saga(&sdk, &saga_id).await?;
    stack.saga_visible(&saga_id).await?;
    for _ in 0..3 {
        stack.tracker.search(&[("limit", "5")]).await?;
    }

    let spans = rotel
        .wait_for_spans(EVENTUALLY, "the batch and request spans", |spans| {
            let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            ensure!(
                names.contains("ingest.batch"),
                "no ingest.batch span yet: {names:?}"
            );
            ensure!(
                names.iter().any(|n| n.starts_with("GET /api/v1/sagas")),
                "no request span yet: {names:?}"
            );
            Ok(())
        })
        .await?;
    for span in &spans {
        ensure!(
            span.service_name() == Some(expected_service),
            "span {} has service.name {:?}",
            span.name,
            span.resource.get("service.name")
        );
        ensure!(
            span.resource.get("deployment.environment.name") == Some(&json!(environment)),
            "OTEL_RESOURCE_ATTRIBUTES not on the resource of {}: {:?}",
            span.name,
            span.resource
        );
        ensure!(
            is_hex(&span.trace_id, 32) && is_hex(&span.span_id, 16),
            "malformed ids on {}: {} {}",
            span.name,
            span.trace_id,
            span.span_id
        );
    }
    let request = spans
        .iter()
        .find(|s| s.name.starts_with("GET /api/v1/sagas"))
        .context("request span")?;
    ensure!(
        request.kind == 2,
        "a request span is a server span: {request:?}"
    );

    // Every JSON line written inside a span names that span's trace, and those traces are
    // the ones the collector holds: what Grafana's derived fields follow.
    let lines = json_log_lines(&stack.tracker);
    let in_spans: Vec<&Value> = lines.iter().filter(|l| l.get("span").is_some()).collect();
    ensure!(!in_spans.is_empty(), "no JSON log line inside a span");
    for line in &in_spans {
        let trace_id = line["trace_id"].as_str().unwrap_or_default();
        let span_id = line["span_id"].as_str().unwrap_or_default();
        ensure!(
            is_hex(trace_id, 32) && is_hex(span_id, 16),
            "a line inside a span lacks its ids: {line}"
        );
    }
    let served: Vec<&&Value> = in_spans
        .iter()
        .filter(|l| l["message"] == "request served")
        .collect();
    ensure!(!served.is_empty(), "no access log line");
    poll_until(
        EVENTUALLY,
        "the access log's traces at the collector",
        || async {
            let spans = rotel.spans()?;
            let received: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
            ensure!(
                served
                    .iter()
                    .all(|l| received.contains(l["trace_id"].as_str().unwrap_or_default())),
                "some access-log trace ids never reached the collector"
            );
            Ok(())
        },
    )
    .await?;
    stack.finish().await
}

/// Export failures and drops of both signals, once every one of the four counters has moved:
/// (trace failures, log failures, spans dropped, lines dropped).
async fn failures_and_drops_counted(
    tracker: &saga_tracker_tests::TrackerProcess,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let text = tracker.metrics_text().await?;
    let get = |name: &str, signal: &str| {
        saga_tracker_tests::metric_value(&text, name, &[("signal", signal)]).unwrap_or(0.0)
    };
    let counted = (
        get("saga_tracker_telemetry_export_failures_total", "traces"),
        get("saga_tracker_telemetry_export_failures_total", "logs"),
        get("saga_tracker_telemetry_dropped_total", "traces"),
        get("saga_tracker_telemetry_dropped_total", "logs"),
    );
    ensure!(
        counted.0 > 0.0 && counted.1 > 0.0 && counted.2 > 0.0 && counted.3 > 0.0,
        "export failures (traces, logs) and drops (traces, logs) so far: {counted:?}"
    );
    Ok(counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trackers_spans_reach_a_real_collector_over_grpc() -> anyhow::Result<()> {
    spans_reach_the_collector("grpc", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trackers_spans_reach_a_real_collector_over_http_protobuf_named_by_otel_service_name(
) -> anyhow::Result<()> {
    spans_reach_the_collector("http/protobuf", Some("saga-tracker-eu")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_reach_loki_with_a_fixed_label_set_and_the_ids_of_their_spans(
) -> anyhow::Result<()> {
    let rotel = Rotel::start().await?;
    let loki = LokiStandIn::start().await?;
    let mut vars = quick_export(&rotel.grpc_endpoint(), "grpc", "loki-test");
    vars.extend(env(&[("TRACKER_TELEMETRY__LOKI__URL", &loki.url())]));
    let stack = Stack::start(vars).await?;
    let sdk = stack.sdk("order-service")?;
    let saga_id = format!("order-{}", unique_suffix());
    stack.record_saga(&sdk, &saga_id).await?;
    // A poison message: its warning is logged inside the batch's dead-letter span.
    python_produce(
        &stack.tansu.brokers(),
        &stack.topic,
        &[json!({"key": "poison", "value": "not json at all"})],
    )
    .await?;
    stack.saga_visible(&saga_id).await?;
    stack.tracker.search(&[("limit", "5")]).await?;

    let lines = poll_until(EVENTUALLY, "log lines inside spans at Loki", || async {
        let lines = loki.lines();
        let in_spans = lines
            .iter()
            .filter(|l| l.json()["_spans"].as_array().is_some_and(|s| !s.is_empty()))
            .count();
        ensure!(
            lines
                .iter()
                .any(|l| l.json()["message"] == "request served")
                && lines
                    .iter()
                    .any(|l| l.json()["message"] == "invalid event sent to the DLQ"),
            "{} lines so far, {in_spans} inside spans",
            lines.len()
        );
        Ok(lines)
    })
    .await?;
    for line in &lines {
        let keys: BTreeSet<&str> = line.labels.keys().map(String::as_str).collect();
        ensure!(
            keys == BTreeSet::from(["level", "service"]),
            "labels must be exactly service and level: {:?}",
            line.labels
        );
        ensure!(
            line.labels["service"] == "saga-tracker",
            "{:?}",
            line.labels
        );
        ensure!(
            ["trace", "debug", "info", "warn", "error"].contains(&line.labels["level"].as_str()),
            "{:?}",
            line.labels
        );
    }
    let mut traced = Vec::new();
    for line in &lines {
        let v = line.json();
        ensure!(v.is_object(), "a Loki line is a JSON object: {}", line.line);
        if v["_spans"].as_array().is_some_and(|s| !s.is_empty()) {
            let (t, s) = (
                v["trace_id"].as_str().unwrap_or_default(),
                v["span_id"].as_str().unwrap_or_default(),
            );
            ensure!(
                is_hex(t, 32) && is_hex(s, 16),
                "a line inside a span lacks trace_id/span_id: {}",
                line.line
            );
            traced.push(t.to_owned());
        }
    }
    let dlq = lines
        .iter()
        .map(|l| l.json())
        .find(|v| v["message"] == "invalid event sent to the DLQ")
        .context("the DLQ warning")?;
    ensure!(
        dlq["reason"].is_string(),
        "event fields are in the line: {dlq}"
    );
    // The trace ids in the lines lead to spans the collector received.
    poll_until(EVENTUALLY, "the lines' traces at the collector", || async {
        let spans: Vec<ReceivedSpan> = rotel.spans()?;
        let received: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
        let missing: Vec<&String> = traced
            .iter()
            .filter(|t| !received.contains(t.as_str()))
            .collect();
        ensure!(missing.is_empty(), "traces not received: {missing:?}");
        Ok(())
    })
    .await?;
    stack.finish().await
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Records `sagas` three-step sagas and returns their ids.
async fn record_sagas(
    stack: &Stack,
    sdk: &SagaTracker,
    prefix: &str,
    sagas: usize,
) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = (0..sagas).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        stack.record_saga(sdk, id).await?;
    }
    Ok(ids)
}

/// Events processed with result ok, from `/metrics`.
async fn stored_events(tracker: &TrackerProcess) -> anyhow::Result<f64> {
    Ok(tracker
        .metric("saga_tracker_events_processed_total", &[("result", "ok")])
        .await?
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_goes_on_with_bounded_memory_when_the_collector_and_loki_die_mid_load(
) -> anyhow::Result<()> {
    let mut rotel = Rotel::start().await?;
    let loki = LokiStandIn::start().await?;
    let mut vars = quick_export(&rotel.grpc_endpoint(), "grpc", "outage-test");
    vars.extend(env(&[
        ("TRACKER_TELEMETRY__LOKI__URL", &loki.url()),
        // Small bounds and short timeouts, so the load below overflows them many times.
        ("TRACKER_TELEMETRY__OTLP__MAX_QUEUE_SIZE", "128"),
        ("TRACKER_TELEMETRY__OTLP__MAX_EXPORT_BATCH_SIZE", "64"),
        ("TRACKER_TELEMETRY__OTLP__TIMEOUT_MS", "1000"),
        ("TRACKER_TELEMETRY__LOKI__MAX_BUFFER_BYTES", "65536"),
        ("TRACKER_TELEMETRY__LOKI__TIMEOUT_MS", "1000"),
        ("TRACKER_INGEST__BATCH_SIZE", "20"),
    ]));
    let stack = Stack::start(vars).await?;
    let sdk = stack.sdk("order-service")?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let search_url = stack.tracker.url("api/v1/sagas?limit=1")?;

    // Warm-up with both receivers up: the tracker reaches its working size.
    const WARM_SAGAS: usize = 100;
    let warm = record_sagas(
        &stack,
        &sdk,
        &format!("warm-{}", unique_suffix()),
        WARM_SAGAS,
    )
    .await?;
    for _ in 0..300 {
        http.get(search_url.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    poll_until(EVENTUALLY, "the warm-up to be stored", || async {
        let n = stored_events(&stack.tracker).await?;
        ensure!(n >= (WARM_SAGAS * 3) as f64, "{n} events stored");
        Ok(())
    })
    .await?;
    rotel
        .wait_for_spans(EVENTUALLY, "warm-up spans", |s| {
            ensure!(!s.is_empty(), "none yet");
            Ok(())
        })
        .await?;
    ensure!(
        !loki.lines().is_empty() || {
            tokio::time::sleep(Duration::from_secs(2)).await;
            !loki.lines().is_empty()
        },
        "no line reached Loki during the warm-up"
    );
    let rss_before = rss_kib(stack.tracker.pid())?;
    let outage_started = std::time::Instant::now();

    // Both receivers die. Then a load five times the warm-up, through ingest and the API.
    rotel.kill();
    loki.stop();
    const LOAD_SAGAS: usize = 500;
    const LOAD_REQUESTS: usize = 1500;
    let load = record_sagas(
        &stack,
        &sdk,
        &format!("load-{}", unique_suffix()),
        LOAD_SAGAS,
    )
    .await?;
    for _ in 0..LOAD_REQUESTS {
        http.get(search_url.clone())
            .send()
            .await?
            .error_for_status()?;
    }

    // Ingest went on: every event of the load is stored and readable.
    poll_until(EVENTUALLY, "the load to be stored", || async {
        let n = stored_events(&stack.tracker).await?;
        ensure!(
            n >= ((WARM_SAGAS + LOAD_SAGAS) * 3) as f64,
            "{n} events stored"
        );
        Ok(())
    })
    .await?;
    for id in [&warm[0], &load[0], &load[LOAD_SAGAS - 1]] {
        stack.saga_visible(id).await?;
    }

    // The outage cost counters, not memory: spans and lines beyond the bounds were dropped.
    let metrics = poll_until(EVENTUALLY, "the outage to be counted", || async {
        failures_and_drops_counted(&stack.tracker).await
    })
    .await?;
    let rss_after = rss_kib(stack.tracker.pid())?;
    eprintln!(
        "outage: RSS {rss_before} KiB before, {rss_after} KiB after {LOAD_SAGAS} sagas and \
         {LOAD_REQUESTS} requests; failures and drops (traces, logs): {metrics:?}"
    );
    // Generous: allocator growth and connection buffers are allowed, a queue growing with
    // the load is not (the load alone produced several thousand spans and lines).
    ensure!(
        rss_after <= rss_before + rss_before / 2 + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB during the outage"
    );
    // At most one warning a minute per signal, however many exports failed.
    let warnings = stack
        .tracker
        .log_text()
        .lines()
        .filter(|l| l.contains("telemetry export failing"))
        .count();
    let minutes = outage_started.elapsed().as_secs() as usize / 60 + 1;
    ensure!(
        (2..=2 * minutes).contains(&warnings),
        "expected one warning per signal and minute of outage ({minutes} min), got {warnings}"
    );
    stack.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_and_loki_that_never_answer_cost_counters_not_ingest() -> anyhow::Result<()> {
    let hole = BlackHole::start().await?;
    let mut vars = quick_export(&hole.url(), "grpc", "black-hole-test");
    vars.extend(env(&[
        ("TRACKER_TELEMETRY__LOKI__URL", &format!("{}/", hole.url())),
        ("TRACKER_TELEMETRY__OTLP__MAX_QUEUE_SIZE", "64"),
        ("TRACKER_TELEMETRY__OTLP__MAX_EXPORT_BATCH_SIZE", "32"),
        ("TRACKER_TELEMETRY__OTLP__TIMEOUT_MS", "500"),
        ("TRACKER_TELEMETRY__LOKI__MAX_BUFFER_BYTES", "65536"),
        ("TRACKER_TELEMETRY__LOKI__TIMEOUT_MS", "500"),
        ("TRACKER_INGEST__BATCH_SIZE", "20"),
    ]));
    let stack = Stack::start(vars).await?;
    let sdk = stack.sdk("order-service")?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let search_url = stack.tracker.url("api/v1/sagas?limit=1")?;
    const SAGAS: usize = 200;
    let ids = record_sagas(&stack, &sdk, &format!("hole-{}", unique_suffix()), SAGAS).await?;
    for _ in 0..1000 {
        http.get(search_url.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    poll_until(EVENTUALLY, "every event to be stored", || async {
        let n = stored_events(&stack.tracker).await?;
        ensure!(n >= (SAGAS * 3) as f64, "{n} events stored");
        Ok(())
    })
    .await?;
    stack.saga_visible(&ids[SAGAS - 1]).await?;
    let counted = poll_until(EVENTUALLY, "the hanging exports to be counted", || async {
        failures_and_drops_counted(&stack.tracker).await
    })
    .await?;
    eprintln!("black hole: failures and drops (traces, logs): {counted:?}");
    // Shutdown is bounded too: the last flush gives up instead of waiting on the hole.
    stack.finish().await
}
