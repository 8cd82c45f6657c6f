//! End-to-end harness: real processes, real broker, real database, driven from the outside.
//!
//! The end-to-end tests exercise the whole path a user relies on — SDK → Kafka → the
//! `saga-tracker` binary → PostgreSQL → REST and `/metrics` — with nothing mocked. This crate
//! gives them the pieces, each owning exactly one external resource and cleaning it up:
//!
//! - [`TestDb`] — a uniquely named database on the real PostgreSQL server
//!   (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432`).
//! - [`Tansu`] — a `tansu` broker process on a free loopback port with its SQLite file in a
//!   temporary directory; creates topics; kills its own child (by PID) on drop.
//! - [`TrackerProcess`] — the tracker binary (`SAGA_TRACKER_BIN`, default
//!   `<workspace>/target/debug/saga-tracker`) spawned with `TRACKER_*` environment
//!   configuration on a free HTTP port, its log captured to a file; typed REST helpers; a
//!   graceful SIGTERM stop that reports the exit status.
//! - [`PgProxy`] — a TCP forwarder to the PostgreSQL server that a test can cut, to make
//!   one tracker's database unreachable without touching the server other tests share.
//! - [`schema_registry::SchemaRegistryStandIn`] — a Confluent Schema Registry stand-in
//!   (`GET /schemas/ids/{id}`, basic auth, switchable 503s) for the Avro tests.
//! - [`poll_until`] — the one bounded polling loop every "eventually" assertion goes through.
//! - [`metric_value`] — reads one series (or the sum of several) from Prometheus text.
//!
//! Nothing here skips silently: a missing binary, broker or database is an error that says
//! how to get it. Logs of every process go to `<workspace>/target/test-logs/`, and the tail
//! of each is printed when a test panics, so a CI failure explains itself.

pub mod otel;
pub mod pg;
pub mod pki;
pub mod replica;
pub mod schema_registry;

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use chrono::{DateTime, Utc};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use sqlx::{Connection, PgConnection};

/// The tansu version the scripts build (`scripts/ensure-tansu.sh`).
pub const TANSU_VERSION: &str = "0.6.0";

/// Upper bound for one process to come up (broker listening, tracker ready).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where process logs go: kept after the test so a failure can be read afterwards.
fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("target").join("test-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A short random suffix for names that must not collide between tests or runs.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The tracker binary: `SAGA_TRACKER_BIN`, else `<workspace>/target/debug/saga-tracker`.
///
/// Fails (never skips) when it is missing, saying how to build it.
pub fn tracker_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("SAGA_TRACKER_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root()
            .join("target")
            .join("debug")
            .join("saga-tracker"),
    };
    ensure!(
        path.is_file(),
        "the tracker binary {} does not exist: build it with `cargo build -p saga-tracker` \
         (scripts/test.sh does) or point SAGA_TRACKER_BIN at it",
        path.display()
    );
    Ok(path)
}

/// The broker binary: `TANSU_BIN`, else the build cached by `scripts/ensure-tansu.sh`.
pub fn tansu_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("TANSU_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home)
                .join(".cache/saga-tracker")
                .join(format!("tansu-{TANSU_VERSION}"))
                .join("bin/tansu")
        }
    };
    ensure!(
        path.is_file(),
        "the tansu broker {} does not exist: run scripts/ensure-tansu.sh (builds it once) or \
         point TANSU_BIN at a tansu {TANSU_VERSION} binary",
        path.display()
    );
    Ok(path)
}

/// A loopback port nothing listens on right now.
///
/// The port is released before the caller binds it, so another process could take it in
/// between; callers that start a server retry on a bind failure.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Calls `f` every 200 ms until it returns `Ok`, for at most `timeout`.
///
/// On time-out the error names `what` and carries the last failure, so an assertion inside
/// `f` (`ensure!`, `bail!`) explains what was still wrong when the test gave up.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "timed out after {:.0?} waiting for {what}",
                    timeout
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends SIGTERM to a child we spawned.
fn terminate(child: &Child) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("sending SIGTERM to pid {}", child.id()))
}

/// Waits (bounded) for a child to exit, without blocking the async runtime.
async fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills a child (SIGKILL) and reaps it. For `Drop`: never fails, never blocks for long.
fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A log file both stdout and stderr of a child write to.
fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let err = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// A fresh, uniquely named database on the real PostgreSQL server.
///
/// Each test gets its own, so tests run in parallel and never see each other's sagas. The
/// database is dropped by [`TestDb::drop_db`]; one left behind by a failed test is harmless
/// (`saga_tracker_test_*`) and shows what the tracker wrote.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: Url,
    admin_url: Url,
}

impl TestDb {
    /// The server: `TEST_DATABASE_URL` (a database name in it is ignored) or the local default.
    pub fn server_url() -> anyhow::Result<Url> {
        let raw = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned());
        Url::parse(&raw).with_context(|| format!("TEST_DATABASE_URL is not a URL: {raw}"))
    }

    /// A unique `saga_tracker_test_<random>` that does not exist yet, for code under test
    /// that creates its own database; [`TestDb::drop_db`] removes it afterwards.
    pub fn not_created() -> anyhow::Result<Self> {
        let server = Self::server_url()?;
        let mut admin_url = server.clone();
        admin_url.set_path("/postgres");
        let name = format!("saga_tracker_test_{}", unique_suffix());
        let mut url = server;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }

    /// Creates `saga_tracker_test_<random>` and returns it.
    pub async fn create() -> anyhow::Result<Self> {
        let server = Self::server_url()?;
        let mut admin_url = server.clone();
        admin_url.set_path("/postgres");
        let name = format!("saga_tracker_test_{}", unique_suffix());
        let mut url = server;
        url.set_path(&format!("/{name}"));

        let mut conn = PgConnection::connect(admin_url.as_str())
            .await
            .with_context(|| {
                format!(
                    "connecting to PostgreSQL at {}:{} (run scripts/ensure-postgres.sh, or set \
                     TEST_DATABASE_URL)",
                    admin_url.host_str().unwrap_or("?"),
                    admin_url.port().unwrap_or(5432)
                )
            })?;
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for this database (what the tracker gets as `TRACKER_DATABASE__URL`).
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// A direct connection, for assertions the API cannot make.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(self.url.as_str())
            .await
            .with_context(|| format!("connecting to database {}", self.name))
    }

    /// Drops the database, disconnecting anyone still using it.
    pub async fn drop_db(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(self.admin_url.as_str()).await?;
        sqlx::query(&format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        conn.close().await.ok();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------------

/// A `tansu` broker process of our own on a free loopback port.
///
/// Storage is a SQLite file in a temporary directory (the only engine that keeps every
/// message; the memory engine is not compiled in). The process is killed, by its PID, when
/// this value is dropped.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    port: u16,
    bin: PathBuf,
    log: PathBuf,
    /// `--cert/--key` and `--authentication`, when the broker was restarted secured.
    security: TansuSecurity,
    /// The port it tells clients to use: its own, or a TLS terminator's in front of it.
    advertised: u16,
    // Held for its Drop: removes the SQLite file after the broker is gone.
    _data: tempfile::TempDir,
}

/// How a [`Tansu`] broker guards its listener.
///
/// TLS is not here: tansu 0.6.0's `broker` declares `--cert` and `--key` in one clap group,
/// which makes them mutually exclusive, so its TLS listener cannot be switched on. Tests put
/// [`TlsFront`] (OpenSSL, through socat) in front of the broker instead.
#[derive(Debug, Clone, Default)]
pub struct TansuSecurity {
    /// Require SASL authentication (`--authentication`; tansu 0.6 offers SCRAM-SHA-256 and
    /// SCRAM-SHA-512, checked against the users created with [`Tansu::create_scram_user`]).
    pub authentication: bool,
}

/// A TLS listener in front of a broker: socat's `OPENSSL-LISTEN` (OpenSSL, the same library
/// a Kafka broker's JVM-independent clients and librdkafka use) terminating TLS with a
/// certificate from the test's CA and forwarding plaintext to the broker. With a client CA it
/// demands a client certificate signed by it (mutual TLS). Start the broker with
/// [`Tansu::start_advertising`] on the front's port, so every connection librdkafka opens
/// after bootstrap goes through it too. Killed by PID when dropped.
#[derive(Debug)]
pub struct TlsFront {
    child: Child,
    port: u16,
}

impl TlsFront {
    /// Listens on 127.0.0.1:`port`, serving `server`, forwarding to 127.0.0.1:`backend`.
    pub fn start(
        port: u16,
        server: &pki::CertFiles,
        client_ca: Option<&Path>,
        backend: u16,
    ) -> anyhow::Result<Self> {
        let mut listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={}",
            server.cert.display(),
            server.key.display()
        );
        match client_ca {
            Some(ca) => listen.push_str(&format!(",cafile={},verify=1", ca.display())),
            None => listen.push_str(",verify=0"),
        }
        let log = log_dir()?.join(format!("tls-front-{port}-{}.log", unique_suffix()));
        let (out, err) = log_file(&log)?;
        let child = Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:127.0.0.1:{backend}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting socat (scripts/test.sh installs it: apt-get install socat)")?;
        let mut front = Self { child, port };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_err()
        {
            if let Some(status) = front.child.try_wait()? {
                bail!("socat exited with {status}: {}", log_tail(&log, 20));
            }
            ensure!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(front)
    }

    /// Bootstrap servers for clients: `127.0.0.1:<port>`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The SCRAM variants `tansu user create --mechanism` knows.
#[derive(Debug, Clone, Copy)]
pub enum Scram {
    Sha256,
    Sha512,
}

impl Tansu {
    /// Starts a broker and waits until its port accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = tansu_bin()?;
        let mut last_err = anyhow!("tansu did not start");
        // A free port can be taken between our probe and tansu's bind: try a few.
        for _ in 0..3 {
            match Self::try_start(&bin).await {
                Ok(t) => return Ok(t),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Starts a broker that advertises `127.0.0.1:<advertised>` instead of its own port, for
    /// a proxy in front of it (the mutual-TLS test's terminator).
    pub async fn start_advertising(advertised: u16) -> anyhow::Result<Self> {
        let bin = tansu_bin()?;
        Self::try_start_on(&bin, Some(advertised)).await
    }

    async fn try_start(bin: &Path) -> anyhow::Result<Self> {
        Self::try_start_on(bin, None).await
    }

    async fn try_start_on(bin: &Path, advertised: Option<u16>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let advertised = advertised.unwrap_or(port);
        let data = tempfile::Builder::new()
            .prefix("saga-tracker-tansu-")
            .tempdir()
            .context("creating a temporary directory for tansu")?;
        let log = log_dir()?.join(format!("tansu-{port}-{}.log", unique_suffix()));
        let security = TansuSecurity::default();
        let child = Self::spawn_child(bin, port, advertised, data.path(), &log, &security)?;
        let mut tansu = Self {
            child,
            port,
            advertised,
            bin: bin.to_path_buf(),
            log,
            security,
            _data: data,
        };
        tansu.wait_listening().await?;
        Ok(tansu)
    }

    fn spawn_child(
        bin: &Path,
        port: u16,
        advertised: u16,
        data: &Path,
        log: &Path,
        security: &TansuSecurity,
    ) -> anyhow::Result<Child> {
        let (out, err) = log_file(log)?;
        let listener = format!("tcp://127.0.0.1:{port}");
        // tansu resolves `sqlite://` paths against its working directory (even ones that look
        // absolute), so run it inside the data directory with a relative file name.
        let mut cmd = Command::new(bin);
        cmd.arg("broker")
            .args(["--listener-url", &listener])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        if security.authentication {
            cmd.arg("--authentication");
        }
        cmd.current_dir(data)
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))
    }

    /// Kills the broker process (SIGKILL: no clean shutdown) and starts a new one on the same
    /// port with the same SQLite file, as an operator restarting a crashed broker would.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        kill_and_reap(&mut self.child);
        let data = self._data.path().to_path_buf();
        let log = self.log_restart();
        self.child = Self::spawn_child(
            &self.bin,
            self.port,
            self.advertised,
            &data,
            &log,
            &self.security,
        )?;
        self.wait_listening().await
    }

    /// Restarts the broker (same port, same data) guarded by `security`. tansu's own admin
    /// commands speak neither TLS nor SASL, so create topics and users first, then secure it.
    pub async fn restart_secured(&mut self, security: TansuSecurity) -> anyhow::Result<()> {
        self.security = security;
        self.restart().await
    }

    /// Creates (or updates) a SCRAM user with `tansu user create`, on a broker not yet
    /// secured.
    pub async fn create_scram_user(
        &self,
        name: &str,
        password: &str,
        mechanism: Scram,
    ) -> anyhow::Result<()> {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let mechanism = match mechanism {
            Scram::Sha256 => "scram256",
            Scram::Sha512 => "scram512",
        };
        poll_until(
            Duration::from_secs(20),
            &format!("tansu to create user {name}"),
            || async {
                let out = tokio::process::Command::new(&self.bin)
                    .args(["user", "create", name, password])
                    .args(["--mechanism", mechanism, "--broker", &broker])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .context("running `tansu user create`")?;
                ensure!(
                    out.status.success(),
                    "`tansu user create {name}` failed with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            },
        )
        .await
    }

    fn log_restart(&mut self) -> PathBuf {
        let next = self.log.with_extension("restarted.log");
        self.log = next.clone();
        next
    }

    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "tansu exited with {status} before listening on {addr}; its log ({}):\n{}",
                    self.log.display(),
                    log_tail(&self.log, 30)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "tansu did not listen on {addr} within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    log_tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Bootstrap servers for clients: `127.0.0.1:<port>`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates a topic with `tansu topic create` (topics are not auto-created).
    ///
    /// Retried briefly: the first admin request can race the broker's start-up.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        poll_until(
            Duration::from_secs(20),
            &format!("tansu to create topic {name}"),
            || async {
                let out = tokio::process::Command::new(&self.bin)
                    .args(["topic", "create", name])
                    .args(["--partitions", &partitions.to_string()])
                    .args(["--broker", &broker])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .context("running `tansu topic create`")?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                // An earlier attempt may have succeeded after its answer was lost.
                if stderr.contains("already exists") {
                    return Ok(());
                }
                ensure!(
                    out.status.success(),
                    "`tansu topic create {name}` failed with {}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    stderr
                );
                Ok(())
            },
        )
        .await
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tansu log tail ({}) ----\n{}",
                self.log.display(),
                log_tail(&self.log, 40)
            );
        }
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------
// The tracker process
// ---------------------------------------------------------------------------------------

/// How to configure a tracker process; becomes `TRACKER_*` environment variables.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// `kafka.brokers`.
    pub brokers: String,
    /// `database.url`.
    pub database_url: String,
    /// `kafka.topic`.
    pub topic: String,
    /// `kafka.dlq_topic`.
    pub dlq_topic: String,
    /// `kafka.group_id`; unique per test so groups never share offsets.
    pub group_id: String,
    /// `ingest.batch_size`.
    pub batch_size: usize,
    /// `ingest.linger_ms`; short in tests so assertions do not wait on batching.
    pub linger_ms: u64,
    /// Anything else, e.g. `("TRACKER_LOG__FORMAT", "json")`.
    pub extra_env: Vec<(String, String)>,
}

impl TrackerOptions {
    /// Options for `topic` on `brokers`, DLQ `<topic>.dlq`, a unique group id.
    pub fn new(brokers: impl Into<String>, database_url: impl Into<String>, topic: &str) -> Self {
        Self {
            brokers: brokers.into(),
            database_url: database_url.into(),
            topic: topic.to_owned(),
            dlq_topic: format!("{topic}.dlq"),
            group_id: format!("saga-tracker-test-{}", unique_suffix()),
            batch_size: 100,
            linger_ms: 50,
            extra_env: Vec::new(),
        }
    }

    fn env(&self, http_addr: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("TRACKER_KAFKA__BROKERS", self.brokers.clone()),
            ("TRACKER_KAFKA__TOPIC", self.topic.clone()),
            ("TRACKER_KAFKA__DLQ_TOPIC", self.dlq_topic.clone()),
            ("TRACKER_KAFKA__GROUP_ID", self.group_id.clone()),
            ("TRACKER_DATABASE__URL", self.database_url.clone()),
            ("TRACKER_HTTP__ADDR", http_addr.to_owned()),
            ("TRACKER_INGEST__BATCH_SIZE", self.batch_size.to_string()),
            ("TRACKER_INGEST__LINGER_MS", self.linger_ms.to_string()),
            ("TRACKER_LOG__FORMAT", "text".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(self.extra_env.iter().cloned());
        env
    }
}

/// Environment for a tracker child: ours, with any inherited `TRACKER_*` and `OTEL_*`
/// removed so a developer's shell cannot leak configuration (or turn on span export) in a
/// test.
fn tracker_command(bin: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("TRACKER_") || key_text.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `saga-tracker migrate` against `database_url` and fails with its output if it fails.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    migrate_with(&[("TRACKER_DATABASE__URL".to_owned(), database_url.to_owned())])
        .await
        .map(drop)
}

/// Runs `saga-tracker migrate` with exactly these `TRACKER_*` variables; returns its output
/// (stdout then stderr) and fails with it if the command fails.
pub async fn migrate_with(env: &[(String, String)]) -> anyhow::Result<String> {
    let out = run_tracker_command("migrate", env).await?;
    ensure!(
        out.status.success(),
        "`saga-tracker migrate` failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Runs `saga-tracker <subcommand>` to completion with exactly these `TRACKER_*` variables.
pub async fn run_tracker_command(
    subcommand: &str,
    env: &[(String, String)],
) -> anyhow::Result<std::process::Output> {
    let bin = tracker_bin()?;
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(tracker_command(&bin, env))
            .arg(subcommand)
            .output(),
    )
    .await
    .with_context(|| format!("`saga-tracker {subcommand}` did not finish within 60 s"))?
    .with_context(|| format!("running {} {subcommand}", bin.display()))
}

/// A running `saga-tracker run` process and a typed client for its HTTP API.
#[derive(Debug)]
pub struct TrackerProcess {
    child: Child,
    base_url: Url,
    log: PathBuf,
    http: reqwest::Client,
    options: TrackerOptions,
}

impl TrackerProcess {
    /// Spawns `saga-tracker run` on a free loopback HTTP port. Does not wait for readiness:
    /// call [`TrackerProcess::wait_ready`].
    pub fn spawn(options: TrackerOptions) -> anyhow::Result<Self> {
        Self::spawn_args(options, &["run"])
    }

    /// As [`TrackerProcess::spawn`], running `saga-tracker <args…>` instead of `run` (e.g.
    /// `dev --broker-port 0`), with the same environment and HTTP port handling.
    pub fn spawn_args(options: TrackerOptions, args: &[&str]) -> anyhow::Result<Self> {
        let bin = tracker_bin()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log = log_dir()?.join(format!("tracker-{port}-{}.log", unique_suffix()));
        let (out, err) = log_file(&log)?;
        let child = tracker_command(&bin, &options.env(&addr))
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {} {}", bin.display(), args.join(" ")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            child,
            base_url: Url::parse(&format!("http://{addr}/"))?,
            log,
            http,
            options,
        })
    }

    /// The options it was started with.
    pub fn options(&self) -> &TrackerOptions {
        &self.options
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The process's combined stdout/stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/readyz` until it answers 200 (database and consumer up), at most `timeout`.
    /// Fails at once, with the log, if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.url("readyz")?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "saga-tracker exited with {status} before becoming ready; its log ({}):\n{}",
                    self.log.display(),
                    log_tail(&self.log, 40)
                );
            }
            let last = match self.http.get(url.clone()).send().await {
                Ok(r) if r.status() == StatusCode::OK => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    format!("{status}: {}", r.text().await.unwrap_or_default())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "saga-tracker not ready within {timeout:?} (last /readyz: {last}); its log:\n{}",
                    log_tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit; returns its
    /// status. A process that does not exit in time is killed and reported as an error.
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        terminate(&self.child)?;
        match wait_exit(&mut self.child, timeout).await? {
            Some(status) => Ok(status),
            None => {
                kill_and_reap(&mut self.child);
                bail!(
                    "saga-tracker did not exit within {timeout:?} of SIGTERM (killed); log tail:\n{}",
                    log_tail(&self.log, 40)
                )
            }
        }
    }

    /// `kill -9`: SIGKILL, then reap. No shutdown code runs: whatever was in flight is lost
    /// exactly as in a crash.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Waits (at most `timeout`) for the process to exit on its own; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        wait_exit(&mut self.child, timeout).await
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An absolute URL for `path` (relative, no leading slash).
    pub fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base_url
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("joining {path} to {}", self.base_url))
    }

    /// GET `path` (with `query`) and return status and body text.
    pub async fn get_text(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String)> {
        let url = self.url(path)?;
        let resp = self
            .http
            .get(url.clone())
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading GET {url}"))?;
        Ok((status, body))
    }

    /// GET `path` expecting 200 and a JSON body of type `T`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let (status, body) = self.get_text(path, query).await?;
        ensure!(
            status == StatusCode::OK,
            "GET /{path} {query:?} answered {status}: {body}"
        );
        serde_json::from_str(&body)
            .with_context(|| format!("GET /{path}: unexpected body shape: {body}"))
    }

    /// `GET /api/v1/sagas/{id}`: `None` for 404, the summary and its timeline otherwise.
    pub async fn get_saga(&self, saga_id: &str) -> anyhow::Result<Option<SagaDetail>> {
        let path = format!("api/v1/sagas/{}", encode_path_segment(saga_id));
        let (status, body) = self.get_text(&path, &[]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(
            status == StatusCode::OK,
            "GET /{path} answered {status}: {body}"
        );
        let raw: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET /{path}: body is not JSON: {body}"))?;
        SagaDetail::from_json(raw).map(Some)
    }

    /// `GET /api/v1/sagas/{id}/events`: the stored events, in saga order.
    pub async fn saga_events(&self, saga_id: &str) -> anyhow::Result<Vec<EventView>> {
        let path = format!("api/v1/sagas/{}/events", encode_path_segment(saga_id));
        let list: EventList = self.get_json(&path, &[]).await?;
        ensure!(
            list.saga_id == saga_id,
            "GET /{path} answered for saga {}",
            list.saga_id
        );
        Ok(list.items)
    }

    /// `GET /api/v1/sagas?…`: one page of summaries.
    pub async fn search(&self, query: &[(&str, &str)]) -> anyhow::Result<SearchPage> {
        self.get_json("api/v1/sagas", query).await
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let (status, body) = self.get_text("metrics", &[]).await?;
        ensure!(status == StatusCode::OK, "GET /metrics answered {status}");
        Ok(body)
    }

    /// The value of `name{labels…}` (summed over series that also carry other labels), or
    /// `None` when no such series is exported yet.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<Option<f64>> {
        Ok(metric_value(&self.metrics_text().await?, name, labels))
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- saga-tracker log tail ({}) ----\n{}",
                self.log.display(),
                log_tail(&self.log, 60)
            );
        }
        kill_and_reap(&mut self.child);
    }
}

/// Percent-encodes one path segment (saga ids may contain `/`, spaces, …).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// API shapes (the fields the tests assert on; everything else is kept in `extra`)
// ---------------------------------------------------------------------------------------

/// A saga as listed by the search endpoint and at the top of the detail view.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaSummary {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub current_step: String,
    pub failed_step: Option<String>,
    pub failure: Option<ErrorInfo>,
    pub compensation_duration_ms: Option<i64>,
    pub event_count: i64,
    pub late_event_count: i64,
    pub business_key: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub services: Vec<String>,
    /// Every other field, for assertions on things this struct does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{code, message}` of a failed step or saga.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// One step of the timeline in the detail view.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub step: String,
    pub status: String,
    pub service: String,
    pub duration_ms: Option<i64>,
    pub error: Option<ErrorInfo>,
    pub compensation: Option<Value>,
    pub event_count: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /api/v1/sagas/{id}`: the summary fields plus `steps`.
#[derive(Debug, Clone)]
pub struct SagaDetail {
    pub summary: SagaSummary,
    pub steps: Vec<StepView>,
    /// The whole response, for failure messages and fields not modelled here.
    pub raw: Value,
}

impl SagaDetail {
    fn from_json(raw: Value) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(flatten)]
            summary: SagaSummary,
            steps: Vec<StepView>,
        }
        let wire: Wire = serde_json::from_value(raw.clone())
            .with_context(|| format!("not a saga detail: {raw}"))?;
        Ok(Self {
            summary: wire.summary,
            steps: wire.steps,
            raw,
        })
    }

    /// Step names in timeline order.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.step.as_str()).collect()
    }

    /// The timeline entry for `step`.
    pub fn step(&self, step: &str) -> Option<&StepView> {
        self.steps.iter().find(|s| s.step == step)
    }
}

/// `GET /api/v1/sagas/{id}/events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventList {
    saga_id: String,
    items: Vec<EventView>,
}

/// One stored event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: String,
    pub step: String,
    pub step_status: String,
    pub saga_status: Option<String>,
    pub sequence: Option<i64>,
    pub service: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One page of search results.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    pub items: Vec<SagaSummary>,
    pub next_cursor: Option<String>,
}

impl SearchPage {
    /// The saga ids on this page, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.items.iter().map(|s| s.saga_id.as_str()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name)?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        write!(f, "}} {}", self.value)
    }
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], Vec::new(), &line[sp..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
    }
}

/// The sum of every `name` series whose labels include all of `labels`; `None` when there
/// is none. With no labels this totals a counter over all its label values.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    if matching.is_empty() {
        None
    } else {
        Some(matching.iter().sum())
    }
}

// ---------------------------------------------------------------------------------------
// kafka-python
// ---------------------------------------------------------------------------------------

/// The directory of the Python helper scripts.
pub fn python_dir() -> PathBuf {
    workspace_root().join("tests").join("python")
}

/// Produces JSON-lines `records` with `tests/python/produce.py` (kafka-python): every record
/// is acknowledged or this fails with the script's output.
pub async fn python_produce(brokers: &str, topic: &str, records: &[Value]) -> anyhow::Result<()> {
    run_producer_script("produce.py", brokers, topic, records).await
}

/// Runs `tests/python/<script>` with `records` as JSON lines on stdin.
async fn run_producer_script(
    script_name: &str,
    brokers: &str,
    topic: &str,
    records: &[Value],
) -> anyhow::Result<()> {
    let mut input = String::new();
    for r in records {
        input.push_str(&r.to_string());
        input.push('\n');
    }
    let script = python_dir().join(script_name);
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--brokers", brokers, "--topic", topic, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("running python3 tests/python/{script_name} (is python3 installed?)")
        })?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child
            .stdin
            .take()
            .with_context(|| format!("{script_name} stdin"))?;
        stdin.write_all(input.as_bytes()).await?;
        stdin.shutdown().await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .with_context(|| format!("{script_name} did not finish within 120 s"))??;
    ensure!(
        out.status.success(),
        "{script_name} failed with {} (kafka-python or fastavro missing? run \
         scripts/ensure-python.sh):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Produces JSON-lines `records` with `tests/python/produce_avro.py` (fastavro and
/// kafka-python, framing Avro as Confluent's serializer does; see the script for the record
/// forms): every record is acknowledged or this fails with the script's output.
pub async fn python_produce_avro(
    brokers: &str,
    topic: &str,
    records: &[Value],
) -> anyhow::Result<()> {
    run_producer_script("produce_avro.py", brokers, topic, records).await
}

/// A record read back by `tests/python/consume.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub value_base64: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Option<String>>,
}

impl ConsumedRecord {
    /// A header's text value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.as_deref())
    }
}

/// Reads `topic` from the beginning with `tests/python/consume.py` (kafka-python, no consumer
/// group) until at least `min_records` arrived and the topic is drained, at most `timeout`.
pub async fn python_consume(
    brokers: &str,
    topic: &str,
    min_records: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<ConsumedRecord>> {
    let script = python_dir().join("consume.py");
    let secs = timeout.as_secs().max(1).to_string();
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--brokers", brokers, "--topic", topic])
        .args([
            "--min-records",
            &min_records.to_string(),
            "--timeout",
            &secs,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running python3 tests/python/consume.py (is python3 installed?)")?;
    let out = tokio::time::timeout(timeout + Duration::from_secs(30), child.wait_with_output())
        .await
        .context("consume.py did not finish in time")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "consume.py failed with {}:\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("consume.py printed {l}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP saga_tracker_dlq_messages_total Messages sent to the DLQ
# TYPE saga_tracker_dlq_messages_total counter
saga_tracker_dlq_messages_total{reason="not_json"} 2
saga_tracker_dlq_messages_total{reason="not_utf8"} 1
saga_tracker_events_processed_total{result="ok"} 17
saga_tracker_visibility_lag_seconds_bucket{le="+Inf"} 17
saga_tracker_consumer_up 1
weird{a="x,y",b="q\"uote"} 3.5
"#;

    #[test]
    fn metric_value_matches_labels_and_sums_series() {
        assert_eq!(
            metric_value(
                TEXT,
                "saga_tracker_dlq_messages_total",
                &[("reason", "not_json")]
            ),
            Some(2.0)
        );
        assert_eq!(
            metric_value(TEXT, "saga_tracker_dlq_messages_total", &[]),
            Some(3.0)
        );
        assert_eq!(
            metric_value(
                TEXT,
                "saga_tracker_dlq_messages_total",
                &[("reason", "oversize")]
            ),
            None
        );
        assert_eq!(
            metric_value(TEXT, "saga_tracker_consumer_up", &[]),
            Some(1.0)
        );
        assert_eq!(
            metric_value(
                TEXT,
                "saga_tracker_visibility_lag_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(17.0)
        );
        assert_eq!(
            metric_value(TEXT, "weird", &[("a", "x,y"), ("b", "q\"uote")]),
            Some(3.5)
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("order-8812"), "order-8812");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn saga_detail_reads_the_flattened_summary_and_steps() {
        let raw = serde_json::json!({
            "sagaId": "s", "sagaType": "T", "status": "COMPLETED",
            "startedAt": "2026-11-21T12:00:00Z", "updatedAt": "2026-11-21T12:00:01Z",
            "endedAt": "2026-11-21T12:00:01Z", "durationMs": 1000, "currentStep": "A",
            "failedStep": null, "failure": null, "compensationDurationMs": null,
            "eventCount": 2, "lateEventCount": 0, "businessKey": null, "metadata": {},
            "services": ["svc"], "traceId": null,
            "steps": [{"step": "A", "status": "SUCCEEDED", "service": "svc", "durationMs": 1000,
                       "error": null, "compensation": null, "eventCount": 2}]
        });
        let d = SagaDetail::from_json(raw).expect("detail");
        assert_eq!(d.summary.event_count, 2);
        assert_eq!(d.step_names(), vec!["A"]);
        assert!(d.summary.extra.contains_key("traceId"));
    }

    #[tokio::test]
    async fn poll_until_reports_the_last_failure() {
        let err = poll_until(Duration::from_millis(300), "the impossible", || async {
            bail!("still wrong")
        })
        .await
        .map(|(): ()| ())
        .expect_err("must time out");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("the impossible") && msg.contains("still wrong"),
            "{msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A breakable TCP path to PostgreSQL
// ---------------------------------------------------------------------------------------

/// A TCP forwarder `127.0.0.1:<port>` → the PostgreSQL server, which a test can cut: while
/// cut, every open connection is dropped and new ones are closed at once — what a tracker
/// sees when its database becomes unreachable — without touching the server other tests
/// share. Stops when dropped.
#[derive(Debug)]
pub struct PgProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Starts forwarding to the server of [`TestDb::server_url`].
    pub async fn start() -> anyhow::Result<Self> {
        let server = TestDb::server_url()?;
        let upstream = format!(
            "{}:{}",
            server.host_str().unwrap_or("127.0.0.1"),
            server.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the PostgreSQL proxy")?;
        let port = listener.local_addr()?.port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Self { port, cut, task })
    }

    /// `url` (a database URL on the real server) rewritten to go through this proxy.
    pub fn url_for(&self, url: &str) -> anyhow::Result<String> {
        let mut u = Url::parse(url).with_context(|| format!("parsing {url}"))?;
        u.set_host(Some("127.0.0.1"))
            .map_err(|e| anyhow!("setting the proxy host: {e}"))?;
        u.set_port(Some(self.port))
            .map_err(|()| anyhow!("setting the proxy port"))?;
        Ok(u.to_string())
    }

    /// Cuts (`true`) or restores (`false`) the path to the database.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.set_cut(true);
        self.task.abort();
    }
}

/// A reader key minted by `saga-tracker api-key new`, and a keys file holding its hash.
pub async fn reader_key(dir: &Path, name: &str) -> anyhow::Result<(String, PathBuf)> {
    let out = tokio::process::Command::new(tracker_bin()?)
        .args(["api-key", "new", "--name", name, "--role", "reader"])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .await
        .context("running saga-tracker api-key new")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "api-key new failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .context("api-key new printed no token")?
        .to_owned();
    let hash = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("hash = "))
        .context("api-key new printed no hash")?
        .trim()
        .to_owned();
    let file = dir.join("api-keys.toml");
    std::fs::write(
        &file,
        format!("[[api_keys]]\nname = \"{name}\"\nrole = \"reader\"\nhash = {hash}\n"),
    )?;
    Ok((token, file))
}
