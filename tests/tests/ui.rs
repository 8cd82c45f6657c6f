//! The Saga Explorer (the tracker's web UI) in a real browser: Debian's Chromium, driven by
//! playwright-core scripts in `tests/ui/`, against a real `saga-tracker` process that consumed
//! real sagas from a real broker into a real database — nothing mocked, as a person on call
//! would use it.
//!
//! The Rust side owns the world (broker, database, tracker, an nginx in front of it) and seeds
//! it; the node script owns the browser and the assertions on pages. They talk over the
//! script's stdio (`tests/ui/lib.mjs` describes the protocol): when the script needs something
//! to happen while a page is open — a new event for the saga it shows — it prints
//! `WAIT <tag> <args…>`, this side does it and answers `GO`.
//!
//! Needs Chromium, nginx and `tests/ui/node_modules` (`scripts/ensure-browser.sh`, which
//! `scripts/test.sh` runs). Without them the tests skip with the reason printed — except
//! under `CI`, where a missing browser is a failure, so CI can never pass without running
//! them.
//!
//! Screenshots go to `target/ui-screenshots/<test>/`; with `UPDATE_UI_SCREENSHOTS=1` a
//! passing run also copies them into `docs/ui/`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use saga_tracker_sdk::{DeliveryMode, SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::{
    free_port, log_tail, migrate, poll_until, reader_key, tracker_bin, unique_suffix,
    workspace_root, Tansu, TestDb, TrackerOptions, TrackerProcess,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Upper bound for any "eventually" on the Rust side.
const EVENTUALLY: Duration = Duration::from_secs(60);

/// Upper bound for one browser script, start to finish (its own watchdog is a little shorter).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(420);

const ORDER: &str = "ORDER_CREATION";
const INVOICE: &str = "INVOICE_RUN";

/// How many bulk sagas to seed: enough for three pages of 50 and an export that is longer
/// than any page.
const BULK: usize = 140;

/// The trace every bulk saga's events carry, so the quick box sees an ambiguous trace id.
const BULK_TRACE: &str = "5b8efff798038103d269b633813fc60c";
/// The trace of the failed-and-compensated saga.
const FAILED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

const TRACE_TEMPLATE: &str = "http://127.0.0.1:9/trace/{traceId}";
const LOG_TEMPLATE: &str = "http://127.0.0.1:9/logs?saga={sagaId}&from={from}&to={to}";

// ---------------------------------------------------------------------------------------
// The browser, and whether we have one
// ---------------------------------------------------------------------------------------

/// What the scripts need on this machine.
struct Browser {
    chromium: PathBuf,
    ui_dir: PathBuf,
}

/// True when the `CI` variable says this is a CI run.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The browser set-up, `None` to skip (printed reason) outside CI; an error under CI.
fn browser() -> anyhow::Result<Option<Browser>> {
    let chromium = std::env::var_os("CHROMIUM_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let ui_dir = std::env::var_os("UI_TEST_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| workspace_root().join("tests").join("ui"), PathBuf::from);
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("no browser at {}", chromium.display()));
    }
    if !ui_dir.join("node_modules").join("playwright-core").is_dir() {
        missing.push(format!(
            "no playwright-core in {}",
            ui_dir.join("node_modules").display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("no node on PATH".to_owned());
    }
    if nginx_bin().is_none() {
        missing.push("no nginx".to_owned());
    }
    if missing.is_empty() {
        return Ok(Some(Browser { chromium, ui_dir }));
    }
    let reason = format!(
        "{}: run scripts/ensure-browser.sh (scripts/test.sh does)",
        missing.join(", ")
    );
    if in_ci() {
        bail!("the browser tests cannot run under CI: {reason}");
    }
    eprintln!("SKIPPED: the UI browser tests need Chromium, nginx and node modules — {reason}");
    Ok(None)
}

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("target").join("test-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Where a test's screenshots go: `target/ui-screenshots/<name>/`, emptied first.
fn screenshot_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = workspace_root()
        .join("target")
        .join("ui-screenshots")
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// With `UPDATE_UI_SCREENSHOTS=1`: copies the run's screenshots (not the `FAIL-*` ones) into
/// `docs/ui/`, where the UI's documentation shows them.
fn publish_screenshots(dir: &Path) -> anyhow::Result<()> {
    if std::env::var("UPDATE_UI_SCREENSHOTS").as_deref() != Ok("1") {
        return Ok(());
    }
    let docs = workspace_root().join("docs").join("ui");
    std::fs::create_dir_all(&docs)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".png") && !name.starts_with("FAIL-") {
            std::fs::copy(&path, docs.join(name))
                .with_context(|| format!("copying {} to docs/ui", path.display()))?;
            eprintln!("updated docs/ui/{name}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A browser script and its line protocol
// ---------------------------------------------------------------------------------------

/// `node tests/ui/<script>` with piped stdio, its stderr in a log file; killed when dropped.
struct NodeScript {
    name: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    log: PathBuf,
    deadline: Instant,
    passed: Vec<String>,
    failed: Vec<String>,
    done: bool,
}

/// A request from the script.
#[derive(Debug)]
struct Wait {
    tag: String,
    args: Vec<String>,
}

impl NodeScript {
    fn spawn(browser: &Browser, script: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let log = log_dir()?.join(format!(
            "ui-{}-{}.log",
            script.trim_end_matches(".mjs"),
            unique_suffix()
        ));
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(browser.ui_dir.join(script))
            .current_dir(&browser.ui_dir)
            .env("CHROMIUM_BIN", &browser.chromium)
            .env(
                "UI_TOTAL_TIMEOUT_MS",
                (SCRIPT_TIMEOUT.as_millis() - 20_000).to_string(),
            )
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning node {script}"))?;
        let stdin = child.stdin.take().context("node stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("node stdout")?).lines();
        Ok(Self {
            name: script.to_owned(),
            child,
            stdin,
            stdout,
            log,
            deadline: Instant::now() + SCRIPT_TIMEOUT,
            passed: Vec::new(),
            failed: Vec::new(),
            done: false,
        })
    }

    /// The next `WAIT` from the script, recording `PASS`/`FAIL` lines on the way; `None` once
    /// the script closed its stdout.
    async fn next_wait(&mut self) -> anyhow::Result<Option<Wait>> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.stdout.next_line())
                .await
                .with_context(|| {
                    format!(
                        "{} did not finish within {SCRIPT_TIMEOUT:?}; its log ({}):\n{}",
                        self.name,
                        self.log.display(),
                        log_tail(&self.log, 40)
                    )
                })??;
            let Some(line) = line else { return Ok(None) };
            eprintln!("[{}] {line}", self.name);
            let mut words = line.split_whitespace();
            match words.next() {
                Some("WAIT") => {
                    return Ok(Some(Wait {
                        tag: words.next().unwrap_or_default().to_owned(),
                        args: words.map(str::to_owned).collect(),
                    }))
                }
                Some("PASS") => self.passed.push(line[5..].to_owned()),
                Some("FAIL") => self.failed.push(line[5..].to_owned()),
                Some("DONE") => self.done = true,
                _ => {}
            }
        }
    }

    /// Answers the script's last `WAIT`.
    async fn answer(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .with_context(|| format!("answering {}", self.name))?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits for the script to exit and fails, listing every failed step and the log tail,
    /// unless it ran to the end with every step passed.
    async fn finish(mut self) -> anyhow::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let status = tokio::time::timeout(left + Duration::from_secs(5), self.child.wait())
            .await
            .with_context(|| format!("{} did not exit in time", self.name))??;
        eprintln!(
            "{}: {} step(s) passed, {} failed (log: {})",
            self.name,
            self.passed.len(),
            self.failed.len(),
            self.log.display()
        );
        ensure!(
            status.success() && self.done && self.failed.is_empty() && !self.passed.is_empty(),
            "{} exited with {status} after {} passed step(s); failed steps:\n  {}\nits log ({}):\n{}",
            self.name,
            self.passed.len(),
            if self.failed.is_empty() {
                "(none reported)".to_owned()
            } else {
                self.failed.join("\n  ")
            },
            self.log.display(),
            log_tail(&self.log, 60)
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The world: broker, database, tracker
// ---------------------------------------------------------------------------------------

struct Stack {
    tansu: Tansu,
    db: Option<TestDb>,
    tracker: TrackerProcess,
    topic: String,
    /// A bearer for the tracker's API, when access control is on.
    bearer: Option<String>,
    http: reqwest::Client,
}

impl Stack {
    async fn start(env: &[(&str, String)], bearer: Option<String>) -> anyhow::Result<Self> {
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.ui-{}", unique_suffix());
        tansu.create_topic(&topic, 3).await?;
        tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;
        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options.extra_env.extend(
            [
                ("TRACKER_UI__TRACE_URL_TEMPLATE", TRACE_TEMPLATE.to_owned()),
                ("TRACKER_UI__LOG_URL_TEMPLATE", LOG_TEMPLATE.to_owned()),
                // Short, so the live-update step does not wait on the default 2 s much.
                ("TRACKER_UI__LIVE_POLL_MS", "500".to_owned()),
            ]
            .into_iter()
            .chain(env.iter().cloned())
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let mut tracker = TrackerProcess::spawn(options)?;
        tracker.wait_ready(EVENTUALLY).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        Ok(Self {
            tansu,
            db: Some(db),
            tracker,
            topic,
            bearer,
            http,
        })
    }

    fn sdk(&self, service: &str, delivery: DeliveryMode) -> anyhow::Result<SagaTracker> {
        Ok(SagaTracker::new(
            TrackerConfig::new(self.tansu.brokers(), service)
                .with_topic(&self.topic)
                .with_delivery(delivery),
        )?)
    }

    fn base_url(&self) -> String {
        self.tracker
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    }

    /// GET an API path (with the bearer, if any) expecting 200 JSON.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = self.tracker.url(path)?;
        let mut req = self.http.get(url.clone()).query(query);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.text().await?;
        ensure!(status.is_success(), "GET {url} answered {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// Polls the saga until `done` holds for its API view.
    async fn saga_when(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let path = format!("api/v1/sagas/{}", encode(id));
        poll_until(EVENTUALLY, &format!("saga {id} to be {what}"), || async {
            let v = self.api(&path, &[]).await?;
            ensure!(done(&v), "saga {id} is not {what} yet: {v}");
            Ok(v)
        })
        .await
    }

    /// Every saga id of an API search, following `nextCursor` (bounded).
    async fn search_all(&self, query: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", "100"));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.api("api/v1/sagas", &q).await?;
            for item in page["items"].as_array().context("items")? {
                ids.push(item["sagaId"].as_str().context("sagaId")?.to_owned());
            }
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(ids),
            }
        }
        bail!("more than 50 pages for {query:?}")
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        let status = self.tracker.stop(Duration::from_secs(30)).await?;
        ensure!(status.success(), "tracker exited with {status}");
        if let Some(db) = self.db.take() {
            db.drop_db().await?;
        }
        drop(self.tansu);
        Ok(())
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A 16-hex span id, distinct per (saga, sequence).
fn span_id(n: u64) -> String {
    format!("{:016x}", 0x00f0_0000_0000_0000_u64 + n)
}

// ---------------------------------------------------------------------------------------
// The sagas
// ---------------------------------------------------------------------------------------

/// What was seeded, handed to the script as `UI_FIXTURE`.
struct Seeded {
    fixture: Value,
}

/// One step of a hand-made saga: (step, step status, saga status, service, error).
type Ev<'a> = (
    &'a str,
    StepStatus,
    Option<SagaStatus>,
    &'a str,
    Option<(&'a str, &'a str)>,
);

/// Records `events` for saga `id` from `start`, one second apart.
#[allow(clippy::too_many_arguments)]
async fn record_saga(
    sdks: &std::collections::HashMap<&str, SagaTracker>,
    id: &str,
    saga_type: &str,
    business_key: &str,
    region: &str,
    trace: Option<&str>,
    start: DateTime<Utc>,
    first_seq: i64,
    events: &[Ev<'_>],
) -> anyhow::Result<()> {
    for (i, (step, status, saga_status, service, error)) in events.iter().enumerate() {
        let seq = first_seq + i as i64;
        let mut s = Step::new(id, saga_type, *step, *status)
            .with_sequence(seq)
            .with_business_key(business_key)
            .with_metadata_entry("region", region)
            .at(start + secs(seq));
        if let Some(ss) = saga_status {
            s = s.with_saga_status(*ss);
        }
        if let Some((code, message)) = error {
            s = s.with_error(*code, *message);
        }
        if let Some(t) = trace {
            s = s.with_trace_ids(t, span_id(seq as u64 + 16 * id.len() as u64));
        }
        let sdk = sdks
            .get(service)
            .with_context(|| format!("no SDK client for {service}"))?;
        sdk.record(s)
            .await
            .with_context(|| format!("recording {id} {step}"))?;
    }
    Ok(())
}

/// Seeds the explorer's world and returns what the script needs to know about it.
async fn seed(stack: &Stack) -> anyhow::Result<Seeded> {
    use SagaStatus as S;
    use StepStatus::*;
    let now = Utc::now();
    let services = [
        "order-service",
        "stock-service",
        "payment-service",
        "notify-service",
        "billing-service",
        "mail-service",
    ];
    let mut sdks = std::collections::HashMap::new();
    for s in services {
        sdks.insert(s, stack.sdk(s, DeliveryMode::Async)?);
    }

    // A completed order (a late event follows once it is stored).
    let completed: &[Ev<'_>] = &[
        (
            "ORDER_PLACED",
            Succeeded,
            Some(S::Started),
            "order-service",
            None,
        ),
        (
            "STOCK_RESERVED",
            Succeeded,
            Some(S::InProgress),
            "stock-service",
            None,
        ),
        ("PAYMENT_CAPTURED", Succeeded, None, "payment-service", None),
        (
            "ORDER_CONFIRMED",
            Succeeded,
            Some(S::Completed),
            "order-service",
            None,
        ),
    ];
    record_saga(
        &sdks,
        "order-1001",
        ORDER,
        "1001",
        "eu",
        None,
        now - chrono::Duration::minutes(40),
        1,
        completed,
    )
    .await?;

    // Payment fails; stock and order are compensated, in reverse order.
    let failed: &[Ev<'_>] = &[
        (
            "ORDER_PLACED",
            Started,
            Some(S::Started),
            "order-service",
            None,
        ),
        ("ORDER_PLACED", Succeeded, None, "order-service", None),
        (
            "STOCK_RESERVED",
            Started,
            Some(S::InProgress),
            "stock-service",
            None,
        ),
        ("STOCK_RESERVED", Succeeded, None, "stock-service", None),
        ("PAYMENT_CAPTURED", Started, None, "payment-service", None),
        (
            "PAYMENT_CAPTURED",
            Failed,
            Some(S::Failed),
            "payment-service",
            Some(("INSUFFICIENT_FUNDS", "card declined by issuer")),
        ),
        (
            "STOCK_RESERVED",
            Compensating,
            Some(S::Compensating),
            "stock-service",
            None,
        ),
        ("STOCK_RESERVED", Compensated, None, "stock-service", None),
        ("ORDER_PLACED", Compensating, None, "order-service", None),
        (
            "ORDER_PLACED",
            Compensated,
            Some(S::Compensated),
            "order-service",
            None,
        ),
    ];
    record_saga(
        &sdks,
        "order-1002",
        ORDER,
        "1002",
        "eu",
        Some(FAILED_TRACE),
        now - chrono::Duration::minutes(30),
        1,
        failed,
    )
    .await?;

    // Still running (the live event finishes it), and one that stopped moving an hour ago.
    let running: &[Ev<'_>] = &[
        (
            "ORDER_PLACED",
            Succeeded,
            Some(S::Started),
            "order-service",
            None,
        ),
        (
            "STOCK_RESERVED",
            Started,
            Some(S::InProgress),
            "stock-service",
            None,
        ),
    ];
    record_saga(
        &sdks,
        "order-1003",
        ORDER,
        "1003",
        "eu",
        None,
        now - secs(20),
        1,
        running,
    )
    .await?;
    record_saga(
        &sdks,
        "order-stuck-1",
        ORDER,
        "0999",
        "us",
        None,
        now - chrono::Duration::hours(1),
        1,
        running,
    )
    .await?;

    // The bulk: one invoice run every 2 minutes over the last ~5 hours, every 7th failing.
    let mut bulk_failed = 0;
    for i in 0..BULK {
        let id = format!("invoice-{i:04}");
        let region = if i % 10 == 3 { "us" } else { "eu" };
        let start = now - chrono::Duration::minutes(300) + chrono::Duration::minutes(2 * i as i64);
        let fails = i % 7 == 0;
        bulk_failed += usize::from(fails);
        let last: Ev<'_> = if fails {
            (
                "INVOICE_SENT",
                Failed,
                Some(S::Failed),
                "mail-service",
                Some(("SMTP_DOWN", "mail relay refused the connection")),
            )
        } else {
            (
                "INVOICE_SENT",
                Succeeded,
                Some(S::Completed),
                "mail-service",
                None,
            )
        };
        let events: [Ev<'_>; 2] = [
            (
                "INVOICE_DRAFTED",
                Succeeded,
                Some(S::Started),
                "billing-service",
                None,
            ),
            last,
        ];
        record_saga(
            &sdks,
            &id,
            INVOICE,
            &format!("inv-{i}"),
            region,
            Some(BULK_TRACE),
            start,
            1,
            &events,
        )
        .await?;
    }
    for (name, sdk) in &sdks {
        sdk.flush(Duration::from_secs(30))
            .with_context(|| format!("flushing the {name} SDK client"))?;
    }

    // Everything stored before the browser looks.
    stack
        .saga_when("order-1001", "COMPLETED with 4 events", |v| {
            v["status"] == "COMPLETED" && v["eventCount"] == 4
        })
        .await?;
    let notify = stack.sdk("notify-service", DeliveryMode::Sync)?;
    notify
        .record(
            Step::new("order-1001", ORDER, "CUSTOMER_NOTIFIED", Succeeded)
                .with_sequence(5)
                .with_business_key("1001"),
        )
        .await?;
    stack
        .saga_when("order-1001", "holding one late event", |v| {
            v["lateEventCount"] == 1
        })
        .await?;
    stack
        .saga_when("order-1002", "COMPENSATED with every event", |v| {
            v["status"] == "COMPENSATED" && v["eventCount"] == failed.len()
        })
        .await?;
    stack
        .saga_when("order-1003", "IN_PROGRESS with 2 events", |v| {
            v["status"] == "IN_PROGRESS" && v["eventCount"] == 2
        })
        .await?;
    stack
        .saga_when("order-stuck-1", "stuck", |v| !v["stuck"].is_null())
        .await?;
    poll_until(EVENTUALLY, "every bulk saga to be stored", || async {
        let all = stack.search_all(&[("sagaType", INVOICE)]).await?;
        ensure!(
            all.len() == BULK,
            "{} of {BULK} bulk sagas stored",
            all.len()
        );
        let finished = stack
            .search_all(&[("sagaType", INVOICE), ("status", "COMPLETED,FAILED")])
            .await?;
        ensure!(
            finished.len() == BULK,
            "{} of {BULK} bulk sagas finished",
            finished.len()
        );
        Ok(())
    })
    .await?;
    // The REST API's count is what the UI's paging and export must match.
    let eu: Vec<String> = stack
        .search_all(&[("sagaType", INVOICE), ("meta.region", "eu")])
        .await?;
    ensure!(
        eu.len() > 100 && eu.iter().collect::<BTreeSet<_>>().len() == eu.len(),
        "the API lists {} eu invoice sagas",
        eu.len()
    );

    Ok(Seeded {
        fixture: json!({
            "topic": stack.topic,
            "completed": "order-1001",
            "failed": "order-1002",
            "failedBusinessKey": "1002",
            "failedTraceId": FAILED_TRACE,
            "failedStep": "PAYMENT_CAPTURED",
            "failedCode": "INSUFFICIENT_FUNDS",
            "failedMessage": "card declined by issuer",
            "failedServices": ["order-service", "stock-service", "payment-service"],
            "compensatedSteps": ["STOCK_RESERVED", "ORDER_PLACED"],
            "failedEventCount": failed.len(),
            "running": "order-1003",
            "runningEventCount": running.len(),
            "liveEventCount": 2,
            "liveService": "payment-service",
            "liveStep": "PAYMENT_CAPTURED",
            "stuck": "order-stuck-1",
            "bulkType": INVOICE,
            "bulkFailed": bulk_failed,
            "bulkFailedStep": "INVOICE_SENT",
            "bulkTraceId": BULK_TRACE,
            "bulkEuIds": eu,
        }),
    })
}

/// The script's `WAIT live-event <sagaId>`: the running saga's stock step succeeds and the
/// payment service (a new lane) finishes it; answered once the API shows both events.
async fn live_event(stack: &Stack, saga_id: &str) -> anyhow::Result<()> {
    ensure!(saga_id == "order-1003", "live event asked for {saga_id}");
    let stock = stack.sdk("stock-service", DeliveryMode::Sync)?;
    let payment = stack.sdk("payment-service", DeliveryMode::Sync)?;
    stock
        .record(
            Step::new(saga_id, ORDER, "STOCK_RESERVED", StepStatus::Succeeded)
                .with_sequence(3)
                .with_business_key("1003"),
        )
        .await?;
    payment
        .record(
            Step::new(saga_id, ORDER, "PAYMENT_CAPTURED", StepStatus::Succeeded)
                .with_sequence(4)
                .with_business_key("1003")
                .with_saga_status(SagaStatus::Completed),
        )
        .await?;
    stack
        .saga_when(saga_id, "COMPLETED with 4 events", |v| {
            v["status"] == "COMPLETED" && v["eventCount"] == 4
        })
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// nginx: a real forwarding proxy that authenticates for the browser
// ---------------------------------------------------------------------------------------

/// An nginx of our own (own config, own prefix directory, one process: `master_process off`)
/// on a free loopback port, forwarding to `backend` with `Authorization: Bearer <key>` set.
/// Stopped by its PID when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(backend: u16, bearer: &str) -> anyhow::Result<Self> {
        let bin = nginx_bin().context("nginx is not installed (scripts/ensure-browser.sh)")?;
        let mut last = anyhow::anyhow!("nginx did not start");
        // A free port can be taken between our probe and nginx's bind: try a few.
        for _ in 0..3 {
            match Self::try_start(&bin, backend, bearer) {
                Ok(n) => return Ok(n),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(bin: &Path, backend: u16, bearer: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("saga-ui-nginx-")
            .tempdir()?;
        let port = free_port()?;
        let d = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header Authorization "Bearer {bearer}";
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = dir.path().join("error.log");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&log)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut nginx = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited with {status}: {}", log_tail(&log, 20));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            ensure!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_finds_a_failed_saga_watches_it_live_and_exports_the_search(
) -> anyhow::Result<()> {
    let Some(browser) = browser()? else {
        return Ok(());
    };
    let stack = Stack::start(&[], None).await?;
    let seeded = seed(&stack).await?;
    let shots = screenshot_dir("explorer")?;

    let mut script = NodeScript::spawn(
        &browser,
        "explorer.mjs",
        &[
            ("BASE_URL", stack.base_url()),
            ("UI_FIXTURE", seeded.fixture.to_string()),
            ("SCREENSHOT_DIR", shots.display().to_string()),
        ],
    )?;
    while let Some(wait) = script.next_wait().await? {
        match wait.tag.as_str() {
            "live-event" => {
                let saga = wait.args.first().map(String::as_str).unwrap_or_default();
                match live_event(&stack, saga).await {
                    Ok(()) => script.answer("GO").await?,
                    Err(e) => {
                        script.answer(&format!("FAIL {e:#}")).await?;
                        eprintln!("live event failed: {e:#}");
                    }
                }
            }
            other => {
                script
                    .answer(&format!("FAIL unknown request {other}"))
                    .await?
            }
        }
    }
    script.finish().await?;
    publish_screenshots(&shots)?;
    stack.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_the_ui_needs_a_login_or_a_proxy_that_sends_the_key(
) -> anyhow::Result<()> {
    let Some(browser) = browser()? else {
        return Ok(());
    };
    let keys_dir = tempfile::Builder::new().prefix("saga-ui-keys-").tempdir()?;
    let (token, keys_file) = reader_key(keys_dir.path(), "ui-test-reader").await?;
    let stack = Stack::start(
        &[
            ("TRACKER_AUTH__ENABLED", "true".to_owned()),
            (
                "TRACKER_AUTH__API_KEYS_FILE",
                keys_file.display().to_string(),
            ),
        ],
        Some(token.clone()),
    )
    .await?;
    // One saga, so the Overview behind the proxy has a card to show.
    let orders = stack.sdk("order-service", DeliveryMode::Sync)?;
    orders
        .record(
            Step::new("order-2001", ORDER, "ORDER_PLACED", StepStatus::Succeeded)
                .with_sequence(1)
                .with_saga_status(SagaStatus::Completed),
        )
        .await?;
    stack
        .saga_when("order-2001", "COMPLETED", |v| v["status"] == "COMPLETED")
        .await?;
    let backend = stack.tracker.base_url().port().context("tracker port")?;
    let proxy = Nginx::start(backend, &token)?;
    let shots = screenshot_dir("auth")?;

    let mut script = NodeScript::spawn(
        &browser,
        "auth.mjs",
        &[
            ("BASE_URL", stack.base_url()),
            ("PROXY_URL", proxy.url()),
            ("READER_KEY", token.clone()),
            ("SCREENSHOT_DIR", shots.display().to_string()),
        ],
    )?;
    while let Some(wait) = script.next_wait().await? {
        script
            .answer(&format!("FAIL unknown request {}", wait.tag))
            .await?;
    }
    script.finish().await?;
    drop(proxy);
    let log = stack.tracker.log_text();
    ensure!(
        !log.contains(&token),
        "the tracker's log contains the API key"
    );
    publish_screenshots(&shots)?;
    stack.finish().await
}
