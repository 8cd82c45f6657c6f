//! `saga-tracker doctor`: checks configuration, database, Kafka and the API, and says what
//! is wrong in words. Exits non-zero when anything is.
//!
//! Each check is one line — `✓` passed, `!` a warning (worth knowing, not a fault: an empty
//! topic on a fresh install), `✗` failed, `-` skipped because something it needs failed —
//! and each is bounded by `--check-timeout`, so a broker or a database that does not answer
//! makes doctor fail in seconds instead of hanging. `--json` prints the same for scripts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::ApiClient;
use super::kafka::{committed, humanize, Cluster, MetadataClient, TopicSize};
use super::{ApiArgs, Output};
use crate::api::admin::redact_url;
use crate::config::{KafkaSettings, Settings};
use crate::store;

const DOCTOR_HELP: &str = "\
Examples:
  saga-tracker doctor
  saga-tracker --config /etc/saga-tracker/config.toml doctor --url http://tracker:8080
  SAGA_TRACKER_API_KEY=... saga-tracker doctor --json | jq '.checks[] | select(.status == \"fail\")'
  saga-tracker doctor --no-api     # before the tracker is started

Checks, in order: the configuration loads and validates; PostgreSQL answers (TLS as
configured); every migration of this binary is applied; the Kafka brokers answer; the main
and dead-letter topics exist; the main topic holds events; the consumer group's lag; the
dead-letter topic's size; the API's /readyz and, with an API key, /api/v1/whoami.
Exit status: 0 when nothing failed (warnings allowed), 1 otherwise.";

#[derive(Debug, clap::Args)]
#[command(after_help = DOCTOR_HELP)]
pub struct DoctorArgs {
    /// Print the checks as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Fail when the consumer group is more than this many messages behind.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_lag: i64,
    /// Seconds each check may take.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub check_timeout: u64,
    /// Do not check the API (e.g. before the tracker is started).
    #[arg(long)]
    pub no_api: bool,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One check's line.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
}

#[derive(Debug, Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, name: &'static str, status: Status, message: impl Into<String>) {
        self.0.push(Check {
            name,
            status,
            message: message.into(),
        });
    }
    fn pass(&mut self, name: &'static str, message: impl Into<String>) {
        self.push(name, Status::Pass, message);
    }
    fn warn(&mut self, name: &'static str, message: impl Into<String>) {
        self.push(name, Status::Warn, message);
    }
    fn fail(&mut self, name: &'static str, message: impl Into<String>) {
        self.push(name, Status::Fail, message);
    }
    fn skip(&mut self, name: &'static str, message: impl Into<String>) {
        self.push(name, Status::Skip, message);
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    healthy: bool,
    checks: &'a [Check],
}

/// Returns whether every check passed (the caller turns `false` into exit code 1).
pub async fn run(
    args: DoctorArgs,
    config: Option<&Path>,
    api: ApiArgs,
    out: Output,
) -> anyhow::Result<bool> {
    let timeout = Duration::from_secs(args.check_timeout.max(1));
    let mut checks = Checks::default();
    let settings = configuration(config, &mut checks);
    match &settings {
        Some(s) => {
            database(s, timeout, &mut checks).await;
            kafka(&s.kafka, timeout, args.max_lag, &mut checks).await;
        }
        None => {
            for name in ["database", "kafka"] {
                checks.skip(name, "skipped: the configuration does not load");
            }
        }
    }
    if !args.no_api {
        api_checks(&api, timeout, &mut checks).await;
    }
    let healthy = !checks.0.iter().any(|c| c.status == Status::Fail);
    if args.json {
        let report = Report {
            healthy,
            checks: &checks.0,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&checks.0, healthy, &out);
    }
    Ok(healthy)
}

fn print(checks: &[Check], healthy: bool, out: &Output) {
    for c in checks {
        let mark = match c.status {
            Status::Pass => out.green("✓"),
            Status::Warn => out.yellow("!"),
            Status::Fail => out.red("✗"),
            Status::Skip => out.dim("-"),
        };
        println!("{mark} {}: {}", out.bold(c.name), c.message);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    println!();
    match (healthy, warned) {
        (true, 0) => println!("{}", out.green("All checks passed.")),
        (true, w) => println!("{} ({w} warning(s)).", out.green("No problems found")),
        (false, w) => println!(
            "{} {failed} problem(s){}.",
            out.red("Found"),
            if w > 0 {
                format!(", {w} warning(s)")
            } else {
                String::new()
            }
        ),
    }
}

fn configuration(config: Option<&Path>, checks: &mut Checks) -> Option<Settings> {
    let vars = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("TRACKER_") && k.contains("__")
        })
        .count();
    let from = match config {
        Some(p) => format!("{} over the built-in defaults", p.display()),
        None => "the built-in defaults".to_owned(),
    };
    match Settings::load(config) {
        Ok(s) => {
            checks.pass(
                "configuration",
                format!("loads and validates ({from}, {vars} TRACKER_* variable(s))"),
            );
            let ignored = Settings::ignored_env_vars();
            if !ignored.is_empty() {
                checks.warn(
                    "configuration",
                    format!(
                        "ignoring {} (settings are TRACKER_<SECTION>__<KEY>, e.g. TRACKER_KAFKA__BROKERS)",
                        ignored.join(", ")
                    ),
                );
            }
            Some(s)
        }
        Err(e) => {
            checks.fail("configuration", format!("{e:#} ({from})"));
            None
        }
    }
}

async fn database(s: &Settings, timeout: Duration, checks: &mut Checks) {
    let db = &s.database;
    let url = {
        use secrecy::ExposeSecret as _;
        redact_url(db.url.expose_secret())
    };
    let tls = db.ssl_mode.map_or_else(
        || "TLS per the URL's sslmode".to_owned(),
        |m| format!("ssl_mode {}", m.as_str()),
    );
    match tokio::time::timeout(timeout, store::check_connection(db)).await {
        Err(_) => {
            checks.fail(
                "database",
                format!(
                    "PostgreSQL at {url} did not answer within {} s",
                    timeout.as_secs()
                ),
            );
            checks.skip("migrations", "skipped: the database is not reachable");
            return;
        }
        Ok(Err(e)) => {
            checks.fail("database", format!("{e:#}"));
            checks.skip("migrations", "skipped: the database is not reachable");
            return;
        }
        Ok(Ok(store::ConnectCheck::Unreachable(why))) => {
            checks.fail(
                "database",
                format!("cannot reach PostgreSQL at {url}: {why}"),
            );
            checks.skip("migrations", "skipped: the database is not reachable");
            return;
        }
        Ok(Ok(store::ConnectCheck::Ok)) => {
            checks.pass("database", format!("PostgreSQL answers at {url} ({tls})"));
        }
    }
    let status = async {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut conn = store::connect_options(db)?.connect().await?;
        let status = store::migration_status(&mut conn).await?;
        let _ = conn.close().await;
        anyhow::Ok(status)
    };
    match tokio::time::timeout(timeout, status).await {
        Err(_) => checks.fail(
            "migrations",
            format!(
                "reading `_sqlx_migrations` took over {} s",
                timeout.as_secs()
            ),
        ),
        Ok(Err(e)) => checks.fail("migrations", format!("cannot read the migrations: {e:#}")),
        Ok(Ok(m)) => migrations(&m, checks),
    }
}

fn list(items: &[(i64, String)]) -> String {
    items
        .iter()
        .map(|(v, d)| format!("{v} {d}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn migrations(m: &store::MigrationStatus, checks: &mut Checks) {
    let total = m.applied + m.pending.len() + m.failed.len() + m.changed.len();
    if !m.table_exists {
        checks.fail(
            "migrations",
            format!(
                "the database has no migrations applied (none of {total}): run `saga-tracker migrate`"
            ),
        );
        return;
    }
    let mut bad = false;
    if !m.pending.is_empty() {
        bad = true;
        checks.fail(
            "migrations",
            format!(
                "{} of {total} migration(s) not applied: {}; run `saga-tracker migrate`",
                m.pending.len(),
                list(&m.pending)
            ),
        );
    }
    if !m.failed.is_empty() {
        bad = true;
        checks.fail(
            "migrations",
            format!(
                "migration(s) {} failed part-way (`success = false` in `_sqlx_migrations`): \
                 repair the schema by hand, delete that row, and run `saga-tracker migrate`",
                list(&m.failed)
            ),
        );
    }
    if !m.changed.is_empty() {
        bad = true;
        checks.fail(
            "migrations",
            format!(
                "migration(s) {} differ from the ones applied (edited after being applied?)",
                list(&m.changed)
            ),
        );
    }
    if !m.unknown.is_empty() {
        checks.warn(
            "migrations",
            format!(
                "the database has migration(s) this binary does not know: {} (migrated by a \
                 newer tracker?)",
                list(&m.unknown)
            ),
        );
    }
    if !bad {
        checks.pass("migrations", format!("all {total} migrations are applied"));
    }
}

/// What the Kafka checks learnt, gathered on a blocking thread.
#[derive(Debug)]
struct KafkaFacts {
    cluster: Cluster,
    /// Messages held and watermarks, per topic that exists.
    sizes: BTreeMap<String, TopicSize>,
    /// The group's commits on the main topic, or why they could not be read.
    committed: Option<Result<BTreeMap<i32, i64>, String>>,
}

fn gather(kafka: &KafkaSettings, timeout: Duration) -> anyhow::Result<KafkaFacts> {
    let meta = MetadataClient::new(kafka)?;
    let cluster = meta.cluster(timeout)?;
    let mut sizes = BTreeMap::new();
    for topic in [&kafka.topic, &kafka.dlq_topic] {
        if let Some(parts) = cluster.partitions(topic) {
            sizes.insert(topic.clone(), meta.topic_size(topic, parts)?);
        }
    }
    let committed = cluster.partitions(&kafka.topic).map(|parts| {
        committed(kafka, &kafka.group_id, &kafka.topic, parts, timeout)
            .map_err(|e| format!("{e:#}"))
    });
    Ok(KafkaFacts {
        cluster,
        sizes,
        committed,
    })
}

async fn kafka(kafka: &KafkaSettings, timeout: Duration, max_lag: i64, checks: &mut Checks) {
    let names = ["topics", "events", "consumer group", "dead-letter topic"];
    let facts = {
        let kafka = kafka.clone();
        // Metadata, watermarks and the group lookup each have their own deadline; this one
        // bounds them together.
        let task = tokio::task::spawn_blocking(move || gather(&kafka, timeout));
        tokio::time::timeout(timeout * 3, task).await
    };
    let facts = match facts {
        Ok(Ok(Ok(f))) => f,
        Ok(Ok(Err(e))) => {
            checks.fail("kafka", format!("{e:#}"));
            for n in names {
                checks.skip(n, "skipped: Kafka is not reachable");
            }
            return;
        }
        Ok(Err(e)) => {
            checks.fail("kafka", format!("the Kafka check failed: {e}"));
            return;
        }
        Err(_) => {
            checks.fail(
                "kafka",
                format!(
                    "the brokers at {} did not answer within {} s",
                    kafka.brokers,
                    (timeout * 3).as_secs()
                ),
            );
            for n in names {
                checks.skip(n, "skipped: Kafka is not reachable");
            }
            return;
        }
    };
    checks.pass(
        "kafka",
        format!(
            "{} broker(s) answer at {} ({})",
            facts.cluster.brokers,
            kafka.brokers,
            kafka.security().describe()
        ),
    );
    for topic in [&kafka.topic, &kafka.dlq_topic] {
        match facts.cluster.partitions(topic) {
            Some(p) => checks.pass(
                "topics",
                format!("`{topic}` exists with {} partition(s)", p.len()),
            ),
            None if kafka.create_topics => checks.warn(
                "topics",
                format!(
                    "the topic `{topic}` does not exist yet: the tracker creates it when it starts \
                     (`kafka.create_topics` is on, {} partitions)",
                    kafka.create_partitions
                ),
            ),
            None => checks.fail(
                "topics",
                format!(
                    "the topic `{topic}` does not exist: create it (e.g. `kafka-topics.sh \
                     --bootstrap-server {} --create --topic {topic} --partitions {}`) or set \
                     `kafka.create_topics = true` (TRACKER_KAFKA__CREATE_TOPICS=true) to let the \
                     tracker create it",
                    kafka.brokers, kafka.create_partitions
                ),
            ),
        }
    }
    match facts.sizes.get(&kafka.topic).map(|s| s.messages) {
        None => checks.skip(
            "events",
            format!("skipped: `{}` does not exist", kafka.topic),
        ),
        Some(0) => checks.warn(
            "events",
            format!("no events yet: the topic `{}` has 0 messages", kafka.topic),
        ),
        Some(n) => checks.pass(
            "events",
            format!(
                "the topic `{}` holds {} message(s)",
                kafka.topic,
                humanize(n)
            ),
        ),
    }
    group(kafka, &facts, max_lag, checks);
    match facts.sizes.get(&kafka.dlq_topic).map(|s| s.messages) {
        None => checks.skip(
            "dead-letter topic",
            format!("skipped: `{}` does not exist", kafka.dlq_topic),
        ),
        Some(0) => checks.pass(
            "dead-letter topic",
            format!("`{}` is empty", kafka.dlq_topic),
        ),
        Some(n) => checks.warn(
            "dead-letter topic",
            format!(
                "`{}` holds {} message(s): see `saga-tracker dlq summary`",
                kafka.dlq_topic,
                humanize(n)
            ),
        ),
    }
}

fn group(kafka: &KafkaSettings, facts: &KafkaFacts, max_lag: i64, checks: &mut Checks) {
    let g = &kafka.group_id;
    let (
        Some(committed),
        Some(TopicSize {
            messages: total,
            watermarks: marks,
        }),
    ) = (&facts.committed, facts.sizes.get(&kafka.topic))
    else {
        checks.skip(
            "consumer group",
            format!("skipped: `{}` does not exist", kafka.topic),
        );
        return;
    };
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            checks.fail(
                "consumer group",
                format!("cannot read the offsets of `{g}`: {e}"),
            );
            return;
        }
    };
    if committed.is_empty() {
        if *total == 0 {
            checks.pass(
                "consumer group",
                format!("the group `{g}` has nothing to consume yet"),
            );
        } else {
            checks.warn(
                "consumer group",
                format!(
                    "the group `{g}` has not committed any offset on `{}` yet: {} message(s) \
                     wait (is a tracker running? it commits about every second while it consumes)",
                    kafka.topic,
                    humanize(*total)
                ),
            );
        }
        return;
    }
    let mut behind: Vec<(i32, i64)> = marks
        .iter()
        .map(|(&p, &(low, high))| {
            let from = committed.get(&p).copied().unwrap_or(low).max(low);
            (p, (high - from).max(0))
        })
        .collect();
    let lag: i64 = behind.iter().map(|(_, l)| l).sum();
    behind.sort_by_key(|b| std::cmp::Reverse(b.1));
    let worst: Vec<String> = behind
        .iter()
        .filter(|(_, l)| *l > 0)
        .take(3)
        .map(|(p, l)| format!("partition {p}: {}", humanize(*l)))
        .collect();
    if lag == 0 {
        checks.pass(
            "consumer group",
            format!("the group `{g}` is up to date (lag 0)"),
        );
    } else if lag <= max_lag {
        checks.pass(
            "consumer group",
            format!("the group `{g}` is {} message(s) behind", humanize(lag)),
        );
    } else {
        checks.fail(
            "consumer group",
            format!(
                "the group `{g}` is {} messages behind ({}; limit --max-lag {})",
                humanize(lag),
                worst.join(", "),
                humanize(max_lag)
            ),
        );
    }
}

#[derive(Debug, Deserialize)]
struct Readiness {
    status: String,
    checks: BTreeMap<String, ReadinessCheck>,
}

#[derive(Debug, Deserialize)]
struct ReadinessCheck {
    status: String,
    detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Caller {
    name: String,
    role: Option<String>,
    method: Option<String>,
}

async fn api_checks(api: &ApiArgs, timeout: Duration, checks: &mut Checks) {
    let client = match ApiClient::new(api) {
        Ok(c) => c,
        Err(e) => {
            checks.fail("api", format!("{e:#}"));
            return;
        }
    };
    let base = client.base().to_string();
    let readyz = tokio::time::timeout(timeout, client.get("readyz")).await;
    let resp = match readyz {
        Err(_) => {
            checks.fail(
                "api",
                format!(
                    "the tracker at {base} did not answer /readyz within {} s",
                    timeout.as_secs()
                ),
            );
            checks.skip("api key", "skipped: the API is not reachable");
            return;
        }
        Ok(Err(e)) => {
            checks.fail(
                "api",
                format!("{e:#} (is it running? --url or SAGA_TRACKER_URL)"),
            );
            checks.skip("api key", "skipped: the API is not reachable");
            return;
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let body: Option<Readiness> = resp.json().await.ok();
    match (status.as_u16(), body) {
        (200, _) => checks.pass("api", format!("the tracker at {base} is ready")),
        (404, _) => checks.warn(
            "api",
            format!(
                "{base} has no /readyz: is it the tracker? (with `http.ops_addr` set, the probes \
                 are served on that address)"
            ),
        ),
        (503, Some(r)) => {
            let why: Vec<String> = r
                .checks
                .iter()
                .filter(|(_, c)| c.status != "ok")
                .map(|(name, c)| format!("{name}: {}", c.detail.as_deref().unwrap_or(&c.status)))
                .collect();
            checks.fail(
                "api",
                format!("the tracker at {base} is {}: {}", r.status, why.join("; ")),
            );
        }
        (code, _) => checks.fail(
            "api",
            format!("the tracker at {base} answered {code} to /readyz"),
        ),
    }
    let whoami = tokio::time::timeout(timeout, client.get("api/v1/whoami")).await;
    let with_key = api.api_key.is_some();
    match whoami {
        Err(_) => checks.fail(
            "api key",
            format!("/api/v1/whoami took over {} s", timeout.as_secs()),
        ),
        Ok(Err(e)) => checks.fail("api key", format!("{e:#}")),
        Ok(Ok(r)) => match r.status().as_u16() {
            200 => match r.json::<Caller>().await {
                Ok(c) if c.method.as_deref() == Some("anonymous") => {
                    checks.pass("api key", "access control is off: the API needs no key")
                }
                Ok(c) => checks.pass(
                    "api key",
                    format!(
                        "the API key is accepted as `{}` ({})",
                        c.name,
                        c.role.as_deref().unwrap_or("no role")
                    ),
                ),
                Err(e) => checks.fail(
                    "api key",
                    format!("/api/v1/whoami answered unexpected JSON: {e}"),
                ),
            },
            401 if with_key => checks.fail(
                "api key",
                "the API key is refused (401): check --api-key / SAGA_TRACKER_API_KEY against \
                 `auth.api_keys`",
            ),
            401 => checks.warn(
                "api key",
                "access control is on and no API key was given (--api-key or \
                 SAGA_TRACKER_API_KEY): not checked",
            ),
            code => checks.fail("api key", format!("/api/v1/whoami answered {code}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_said_in_humanised_numbers_and_fails_over_the_limit() {
        let kafka = crate::config::Settings::load(None)
            .expect("defaults load")
            .kafka;
        let size = TopicSize {
            messages: 2_100_000,
            watermarks: BTreeMap::from([(0, (0, 1_200_000)), (1, (0, 900_000)), (2, (0, 0))]),
        };
        let facts = |committed: BTreeMap<i32, i64>| KafkaFacts {
            cluster: Cluster::default(),
            sizes: BTreeMap::from([(kafka.topic.clone(), size.clone())]),
            committed: Some(Ok(committed)),
        };
        let mut checks = Checks::default();
        group(
            &kafka,
            &facts(BTreeMap::from([(0, 0), (1, 0)])),
            10_000,
            &mut checks,
        );
        assert_eq!(checks.0[0].status, Status::Fail);
        assert_eq!(
            checks.0[0].message,
            format!(
                "the group `{}` is 2.1M messages behind (partition 0: 1.2M, partition 1: \
                 900.0k; limit --max-lag 10.0k)",
                kafka.group_id
            )
        );
        let mut checks = Checks::default();
        group(
            &kafka,
            &facts(BTreeMap::from([(0, 1_200_000), (1, 900_000)])),
            10_000,
            &mut checks,
        );
        assert_eq!(checks.0[0].status, Status::Pass);
        assert!(checks.0[0].message.ends_with("is up to date (lag 0)"));
        let mut checks = Checks::default();
        group(&kafka, &facts(BTreeMap::new()), 10_000, &mut checks);
        assert_eq!(checks.0[0].status, Status::Warn);
        assert!(
            checks.0[0].message.contains("has not committed any offset"),
            "{}",
            checks.0[0].message
        );
    }

    #[test]
    fn migration_states_read_as_sentences() {
        let mut checks = Checks::default();
        migrations(
            &store::MigrationStatus {
                table_exists: true,
                applied: 3,
                pending: vec![(20261202000001, "failed step index".into())],
                ..Default::default()
            },
            &mut checks,
        );
        assert_eq!(checks.0.len(), 1);
        assert_eq!(checks.0[0].status, Status::Fail);
        assert!(
            checks.0[0].message.contains("1 of 4 migration(s) not applied: 20261202000001 failed step index; run `saga-tracker migrate`"),
            "{}",
            checks.0[0].message
        );
        let mut checks = Checks::default();
        migrations(
            &store::MigrationStatus {
                table_exists: true,
                applied: 4,
                unknown: vec![(20270101000001, "future".into())],
                ..Default::default()
            },
            &mut checks,
        );
        let statuses: Vec<Status> = checks.0.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [Status::Warn, Status::Pass]);
    }
}
