//! Wires the parts into one running service.
//!
//! [`Application::build`] does everything that can fail fast — binds the HTTP listener (port
//! 0 in tests), checks that PostgreSQL accepts the TLS settings and credentials, creates the
//! Kafka clients — so a misconfigured tracker exits before it claims to be up. The Kafka
//! connection check (TLS, SASL, topics) runs first thing in [`Application::run`], with the
//! HTTP server already answering `/readyz` with 503, and ends the process if it fails.
//! [`Application::run`] then serves until the cancellation token fires and drains in order: the consumer finishes its batch in flight and commits,
//! then the background jobs (gauges, retention, replica lag) and the HTTP server stop.
//!
//! Ingest and retention write through the primary pool; the API, the UI and the gauges read
//! through the read pool, which is the primary's own unless `database.read_url` names a
//! replica.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Authenticator, Surface};
use crate::config::{RetentionSettings, Settings, StuckSettings};
use crate::health::ConsumerHealth;
use crate::ingest::Ingestor;
use crate::stuck::StuckPolicy;
use crate::{background, metrics, store};

/// A built, not yet running, tracker.
pub struct Application {
    listener: TcpListener,
    /// The probes' and `/metrics`' own listener, when `http.ops_addr` is set.
    ops_listener: Option<TcpListener>,
    state: AppState,
    ingestor: Ingestor,
    stuck: StuckSettings,
    retention: RetentionSettings,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.listener.local_addr().ok())
            .field(
                "ops_addr",
                &self.ops_listener.as_ref().and_then(|l| l.local_addr().ok()),
            )
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `http.addr` (and `http.ops_addr`), sets up authentication (reading
    /// `auth.api_keys_file`), opens the (lazy) pool, checks/creates topics and subscribes.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = metrics::install().context("installing the Prometheus recorder")?;
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("binding `http.addr` = {}", settings.http.addr))?;
        let ops_listener = match settings.http.ops_addr {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding `http.ops_addr` = {addr}"))?,
            ),
        };
        let auth = Authenticator::new(&settings.auth)
            .await
            .context("setting up `[auth]`")?;
        let pool = store::connect_lazy(&settings.database)?;
        match store::check_connection(&settings.database).await? {
            store::ConnectCheck::Ok => {}
            store::ConnectCheck::Unreachable(why) => tracing::warn!(
                error = %why,
                "PostgreSQL is not reachable yet; starting anyway (readiness reports it)"
            ),
        }
        let read_pool = store::connect_read_lazy(&settings.database, &pool)?;
        if settings.database.read_url.is_some() {
            match store::check_connection_to(&settings.database, store::Db::Replica).await? {
                store::ConnectCheck::Ok => {
                    tracing::info!("reads go to the replica at `database.read_url`")
                }
                store::ConnectCheck::Unreachable(why) => tracing::warn!(
                    error = %why,
                    "the read replica (`database.read_url`) is not reachable yet; starting \
                     anyway (readiness reports it)"
                ),
            }
        }
        let health = ConsumerHealth::default();
        let ingestor = Ingestor::new(&settings, pool.clone(), health.clone())?;
        Ok(Self {
            listener,
            ops_listener,
            state: AppState {
                pool,
                read_pool,
                consumer: health,
                consumer_enabled: true,
                metrics,
                stuck: StuckPolicy::from(&settings.stuck),
                stats_timeout: std::time::Duration::from_millis(settings.http.stats_timeout_ms),
                auth,
                settings: Arc::new(settings.clone()),
            },
            ingestor,
            stuck: settings.stuck.clone(),
            retention: settings.retention.clone(),
        })
    }

    /// The address the HTTP server listens on (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Where the probes and `/metrics` are served: the ops listener's address when
    /// `http.ops_addr` is set, else the API's own ([`Self::local_addr`]).
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        match &self.ops_listener {
            Some(l) => Ok(l.local_addr()?),
            None => self.local_addr(),
        }
    }

    /// The database pool, for tests and tools that run beside the tracker.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// The pool the API and the UI read from: `database.read_url`'s, or [`Self::pool`].
    pub fn read_pool(&self) -> &PgPool {
        &self.state.read_pool
    }

    /// Runs until `shutdown` is cancelled, then drains. If the consumer fails, the HTTP
    /// server and the background jobs are stopped too and the error returned, so the process
    /// exits non-zero and its supervisor restarts it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            ops_listener,
            state,
            ingestor,
            stuck,
            retention,
        } = self;
        let pool = state.pool.clone();
        let read_pool = state.read_pool.clone();
        let has_replica = state.settings.database.read_url.is_some();
        let http_stop = CancellationToken::new();
        let (server, ops_server) = match ops_listener {
            None => (
                tokio::spawn(api::serve_surface(
                    listener,
                    state,
                    Surface::All,
                    http_stop.clone(),
                )),
                None,
            ),
            Some(ops) => (
                tokio::spawn(api::serve_surface(
                    listener,
                    state.clone(),
                    Surface::Api,
                    http_stop.clone(),
                )),
                Some(tokio::spawn(api::serve_surface(
                    ops,
                    state,
                    Surface::Ops,
                    http_stop.clone(),
                ))),
            ),
        };
        let jobs_stop = CancellationToken::new();
        let gauges = tokio::spawn(background::run_gauges(
            read_pool.clone(),
            stuck,
            jobs_stop.clone(),
        ));
        let replica_lag = has_replica.then(|| {
            tokio::spawn(background::run_replica_lag(
                pool.clone(),
                read_pool,
                jobs_stop.clone(),
            ))
        });
        let partitions = tokio::spawn(background::run_partitions(pool.clone(), jobs_stop.clone()));
        let retention = tokio::spawn(background::run_retention(
            pool,
            retention,
            jobs_stop.clone(),
        ));
        let consumed = ingestor.run(shutdown.clone()).await;
        if let Err(e) = &consumed {
            tracing::error!(error = format!("{e:#}"), "consumer failed; shutting down");
        }
        jobs_stop.cancel();
        for mut job in [gauges, partitions, retention]
            .into_iter()
            .chain(replica_lag)
        {
            if tokio::time::timeout(background::STOP_TIMEOUT, &mut job)
                .await
                .is_err()
            {
                tracing::warn!("a background job did not stop in time; aborting it");
                job.abort();
            }
        }
        http_stop.cancel();
        let served = server.await.context("HTTP server task panicked")?;
        let ops_served = match ops_server {
            Some(task) => task.await.context("ops HTTP server task panicked")?,
            None => Ok(()),
        };
        consumed?;
        served?;
        ops_served?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}
