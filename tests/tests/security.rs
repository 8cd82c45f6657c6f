//! Transport security, end to end, against real servers: a tansu broker requiring SASL/SCRAM
//! behind a TLS listener with a certificate from the test's own CA (OpenSSL through socat:
//! tansu 0.6.0 cannot enable its own TLS listener, see [`TansuSecurity`]), the same listener
//! demanding a client certificate (mutual TLS), and a PostgreSQL server of the test's own with
//! `ssl = on` and a role that may log in only over TLS and only with its password.
//!
//! Each test proves both halves: the secured path carries SDK events into the tracker and out
//! of its REST API, and each misconfiguration a person is likely to make — an untrusted CA, a
//! certificate for another host, a wrong password, TLS off — stops the tracker at start-up
//! with a message that says which, while `/readyz` never claims readiness. No secret may
//! appear in any log line.
//!
//! SASL PLAIN is the one mechanism not proven here against a broker: tansu 0.6 offers only
//! SCRAM (a PLAIN handshake gets `NoSharedMechanism`), librdkafka's mock cluster speaks no
//! SASL, and no other Kafka-protocol server can be installed on these machines.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reqwest::StatusCode;
use saga_tracker_sdk::contract::StepStatus;
use saga_tracker_sdk::security::{KafkaSecurity, SaslConfig, SaslMechanism, Secret, TlsConfig};
use saga_tracker_sdk::{SagaTracker, Step, TrackerConfig};
use saga_tracker_tests::pg::PgServer;
use saga_tracker_tests::pki::{write_private, CertFiles, TestCa};
use saga_tracker_tests::{
    free_port, migrate, migrate_with, poll_until, unique_suffix, Scram, Tansu, TansuSecurity,
    TestDb, TlsFront, TrackerOptions, TrackerProcess,
};

const EVENTUALLY: Duration = Duration::from_secs(60);
const ORDER: &str = "ORDER_CREATION";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A broker behind TLS: tansu (with the test's topics and SCRAM users, then restarted with
/// `--authentication` when asked) advertising the port of a [`TlsFront`] that serves
/// `server_cert` and, with `client_ca`, demands a client certificate. tansu's own admin
/// commands speak neither TLS nor SASL, so topics and users are made before it is secured.
struct SecuredBroker {
    // Held for its Drop: the broker lives as long as the test needs it.
    _tansu: Tansu,
    front: TlsFront,
    topic: String,
}

impl SecuredBroker {
    async fn start(
        server_cert: &CertFiles,
        client_ca: Option<&Path>,
        authentication: bool,
        users: &[(&str, &str, Scram)],
    ) -> anyhow::Result<Self> {
        let front_port = free_port()?;
        let mut tansu = Tansu::start_advertising(front_port).await?;
        let topic = format!("saga.tracker.sec-{}", unique_suffix());
        tansu.create_topic(&topic, 2).await?;
        tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
        for (name, password, mechanism) in users {
            tansu.create_scram_user(name, password, *mechanism).await?;
        }
        if authentication {
            tansu
                .restart_secured(TansuSecurity {
                    authentication: true,
                })
                .await?;
        }
        let front = TlsFront::start(front_port, server_cert, client_ca, tansu.port())?;
        Ok(Self {
            _tansu: tansu,
            front,
            topic,
        })
    }

    fn brokers(&self) -> String {
        self.front.brokers()
    }
}

/// Records one two-event saga through `sdk` and waits for the tracker to show it.
async fn saga_round_trip(sdk: &SagaTracker, tracker: &TrackerProcess) -> anyhow::Result<()> {
    let saga_id = format!("sec-{}", unique_suffix());
    for status in [StepStatus::Started, StepStatus::Succeeded] {
        sdk.record(Step::new(&saga_id, ORDER, "ORDER_PLACED", status).with_business_key("8812"))
            .await
            .context("the SDK delivers over the secured connection")?;
    }
    poll_until(
        EVENTUALLY,
        &format!("saga {saga_id} in the API"),
        || async {
            let detail = tracker
                .get_saga(&saga_id)
                .await?
                .with_context(|| format!("saga {saga_id} not stored yet"))?;
            ensure!(
                detail.summary.event_count == 2,
                "saga {saga_id} has {} events so far",
                detail.summary.event_count
            );
            Ok(())
        },
    )
    .await
}

/// Records a saga through `sdk`, checks it arrived, and stops everything cleanly.
async fn finish(sdk: SagaTracker, mut tracker: TrackerProcess, db: TestDb) -> anyhow::Result<()> {
    saga_round_trip(&sdk, &tracker).await?;
    sdk.shutdown(Duration::from_secs(10)).await?;
    tracker.stop(Duration::from_secs(30)).await?;
    db.drop_db().await
}

/// The SDK's TLS settings trusting `ca`, with an optional client certificate.
fn sdk_tls(ca: &TestCa, client: Option<&CertFiles>) -> TlsConfig {
    TlsConfig {
        enabled: true,
        ca_file: Some(ca.ca_file.clone()),
        cert_file: client.map(|c| c.cert.clone()),
        key_file: client.map(|c| c.key.clone()),
        ..TlsConfig::default()
    }
}

/// Spawns a tracker expected to refuse to start: it must exit non-zero within a bounded
/// time, `/readyz` must never answer 200 meanwhile, and its log is returned.
async fn failed_start(options: TrackerOptions) -> anyhow::Result<String> {
    let mut tracker = TrackerProcess::spawn(options)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let url = tracker.url("readyz")?;
    let deadline = Instant::now() + EVENTUALLY;
    let mut answers = Vec::new();
    let status = loop {
        if let Some(status) = tracker.wait_exit(Duration::from_millis(50)).await? {
            break status;
        }
        if let Ok(r) = http.get(url.clone()).send().await {
            answers.push(r.status());
        }
        ensure!(
            Instant::now() < deadline,
            "the tracker kept running with a bad configuration; log:\n{}",
            tracker.log_text()
        );
    };
    let log = tracker.log_text();
    ensure!(
        !status.success(),
        "the tracker exited successfully; log:\n{log}"
    );
    ensure!(
        !answers.contains(&StatusCode::OK),
        "/readyz answered 200 while the broker connection was failing: {answers:?}"
    );
    ensure!(
        answers
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "/readyz answered something other than 503: {answers:?}"
    );
    Ok(log)
}

fn assert_no_secret(log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "a secret ({} chars) appears in the log:\n{log}",
            secret.len()
        );
    }
}

/// TLS only: the tracker and the SDK verify the broker's certificate against the test CA,
/// hostname included, and carry a saga end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_broker_carries_sdk_events_to_a_tracker_that_verifies_it() -> anyhow::Result<()> {
    let ca = TestCa::new("kafka-ca")?;
    let server = ca.server("broker", &["127.0.0.1", "localhost"])?;
    let broker = SecuredBroker::start(&server, None, false, &[]).await?;
    let topic = broker.topic.clone();
    let db = TestDb::create().await?;
    migrate(&db.url()).await?;

    let mut options = TrackerOptions::new(broker.brokers(), db.url(), &topic);
    options.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&ca.ca_file)),
    ]);
    let mut tracker = TrackerProcess::spawn(options)?;
    tracker.wait_ready(EVENTUALLY).await?;
    assert!(
        tracker.log_text().contains("connected to Kafka") && tracker.log_text().contains("ssl, CA"),
        "the start-up log says how it connected:\n{}",
        tracker.log_text()
    );

    let sdk = SagaTracker::new(
        TrackerConfig::new(broker.brokers(), "tls-service")
            .with_topic(&topic)
            .with_tls(sdk_tls(&ca, None)),
    )?;
    finish(sdk, tracker, db).await
}

/// The mistakes a person makes with broker TLS stop the tracker at start-up, each with a
/// message that says it was TLS: a CA that did not sign the broker's certificate, a
/// certificate for another host (hostname verification is on by default), and a plaintext
/// client against a TLS listener. Turning hostname verification off, knowingly, connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_or_misnamed_broker_certificates_fail_start_up_saying_so() -> anyhow::Result<()> {
    let ca = TestCa::new("kafka-ca")?;
    let other_ca = TestCa::new("someone-else")?;
    let misnamed = ca.server("broker-elsewhere", &["kafka.elsewhere.example"])?;
    let broker = SecuredBroker::start(&misnamed, None, false, &[]).await?;
    let db = TestDb::create().await?;
    migrate(&db.url()).await?;
    let base = TrackerOptions::new(broker.brokers(), db.url(), &broker.topic);

    let mut untrusted = base.clone();
    untrusted.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&other_ca.ca_file)),
    ]);
    let log = failed_start(untrusted).await?;
    assert!(
        log.contains("TLS handshake with the Kafka brokers failed")
            && log.contains("kafka.tls.ca_file"),
        "the error names TLS and the setting to check:\n{log}"
    );

    let mut wrong_host = base.clone();
    wrong_host.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&ca.ca_file)),
    ]);
    let log = failed_start(wrong_host).await?;
    assert!(
        log.contains("TLS handshake with the Kafka brokers failed"),
        "a certificate for another host is refused:\n{log}"
    );

    // Plaintext against TLS: the broker hangs up mid-handshake; librdkafka reports a
    // transport failure, which the tracker must still not treat as ready.
    let plaintext = base.clone();
    let log = failed_start(plaintext).await?;
    assert!(
        log.contains("fetching cluster metadata"),
        "a plaintext client says it could not fetch metadata:\n{log}"
    );

    let mut unchecked = base.clone();
    unchecked.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&ca.ca_file)),
        ("TRACKER_KAFKA__TLS__VERIFY_HOSTNAME", "false"),
    ]);
    let mut tracker = TrackerProcess::spawn(unchecked)?;
    tracker.wait_ready(EVENTUALLY).await?;
    assert!(tracker.log_text().contains("hostname NOT verified"));
    tracker.stop(Duration::from_secs(30)).await?;
    db.drop_db().await
}

/// SASL over TLS (`sasl_ssl`), the shape of a managed Kafka: the tracker authenticates with
/// SCRAM-SHA-512 and a password from a file, the SDK with SCRAM-SHA-256 and an inline
/// password; a saga goes through. A wrong password stops a second tracker at start-up with a
/// message naming SASL, and no password appears in any log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_authenticates_and_a_wrong_password_is_refused() -> anyhow::Result<()> {
    let ca = TestCa::new("kafka-ca")?;
    let server = ca.server("broker", &["127.0.0.1"])?;
    let tracker_password = format!("tracker-pw-{}", unique_suffix());
    let service_password = format!("service-pw-{}", unique_suffix());
    let broker = SecuredBroker::start(
        &server,
        None,
        true,
        &[
            ("saga-tracker", &tracker_password, Scram::Sha512),
            ("order-service", &service_password, Scram::Sha256),
        ],
    )
    .await?;
    let topic = broker.topic.clone();
    let db = TestDb::create().await?;
    migrate(&db.url()).await?;
    let password_file = ca.dir().join("tracker.password");
    write_private(&password_file, format!("{tracker_password}\n").as_bytes())?;

    let mut options = TrackerOptions::new(broker.brokers(), db.url(), &topic);
    options.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&ca.ca_file)),
        ("TRACKER_KAFKA__SASL__MECHANISM", "SCRAM-SHA-512"),
        ("TRACKER_KAFKA__SASL__USERNAME", "saga-tracker"),
        (
            "TRACKER_KAFKA__SASL__PASSWORD_FILE",
            &path_str(&password_file),
        ),
    ]);
    let mut tracker = TrackerProcess::spawn(options.clone())?;
    tracker.wait_ready(EVENTUALLY).await?;

    let sdk = SagaTracker::new(
        TrackerConfig::new(broker.brokers(), "order-service")
            .with_topic(&topic)
            .with_tls(sdk_tls(&ca, None))
            .with_sasl(SaslConfig {
                mechanism: Some(SaslMechanism::ScramSha256),
                username: Some("order-service".into()),
                password: Some(Secret::new(service_password.clone())),
                ..SaslConfig::default()
            }),
    )?;
    saga_round_trip(&sdk, &tracker).await?;

    // The dead-letter producer speaks sasl_ssl too: a message that is not an event, sent by a
    // plain librdkafka producer authenticated as the service, must reach the DLQ (the counter
    // moves only after the DLQ acknowledged it).
    let raw: FutureProducer = {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", broker.brokers());
        let security = KafkaSecurity {
            tls: sdk_tls(&ca, None),
            sasl: SaslConfig {
                mechanism: Some(SaslMechanism::ScramSha256),
                username: Some("order-service".into()),
                password: Some(Secret::new(service_password.clone())),
                ..SaslConfig::default()
            },
        };
        for (k, v) in security.properties()? {
            cc.set(k, v.expose());
        }
        cc.create()?
    };
    raw.send(
        FutureRecord::to(&topic)
            .key("not-json")
            .payload("this is not an event"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| anyhow::anyhow!("producing the poison message: {e}"))?;
    poll_until(EVENTUALLY, "the poison message in the DLQ", || async {
        let sent = tracker
            .metric("saga_tracker_dlq_messages_total", &[])
            .await?
            .unwrap_or(0.0);
        ensure!(sent >= 1.0, "no dead letter acknowledged yet");
        Ok(())
    })
    .await?;

    // The SDK with a wrong password cannot deliver (Sync mode reports it).
    let refused = SagaTracker::new(
        TrackerConfig::new(broker.brokers(), "order-service")
            .with_topic(&topic)
            .with_delivery_timeout(Duration::from_secs(5))
            .with_tls(sdk_tls(&ca, None))
            .with_sasl(SaslConfig {
                mechanism: Some(SaslMechanism::ScramSha256),
                username: Some("order-service".into()),
                password: Some(Secret::new("not-the-password")),
                ..SaslConfig::default()
            }),
    )?;
    let outcome = refused
        .record(Step::new(
            "sec-refused",
            ORDER,
            "ORDER_PLACED",
            StepStatus::Started,
        ))
        .await;
    assert!(
        outcome.is_err(),
        "a wrong SDK password must not deliver: {outcome:?}"
    );

    let mut wrong = options.clone();
    wrong.group_id = format!("wrong-{}", unique_suffix());
    wrong.extra_env = env(&[
        ("TRACKER_KAFKA__TLS__ENABLED", "true"),
        ("TRACKER_KAFKA__TLS__CA_FILE", &path_str(&ca.ca_file)),
        ("TRACKER_KAFKA__SASL__MECHANISM", "SCRAM-SHA-512"),
        ("TRACKER_KAFKA__SASL__USERNAME", "saga-tracker"),
        ("TRACKER_KAFKA__SASL__PASSWORD", "hunter2-wrong-password"),
    ]);
    let log = failed_start(wrong).await?;
    assert!(
        log.contains("Kafka SASL authentication failed") && log.contains("kafka.sasl.password"),
        "the error names SASL and the setting to check:\n{log}"
    );
    assert_no_secret(&log, &["hunter2-wrong-password", &tracker_password]);

    sdk.shutdown(Duration::from_secs(10)).await?;
    tracker.stop(Duration::from_secs(30)).await?;
    assert_no_secret(&tracker.log_text(), &[&tracker_password, &service_password]);
    db.drop_db().await
}

/// Mutual TLS: with its client certificate the tracker (and the SDK) get through a listener
/// that requires one; without it, start-up fails naming TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() -> anyhow::Result<()> {
    let ca = TestCa::new("kafka-ca")?;
    let server = ca.server("front", &["127.0.0.1"])?;
    let client = ca.client("saga-tracker")?;
    let broker = SecuredBroker::start(&server, Some(&ca.ca_file), false, &[]).await?;
    let topic = broker.topic.clone();
    let brokers = broker.brokers();

    let db = TestDb::create().await?;
    migrate(&db.url()).await?;
    let mut options = TrackerOptions::new(brokers.clone(), db.url(), &topic);
    let tls_env = [
        ("TRACKER_KAFKA__TLS__ENABLED", "true".to_owned()),
        ("TRACKER_KAFKA__TLS__CA_FILE", path_str(&ca.ca_file)),
    ];
    let mut without = options.clone();
    without.extra_env = tls_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let log = failed_start(without).await?;
    assert!(
        log.contains("TLS handshake with the Kafka brokers failed")
            || log.contains("fetching cluster metadata"),
        "without a client certificate the tracker cannot connect:\n{log}"
    );

    options.extra_env = tls_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    options.extra_env.extend(env(&[
        ("TRACKER_KAFKA__TLS__CERT_FILE", &path_str(&client.cert)),
        ("TRACKER_KAFKA__TLS__KEY_FILE", &path_str(&client.key)),
    ]));
    let mut tracker = TrackerProcess::spawn(options)?;
    tracker.wait_ready(EVENTUALLY).await?;
    let sdk_client = ca.client("order-service")?;
    let sdk = SagaTracker::new(
        TrackerConfig::new(brokers, "order-service")
            .with_topic(&topic)
            .with_tls(sdk_tls(&ca, Some(&sdk_client))),
    )?;
    finish(sdk, tracker, db).await
}

/// The PostgreSQL settings for the test server: verify-full against the test CA, the role's
/// password from a file.
fn db_env(
    pg: &PgServer,
    host: &str,
    mode: &str,
    root: &Path,
    password_file: &Path,
) -> Vec<(String, String)> {
    env(&[
        ("TRACKER_DATABASE__URL", &pg.url(host)),
        ("TRACKER_DATABASE__SSL_MODE", mode),
        ("TRACKER_DATABASE__SSL_ROOT_CERT", &path_str(root)),
        ("TRACKER_DATABASE__PASSWORD_FILE", &path_str(password_file)),
    ])
}

/// PostgreSQL with `hostssl … scram-sha-256` only: the tracker migrates and runs with
/// `verify-full`, a root certificate and a password file; ingest and the API both work; the
/// password never reaches a log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls_with_a_password_only_role() -> anyhow::Result<()> {
    let ca = TestCa::new("db-ca")?;
    let cert = ca.server("postgres", &["127.0.0.1", "localhost"])?;
    let pg = PgServer::start(&cert)?;
    let password_file = ca.dir().join("db.password");
    write_private(&password_file, format!("{}\n", pg.password).as_bytes())?;
    let db = db_env(&pg, "127.0.0.1", "verify-full", &ca.ca_file, &password_file);
    let out = migrate_with(&db).await?;
    assert_no_secret(&out, &[&pg.password]);

    let tansu = Tansu::start().await?;
    let topic = format!("saga.tracker.pgtls-{}", unique_suffix());
    tansu.create_topic(&topic, 1).await?;
    tansu.create_topic(&format!("{topic}.dlq"), 1).await?;
    let mut options = TrackerOptions::new(tansu.brokers(), pg.url("127.0.0.1"), &topic);
    options.extra_env = db;
    let mut tracker = TrackerProcess::spawn(options)?;
    tracker.wait_ready(EVENTUALLY).await?;
    let sdk = SagaTracker::new(TrackerConfig::new(tansu.brokers(), "db-tls").with_topic(&topic))?;
    saga_round_trip(&sdk, &tracker).await?;

    // Every connection the tracker holds is TLS, as the server itself reports.
    let plain = pg.query_one(
        "postgres",
        "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) \
         where a.usename = 'tracker' and not s.ssl",
    )?;
    let encrypted = pg.query_one(
        "postgres",
        "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) \
         where a.usename = 'tracker' and s.ssl",
    )?;
    assert_eq!(plain, "0", "no plaintext connection");
    assert_ne!(encrypted, "0", "the tracker's connections are TLS");

    sdk.shutdown(Duration::from_secs(10)).await?;
    tracker.stop(Duration::from_secs(30)).await?;
    assert_no_secret(&tracker.log_text(), &[&pg.password]);
    Ok(())
}

/// What goes wrong with PostgreSQL TLS and passwords fails at once, saying what: a
/// certificate that does not name the host (`verify-full`), a CA that did not sign it
/// (`verify-ca`), a wrong password, and TLS turned off against a `hostssl`-only server. The
/// weaker modes behave as PostgreSQL documents them: `verify-ca` ignores the host name and
/// `require` checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_and_password_mistakes_fail_with_a_clear_error() -> anyhow::Result<()> {
    let ca = TestCa::new("db-ca")?;
    let other_ca = TestCa::new("not-the-db-ca")?;
    // Issued for another name: 127.0.0.1 is not on it.
    let cert = ca.server("postgres", &["db.elsewhere.example"])?;
    let pg = PgServer::start(&cert)?;
    let password_file = ca.dir().join("db.password");
    write_private(&password_file, pg.password.as_bytes())?;
    let wrong_password_file = ca.dir().join("wrong.password");
    write_private(&wrong_password_file, b"not-the-password")?;

    let run = |env: Vec<(String, String)>| async move {
        let out = saga_tracker_tests::run_tracker_command("migrate", &env).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok((out.status.success(), text))
    };

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "verify-full",
        &ca.ca_file,
        &password_file,
    ))
    .await?;
    assert!(!ok && text.contains("TLS to PostgreSQL failed"), "{text}");
    assert!(
        text.contains("verify-full"),
        "the message names the mode: {text}"
    );

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "verify-ca",
        &other_ca.ca_file,
        &password_file,
    ))
    .await?;
    assert!(!ok && text.contains("TLS to PostgreSQL failed"), "{text}");

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "verify-ca",
        &ca.ca_file,
        &password_file,
    ))
    .await?;
    assert!(ok, "verify-ca does not check the host name: {text}");

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "require",
        &other_ca.ca_file,
        &password_file,
    ))
    .await?;
    assert!(
        ok,
        "require encrypts without checking the certificate: {text}"
    );

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "verify-ca",
        &ca.ca_file,
        &wrong_password_file,
    ))
    .await?;
    assert!(
        !ok && text.contains("PostgreSQL refused the login") && text.contains("28P01"),
        "{text}"
    );
    assert_no_secret(&text, &["not-the-password", &pg.password]);

    let (ok, text) = run(db_env(
        &pg,
        "127.0.0.1",
        "disable",
        &ca.ca_file,
        &password_file,
    ))
    .await?;
    assert!(
        !ok && text.contains("PostgreSQL refused the login"),
        "plaintext is rejected by pg_hba.conf: {text}"
    );

    // The same check guards `run`: a tracker with a certificate mismatch never becomes ready.
    let tansu = Tansu::start().await?;
    let topic = format!("saga.tracker.pgbad-{}", unique_suffix());
    tansu.create_topic(&topic, 1).await?;
    let mut options = TrackerOptions::new(tansu.brokers(), pg.url("127.0.0.1"), &topic);
    options.extra_env = db_env(&pg, "127.0.0.1", "verify-full", &ca.ca_file, &password_file);
    let mut tracker = TrackerProcess::spawn(options)?;
    let status = tracker
        .wait_exit(EVENTUALLY)
        .await?
        .context("a tracker whose database certificate does not match must exit")?;
    assert!(!status.success());
    let log = tracker.log_text();
    assert!(log.contains("TLS to PostgreSQL failed"), "{log}");
    assert_no_secret(&log, &[&pg.password]);
    Ok(())
}
