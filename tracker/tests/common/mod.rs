//! Shared by the in-process integration tests: a throwaway database per test on the real
//! PostgreSQL server named by `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`,
//! trust auth), so tests run in parallel without seeing each other's rows; the real router
//! served on `127.0.0.1:0` ([`serve_api`]); librdkafka's mock cluster; and a builder of a
//! saga's events.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use saga_tracker::api::{self, AppState, Authenticator};
use saga_tracker::config::{Settings, DEFAULT_CONFIG};
use saga_tracker::health::ConsumerHealth;
use saga_tracker::store::write::IncomingEvent;
use saga_tracker::store::MIGRATOR;
use saga_tracker::stuck::StuckPolicy;
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Connection options for the test server (no database chosen).
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL is a PostgreSQL URL")
}

/// The value of the environment variable `name` (a test's size or seed), else `default`. A
/// value that does not parse fails the test rather than silently running the default.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// A database that exists for one test and is dropped (best effort) when the test ends,
/// whether it passed or panicked.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Creates `<prefix>_<uuid>`.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server_options()
            .database("postgres")
            .connect()
            .await
            .expect("PostgreSQL is reachable (set TEST_DATABASE_URL)");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self { name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on its own futures: use a
        // throwaway runtime on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = server_options().database("postgres").connect().await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh [`TestDb`] named `<prefix>_<uuid>` with the migrations applied, and a small pool
/// on it. Keep the `TestDb` as long as the pool: dropping it drops the database.
pub async fn migrated_test_db(prefix: &str) -> (TestDb, PgPool) {
    let db = TestDb::create(prefix).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(server_options().database(&db.name))
        .await
        .expect("connect to the test database");
    MIGRATOR.run(&pool).await.expect("migrations apply");
    // `store::migrate` does this too: ingest writes into today's day partition.
    saga_tracker::store::partitions::ensure(&pool, chrono::Utc::now().date_naive())
        .await
        .expect("day partitions");
    (db, pool)
}

/// The built-in defaults with `overrides` (dotted keys, e.g. `("auth.enabled", json!(true))`)
/// on top, validated. The process environment is not read, so no `TRACKER_*` variable of
/// the shell running the tests can change what they test.
pub fn settings_with(overrides: &[(&str, serde_json::Value)]) -> Settings {
    let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
    for (key, value) in overrides {
        fig = fig.merge(Serialized::default(key, value));
    }
    Settings::from_figment(fig).expect("valid settings")
}

/// The router's state as `Application::build` derives it from `settings` (stuck rules,
/// `/stats` timeout, authentication), on `pool`. `consumer_enabled: false` is an API-only
/// tracker: `/readyz` then does not wait for a consumer.
pub async fn app_state(pool: PgPool, settings: Settings, consumer_enabled: bool) -> AppState {
    AppState {
        read_pool: pool.clone(),
        pool,
        consumer: ConsumerHealth::default(),
        consumer_enabled,
        metrics: saga_tracker::metrics::install().expect("metrics recorder"),
        stuck: StuckPolicy::from(&settings.stuck),
        stats_timeout: Duration::from_millis(settings.http.stats_timeout_ms),
        auth: Authenticator::new(&settings.auth)
            .await
            .expect("authentication set up"),
        settings: Arc::new(settings),
    }
}

/// The real router ([`api::serve`]) on an ephemeral loopback port, stopped when this is
/// dropped.
pub struct ServedApi {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The same address, for tests that speak raw TCP.
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// What `/readyz` reads of the consumer: tests play the consumer through it.
    pub consumer: ConsumerHealth,
    /// Cancelled as SIGTERM would, by the test or on drop.
    pub shutdown: CancellationToken,
    /// The `api::serve` task, for tests that wait for it to return.
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for ServedApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves [`app_state`] of `pool`, `settings` and `consumer_enabled` on `127.0.0.1:0`.
pub async fn serve_api(pool: PgPool, settings: Settings, consumer_enabled: bool) -> ServedApi {
    let state = app_state(pool, settings, consumer_enabled).await;
    let consumer = state.consumer.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    ServedApi {
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        consumer,
        shutdown,
        task,
    }
}

/// `postgres://…` URL of the admin database on the test server (`TEST_DATABASE_URL`, with or
/// without a database path).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// URL of database `name` on the same server as [`admin_url`].
pub fn db_url(name: &str) -> String {
    let base = admin_url();
    let (scheme, rest) = base
        .split_once("://")
        .unwrap_or(("postgres", base.as_str()));
    let server = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{server}/{name}")
}

/// `prefix-<uuid>`: names (groups, sagas) that never collide between tests.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates an empty database `<prefix>_<uuid>` and returns its name.
pub async fn create_database(prefix: &str) -> String {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("postgres reachable");
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    name
}

/// Drops database `name` (best effort; it may hold open connections).
pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&mut admin)
            .await;
    }
}

/// A small pool on database `name`, migrated.
pub async fn migrated_pool(name: &str) -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db_url(name))
        .await
        .expect("connect");
    saga_tracker::store::migrate(&pool)
        .await
        .expect("migrations apply");
    pool
}

/// Starts librdkafka's mock Kafka cluster (a real Kafka-protocol broker inside the test
/// process) with `topics` created, and returns the producer that owns it (the cluster lives
/// as long as this handle) and its bootstrap address. Group joins happen at once instead of
/// after the broker's default 3 s initial-rebalance delay.
#[allow(unsafe_code)] // the delay is only reachable through the raw C API
pub fn mock_cluster(topics: &[(&str, i32)]) -> (rdkafka::producer::FutureProducer, String) {
    use rdkafka::producer::Producer;
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .expect("mock cluster starts");
    // SAFETY: the pointer comes from a live client and is only used while it lives.
    unsafe {
        let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
        assert!(!raw.is_null(), "client has a mock cluster");
        rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
    }
    let bootstrap = {
        let mock = producer
            .client()
            .mock_cluster()
            .expect("mock cluster handle");
        for (name, partitions) in topics {
            mock.create_topic(name, *partitions, 1).expect("topic");
        }
        mock.bootstrap_servers()
    };
    (producer, bootstrap)
}

/// A [`mock_cluster`] with the handle that keeps it alive.
pub struct MockKafka {
    pub producer: rdkafka::producer::FutureProducer,
    pub bootstrap: String,
}

impl MockKafka {
    pub fn start(topics: &[(&str, i32)]) -> Self {
        let (producer, bootstrap) = mock_cluster(topics);
        Self {
            producer,
            bootstrap,
        }
    }
}

/// Builds one saga's events with a running sequence number.
pub struct Saga {
    pub id: String,
    pub saga_type: String,
    pub events: Vec<IncomingEvent>,
}

impl Saga {
    pub fn new(id: &str, saga_type: &str) -> Self {
        Self {
            id: id.to_owned(),
            saga_type: saga_type.to_owned(),
            events: Vec::new(),
        }
    }

    pub fn ev(
        mut self,
        step: &str,
        status: StepStatus,
        at: DateTime<Utc>,
        service: &str,
        saga_status: Option<SagaStatus>,
    ) -> Self {
        let n = self.events.len() as i64 + 1;
        self.events.push(IncomingEvent {
            event: SagaEvent {
                schema_version: SCHEMA_VERSION,
                event_id: format!("{}-{n}", self.id),
                saga_id: self.id.clone(),
                saga_type: self.saga_type.clone(),
                step: step.to_owned(),
                step_status: status,
                saga_status,
                occurred_at: at,
                service: service.to_owned(),
                sequence: Some(n),
                business_key: None,
                trace_id: None,
                span_id: None,
                error: (status == StepStatus::Failed).then(|| StepError {
                    code: "E".to_owned(),
                    message: "failed".to_owned(),
                }),
                metadata: None,
            },
            received_at: at,
            source: None,
        });
        self
    }
}

/// `GET {base}/metrics` as text.
pub async fn scrape(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// How to start an [`InProcessTracker`].
pub struct TrackerSetup<'a> {
    /// The broker's bootstrap address (a [`mock_cluster`]).
    pub bootstrap: &'a str,
    /// `kafka.group_id`: unique per test, or reused to resume from committed offsets.
    pub group: String,
    /// An existing database to start on again (a restart); `None` creates
    /// `<db_prefix>_<uuid>`.
    pub db_name: Option<String>,
    pub db_prefix: &'a str,
    pub batch_size: usize,
    pub linger_ms: u64,
    /// `ingest.in_flight`: lanes writing at once (the tracker's default, 4, unless a test
    /// needs every message in one batch).
    pub in_flight: usize,
    /// SQL run after the migrations and before the consumer starts (e.g. a trigger that
    /// makes the database reject chosen events).
    pub setup_sql: &'a [&'a str],
}

impl<'a> TrackerSetup<'a> {
    /// A fresh database, a unique group, batches of 50 with a 20 ms linger.
    pub fn new(bootstrap: &'a str, db_prefix: &'a str) -> Self {
        Self {
            bootstrap,
            group: unique("g"),
            db_name: None,
            db_prefix,
            batch_size: 50,
            linger_ms: 20,
            in_flight: 4,
            setup_sql: &[],
        }
    }
}

/// The real tracker `Application` (consumer, REST API, background jobs) running as a task
/// of the test process, with its API on an ephemeral loopback port.
pub struct InProcessTracker {
    pub base: String,
    pub pool: sqlx::PgPool,
    pub db_name: String,
    pub http: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessTracker {
    pub async fn spawn(setup: TrackerSetup<'_>) -> Self {
        use saga_tracker::app::Application;

        let db_name = match setup.db_name {
            Some(name) => name,
            None => create_database(setup.db_prefix).await,
        };
        let fig = Settings::figment(None)
            .merge(Serialized::default("kafka.brokers", setup.bootstrap))
            .merge(Serialized::default("kafka.group_id", &setup.group))
            .merge(Serialized::default("database.url", db_url(&db_name)))
            .merge(Serialized::default("http.addr", "127.0.0.1:0"))
            .merge(Serialized::default("ingest.batch_size", setup.batch_size))
            .merge(Serialized::default("ingest.linger_ms", setup.linger_ms))
            .merge(Serialized::default("ingest.in_flight", setup.in_flight));
        let settings = Settings::from_figment(fig).expect("valid settings");
        let app = Application::build(settings).await.expect("tracker builds");
        saga_tracker::store::migrate(app.pool())
            .await
            .expect("migrations apply");
        for sql in setup.setup_sql {
            sqlx::raw_sql(sql)
                .execute(app.pool())
                .await
                .expect("test setup SQL");
        }
        let pool = app.pool().clone();
        let base = format!("http://{}", app.local_addr().expect("bound"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        Self {
            base,
            pool,
            db_name,
            http: reqwest::Client::new(),
            shutdown,
            handle,
        }
    }

    /// GET `path`: the status and the JSON body (`null` when the body is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request is answered");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        scrape(&self.http, &self.base).await
    }

    /// Stops the tracker as SIGTERM would and requires a clean exit within 30 s. The
    /// database is kept, for a restart or for [`drop_database`]; its name is returned.
    pub async fn stop(self) -> String {
        self.shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.handle)
            .await
            .expect("tracker stops within 30 s")
            .expect("tracker task does not panic")
            .expect("tracker exits cleanly");
        self.pool.close().await;
        self.db_name
    }
}
