//! How far the read replica (`database.read_url`) trails the primary, for `/readyz` and the
//! replica-lag gauges.
//!
//! The lag is measured in WAL bytes: the primary's current write position
//! (`pg_current_wal_lsn()`) minus what the replica has replayed (`pg_last_wal_replay_lsn()`).
//! That is zero on an idle, caught-up pair, unlike `now() - pg_last_xact_replay_timestamp()`,
//! which keeps growing while nobody writes. The seconds figure is that replay age, but only
//! while bytes are outstanding (0 when caught up), so it reads "the replica shows the
//! primary as of this long ago". When the primary cannot be asked, the bytes fall back to
//! received-but-not-replayed WAL on the replica alone (which misses WAL not yet received).

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

/// What the replica said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    /// `pg_is_in_recovery()`: false when `read_url` names a primary (then there is no lag).
    pub in_recovery: bool,
    /// `pg_is_wal_replay_paused()` (`select pg_wal_replay_pause()` was run on the replica).
    pub replay_paused: bool,
    /// WAL bytes written on the primary and not yet replayed on the replica; `None` when not
    /// a standby.
    pub bytes: Option<i64>,
    /// Age of the last replayed transaction while `bytes > 0`, else 0; `None` when not a
    /// standby or nothing was replayed since the replica started.
    pub seconds: Option<f64>,
    /// Whether `bytes` was measured against the primary (true) or only from the replica's
    /// received WAL (the primary did not answer).
    pub against_primary: bool,
}

/// Asks the primary for its WAL position, then the replica how far it has replayed, each
/// within `timeout`. An error means the replica did not answer.
pub async fn lag(
    primary: &PgPool,
    replica: &PgPool,
    timeout: Duration,
) -> anyhow::Result<ReplicaLag> {
    // A primary that is down makes the figure less exact, not the replica unready.
    let primary_lsn: Option<String> = tokio::time::timeout(
        timeout,
        sqlx::query_scalar::<_, String>("select pg_current_wal_lsn()::text").fetch_one(primary),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let row: (bool, Option<bool>, Option<i64>, Option<f64>) = tokio::time::timeout(
        timeout,
        sqlx::query_as(
            "select pg_is_in_recovery(),
                    case when pg_is_in_recovery() then pg_is_wal_replay_paused() end,
                    case when pg_is_in_recovery() then
                        greatest(0, pg_wal_lsn_diff(
                            coalesce($1::pg_lsn, pg_last_wal_receive_lsn()),
                            pg_last_wal_replay_lsn()))::int8
                    end,
                    extract(epoch from now() - pg_last_xact_replay_timestamp())::float8",
        )
        .bind(primary_lsn.as_deref())
        .fetch_one(replica),
    )
    .await
    .context("the read replica did not answer in time")?
    .context("querying the read replica's replay position")?;
    let (in_recovery, paused, bytes, replay_age) = row;
    let seconds = match bytes {
        None => None,
        Some(0) => Some(0.0),
        Some(_) => replay_age.map(|s| s.max(0.0)),
    };
    Ok(ReplicaLag {
        in_recovery,
        replay_paused: paused.unwrap_or(false),
        bytes,
        seconds,
        against_primary: primary_lsn.is_some(),
    })
}
