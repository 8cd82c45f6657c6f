//! PostgreSQL: the connection pool, migrations, the batched ingest transaction ([`write`]),
//! the queries behind the API ([`read`], and [`insight`] for statistics and gauges) and the
//! removal of old sagas ([`retention`]), and the statistics rollups both keep exact
//! ([`rollup`]).
//!
//! Only this module speaks SQL. It does not know about Kafka: the ingest loop hands it
//! decoded events and gets back what to count.

pub mod insight;
pub mod read;
pub mod retention;
pub mod rollup;
pub mod rows;
pub mod write;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseSettings;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool lazily: the tracker starts (and `/healthz` answers) even while the database
/// is down; readiness and the ingest loop report and retry instead.
pub fn connect_lazy(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .context("`database.url` is not a valid PostgreSQL URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options.application_name("saga-tracker")))
}

/// Applies pending migrations, then rebuilds the statistics rollups if they were built by
/// other contribution rules than this binary's (or never: the first migrate of a database
/// that already holds sagas backfills them). Idempotent.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")?;
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

/// `select 1` with a deadline, for `/readyz`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, sqlx::query("select 1").execute(pool))
        .await
        .context("database ping timed out")?
        .context("database ping failed")?;
    Ok(())
}
