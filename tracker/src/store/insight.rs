//! Aggregate queries: statistics, counts per saga type, and the numbers behind the
//! active/stuck gauges.
//!
//! Statistics are sums of the rollups the ingest transaction keeps ([`rollup`]): whole days
//! from the daily tables, whole hours around them from the hourly ones. Their cost grows
//! with days × saga types × steps × duration buckets, not with the number of sagas. The
//! partial hours at the ends of a time filter are computed from the stored sagas with the
//! same contribution SQL, so a filter is exact to the microsecond. The gauges read the
//! small partial indexes over running and failed sagas. Everything is summed by PostgreSQL
//! and comes back as a few small rows: no saga or event row is loaded into the tracker for
//! these. Each function reads one snapshot, so its numbers agree with one another.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::read::{push_stuck_reason, StuckAt};
use super::rollup::{
    self, estimate_percentiles, floor_to, Bucket, COUNTS as COUNT_COLUMNS, SAGA_COLUMNS,
    STEP_DURATION_US,
};
use crate::stuck::{StuckPolicy, StuckReason};

/// Percentiles reported for every duration: p50, p95, p99.
pub const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Most `(saga_type, step)` rows a statistics answer carries; the ones with the most
/// failures, then the most sagas, are kept.
pub const MAX_STEP_ROWS: usize = 500;

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

/// Counts and durations of one saga type, or of all types together (`saga_type = None`).
/// Durations are estimated from the rollups' histograms ([`estimate_percentiles`]).
#[derive(Debug, Clone, PartialEq)]
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

impl TypeStats {
    fn empty(saga_type: Option<String>) -> Self {
        Self {
            saga_type,
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
        }
    }

    fn add_counts(&mut self, other: &TypeStats) {
        self.total += other.total;
        self.started += other.started;
        self.in_progress += other.in_progress;
        self.completed += other.completed;
        self.failed += other.failed;
        self.compensating += other.compensating;
        self.compensated += other.compensated;
        self.compensation_started += other.compensation_started;
        self.compensation_failed += other.compensation_failed;
    }
}

/// One step of one saga type.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The type of the sagas the step ran in.
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

/// `[from, to)` on a rollup period (an hour or a day), either end open.
type PeriodRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// How a statistics query is answered: whole days from the daily rollups, whole hours
/// around them from the hourly ones, and the partial hours at either end of a time filter
/// from the sagas themselves (with the same contribution SQL).
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// `[from, to)` on `stats_daily.day`; `None` when the window holds no whole day.
    daily: Option<PeriodRange>,
    /// `[from, to)` ranges on `stats_hourly.hour`.
    hourly: Vec<PeriodRange>,
    /// `[from, to)` ranges of `started_at` computed from the stored sagas.
    edges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

fn ceil_to(t: DateTime<Utc>, unit: TimeDelta) -> DateTime<Utc> {
    let floor = floor_to(t, unit);
    if floor == t {
        t
    } else {
        floor + unit
    }
}

impl Plan {
    fn new(after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) -> Self {
        let (hour, day) = (TimeDelta::hours(1), TimeDelta::days(1));
        let empty = Self {
            daily: None,
            hourly: Vec::new(),
            edges: Vec::new(),
        };
        // Whole hours [h1, h2); open ends stay open.
        let h1 = after.map(|t| ceil_to(t, hour));
        let h2 = before.map(|t| floor_to(t, hour));
        if let (Some(a), Some(b), Some(h1), Some(h2)) = (after, before, h1, h2) {
            if h1 >= h2 {
                // Inside one hour, or across one boundary with no whole hour.
                let edges = if a < b { vec![(a, b)] } else { Vec::new() };
                return Self { edges, ..empty };
            }
        }
        let mut plan = empty;
        if let (Some(a), Some(h1)) = (after, h1) {
            if a < h1 {
                plan.edges.push((a, h1));
            }
        }
        if let (Some(b), Some(h2)) = (before, h2) {
            if h2 < b {
                plan.edges.push((h2, b));
            }
        }
        // Whole days [d1, d2) inside the whole hours.
        let d1 = h1.map(|t| ceil_to(t, day));
        let d2 = h2.map(|t| floor_to(t, day));
        if let (Some(d1), Some(d2)) = (d1, d2) {
            if d1 >= d2 {
                plan.hourly.push((h1, h2));
                return plan;
            }
        }
        plan.daily = Some((d1, d2));
        if let (Some(h1), Some(d1)) = (h1, d1) {
            if h1 < d1 {
                plan.hourly.push((Some(h1), Some(d1)));
            }
        }
        if let (Some(h2), Some(d2)) = (h2, d2) {
            if d2 < h2 {
                plan.hourly.push((Some(d2), Some(h2)));
            }
        }
        plan
    }
}

/// One row of the summed counts: a saga type's (`step = ''`) or a step's.
#[derive(sqlx::FromRow)]
struct CountRow {
    saga_type: String,
    step: String,
    total: i64,
    started: i64,
    in_progress: i64,
    completed: i64,
    failed: i64,
    compensating: i64,
    compensated: i64,
    compensation_started: i64,
    compensation_failed: i64,
}

#[derive(sqlx::FromRow)]
struct DurationRow {
    saga_type: String,
    step: String,
    kind: String,
    bucket: i16,
    count: i64,
    sum_ms: f64,
}

/// Pushes `with edge_s …, edge_steps …` (the sagas of the partial hours, with the filter),
/// when the plan has edges.
fn push_edge_ctes(qb: &mut QueryBuilder<'_, Postgres>, plan: &Plan, filter: &StatsFilter) {
    if plan.edges.is_empty() {
        return;
    }
    qb.push(format!(
        "with edge_s as materialized (select {SAGA_COLUMNS}, bucket_day from sagas s where ("
    ));
    for (i, (from, to)) in plan.edges.iter().enumerate() {
        if i > 0 {
            qb.push(" or ");
        }
        qb.push("(s.started_at >= ")
            .push_bind(*from)
            .push(" and s.started_at < ")
            .push_bind(*to)
            .push(")");
    }
    qb.push(")");
    if let Some(t) = &filter.saga_type {
        qb.push(" and s.saga_type = ").push_bind(t.clone());
    }
    if let Some(svc) = &filter.service {
        qb.push(" and ");
        super::read::push_service(qb, svc.clone(), filter.saga_type.clone());
    }
    qb.push(format!(
        "), edge_steps as materialized (select e.saga_id, e.step, \
           bool_or(e.step_status = 'FAILED') as failed, {STEP_DURATION_US} as duration_us \
         from saga_events e \
         where (e.saga_id, e.bucket_day) in (select saga_id, bucket_day from edge_s) \
         group by e.saga_id, e.step) "
    ));
}

/// Pushes `select {columns} from {table} where service = … and {period} … and saga_type
/// = …`.
fn push_rollup_select(
    qb: &mut QueryBuilder<'_, Postgres>,
    columns: &str,
    (table, period): (&str, &str),
    range: PeriodRange,
    filter: &StatsFilter,
) {
    qb.push(format!("select {columns} from {table} where service = "))
        .push_bind(filter.service.clone().unwrap_or_default());
    if let Some(from) = range.0 {
        qb.push(format!(" and {period} >= ")).push_bind(from);
    }
    if let Some(to) = range.1 {
        qb.push(format!(" and {period} < ")).push_bind(to);
    }
    if let Some(t) = &filter.saga_type {
        qb.push(" and saga_type = ").push_bind(t.clone());
    }
}

/// `select {columns} from ({rows}) c where c.service = …` over the edge contributions.
fn push_edge_select(
    qb: &mut QueryBuilder<'_, Postgres>,
    columns: &str,
    rows: &str,
    filter: &StatsFilter,
) {
    qb.push(format!(
        "select {columns} from ({rows}) c where c.service = "
    ))
    .push_bind(filter.service.clone().unwrap_or_default());
}

/// One summed query: `select {group}, {aggregates} from (<{columns} of the daily and hourly
/// rollup rows> union all <{edge_columns} of {edge_rows}>) x group by {group}`.
struct Summed<'s> {
    /// The hourly and the daily table.
    tables: (&'s str, &'s str),
    columns: &'s str,
    edge_rows: &'s str,
    edge_columns: &'s str,
    group: &'s str,
    aggregates: &'s str,
}

fn summed_query<'a>(
    plan: &Plan,
    filter: &StatsFilter,
    q: Summed<'_>,
) -> QueryBuilder<'a, Postgres> {
    let Summed {
        tables,
        columns,
        edge_rows,
        edge_columns,
        group,
        aggregates,
    } = q;
    let mut qb = QueryBuilder::new("");
    push_edge_ctes(&mut qb, plan, filter);
    qb.push(format!("select {group}, {aggregates} from ("));
    let mut parts = 0;
    let mut union = |qb: &mut QueryBuilder<'_, Postgres>| {
        if parts > 0 {
            qb.push(" union all ");
        }
        parts += 1;
    };
    if let Some(range) = plan.daily {
        union(&mut qb);
        push_rollup_select(&mut qb, columns, (tables.1, "day"), range, filter);
    }
    for range in &plan.hourly {
        union(&mut qb);
        push_rollup_select(&mut qb, columns, (tables.0, "hour"), *range, filter);
    }
    if !plan.edges.is_empty() {
        union(&mut qb);
        push_edge_select(&mut qb, edge_columns, edge_rows, filter);
    }
    if parts == 0 {
        // Empty time window: no day, no hour and no edge.
        qb.push(format!("select {columns} from {} where false", tables.0));
    }
    qb.push(format!(") x group by {group}"));
    qb
}

/// Statistics over the sagas matching `filter`, summed by the database from the rollups
/// (whole hours) and from the stored sagas (partial hours at the ends of a time filter),
/// in one snapshot. Fails with SQLSTATE `57014` when it takes longer than `timeout`.
pub async fn stats(
    pool: &PgPool,
    filter: &StatsFilter,
    timeout: Duration,
) -> Result<Stats, sqlx::Error> {
    let plan = Plan::new(filter.started_after, filter.started_before);
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    // These statements read a few dozen rollup rows, but over large tables their estimated
    // cost crosses PostgreSQL's JIT thresholds, and compiling them took 1.2–1.9 s of a 3 s
    // overview at 10M sagas (docs/BENCHMARKS.md); without JIT the same plans run in ms.
    sqlx::query("set local jit = off").execute(&mut *tx).await?;
    sqlx::query(&format!(
        "set local statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await?;

    let counts = COUNT_COLUMNS.join(", ");
    let sums = COUNT_COLUMNS
        .map(|c| format!("sum({c})::bigint as {c}"))
        .join(", ");
    let rows: Vec<CountRow> = summed_query(
        &plan,
        filter,
        Summed {
            tables: ("stats_hourly", "stats_daily"),
            columns: &format!("saga_type, step, {counts}"),
            edge_rows: &rollup::count_rows("edge"),
            edge_columns: &format!(
                "c.saga_type, c.step, {}",
                COUNT_COLUMNS.map(|c| format!("c.{c}")).join(", ")
            ),
            group: "saga_type, step",
            aggregates: &sums,
        },
    )
    .build_query_as()
    .fetch_all(&mut *tx)
    .await?;

    let durations: Vec<DurationRow> = summed_query(
        &plan,
        filter,
        Summed {
            tables: ("stats_hourly_durations", "stats_daily_durations"),
            columns: "saga_type, step, kind::text as kind, bucket, count, sum_us",
            edge_rows: &rollup::duration_rows("edge"),
            edge_columns: "c.saga_type, c.step, c.kind::text, c.bucket, c.n as count, \
                           c.us as sum_us",
            group: "saga_type, step, kind, bucket",
            aggregates: "sum(count)::bigint as count, sum(sum_us)::float8 / 1000 as sum_ms",
        },
    )
    .build_query_as()
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    Ok(assemble(rows, durations))
}

/// Histograms keyed by (saga type, step, kind), buckets in index order.
type Histograms = BTreeMap<(String, String, String), BTreeMap<i16, (i64, f64)>>;

fn percentiles_of(hist: Option<&BTreeMap<i16, (i64, f64)>>) -> Option<Vec<f64>> {
    let buckets: Vec<Bucket> = hist?
        .iter()
        .map(|(&index, &(count, sum_ms))| Bucket {
            index,
            count,
            sum_ms,
        })
        .collect();
    estimate_percentiles(&buckets, &PERCENTILES)
}

fn assemble(rows: Vec<CountRow>, durations: Vec<DurationRow>) -> Stats {
    let mut hist: Histograms = BTreeMap::new();
    // The all-types histograms, keyed by kind.
    let mut overall_hist: BTreeMap<String, BTreeMap<i16, (i64, f64)>> = BTreeMap::new();
    for d in durations {
        if d.count <= 0 {
            continue;
        }
        if d.step.is_empty() {
            let b = overall_hist
                .entry(d.kind.clone())
                .or_default()
                .entry(d.bucket)
                .or_default();
            b.0 += d.count;
            b.1 += d.sum_ms;
        }
        let b = hist
            .entry((d.saga_type, d.step, d.kind))
            .or_default()
            .entry(d.bucket)
            .or_default();
        b.0 += d.count;
        b.1 += d.sum_ms;
    }
    let type_durations = |saga_type: &str, kind: &str| {
        percentiles_of(hist.get(&(saga_type.to_owned(), String::new(), kind.to_owned())))
    };

    let mut overall = TypeStats::empty(None);
    let mut by_type = Vec::new();
    let mut steps = Vec::new();
    for r in rows {
        if r.total <= 0 {
            continue;
        }
        if r.step.is_empty() {
            let t = TypeStats {
                duration_ms: type_durations(&r.saga_type, "s"),
                compensation_duration_ms: type_durations(&r.saga_type, "c"),
                saga_type: Some(r.saga_type),
                total: r.total,
                started: r.started,
                in_progress: r.in_progress,
                completed: r.completed,
                failed: r.failed,
                compensating: r.compensating,
                compensated: r.compensated,
                compensation_started: r.compensation_started,
                compensation_failed: r.compensation_failed,
            };
            overall.add_counts(&t);
            by_type.push(t);
        } else {
            steps.push(StepStats {
                duration_ms: percentiles_of(hist.get(&(
                    r.saga_type.clone(),
                    r.step.clone(),
                    "t".to_owned(),
                ))),
                saga_type: r.saga_type,
                step: r.step,
                sagas: r.total,
                failures: r.failed,
            });
        }
    }
    overall.duration_ms = percentiles_of(overall_hist.get("s"));
    overall.compensation_duration_ms = percentiles_of(overall_hist.get("c"));
    by_type.sort_by(|a, b| a.saga_type.cmp(&b.saga_type));
    steps.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then(b.sagas.cmp(&a.sagas))
            .then_with(|| a.saga_type.cmp(&b.saga_type))
            .then_with(|| a.step.cmp(&b.step))
    });
    steps.truncate(MAX_STEP_ROWS);
    Stats {
        overall,
        by_type,
        steps,
    }
}

/// `(saga_type, status, count)` for every type and status present, ordered by type: the
/// all-services saga rows of the daily rollups, summed over every day.
pub async fn counts_by_type(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows: Vec<CountRow> = sqlx::query_as(&format!(
        "select saga_type, step, {} from stats_daily where service = '' and step = '' \
         group by saga_type, step order by saga_type",
        COUNT_COLUMNS
            .map(|c| format!("sum({c})::bigint as {c}"))
            .join(", ")
    ))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        for (status, n) in [
            ("COMPENSATED", r.compensated),
            ("COMPENSATING", r.compensating),
            ("COMPLETED", r.completed),
            ("FAILED", r.failed),
            ("IN_PROGRESS", r.in_progress),
            ("STARTED", r.started),
        ] {
            if n > 0 {
                out.push((r.saga_type.clone(), status.to_owned(), n));
            }
        }
    }
    Ok(out)
}

/// Sagas started in one period (an hour or a day) of one type, by their status now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VolumeRow {
    pub period: DateTime<Utc>,
    pub saga_type: String,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub compensated: i64,
}

/// Sagas started per period since `from` (whole periods: the one holding `from` included),
/// per type, from the all-services saga rows of the hourly (`daily = false`) or daily
/// rollups: one primary-key range read, a row per period and type.
pub async fn volume(
    pool: &PgPool,
    from: DateTime<Utc>,
    daily: bool,
) -> Result<Vec<VolumeRow>, sqlx::Error> {
    let (table, column, unit) = if daily {
        ("stats_daily", "day", "day")
    } else {
        ("stats_hourly", "hour", "hour")
    };
    sqlx::query_as(&format!(
        "select {column} as period, saga_type, total::bigint, completed::bigint, \
         failed::bigint, compensated::bigint from {table} \
         where service = '' and step = '' and {column} >= date_trunc('{unit}', $1, 'UTC') \
         and total > 0 order by {column}, saga_type"
    ))
    .bind(from)
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
/// Two index-backed scans: the running sagas (partial index `sagas_open_started_idx`, whose
/// predicate their statuses imply) and the failed sagas whose compensation has not finished
/// (`sagas_failed_open_idx`). Finished sagas, which are nearly all rows, are never read.
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
    // As in `stats`: no JIT for these index-served counts.
    sqlx::query("set local jit = off").execute(&mut *tx).await?;

    let mut qb =
        QueryBuilder::<Postgres>::new("select s.saga_type, count(*), count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::NoProgress, at);
    qb.push("), count(*) filter (where ");
    push_stuck_reason(&mut qb, StuckReason::CompensationNotFinished, at);
    qb.push(
        ") from sagas s where s.status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING') \
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn a_window_is_cut_into_days_hours_and_partial_hours() {
        // 1 Nov 22:30 → 4 Nov 01:15: a partial hour, one whole hour, two whole days, one
        // whole hour, a partial hour.
        let p = Plan::new(Some(at(1, 22, 30)), Some(at(4, 1, 15)));
        assert_eq!(p.daily, Some((Some(at(2, 0, 0)), Some(at(4, 0, 0)))));
        assert_eq!(
            p.hourly,
            [
                (Some(at(1, 23, 0)), Some(at(2, 0, 0))),
                (Some(at(4, 0, 0)), Some(at(4, 1, 0)))
            ]
        );
        assert_eq!(
            p.edges,
            [(at(1, 22, 30), at(1, 23, 0)), (at(4, 1, 0), at(4, 1, 15))]
        );
    }

    #[test]
    fn short_aligned_and_open_windows() {
        // Inside one hour: only the sagas themselves.
        let p = Plan::new(Some(at(1, 10, 5)), Some(at(1, 10, 50)));
        assert_eq!((p.daily, p.hourly.len()), (None, 0));
        assert_eq!(p.edges, [(at(1, 10, 5), at(1, 10, 50))]);
        // Whole hours within one day: hourly only.
        let p = Plan::new(Some(at(1, 10, 0)), Some(at(1, 13, 0)));
        assert_eq!(p.daily, None);
        assert_eq!(p.hourly, [(Some(at(1, 10, 0)), Some(at(1, 13, 0)))]);
        assert!(p.edges.is_empty());
        // No filter: every day.
        let p = Plan::new(None, None);
        assert_eq!(p.daily, Some((None, None)));
        assert!(p.hourly.is_empty() && p.edges.is_empty());
        // Open end: the days from the first whole one on.
        let p = Plan::new(Some(at(1, 10, 0)), None);
        assert_eq!(p.daily, Some((Some(at(2, 0, 0)), None)));
        assert_eq!(p.hourly, [(Some(at(1, 10, 0)), Some(at(2, 0, 0)))]);
        // Empty window.
        let p = Plan::new(Some(at(1, 10, 0)), Some(at(1, 10, 0)));
        assert_eq!((p.daily, p.hourly.len(), p.edges.len()), (None, 0, 0));
    }
}
