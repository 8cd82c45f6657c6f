//! End to end: the operator's `saga-tracker dlq …` and `saga-tracker doctor` commands, run
//! as a person would run them — the built binary as a subprocess, configured by a config file
//! or `TRACKER_*` variables, `--color never` — against a real tansu broker, a real PostgreSQL
//! database and a real tracker process.
//!
//! The poison batch is real: the tracker's database refuses some events (a check, as a
//! trigger raising SQLSTATE 23514, the kind of constraint a DBA adds and later corrects), so
//! the tracker dead-letters them as `db_rejected`; the "fix" is dropping that check. A message
//! that is not JSON stays invalid whatever is fixed, and must come back to the DLQ carrying
//! its provenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context};
use assert_cmd::prelude::OutputAssertExt as _;
use chrono::{SecondsFormat, Utc};
use predicates::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use saga_tracker_tests::{
    free_port, metric_value, migrate, poll_until, python_consume, python_produce, tracker_bin,
    unique_suffix, ConsumedRecord, Tansu, TestDb, TrackerOptions, TrackerProcess,
};
use serde_json::{json, Value};

/// Upper bound for any "eventually" here.
const EVENTUALLY: Duration = Duration::from_secs(60);
/// Upper bound for one CLI run.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes the database refuse any event whose step is `POISON_DB_CHECK` with a check
/// violation, as a constraint would.
const REJECT_TRIGGER: &str = r#"
create function test_reject_poison() returns trigger language plpgsql as $$
begin
    if new.step = 'POISON_DB_CHECK' then
        raise exception 'test check refuses step %', new.step using errcode = '23514';
    end if;
    return new;
end $$;
create trigger test_reject_poison before insert on saga_events
    for each row execute function test_reject_poison();
"#;

/// The fix.
const DROP_TRIGGER: &str = "drop trigger test_reject_poison on saga_events";

/// A broker with the test's topics, a migrated database and a ready tracker.
struct Stack {
    tansu: Tansu,
    db: TestDb,
    tracker: TrackerProcess,
    options: TrackerOptions,
    topic: String,
    dlq_topic: String,
}

impl Stack {
    async fn start(schema: &[&str]) -> anyhow::Result<Self> {
        tracker_bin()?;
        let tansu = Tansu::start().await?;
        let topic = format!("saga.tracker.cli-{}", unique_suffix());
        let dlq_topic = format!("{topic}.dlq");
        tansu.create_topic(&topic, 3).await?;
        tansu.create_topic(&dlq_topic, 1).await?;
        let db = TestDb::create().await?;
        migrate(&db.url()).await.context("saga-tracker migrate")?;
        if !schema.is_empty() {
            let mut conn = db.connect().await?;
            for sql in schema {
                sqlx::raw_sql(sql).execute(&mut conn).await?;
            }
        }
        let mut options = TrackerOptions::new(tansu.brokers(), db.url(), &topic);
        options.dlq_topic = dlq_topic.clone();
        let mut tracker = TrackerProcess::spawn(options.clone())?;
        tracker.wait_ready(EVENTUALLY).await?;
        Ok(Self {
            tansu,
            db,
            tracker,
            options,
            topic,
            dlq_topic,
        })
    }

    /// The tracker's settings as `TRACKER_*` variables, for a CLI process.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("TRACKER_KAFKA__BROKERS", self.tansu.brokers()),
            ("TRACKER_KAFKA__TOPIC", self.topic.clone()),
            ("TRACKER_KAFKA__DLQ_TOPIC", self.dlq_topic.clone()),
            ("TRACKER_KAFKA__GROUP_ID", self.options.group_id.clone()),
            ("TRACKER_DATABASE__URL", self.db.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The same settings as a config file, as an operator would keep them.
    fn config_file(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("tracker.toml");
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = {:?}\ntopic = {:?}\ndlq_topic = {:?}\ngroup_id = {:?}\n\n\
                 [database]\nurl = {:?}\n",
                self.tansu.brokers(),
                self.topic,
                self.dlq_topic,
                self.options.group_id,
                self.db.url()
            ),
        )?;
        Ok(path)
    }

    fn url(&self) -> String {
        self.tracker.base_url().to_string()
    }
}

/// Runs `saga-tracker --color never <args>` with exactly `env` as its `TRACKER_*`
/// configuration (the test's own environment cannot leak settings in), bounded by
/// [`CLI_TIMEOUT`].
async fn cli(env: &[(String, String)], args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = assert_cmd::Command::new(tracker_bin()?);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("TRACKER_") || k.starts_with("SAGA_TRACKER_") || k.starts_with("OTEL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--color", "never"])
        .args(args)
        .timeout(CLI_TIMEOUT);
    tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running saga-tracker")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> anyhow::Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "stdout is not JSON:\n{}\nstderr:\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A v1 event as an emitter writes it.
fn event(saga_id: &str, event_id: &str, step: &str) -> Value {
    json!({
        "schemaVersion": 1,
        "eventId": event_id,
        "sagaId": saga_id,
        "sagaType": "ORDER_CREATION",
        "step": step,
        "stepStatus": "SUCCEEDED",
        "sagaStatus": "IN_PROGRESS",
        "occurredAt": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "service": "order-service",
    })
}

fn record(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value, "headers": { "content-type": "application/json" } })
}

/// The number of messages `topic` holds (sum of high - low over its partitions).
async fn topic_size(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("cli-test-{}", unique_suffix()))
            .create()?;
        let mut total = 0;
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            total += high - low;
        }
        Ok(total)
    })
    .await?
}

/// `outcome` of each replayed message, by `replay.from`.
fn outcomes(report: &Value) -> BTreeMap<String, String> {
    report["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or_default().to_owned(),
                m["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_is_summarised_shown_and_replayed_after_the_fix_and_a_second_replay_changes_nothing(
) -> anyhow::Result<()> {
    let stack = Stack::start(&[REJECT_TRIGGER]).await?;
    let dir = tempfile::tempdir()?;
    let config = stack.config_file(dir.path())?;
    let config = config.to_str().context("temp path is UTF-8")?;
    // Settings come from the file alone here.
    let env: Vec<(String, String)> = Vec::new();
    let run = unique_suffix();

    // The poison batch: three events the database refuses, one message that is not JSON,
    // and one good event.
    let poisoned: Vec<(String, String)> = (0..3)
        .map(|i| (format!("cli-{run}-p{i}"), format!("ev-{run}-p{i}")))
        .collect();
    let good = format!("cli-{run}-ok");
    let bad_key = format!("cli-{run}-bad");
    let mut records: Vec<Value> = poisoned
        .iter()
        .map(|(saga, id)| record(saga, event(saga, id, "POISON_DB_CHECK")))
        .collect();
    records.push(json!({ "key": bad_key, "value": "this is not json {" }));
    records.push(record(
        &good,
        event(&good, &format!("ev-{run}-ok"), "ORDER_PLACED"),
    ));
    python_produce(&stack.tansu.brokers(), &stack.topic, &records).await?;
    let dlq = python_consume(&stack.tansu.brokers(), &stack.dlq_topic, 4, EVENTUALLY).await?;
    ensure!(dlq.len() == 4, "expected 4 dead letters, got {dlq:?}");
    poll_until(EVENTUALLY, "the good event to be stored", || async {
        stack.tracker.get_saga(&good).await?.context("not yet")
    })
    .await?;

    // summary: counts by reason and by original topic/partition.
    let out = cli(&env, &["--config", config, "dlq", "summary", "--json"]).await?;
    out.clone().assert().success();
    let summary = json_of(&out)?;
    assert_eq!(summary["total"], 4, "{summary:#}");
    let by_reason: BTreeMap<String, u64> = summary["byReason"]
        .as_array()
        .context("byReason")?
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or("").to_owned(),
                r["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        by_reason,
        BTreeMap::from([("db_rejected".to_owned(), 3), ("not_json".to_owned(), 1)])
    );
    let origin_total: u64 = summary["byOrigin"]
        .as_array()
        .context("byOrigin")?
        .iter()
        .inspect(|o| assert_eq!(o["topic"], stack.topic.as_str(), "{o}"))
        .map(|o| o["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(origin_total, 4);
    assert!(summary["first"].is_string() && summary["last"].is_string());
    cli(
        &env,
        &["--config", config, "dlq", "summary", "--since", "1h"],
    )
    .await?
    .assert()
    .success()
    .stdout(
        predicate::str::contains("4 message(s) in")
            .and(predicate::str::contains("db_rejected"))
            .and(predicate::str::contains("ORIGINAL TOPIC"))
            .and(predicate::str::contains(stack.topic.as_str())),
    );
    // A range in the future selects nothing, in words.
    cli(
        &env,
        &["--config", config, "dlq", "summary", "--from", "2999-01-01"],
    )
    .await?
    .assert()
    .success()
    .stdout(predicate::str::contains("holds no messages"));

    // show: headers and the decoded view.
    let out = cli(
        &env,
        &[
            "--config",
            config,
            "dlq",
            "show",
            "--reason",
            "db_rejected",
            "--json",
        ],
    )
    .await?;
    out.clone().assert().success();
    let shown = json_of(&out)?;
    let shown = shown.as_array().context("an array")?;
    assert_eq!(shown.len(), 3, "{shown:#?}");
    for m in shown {
        let headers: BTreeMap<&str, &str> = m["headers"]
            .as_array()
            .context("headers")?
            .iter()
            .map(|h| {
                (
                    h["key"].as_str().unwrap_or(""),
                    h["value"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(headers.get("dlq.reason"), Some(&"db_rejected"), "{m:#}");
        assert!(headers["dlq.error"].contains("23514"), "{m:#}");
        assert_eq!(
            headers.get("dlq.original.topic"),
            Some(&stack.topic.as_str())
        );
        assert_eq!(headers.get("content-type"), Some(&"application/json"));
        assert_eq!(m["payload"]["kind"], "json");
        assert_eq!(m["payload"]["value"]["step"], "POISON_DB_CHECK");
        // The contract accepts them: it was the database that refused.
        assert_eq!(m["contractNow"]["verdict"], "valid", "{m:#}");
    }
    cli(
        &env,
        &["--config", config, "dlq", "show", "--key", &bad_key],
    )
    .await?
    .assert()
    .success()
    .stdout(
        predicate::str::contains("dlq.reason: not_json")
            .and(predicate::str::contains("text, not JSON"))
            .and(predicate::str::contains("\"this is not json {\""))
            .and(predicate::str::contains("invalid: not_json")),
    );

    // A dry run lists and predicts, and sends nothing.
    let before = topic_size(&stack.tansu.brokers(), &stack.topic, 3).await?;
    let out = cli(
        &env,
        &["--config", config, "dlq", "replay", "--dry-run", "--json"],
    )
    .await?;
    out.clone().assert().success();
    let dry = json_of(&out)?;
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["totals"]["wouldReplay"], 4, "{dry:#}");
    let not_json_from = dry["messages"]
        .as_array()
        .context("messages")?
        .iter()
        .find(|m| m["reason"] == "not_json")
        .and_then(|m| m["from"].as_str())
        .context("the not_json message in the dry run")?
        .to_owned();
    assert_eq!(
        topic_size(&stack.tansu.brokers(), &stack.topic, 3).await?,
        before
    );
    cli(&env, &["--config", config, "dlq", "replay", "--dry-run"])
        .await?
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Dry run:")
                .and(predicate::str::contains("dead-lettered again (not_json)"))
                .and(predicate::str::contains("nothing was sent")),
        );

    // The fix, then the replay: the three are stored, the not-JSON one comes back.
    let mut conn = stack.db.connect().await?;
    sqlx::raw_sql(DROP_TRIGGER).execute(&mut conn).await?;
    let out = cli(
        &env,
        &[
            "--config", config, "dlq", "replay", "--rate", "50", "--wait", "60s", "--json",
        ],
    )
    .await?;
    out.clone().assert().success();
    let first = json_of(&out)?;
    assert_eq!(first["totals"]["stored"], 3, "{first:#}");
    assert_eq!(first["totals"]["deadLetteredAgain"], 1, "{first:#}");
    assert_eq!(outcomes(&first)[&not_json_from], "deadLetteredAgain");
    for (saga, id) in &poisoned {
        let events = stack.tracker.saga_events(saga).await?;
        assert_eq!(
            events
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            [id.as_str()]
        );
    }
    // The new dead letter says where it came from.
    let dlq = python_consume(&stack.tansu.brokers(), &stack.dlq_topic, 5, EVENTUALLY).await?;
    let again: Vec<&ConsumedRecord> = dlq
        .iter()
        .filter(|r| r.header("replay.from") == Some(not_json_from.as_str()))
        .collect();
    assert_eq!(again.len(), 1, "{dlq:#?}");
    let again = again[0];
    assert_eq!(again.header("dlq.reason"), Some("not_json"));
    assert_eq!(again.header("replay.reason"), Some("not_json"));
    assert_eq!(again.header("replay.run"), first["run"].as_str());
    assert!(again.header("replay.at").is_some());
    assert_eq!(
        again.header("dlq.original.topic"),
        Some(stack.topic.as_str())
    );
    assert_eq!(again.value.as_deref(), Some("this is not json {"));

    // Human output of the same kind of run: the table and the sentence.
    let stored_before: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&mut conn)
        .await?;
    let duplicates_before = stack
        .tracker
        .metric(
            "saga_tracker_events_processed_total",
            &[("result", "duplicate")],
        )
        .await?
        .unwrap_or(0.0);
    let out = cli(
        &env,
        &[
            "--config",
            config,
            "dlq",
            "replay",
            "--reason",
            "db_rejected",
        ],
    )
    .await?;
    out.clone().assert().success().stdout(
        predicate::str::contains("3 duplicate")
            .and(predicate::str::contains("already stored"))
            .and(predicate::str::contains("stored,").not()),
    );
    // The tracker saw the three again and dropped them.
    poll_until(
        EVENTUALLY,
        "the tracker to count three duplicates",
        || async {
            let text = stack.tracker.metrics_text().await?;
            let now = metric_value(
                &text,
                "saga_tracker_events_processed_total",
                &[("result", "duplicate")],
            )
            .unwrap_or(0.0);
            ensure!(
                now >= duplicates_before + 3.0,
                "duplicates {now}, before {duplicates_before}"
            );
            Ok(())
        },
    )
    .await?;
    let stored_after: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(
        stored_after, stored_before,
        "a second replay changed the store"
    );
    for (saga, _) in &poisoned {
        let detail = stack.tracker.get_saga(saga).await?.context("saga")?;
        assert_eq!(detail.summary.event_count, 1);
    }

    // A replay whose messages nobody consumes cannot be confirmed: exit 1, in words.
    drop(conn);
    let Stack {
        mut tracker, db, ..
    } = stack;
    tracker.stop(EVENTUALLY).await?;
    let out = cli(
        &env,
        &[
            "--config",
            config,
            "dlq",
            "replay",
            "--key",
            &format!("cli-{run}-p0"),
            "--wait",
            "2s",
        ],
    )
    .await?;
    // Already stored, so it is a duplicate and needs no confirmation.
    out.assert()
        .success()
        .stdout(predicate::str::contains("1 duplicate"));
    let out = cli(
        &env,
        &[
            "--config", config, "dlq", "replay", "--key", &bad_key, "--wait", "2s",
        ],
    )
    .await?;
    out.assert()
        .failure()
        .stdout(predicate::str::contains("unconfirmed"))
        .stderr(predicate::str::contains(
            "could not be confirmed within 2 s",
        ));
    db.drop_db().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_healthy_setup_and_names_what_is_wrong_otherwise() -> anyhow::Result<()>
{
    let mut stack = Stack::start(&[]).await?;
    let env = stack.env();
    let url = stack.url();

    // Fresh: healthy, with the empty topic said in words.
    let out = cli(&env, &["doctor", "--url", &url]).await?;
    let text = stdout(&out);
    out.assert().success().stdout(
        predicate::str::contains(format!(
            "! events: no events yet: the topic `{}` has 0 messages",
            stack.topic
        ))
        .and(predicate::str::contains("✓ configuration"))
        .and(predicate::str::contains("✓ database: PostgreSQL answers"))
        .and(predicate::str::contains("migrations are applied"))
        .and(predicate::str::contains(format!(
            "✓ topics: `{}` exists with 3 partition(s)",
            stack.topic
        )))
        .and(predicate::str::contains(format!(
            "✓ topics: `{}` exists with 1 partition(s)",
            stack.dlq_topic
        )))
        .and(predicate::str::contains("is ready"))
        .and(predicate::str::contains("access control is off"))
        .and(predicate::str::contains("✗").not()),
    );
    assert!(!text.contains("postgres://postgres:"), "{text}");
    cli(&env, &["dlq", "summary"])
        .await?
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "The dead-letter topic `{}` holds no messages",
            stack.dlq_topic
        )));

    // With events consumed and committed: up to date.
    let run = unique_suffix();
    let records: Vec<Value> = (0..5)
        .map(|i| {
            let saga = format!("doc-{run}-{i}");
            record(
                &saga,
                event(&saga, &format!("ev-{run}-{i}"), "ORDER_PLACED"),
            )
        })
        .collect();
    python_produce(&stack.tansu.brokers(), &stack.topic, &records).await?;
    let last = format!("doc-{run}-4");
    poll_until(
        EVENTUALLY,
        "the doctor to see the group up to date",
        || async {
            ensure!(
                stack.tracker.get_saga(&last).await?.is_some(),
                "not stored yet"
            );
            let out = cli(&env, &["doctor", "--url", &url, "--json"]).await?;
            let report = json_of(&out)?;
            let group = report["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == "consumer group")
                .cloned()
                .unwrap_or_default();
            ensure!(
                group["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("is up to date"),
                "{group}"
            );
            ensure!(
                out.status.success() && report["healthy"] == true,
                "{report:#}"
            );
            Ok(())
        },
    )
    .await?;

    // The tracker stopped while events keep coming: the lag, in words, over --max-lag.
    stack.tracker.stop(EVENTUALLY).await?;
    let later: Vec<Value> = (0..3)
        .map(|i| {
            let saga = format!("doc-{run}-late-{i}");
            record(
                &saga,
                event(&saga, &format!("ev-{run}-late-{i}"), "ORDER_PLACED"),
            )
        })
        .collect();
    python_produce(&stack.tansu.brokers(), &stack.topic, &later).await?;
    cli(&env, &["doctor", "--no-api", "--max-lag", "2"])
        .await?
        .assert()
        .failure()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "✗ consumer group: the group `{}` is 3 messages behind",
            stack.options.group_id
        )));

    // The API down.
    let nobody = format!("http://127.0.0.1:{}", free_port()?);
    cli(&env, &["doctor", "--url", &nobody])
        .await?
        .assert()
        .failure()
        .code(1)
        .stdout(predicate::str::contains(
            "✗ api: cannot reach the tracker at",
        ));

    // A broker that does not exist: fails within seconds, in words.
    let mut wrong = env.clone();
    wrong.retain(|(k, _)| k != "TRACKER_KAFKA__BROKERS");
    wrong.push((
        "TRACKER_KAFKA__BROKERS".into(),
        format!("127.0.0.1:{}", free_port()?),
    ));
    let started = std::time::Instant::now();
    cli(&wrong, &["doctor", "--no-api"])
        .await?
        .assert()
        .failure()
        .code(1)
        .stdout(
            predicate::str::contains("✗ kafka: no Kafka broker of `kafka.brokers`")
                .and(predicate::str::contains("- topics: skipped")),
        );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // A database nobody migrated.
    let bare = TestDb::create().await?;
    let mut unmigrated = env.clone();
    unmigrated.retain(|(k, _)| k != "TRACKER_DATABASE__URL");
    unmigrated.push(("TRACKER_DATABASE__URL".into(), bare.url()));
    let out = cli(&unmigrated, &["doctor", "--no-api", "--json"]).await?;
    let report = json_of(&out)?;
    out.assert().failure().code(1);
    assert_eq!(report["healthy"], false);
    let migrations = report["checks"]
        .as_array()
        .context("checks")?
        .iter()
        .find(|c| c["name"] == "migrations")
        .context("a migrations check")?;
    assert_eq!(migrations["status"], "fail");
    assert!(
        migrations["message"]
            .as_str()
            .unwrap_or("")
            .contains("no migrations applied"),
        "{migrations}"
    );

    // A configuration that does not validate is a failed check, not a crash.
    let mut invalid = env.clone();
    invalid.push(("TRACKER_INGEST__BATCH_SIZE".into(), "lots".into()));
    cli(&invalid, &["doctor", "--no-api"])
        .await?
        .assert()
        .failure()
        .code(1)
        .stdout(
            predicate::str::contains("✗ configuration: invalid configuration")
                .and(predicate::str::contains("BATCH_SIZE"))
                .and(predicate::str::contains("- database: skipped")),
        );

    bare.drop_db().await?;
    let Stack { db, .. } = stack;
    db.drop_db().await?;
    Ok(())
}
