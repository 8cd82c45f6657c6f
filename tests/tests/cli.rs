//! `saga-tracker sagas search|show|export` and `completions`, run as a person (or a script)
//! runs them: the built binary as a subprocess, against a real tracker process that consumed
//! real sagas from a real broker (tansu) into a real database. What the command prints is
//! compared with what the REST API answers for the same question.
//!
//! The `dlq` and `doctor` commands have their own file (`cli_dlq.rs`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};
use assert_cmd::Command;
use chrono::{DateTime, Utc};
use predicates::prelude::*;
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use saga_tracker_sdk::{DeliveryMode, SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::{
    migrate, poll_until, reader_key, tracker_bin, unique_suffix, Tansu, TestDb, TrackerOptions,
    TrackerProcess,
};
use serde_json::Value;

/// Upper bound for any "eventually".
const EVENTUALLY: Duration = Duration::from_secs(60);

const ORDER: &str = "ORDER_CREATION";
const REFUND: &str = "PAYMENT_REFUND";

/// Every saga [`seed`] records, with the status it ends in.
const SAGAS: [(&str, &str); 7] = [
    ("cli-ok-1", "COMPLETED"),
    ("cli-comp-1", "COMPENSATED"),
    ("cli-failed-1", "FAILED"),
    ("cli-running-1", "IN_PROGRESS"),
    ("cli-refund-1", "COMPLETED"),
    ("cli-refund-2", "COMPLETED"),
    ("cli-refund-3", "COMPLETED"),
];

const ESC: &str = "\u{1b}[";

// ---------------------------------------------------------------------------------------
// The world: broker, database, tracker
// ---------------------------------------------------------------------------------------

struct World {
    tansu: Tansu,
    db: Option<TestDb>,
    tracker: TrackerProcess,
    topic: String,
    /// The bearer the test's own API calls send, when access control is on.
    bearer: Option<String>,
    http: reqwest::Client,
}

impl World {
    async fn start(env: &[(&str, String)], bearer: Option<String>) -> anyhow::Result<Self> {
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.cli-{}", unique_suffix());
        tansu.create_topic(&topic, 2).await?;
        tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;
        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options
            .extra_env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
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

    fn sdk(&self, service: &str) -> anyhow::Result<SagaTracker> {
        Ok(SagaTracker::new(
            TrackerConfig::new(self.tansu.brokers(), service)
                .with_topic(&self.topic)
                .with_delivery(DeliveryMode::Sync),
        )?)
    }

    fn url(&self) -> String {
        self.tracker
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The binary with a clean environment (none of the developer's `TRACKER_*`,
    /// `SAGA_TRACKER_*` or `NO_COLOR`), pointed at this tracker. Its stdout is a pipe, not a
    /// terminal.
    fn cli(&self) -> anyhow::Result<Command> {
        let mut c = Command::new(tracker_bin()?);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("TRACKER_")
                || k.starts_with("SAGA_TRACKER_")
                || k.starts_with("OTEL_")
                || k == "NO_COLOR"
                || k == "COLUMNS"
            {
                c.env_remove(&key);
            }
        }
        c.env("SAGA_TRACKER_URL", self.url())
            .timeout(Duration::from_secs(60));
        Ok(c)
    }

    /// GET an API path with `query` (and the bearer, if any), expecting 200 JSON.
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

    /// The items of one API search page.
    async fn api_items(&self, query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
        let mut q = query.to_vec();
        q.push(("limit", "500"));
        let page = self.api("api/v1/sagas", &q).await?;
        Ok(page["items"].as_array().context("items")?.clone())
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

/// One event: (step, step status, saga status, service, error).
type Ev<'a> = (
    &'a str,
    StepStatus,
    Option<SagaStatus>,
    &'a str,
    Option<(&'a str, &'a str)>,
);

/// Records `events` of saga `id`, one second apart from `start`.
async fn record(
    world: &World,
    id: &str,
    saga_type: &str,
    business_key: &str,
    region: &str,
    start: DateTime<Utc>,
    events: &[Ev<'_>],
) -> anyhow::Result<()> {
    for (i, (step, status, saga_status, service, error)) in events.iter().enumerate() {
        let seq = i as i64 + 1;
        let mut s = Step::new(id, saga_type, *step, *status)
            .with_sequence(seq)
            .with_business_key(business_key)
            .with_metadata_entry("region", region)
            .at(start + chrono::Duration::seconds(seq));
        if let Some(ss) = saga_status {
            s = s.with_saga_status(*ss);
        }
        if let Some((code, message)) = error {
            s = s.with_error(*code, *message);
        }
        world
            .sdk(service)?
            .record(s)
            .await
            .with_context(|| format!("recording {id} {step}"))?;
    }
    Ok(())
}

/// A completed order, a failed and compensated one, a failed one, a running one that is
/// stuck (no event for two hours), and three completed refunds; waits until the API has
/// them all in their final status.
async fn seed(world: &World) -> anyhow::Result<()> {
    use SagaStatus as S;
    use StepStatus::*;
    let now = Utc::now();
    let min = chrono::Duration::minutes;
    record(
        world,
        "cli-ok-1",
        ORDER,
        "1001",
        "eu",
        now - min(10),
        &[
            (
                "ORDER_PLACED",
                Started,
                Some(S::Started),
                "order-service",
                None,
            ),
            ("STOCK_RESERVED", Succeeded, None, "stock-service", None),
            ("PAYMENT_CHARGED", Succeeded, None, "payment-service", None),
            (
                "ORDER_CONFIRMED",
                Succeeded,
                Some(S::Completed),
                "order-service",
                None,
            ),
        ],
    )
    .await?;
    record(
        world,
        "cli-comp-1",
        ORDER,
        "1002",
        "us",
        now - min(8),
        &[
            (
                "ORDER_PLACED",
                Started,
                Some(S::Started),
                "order-service",
                None,
            ),
            ("STOCK_RESERVED", Succeeded, None, "stock-service", None),
            (
                "PAYMENT_CHARGED",
                Failed,
                Some(S::Failed),
                "payment-service",
                Some(("DECLINED", "card declined")),
            ),
            (
                "STOCK_RESERVED",
                Compensating,
                Some(S::Compensating),
                "stock-service",
                None,
            ),
            (
                "STOCK_RESERVED",
                Compensated,
                Some(S::Compensated),
                "stock-service",
                None,
            ),
        ],
    )
    .await?;
    record(
        world,
        "cli-failed-1",
        ORDER,
        "1003",
        "eu",
        now - min(6),
        &[
            (
                "ORDER_PLACED",
                Started,
                Some(S::Started),
                "order-service",
                None,
            ),
            (
                "PAYMENT_CHARGED",
                Failed,
                Some(S::Failed),
                "payment-service",
                Some(("TIMEOUT", "gateway did not answer")),
            ),
        ],
    )
    .await?;
    record(
        world,
        "cli-running-1",
        ORDER,
        "1004",
        "us",
        now - min(120),
        &[
            (
                "ORDER_PLACED",
                Started,
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
        ],
    )
    .await?;
    for (i, id) in ["cli-refund-1", "cli-refund-2", "cli-refund-3"]
        .iter()
        .enumerate()
    {
        record(
            world,
            id,
            REFUND,
            &format!("r-{i}"),
            "apac",
            now - min(5 - i as i64),
            &[
                (
                    "REFUND_REQUESTED",
                    Started,
                    Some(S::Started),
                    "payment-service",
                    None,
                ),
                (
                    "REFUND_PAID",
                    Succeeded,
                    Some(S::Completed),
                    "payment-service",
                    None,
                ),
            ],
        )
        .await?;
    }
    poll_until(
        EVENTUALLY,
        "every seeded saga in its final status",
        || async {
            let items = world.api_items(&[]).await?;
            for (id, status) in SAGAS {
                let found = items.iter().find(|s| s["sagaId"] == id);
                ensure!(
                    found.is_some_and(|s| s["status"] == status),
                    "{id} is {:?}, not {status} yet",
                    found.map(|s| &s["status"])
                );
            }
            Ok(())
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Helpers on a command's output
// ---------------------------------------------------------------------------------------

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// The first column of a search table's rows (the saga ids), in order.
fn table_ids(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|w| !w.starts_with('-') && !w.starts_with('─') && !w.starts_with('='))
        .collect()
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|s| s["sagaId"].as_str().map(str::to_owned))
        .collect()
}

fn ndjson(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Runs `shell_command` with its stdout on a pseudo-terminal (util-linux `script`) and
/// returns what it printed: for checking what `--color auto` does on a terminal.
fn on_a_terminal(shell_command: &str, no_color: bool) -> anyhow::Result<String> {
    let mut c = std::process::Command::new("script");
    c.args(["-qec", shell_command, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("NO_COLOR");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c
        .output()
        .context("running `script` (util-linux) to get a terminal")?;
    ensure!(
        out.status.success(),
        "{shell_command} on a terminal failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_finds_shows_and_exports_sagas_from_the_command_line() -> anyhow::Result<()> {
    let world = World::start(&[], None).await?;
    seed(&world).await?;
    let all_ids: Vec<String> = SAGAS.iter().map(|(id, _)| (*id).to_owned()).collect();

    // A table of every saga, aligned, without colour on a pipe.
    let a = world.cli()?.args(["sagas", "search"]).assert().success();
    let table = stdout_of(&a);
    assert!(
        !table.contains('\u{1b}'),
        "ANSI escapes on a pipe:\n{table}"
    );
    assert_eq!(
        table_ids(&table),
        ids_of(&world.api_items(&[]).await?),
        "the table lists the API's sagas in its order:\n{table}"
    );
    assert!(table.starts_with("SAGA ID"), "{table}");
    assert!(table.contains("7 sagas."), "{table}");
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    let running = row("cli-running-1");
    assert!(
        running.contains("IN_PROGRESS")
            && running.contains("running 2 h")
            && running.contains("no progress"),
        "the running saga shows how long it runs and that it is stuck: {running:?}"
    );
    let comp = row("cli-comp-1");
    assert!(
        comp.contains("COMPENSATED") && comp.contains("PAYMENT_CHARGED") && comp.contains("1002"),
        "{comp:?}"
    );
    // Columns are aligned: the status column starts at the same place on every row.
    let status_col: Vec<usize> = SAGAS
        .iter()
        .map(|(id, status)| row(id).find(status).unwrap_or(0))
        .collect();
    assert!(
        status_col.iter().all(|c| *c == status_col[0] && *c > 0),
        "status columns at {status_col:?}:\n{table}"
    );

    // Colours: forced on, and on a terminal unless NO_COLOR says otherwise.
    world
        .cli()?
        .args(["sagas", "search", "--color", "always"])
        .assert()
        .success()
        .stdout(predicate::str::contains(ESC).and(predicate::str::contains("cli-comp-1")));
    world
        .cli()?
        .args(["--color", "never", "sagas", "search"])
        .assert()
        .success()
        .stdout(predicate::str::contains(ESC).not());
    let bin = tracker_bin()?;
    let cmd = format!(
        "'{}' sagas search --color auto --url '{}'",
        bin.display(),
        world.url()
    );
    let coloured = on_a_terminal(&cmd, false)?;
    assert!(
        coloured.contains(ESC) && coloured.contains("cli-ok-1"),
        "a terminal gets colours:\n{coloured}"
    );
    let plain = on_a_terminal(&cmd, true)?;
    assert!(
        !plain.contains('\u{1b}') && plain.contains("cli-ok-1"),
        "NO_COLOR=1 turns them off on a terminal too:\n{plain}"
    );

    // Filters reach the API as its parameters.
    for (args, query) in [
        (vec!["--status", "FAILED"], vec![("status", "FAILED")]),
        (
            vec!["--status", "FAILED", "--status", "COMPENSATED"],
            vec![("status", "FAILED"), ("status", "COMPENSATED")],
        ),
        (vec!["--meta", "region=eu"], vec![("meta.region", "eu")]),
        (vec!["--saga-type", REFUND], vec![("sagaType", REFUND)]),
        (vec!["--stuck"], vec![("stuck", "true")]),
        (
            vec!["--failed-step", "PAYMENT_CHARGED"],
            vec![("failedStep", "PAYMENT_CHARGED")],
        ),
        (
            vec!["--business-key", "1003"],
            vec![("businessKey", "1003")],
        ),
        (
            vec!["--service", "stock-service"],
            vec![("service", "stock-service")],
        ),
    ] {
        let a = world
            .cli()?
            .args(["sagas", "search", "--ndjson"])
            .args(&args)
            .assert()
            .success();
        let got = ids_of(&ndjson(&stdout_of(&a))?);
        let want = ids_of(&world.api_items(&query).await?);
        assert!(!want.is_empty(), "{args:?} matches something");
        assert_eq!(got, want, "sagas search {args:?}");
    }
    let a = world
        .cli()?
        .args(["sagas", "search", "--status", "FAILED"])
        .assert()
        .success();
    let failed = stdout_of(&a);
    assert_eq!(table_ids(&failed), ["cli-failed-1"], "{failed}");
    assert!(failed.contains("1 saga."), "{failed}");
    // `--since 1h` is `startedAfter` an hour ago: the two-hour-old saga is left out.
    let a = world
        .cli()?
        .args(["sagas", "search", "--since", "1h", "--ndjson"])
        .assert()
        .success();
    let since = ids_of(&ndjson(&stdout_of(&a))?);
    assert_eq!(
        sorted(since),
        sorted(
            all_ids
                .iter()
                .filter(|i| *i != "cli-running-1")
                .cloned()
                .collect()
        )
    );

    // --json is the API's page; --ndjson its items, one per line.
    let a = world
        .cli()?
        .args(["sagas", "search", "--json"])
        .assert()
        .success();
    let page: Value = serde_json::from_str(&stdout_of(&a))?;
    let api_page = world.api("api/v1/sagas", &[]).await?;
    assert_eq!(page, api_page, "--json prints the API's page document");
    let a = world
        .cli()?
        .args(["sagas", "search", "--ndjson"])
        .assert()
        .success();
    assert_eq!(
        ndjson(&stdout_of(&a))?,
        api_page["items"].as_array().cloned().unwrap_or_default()
    );

    // Pages: the footer gives the cursor; --all follows them.
    let a = world
        .cli()?
        .args(["sagas", "search", "--limit", "3"])
        .assert()
        .success();
    let first = stdout_of(&a);
    let cursor = first
        .split("--cursor ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .context(format!("no cursor in the footer:\n{first}"))?
        .to_owned();
    assert!(first.contains("--all"), "{first}");
    let a = world
        .cli()?
        .args(["sagas", "search", "--limit", "3", "--cursor", &cursor])
        .assert()
        .success();
    let second = table_ids(&stdout_of(&a));
    let mut paged = table_ids(&first);
    paged.extend(second);
    assert_eq!(paged, all_ids_in_api_order(&world).await?[..6]);
    let a = world
        .cli()?
        .args(["sagas", "search", "--limit", "2", "--all", "--ndjson"])
        .assert()
        .success();
    assert_eq!(
        ids_of(&ndjson(&stdout_of(&a))?),
        all_ids_in_api_order(&world).await?
    );
    let a = world
        .cli()?
        .args(["sagas", "search", "--all", "--max", "4"])
        .assert()
        .success();
    let bounded = stdout_of(&a);
    assert_eq!(table_ids(&bounded).len(), 4, "{bounded}");
    assert!(bounded.contains("Stopped at --max 4"), "{bounded}");

    // Nothing found is a sentence, not an error.
    world
        .cli()?
        .args(["sagas", "search", "--business-key", "no-such-order"])
        .assert()
        .success()
        .stdout("No saga matches these filters.\n");

    // The tracker judges the filters, and every reason it gives is shown.
    let a = world
        .cli()?
        .args(["sagas", "search", "--status", "DONE", "--limit", "0"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("400 Bad Request")
            && err.contains("status: unknown status \"DONE\"")
            && err.contains("limit: must be an integer between 1 and 500"),
        "{err}"
    );
    world
        .cli()?
        .args(["sagas", "search", "--saga-type", "order_creation"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sagaType: must match [A-Z0-9_.-]"));
    // A malformed flag is a usage error (clap's exit code 2), before any request.
    world
        .cli()?
        .args(["sagas", "search", "--meta", "region"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected KEY=VALUE"));

    show(&world).await?;
    export(&world).await?;

    // Help with examples, and completions that know the commands.
    for sub in ["search", "show", "export"] {
        world
            .cli()?
            .args(["sagas", sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains(
                "Examples:\n  saga-tracker sagas ".to_owned() + sub,
            ));
    }
    world
        .cli()?
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("sagas")
                .and(predicate::str::contains("--saga-type"))
                .and(predicate::str::contains("export")),
        );

    world.finish().await
}

async fn all_ids_in_api_order(world: &World) -> anyhow::Result<Vec<String>> {
    Ok(ids_of(&world.api_items(&[]).await?))
}

/// `sagas show`: the header, the failure and its compensation, the timeline, the events.
async fn show(world: &World) -> anyhow::Result<()> {
    let a = world
        .cli()?
        .args(["sagas", "show", "cli-comp-1", "--width", "120"])
        .assert()
        .success();
    let text = stdout_of(&a);
    assert!(!text.contains('\u{1b}'), "{text}");
    for want in [
        "Saga cli-comp-1  COMPENSATED",
        "ORDER_CREATION",
        "1002",
        "Failed at step PAYMENT_CHARGED (payment-service)",
        "DECLINED  card declined",
        "Compensated in 1.00 s: STOCK_RESERVED",
        "Timeline",
        "↺ compensation",
        "Events",
        "order-service, payment-service, stock-service",
    ] {
        assert!(text.contains(want), "`sagas show` lacks {want:?}:\n{text}");
    }
    // One timeline row per step, in the API's order, each as wide as asked.
    let detail = world.api("api/v1/sagas/cli-comp-1", &[]).await?;
    let steps: Vec<&str> = detail["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    let timeline: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Timeline")
        .skip(2)
        .take_while(|l| !l.trim().is_empty() && !l.trim_start().starts_with('█'))
        .collect();
    let rows: Vec<&str> = timeline
        .iter()
        .filter(|l| !l.trim_start().starts_with('↺'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| steps.contains(w))
        .collect();
    assert_eq!(rows, steps, "timeline:\n{}", timeline.join("\n"));
    for l in &timeline[..steps.len() + 1] {
        assert_eq!(l.chars().count(), 120, "{l:?}");
    }
    let pay = timeline
        .iter()
        .find(|l| l.trim_start().starts_with("PAYMENT_CHARGED"))
        .context("payment row")?;
    assert!(pay.contains("FAILED") && pay.contains('█'), "{pay:?}");
    // Five events, each a row of the events table.
    let events = text.split("Events").last().unwrap_or_default();
    assert_eq!(
        events
            .lines()
            .filter(|l| l.contains("STOCK_RESERVED"))
            .count(),
        3,
        "{events}"
    );

    // A stuck running saga says so, and since when.
    world
        .cli()?
        .args(["sagas", "show", "cli-running-1", "--no-events"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Stuck: no progress since")
                .and(predicate::str::contains(
                    "No event for longer than the type's threshold (15 min 0 s).",
                ))
                .and(predicate::str::contains("running for 2 h"))
                .and(predicate::str::contains("EVENT ID").not()),
        );

    // --json: the API's detail with its events.
    let a = world
        .cli()?
        .args(["sagas", "show", "cli-comp-1", "--json"])
        .assert()
        .success();
    let mut doc: Value = serde_json::from_str(&stdout_of(&a))?;
    let events = doc
        .as_object_mut()
        .and_then(|o| o.remove("events"))
        .context("--json has `events`")?;
    assert_eq!(doc, detail);
    assert_eq!(
        events,
        world.api("api/v1/sagas/cli-comp-1/events", &[]).await?["items"]
    );

    // An unknown saga is exit code 1 and says so.
    world
        .cli()?
        .args(["sagas", "show", "no-such-saga"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no saga `no-such-saga`"));
    Ok(())
}

/// `sagas export`: exactly the matching sagas, in a file that appears only when complete.
async fn export(world: &World) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("saga-cli-export-")
        .tempdir()?;
    let file = dir.path().join("failed.ndjson");
    let a = world
        .cli()?
        .args([
            "sagas",
            "export",
            "--status",
            "FAILED",
            "--status",
            "COMPENSATED",
            "--output",
        ])
        .arg(&file)
        .assert()
        .success();
    let said = stderr_of(&a);
    assert!(
        said.contains("Exported 2 sagas (NDJSON") && said.contains(&file.display().to_string()),
        "{said}"
    );
    let rows = ndjson(&std::fs::read_to_string(&file)?)?;
    let api = world
        .api_items(&[("status", "FAILED"), ("status", "COMPENSATED")])
        .await?;
    assert_eq!(rows, api, "the export holds exactly the API's matches");
    assert_eq!(leftovers(dir.path())?, ["failed.ndjson"]);

    // CSV: a header and one row per saga; the stats gave the bar its total.
    let csv = dir.path().join("all.csv");
    world
        .cli()?
        .args(["sagas", "export", "--format", "csv", "-o"])
        .arg(&csv)
        .assert()
        .success()
        .stderr(predicate::str::contains("Exported 7 sagas (CSV"));
    let text = std::fs::read_to_string(&csv)?;
    assert!(text.starts_with("sagaId,sagaType,status,"), "{text}");
    assert_eq!(text.lines().count(), 1 + SAGAS.len(), "{text}");
    for (id, _) in SAGAS {
        assert!(text.contains(id), "{id} missing from the CSV");
    }

    // To stdout with `-`.
    let a = world
        .cli()?
        .args(["sagas", "export", "--saga-type", REFUND, "--output", "-"])
        .assert()
        .success();
    assert_eq!(
        ids_of(&ndjson(&stdout_of(&a))?),
        ids_of(&world.api_items(&[("sagaType", REFUND)]).await?)
    );
    assert!(stderr_of(&a).contains("Exported 3 sagas (NDJSON"));

    // A refused export leaves no file at all.
    let bad = dir.path().join("bad.ndjson");
    world
        .cli()?
        .args(["sagas", "export", "--stuck", "maybe", "--output"])
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stuck: must be `true` or `false`"));
    assert!(!bad.exists());
    assert_eq!(leftovers(dir.path())?, ["all.csv", "failed.ndjson"]);
    Ok(())
}

/// The file names in `dir`, sorted (a `.partial` left behind would show here).
fn leftovers(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_the_cli_needs_a_reader_key_and_never_prints_it() -> anyhow::Result<()>
{
    let keys = tempfile::Builder::new()
        .prefix("saga-cli-keys-")
        .tempdir()?;
    let (token, keys_file) = reader_key(keys.path(), "cli-test-reader").await?;
    let world = World::start(
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
    record(
        &world,
        "cli-auth-1",
        ORDER,
        "2001",
        "eu",
        Utc::now() - chrono::Duration::minutes(1),
        &[(
            "ORDER_PLACED",
            StepStatus::Succeeded,
            Some(SagaStatus::Completed),
            "order-service",
            None,
        )],
    )
    .await?;
    poll_until(EVENTUALLY, "cli-auth-1 to be stored", || async {
        world.api("api/v1/sagas/cli-auth-1", &[]).await.map(drop)
    })
    .await?;

    // No key: the tracker's 401, and how to pass one.
    world
        .cli()?
        .args(["sagas", "search"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("401 Unauthorized").and(predicate::str::contains(
                "--api-key or SAGA_TRACKER_API_KEY",
            )),
        );
    // A wrong key is refused too, and is not echoed anywhere.
    let wrong = "st_wrong_0123456789abcdefghij";
    let a = world
        .cli()?
        .args(["sagas", "show", "cli-auth-1", "--api-key", wrong])
        .assert()
        .code(1);
    let out = format!("{}{}", stdout_of(&a), stderr_of(&a));
    assert!(out.contains("401") && !out.contains(wrong), "{out}");

    // The reader key, from the environment or the flag, reads everything the CLI reads.
    world
        .cli()?
        .env("SAGA_TRACKER_API_KEY", &token)
        .args(["sagas", "search"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("cli-auth-1")
                .and(predicate::str::contains(token.as_str()).not()),
        );
    world
        .cli()?
        .args(["sagas", "show", "cli-auth-1", "--api-key", &token])
        .assert()
        .success()
        .stdout(predicate::str::contains("Saga cli-auth-1  COMPLETED"));
    let file = keys.path().join("all.ndjson");
    world
        .cli()?
        .env("SAGA_TRACKER_API_KEY", &token)
        .args(["sagas", "export", "--output"])
        .arg(&file)
        .assert()
        .success()
        .stderr(predicate::str::contains("Exported 1 saga (NDJSON"));
    assert_eq!(
        ids_of(&ndjson(&std::fs::read_to_string(&file)?)?),
        ["cli-auth-1"]
    );
    // The key is a secret in `--help` too: the environment's value is not shown.
    world
        .cli()?
        .env("SAGA_TRACKER_API_KEY", &token)
        .args(["sagas", "search", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("SAGA_TRACKER_API_KEY")
                .and(predicate::str::contains(token.as_str()).not()),
        );

    world.finish().await
}
