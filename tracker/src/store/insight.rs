//! Aggregate queries: statistics, counts per saga type, and the numbers behind the
//! active/stuck gauges.
//!
//! Everything is computed by PostgreSQL (`count … filter`, `percentile_cont`, `group by`) and
//! comes back as a few small rows, whatever the number of sagas: no saga or event row is
//! ever loaded into the tracker for these. Each function reads one snapshot, so its numbers
//! agree with one another.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::read::{push_filter, push_stuck_reason, SagaFilter, StuckAt};
use crate::stuck::{StuckPolicy, StuckReason};

/// Percentiles reported for every duration: p50, p95, p99.
pub const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Most `(saga_type, step)` rows a statistics answer carries; the ones with the most
/// failures, then the most sagas, are kept.
pub const MAX_STEP_ROWS: i64 = 500;

/// What the statistics are computed over. Empty = every saga.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsFilter {
    pub saga_type: Option<String>,
    /// `started_at >= started_after`.
    pub started_after: Option<DateTime<Utc>>,
    /// `started_at < started_before`.
    pub started_before: Option<DateTime<Utc>>,
    /// The service emitted at least one of the saga's events.
    pub service: Option<String>,
}

impl StatsFilter {
    fn as_saga_filter(&self) -> SagaFilter {
        SagaFilter {
            saga_type: self.saga_type.clone(),
            started_after: self.started_after,
            started_before: self.started_before,
            service: self.service.clone(),
            ..SagaFilter::default()
        }
    }
}

/// Counts and durations of one saga type, or of all types together (`saga_type = None`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TypeStats {
    /// `None` on the all-types row.
    pub saga_type: Option<String>,
    pub total: i64,
    pub started: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
    pub compensating: i64,
    pub compensated: i64,
    /// p50/p95/p99 of `duration_ms` over finished sagas; `None` when none finished.
    pub duration_ms: Option<Vec<f64>>,
    /// Sagas whose compensation began.
    pub compensation_started: i64,
    /// Of those, the ones that failed after compensation began (compensation failed).
    pub compensation_failed: i64,
    /// p50/p95/p99 of `compensation_duration_ms` over finished compensations.
    pub compensation_duration_ms: Option<Vec<f64>>,
}

#[derive(sqlx::FromRow)]
struct TypeStatsRow {
    all_types: bool,
    #[sqlx(flatten)]
    stats: TypeStats,
}

/// One step of one saga type.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StepStats {
    /// The `sagaType` the step's events carry (the same as the saga's, unless an emitter
    /// changed a saga's type midway).
    pub saga_type: String,
    pub step: String,
    /// Sagas in which the step reported anything.
    pub sagas: i64,
    /// Sagas in which the step reported `FAILED` at least once.
    pub failures: i64,
    /// p50/p95/p99 of the step's duration in milliseconds (first `STARTED`, or first event,
    /// to first `SUCCEEDED`/`FAILED`; at least 0) over the sagas where it ended.
    pub duration_ms: Option<Vec<f64>>,
}

/// The answer to a statistics query.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// All matching sagas together.
    pub overall: TypeStats,
    /// One entry per saga type, by name.
    pub by_type: Vec<TypeStats>,
    /// Per `(saga_type, step)`, most failures first (at most [`MAX_STEP_ROWS`]).
    pub steps: Vec<StepStats>,
}

// `grouping()` marks the all-types row; its `saga_type` cannot be trusted to be null, because
// PostgreSQL folds `where saga_type = $1` into the grouped column.
const TYPE_STATS: &str = "select grouping(s.saga_type) = 1 as all_types, s.saga_type, \
    count(*) as total, \
    count(*) filter (where s.status = 'STARTED') as started, \
    count(*) filter (where s.status = 'IN_PROGRESS') as in_progress, \
    count(*) filter (where s.status = 'COMPLETED') as completed, \
    count(*) filter (where s.status = 'FAILED') as failed, \
    count(*) filter (where s.status = 'COMPENSATING') as compensating, \
    count(*) filter (where s.status = 'COMPENSATED') as compensated, \
    percentile_cont(array[0.5, 0.95, 0.99]) within group (order by s.duration_ms) \
        filter (where s.duration_ms is not null) as duration_ms, \
    count(*) filter (where s.compensation_started_at is not null) as compensation_started, \
    count(*) filter (where s.compensation_started_at is not null and s.status = 'FAILED') \
        as compensation_failed, \
    percentile_cont(array[0.5, 0.95, 0.99]) within group (order by s.compensation_duration_ms) \
        filter (where s.compensation_duration_ms is not null) as compensation_duration_ms \
    from sagas s where true";

/// Statistics over the sagas matching `filter`, computed in the database from one snapshot.
pub async fn stats(pool: &PgPool, filter: &StatsFilter) -> Result<Stats, sqlx::Error> {
    let filter = filter.as_saga_filter();
    // The stuck rules are not part of a statistics filter; the clock is never read.
    let policy = StuckPolicy::default();
    let at = StuckAt {
        policy: &policy,
        now: Utc::now(),
    };

    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    // The percentile sorts and the per-(saga, step) hash aggregate spill to disk at the 4 MB
    // default; this transaction may use more.
    sqlx::query("set local work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    // A filtered request should fetch the matching sagas' events through
    // `saga_events_saga_id_idx`; with the spinning-disk default (4) the planner prefers a
    // full scan of `saga_events` well past the point where it is slower (measured: 1-day
    // window at 1M sagas, 0.9 s → 0.34 s).
    sqlx::query("set local random_page_cost = 1.1")
        .execute(&mut *tx)
        .await?;

    let mut qb = QueryBuilder::<Postgres>::new(TYPE_STATS);
    push_filter(&mut qb, &filter, at);
    // The empty grouping set is the all-types row (saga_type null).
    qb.push(" group by grouping sets ((s.saga_type), ()) order by all_types desc, s.saga_type");
    let rows: Vec<(bool, TypeStats)> = qb
        .build_query_as::<TypeStatsRow>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.all_types, r.stats))
        .collect();

    // Per step: one row per (saga, step) from the saga's events (hash aggregate), then
    // percentiles per (type, step). Unfiltered, this reads `saga_events` once without a
    // join; filtered, only the matching sagas' events (semi-join on the saga_id index).
    let mut qb = QueryBuilder::<Postgres>::new(
        "with per_saga as ( \
           select e.saga_type, e.step, \
             greatest(0, date_part('epoch', \
               min(e.occurred_at) filter (where e.step_status in ('SUCCEEDED', 'FAILED')) \
               - coalesce(min(e.occurred_at) filter (where e.step_status = 'STARTED'), \
                          min(e.occurred_at))) * 1000) as duration_ms, \
             bool_or(e.step_status = 'FAILED') as failed \
           from saga_events e",
    );
    if filter != SagaFilter::default() {
        qb.push(" where e.saga_id in (select s.saga_id from sagas s where true");
        push_filter(&mut qb, &filter, at);
        qb.push(")");
    }
    qb.push(
        " group by e.saga_id, e.step, e.saga_type) \
         select saga_type, step, count(*) as sagas, count(*) filter (where failed) as failures, \
           percentile_cont(array[0.5, 0.95, 0.99]) within group (order by duration_ms) \
               as duration_ms \
         from per_saga group by saga_type, step \
         order by failures desc, sagas desc, saga_type, step limit ",
    )
    .push_bind(MAX_STEP_ROWS);
    let steps: Vec<StepStats> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let mut overall = None;
    let mut by_type = Vec::with_capacity(rows.len());
    for (all_types, stats) in rows {
        if all_types {
            overall = Some(TypeStats {
                saga_type: None,
                ..stats
            });
        } else {
            by_type.push(stats);
        }
    }
    // No matching saga: grouping sets give no row at all for an empty input.
    let overall = overall.unwrap_or(TypeStats {
        saga_type: None,
        total: 0,
        started: 0,
        in_progress: 0,
        completed: 0,
        failed: 0,
        compensating: 0,
        compensated: 0,
        duration_ms: None,
        compensation_started: 0,
        compensation_failed: 0,
        compensation_duration_ms: None,
    });
    Ok(Stats {
        overall,
        by_type,
        steps,
    })
}

/// `(saga_type, status, count)` for every type and status present, ordered by type.
pub async fn counts_by_type(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select saga_type, status, count(*) from sagas group by saga_type, status \
         order by saga_type, status",
    )
    .fetch_all(pool)
    .await
}

/// What the active and stuck gauges show, straight from the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GaugeCounts {
    /// Non-terminal sagas (`STARTED`, `IN_PROGRESS`, `COMPENSATING`) per type.
    pub active: Vec<(String, i64)>,
    /// Stuck sagas per type and reason (only non-zero counts).
    pub stuck: Vec<(String, StuckReason, i64)>,
}

/// Active and stuck counts per saga type at `now`.
///
/// Two index-backed scans: the running sagas (partial index `sagas_active_updated_idx`) and
/// the failed sagas whose compensation has not finished (`sagas_failed_open_idx`). Finished
/// sagas, which are nearly all rows, are never read.
pub async fn gauge_counts(
    pool: &PgPool,
    policy: &StuckPolicy,
    now: DateTime<Utc>,
) -> Result<GaugeCounts, sqlx::Error> {
    let at = StuckAt { policy, now };
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;

    let mut qb =
        QueryBuilder::<Postgres>::new("select s.saga_type, count(*), count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::NoProgress, at);
    qb.push("), count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::CompensationNotFinished, at);
    qb.push(
        ") from sagas s where s.status not in ('COMPLETED', 'COMPENSATED', 'FAILED') \
         group by s.saga_type",
    );
    let running: Vec<(String, i64, i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;

    let mut qb = QueryBuilder::<Postgres>::new("select s.saga_type, count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::FailedNotCompensated, at);
    qb.push("), count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::CompensationNotFinished, at);
    qb.push(
        ") from sagas s where s.status = 'FAILED' and s.compensation_ended_at is null \
         group by s.saga_type",
    );
    let failed: Vec<(String, i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let mut out = GaugeCounts::default();
    for (saga_type, active, no_progress, compensation) in running {
        out.active.push((saga_type.clone(), active));
        out.stuck
            .push((saga_type.clone(), StuckReason::NoProgress, no_progress));
        out.stuck.push((
            saga_type,
            StuckReason::CompensationNotFinished,
            compensation,
        ));
    }
    for (saga_type, not_compensated, compensation) in failed {
        out.stuck.push((
            saga_type.clone(),
            StuckReason::FailedNotCompensated,
            not_compensated,
        ));
        out.stuck.push((
            saga_type,
            StuckReason::CompensationNotFinished,
            compensation,
        ));
    }
    out.stuck.retain(|(_, _, n)| *n > 0);
    Ok(out)
}
