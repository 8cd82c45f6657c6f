//! Periodic jobs that run beside the consumer for as long as the tracker runs: refreshing
//! the database-derived gauges ([`run_gauges`], reading from the read pool, so with a replica
//! they trail the primary by its lag), retention ([`run_retention`], on the primary: it
//! deletes) and, with `database.read_url`, the replica-lag gauges ([`run_replica_lag`]).
//!
//! Each takes its pool, settings and cancellation token from the caller, never blocks
//! ingestion (its own short statements on the shared pool), logs and counts its failures
//! and tries again on its next tick instead of stopping the tracker. Every replica runs them:
//! the gauges are the same everywhere by construction, and concurrent retention passes skip
//! each other's locked rows.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{RetentionSettings, StuckSettings};
use crate::metrics::{self, DbGauges};
use crate::store::{insight, partitions, replica, retention};
use crate::stuck::StuckPolicy;

/// Reads active and stuck counts from the database once and sets the gauges.
pub async fn refresh_gauges(
    pool: &PgPool,
    policy: &StuckPolicy,
    gauges: &mut DbGauges,
) -> Result<(), sqlx::Error> {
    let now = Utc::now().trunc_subsecs(6);
    let counts = insight::gauge_counts(pool, policy, now).await?;
    let stuck: Vec<(String, &'static str, i64)> = counts
        .stuck
        .into_iter()
        .map(|(t, reason, n)| (t, reason.as_str(), n))
        .collect();
    gauges.set(&counts.active, &stuck, now);
    Ok(())
}

/// Refreshes the gauges every `stuck.evaluate_interval_secs` until `shutdown`.
pub async fn run_gauges(pool: PgPool, settings: StuckSettings, shutdown: CancellationToken) {
    let policy = StuckPolicy::from(&settings);
    let mut gauges = DbGauges::default();
    let mut tick = tokio::time::interval(settings.evaluate_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = refresh_gauges(&pool, &policy, &mut gauges).await {
            tracing::warn!(error = %e, "refreshing the active/stuck gauges failed; retrying next interval");
        }
    }
}

/// One retention pass at the current time: removes every finished saga older than
/// `retention.max_age_days` in batches, counting what each batch removed.
pub async fn retention_pass(
    pool: &PgPool,
    settings: &RetentionSettings,
) -> Result<retention::Removed, sqlx::Error> {
    let cutoff = Utc::now() - settings.max_age();
    retention::run_pass(pool, cutoff, settings.batch_size, |b| {
        metrics::retention_deleted(b.sagas, b.events);
        metrics::retention_days(b.days, b.moved);
    })
    .await
}

/// Runs a retention pass every `retention.interval_secs` until `shutdown` (nothing when
/// retention is disabled). The first pass waits one interval, so a restart loop cannot
/// hammer the database.
pub async fn run_retention(pool: PgPool, settings: RetentionSettings, shutdown: CancellationToken) {
    if !settings.enabled {
        tracing::info!("retention is disabled");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.interval()) => {}
        }
        let pass = retention_pass(&pool, &settings);
        let result = tokio::select! {
            // A batch in flight is one short transaction: dropping it rolls it back.
            _ = shutdown.cancelled() => return,
            r = pass => r,
        };
        match result {
            Ok(r) if r.sagas > 0 || r.days > 0 => tracing::info!(
                sagas = r.sagas,
                events = r.events,
                days_dropped = r.days,
                moved_to_today = r.moved,
                max_age_days = settings.max_age_days,
                "retention removed old sagas"
            ),
            Ok(_) => {}
            Err(e) => {
                metrics::retention_failed();
                tracing::warn!(error = %e, "retention pass failed; retrying next interval");
            }
        }
    }
}

/// How often [`run_partitions`] makes sure the coming days have partitions.
pub const PARTITION_INTERVAL: Duration = Duration::from_secs(3600);

/// Creates the day partitions ahead ([`partitions::ensure`]) every [`PARTITION_INTERVAL`]
/// until `shutdown`, whether or not retention is on: ingest writes to today's partition.
/// (`migrate` creates them at start-up; this keeps a long-running tracker ahead.)
pub async fn run_partitions(pool: PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PARTITION_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match partitions::ensure(&pool, Utc::now().date_naive()).await {
            Ok(created) if !created.is_empty() => {
                tracing::info!(days = ?created, "created day partitions")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "creating the coming days' partitions failed; retrying next hour"
            ),
        }
    }
}

/// How often [`run_replica_lag`] measures the replica.
pub const REPLICA_LAG_INTERVAL: Duration = Duration::from_secs(10);
/// How long one replica-lag measurement may wait for each database.
pub const REPLICA_LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// Measures how far the read replica trails the primary every [`REPLICA_LAG_INTERVAL`] and
/// sets the `saga_tracker_db_replica_*` gauges, until `shutdown`.
pub async fn run_replica_lag(primary: PgPool, read: PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REPLICA_LAG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match replica::lag(&primary, &read, REPLICA_LAG_TIMEOUT).await {
            Ok(lag) => metrics::replica_observed(Some(&lag)),
            Err(e) => {
                metrics::replica_observed(None);
                tracing::warn!(
                    error = format!("{e:#}"),
                    "measuring the read replica's lag failed; retrying next interval"
                );
            }
        }
    }
}

/// How long [`crate::app::Application::run`] waits for the background jobs after shutdown.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
