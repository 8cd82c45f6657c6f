//! PostgreSQL: the connection pool, migrations, the batched ingest transaction ([`write`]),
//! the queries behind the API ([`read`], and [`insight`] for statistics and gauges) and the
//! removal of old sagas ([`retention`]), and the statistics rollups both keep exact
//! ([`rollup`]), and how far a read replica trails ([`replica`]).
//!
//! Two pools may exist: the primary (`database.url`) for everything that writes, and the
//! read pool (`database.read_url`, [`connect_read_lazy`]) for the API's and the UI's
//! queries — the same pool when no replica is configured.
//!
//! Only this module speaks SQL. It does not know about Kafka: the ingest loop hands it
//! decoded events and gets back what to count.

mod copy;
pub mod insight;
pub mod partitions;
pub mod read;
pub mod replica;
pub mod retention;
pub mod rollup;
pub mod rows;
pub mod write;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

use crate::config::{DatabaseSettings, DbSslMode};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Which of the configured databases a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// `database.url`: ingest, migrations, retention (and every read without a replica).
    Primary,
    /// `database.read_url`: the API's, the UI's and the gauges' reads.
    Replica,
}

impl Db {
    /// The setting that names this database, for messages.
    pub fn key(self) -> &'static str {
        match self {
            Self::Primary => "database.url",
            Self::Replica => "database.read_url",
        }
    }
}

/// Opens a pool lazily: the tracker starts (and `/healthz` answers) even while the database
/// is down; readiness and the ingest loop report and retry instead.
pub fn connect_lazy(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    connect_lazy_to(settings, Db::Primary)
}

/// The pool the read side uses: a lazy pool to `database.read_url`, or — without one — a
/// handle to `primary` itself, so nothing changes when no replica is configured.
pub fn connect_read_lazy(settings: &DatabaseSettings, primary: &PgPool) -> anyhow::Result<PgPool> {
    if settings.read_url.is_none() {
        return Ok(primary.clone());
    }
    connect_lazy_to(settings, Db::Replica)
}

fn connect_lazy_to(settings: &DatabaseSettings, db: Db) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(connect_options_to(settings, db)?))
}

/// The URL, with `ssl_mode`, `ssl_root_cert` and the password from `password`/`password_file`
/// laid over it.
pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    connect_options_to(settings, Db::Primary)
}

/// As [`connect_options`], for `db` (`database.read_url` for [`Db::Replica`], which must be
/// set).
pub fn connect_options_to(settings: &DatabaseSettings, db: Db) -> anyhow::Result<PgConnectOptions> {
    let url = match db {
        Db::Primary => &settings.url,
        Db::Replica => settings
            .read_url
            .as_ref()
            .context("`database.read_url` is not set")?,
    };
    // sqlx's parse error can quote the URL; the URL may hold a password: say only what is wrong.
    let mut options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .map_err(|_| anyhow::anyhow!("`{}` is not a valid PostgreSQL URL", db.key()))?;
    if let Some(mode) = settings.ssl_mode {
        options = options.ssl_mode(match mode {
            DbSslMode::Disable => PgSslMode::Disable,
            DbSslMode::Prefer => PgSslMode::Prefer,
            DbSslMode::Require => PgSslMode::Require,
            DbSslMode::VerifyCa => PgSslMode::VerifyCa,
            DbSslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(root) = &settings.ssl_root_cert {
        options = options.ssl_root_cert(root);
    }
    if let Some(password) = settings.resolved_password()? {
        options = options.password(password.expose_secret());
    }
    Ok(options.application_name("saga-tracker"))
}

/// What a first connection attempt says about the configuration.
#[derive(Debug)]
pub enum ConnectCheck {
    /// Connected and authenticated.
    Ok,
    /// The server could not be reached (down, starting, network): not a configuration error;
    /// the tracker starts and readiness reports it until the database is back.
    Unreachable(String),
}

/// Opens one connection to tell a misconfiguration — TLS refused or untrusted, a certificate
/// for another host, a wrong password, an unknown role or database — from an outage. The first
/// kind is an error whose message names the setting to fix, so the process fails at start-up
/// instead of retrying for ever; the second is reported and left to the lazy pool.
pub async fn check_connection(settings: &DatabaseSettings) -> anyhow::Result<ConnectCheck> {
    check_connection_to(settings, Db::Primary).await
}

/// As [`check_connection`], for `db`; the messages name `db`'s setting.
pub async fn check_connection_to(
    settings: &DatabaseSettings,
    db: Db,
) -> anyhow::Result<ConnectCheck> {
    use sqlx::{ConnectOptions, Connection};
    let key = db.key();
    let options = connect_options_to(settings, db)?;
    let attempt = tokio::time::timeout(
        Duration::from_millis(settings.acquire_timeout_ms.max(1000)),
        options.connect(),
    )
    .await;
    let err = match attempt {
        Err(_) => return Ok(ConnectCheck::Unreachable("connection timed out".into())),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Ok(ConnectCheck::Ok);
        }
        Ok(Err(e)) => e,
    };
    let mode = settings
        .ssl_mode
        .map_or("the URL's sslmode".to_owned(), |m| {
            format!("ssl_mode = {}", m.as_str())
        });
    // rustls reports a failed handshake (untrusted certificate, wrong name) as an I/O error
    // of kind InvalidData while the connection is being set up; a dropped connection is
    // another kind.
    let tls_failure = match &err {
        sqlx::Error::Tls(cause) => Some(cause.to_string()),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Some(io.to_string()),
        _ => None,
    };
    if let Some(cause) = tls_failure {
        anyhow::bail!(
            "TLS to PostgreSQL failed ({mode}): {cause}. Check `database.ssl_root_cert` (the CA \
             that signed the server's certificate) and, for verify-full, that the host in \
             `{key}` is a name the certificate carries"
        );
    }
    match &err {
        sqlx::Error::Tls(cause) => anyhow::bail!(
            "TLS to PostgreSQL failed ({mode}): {cause}. Check `database.ssl_root_cert` (the CA \
             that signed the server's certificate) and, for verify-full, that the host in \
             `{key}` is a name the certificate carries"
        ),
        sqlx::Error::Database(dbe) => {
            let code = dbe.code().unwrap_or_default();
            match code.as_ref() {
                // invalid_password, invalid_authorization_specification
                "28P01" | "28000" => anyhow::bail!(
                    "PostgreSQL refused the login (SQLSTATE {code}): {}. Check the role in \
                     `{key}` and `database.password` / `database.password_file`",
                    dbe.message()
                ),
                // invalid_catalog_name: the database does not exist
                "3D000" => anyhow::bail!(
                    "PostgreSQL has no such database (SQLSTATE 3D000): {}. Check `{key}`",
                    dbe.message()
                ),
                _ => Ok(ConnectCheck::Unreachable(format!("{err}"))),
            }
        }
        // sqlx reports "server does not support TLS" for sslmode=require against a server
        // without ssl as a protocol/configuration error.
        sqlx::Error::Configuration(cause) => {
            anyhow::bail!("cannot connect to PostgreSQL as configured ({mode}): {cause}")
        }
        other => Ok(ConnectCheck::Unreachable(format!("{other}"))),
    }
}

/// Applies pending migrations, creates the day partitions up to
/// [`partitions::DAYS_AHEAD`] days ahead, then rebuilds the statistics rollups if they were built by
/// other contribution rules than this binary's (or never: the first migrate of a database
/// that already holds sagas backfills them). Idempotent.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")?;
    let created = partitions::ensure(pool, chrono::Utc::now().date_naive())
        .await
        .context("creating the day partitions of sagas and saga_events")?;
    if !created.is_empty() {
        tracing::info!(days = ?created, "created day partitions");
    }
    let started = std::time::Instant::now();
    if let Some(rebuilt) = rollup::ensure_current(pool)
        .await
        .context("building the statistics rollups")?
    {
        tracing::info!(
            count_rows = rebuilt.count_rows,
            duration_rows = rebuilt.duration_rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            version = rollup::ROLLUP_VERSION,
            "statistics rollups rebuilt from the stored sagas"
        );
    }
    Ok(())
}

/// How a database's `_sqlx_migrations` table compares with the migrations embedded in this
/// binary ([`MIGRATOR`]), for `saga-tracker doctor`. Each list holds `(version, description)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// `_sqlx_migrations` exists (it does once `migrate` ran, even if nothing applied).
    pub table_exists: bool,
    /// Embedded migrations applied successfully with the same checksum.
    pub applied: usize,
    /// Embedded migrations the database has not applied.
    pub pending: Vec<(i64, String)>,
    /// Migrations recorded as failed (`success = false`): a migration that broke half-way.
    pub failed: Vec<(i64, String)>,
    /// Applied migrations whose checksum differs from the embedded file: someone edited an
    /// applied migration.
    pub changed: Vec<(i64, String)>,
    /// Applied migrations this binary does not know: the database was migrated by a newer
    /// tracker.
    pub unknown: Vec<(i64, String)>,
}

impl MigrationStatus {
    /// Nothing pending, failed or changed (unknown ones are a newer tracker's, not an error
    /// of this database).
    pub fn is_current(&self) -> bool {
        self.table_exists
            && self.pending.is_empty()
            && self.failed.is_empty()
            && self.changed.is_empty()
    }
}

/// Reads `_sqlx_migrations` and compares it with [`MIGRATOR`]. Read-only.
pub async fn migration_status(
    conn: &mut sqlx::PgConnection,
) -> Result<MigrationStatus, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
            .fetch_one(&mut *conn)
            .await?;
    let embedded: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let mut status = MigrationStatus {
        table_exists,
        ..Default::default()
    };
    if !table_exists {
        status.pending = embedded
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect();
        return Ok(status);
    }
    let rows: Vec<(i64, String, bool, Vec<u8>)> = sqlx::query_as(
        "select version, description, success, checksum from _sqlx_migrations order by version",
    )
    .fetch_all(&mut *conn)
    .await?;
    for m in &embedded {
        match rows.iter().find(|r| r.0 == m.version) {
            None => status.pending.push((m.version, m.description.to_string())),
            Some((_, _, false, _)) => status.failed.push((m.version, m.description.to_string())),
            Some((_, _, true, checksum)) if checksum.as_slice() != &*m.checksum => {
                status.changed.push((m.version, m.description.to_string()))
            }
            Some(_) => status.applied += 1,
        }
    }
    status.unknown = rows
        .iter()
        .filter(|r| !embedded.iter().any(|m| m.version == r.0))
        .map(|r| (r.0, r.1.clone()))
        .collect();
    Ok(status)
}

/// `select 1` with a deadline, for `/readyz`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, sqlx::query("select 1").execute(pool))
        .await
        .context("database ping timed out")?
        .context("database ping failed")?;
    Ok(())
}
