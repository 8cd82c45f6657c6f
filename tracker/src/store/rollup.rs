//! Statistics rollups: per hour, saga type, step and service, the counts and duration
//! histograms `GET /api/v1/stats` adds up instead of scanning every saga and event.
//!
//! # One definition, checked twice
//!
//! What a saga contributes to the rollups — its status counts, its durations, and per step
//! whether it failed and how long it took — is written twice, on purpose:
//!
//! - as SQL over some sagas (the columns of [`SAGA_COLUMNS`]) and their events
//!   ([`EVENT_COLUMNS`]): [`count_rows`] and [`duration_rows`]. The rebuild ([`rebuild`],
//!   the backfill of an existing database) computes every row with it, retention
//!   ([`subtract_doomed`]) subtracts what it deletes, and the statistics use it for the
//!   partial hours at the ends of a time filter;
//! - in Rust ([`Delta`]) for the ingest transaction, which already holds the touched sagas'
//!   events and their old and new rows in memory: it adds each saga's new contribution,
//!   subtracts the one it had before the batch (the row as it was, and its events minus the
//!   ones this batch inserted), and upserts only the net change — a few hundred small rows
//!   per 500-event batch. (Doing the same in SQL cost as much as the rest of the
//!   transaction.)
//!
//! `tests/rollups.rs` drives the ingest path with an adversarial stream (shuffled,
//! duplicated, late events moving sagas between hours, two concurrent writers) and requires
//! the incremental rollups to equal a rebuild row for row, so the two definitions cannot
//! drift apart unnoticed. Because the ingest path serialises per saga (advisory locks),
//! the rollups equal a rebuild at every commit: nothing is approximate except the
//! percentiles read from the histograms (see [`estimate_percentiles`]).
//!
//! # Keys
//!
//! - `hour`: the hour the saga started in, UTC (`date_trunc('hour', started_at, 'UTC')`).
//!   A saga whose start moves (an earlier event arrives late) moves hours.
//! - `saga_type`: the saga's type; step rows use it too.
//! - `step`: `''` for the saga itself, else the step name (steps are never empty).
//! - `service`: `''` for every saga, then once per service that emitted one of the saga's
//!   events (a saga with three services is counted under four keys), so the `service`
//!   filter of the statistics reads its own rows.
//!
//! # Histograms
//!
//! Durations, in whole microseconds, fall in log-scale buckets, 8 per doubling: bucket 0 is
//! under 1 ms, bucket `b ≥ 1` starts at `1000 × 2^((b-1)/8)` µs (rounded; [`bucket_bounds`])
//! and is about 9 % wide. The bounds are integers shared by both definitions (SQL gets them
//! as a constant array for `width_bucket`), so both put a duration in the same bucket. Each
//! bucket keeps its count and exact sum, so its mean is exact.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};

use crate::aggregate::SagaState;

/// The version of the contribution rules below. Bump it whenever their meaning changes:
/// `migrate` then rebuilds the rollups from the stored sagas.
pub const ROLLUP_VERSION: i32 = 1;

/// Columns of the saga relation a contribution is computed from.
pub const SAGA_COLUMNS: &str = "saga_id, saga_type, status, started_at, duration_ms, \
    compensation_started_at, compensation_duration_ms, services";

/// Columns of the event relation a contribution is computed from.
pub const EVENT_COLUMNS: &str = "saga_id, step, step_status, occurred_at";

/// The counts of a rollup row, in table order.
pub const COUNTS: [&str; 9] = [
    "total",
    "started",
    "in_progress",
    "completed",
    "failed",
    "compensating",
    "compensated",
    "compensation_started",
    "compensation_failed",
];

/// A step's duration in whole µs: first `STARTED` — or first event when the step never
/// reported `STARTED` — to first `SUCCEEDED`/`FAILED`, at least 0; null while the step has
/// not ended. (Timestamps are stored to the microsecond, so this is exact.)
pub const STEP_DURATION_US: &str = "case \
    when min(e.occurred_at) filter (where e.step_status in ('SUCCEEDED', 'FAILED')) is null \
        then null \
    else greatest(0, (extract(epoch from \
        min(e.occurred_at) filter (where e.step_status in ('SUCCEEDED', 'FAILED')) \
        - coalesce(min(e.occurred_at) filter (where e.step_status = 'STARTED'), \
                   min(e.occurred_at))) * 1000000)::bigint) end";

/// Buckets above 1 ms: 8 per doubling up to 2^42 ms (139 years).
const BUCKETS: usize = 8 * 42;

/// The lower bound (µs) of buckets 1, 2, … ; bucket 0 is below the first.
pub fn bucket_bounds() -> &'static [i64] {
    static BOUNDS: OnceLock<Vec<i64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        (0..BUCKETS)
            .map(|b| (1000.0 * 2f64.powf(b as f64 / 8.0)).round() as i64)
            .collect()
    })
}

/// The bucket of a duration of `us` microseconds: how many bounds are `<= us`, like SQL's
/// `width_bucket(us, bounds)`.
pub fn bucket_index(us: i64) -> i16 {
    bucket_bounds().partition_point(|&b| b <= us) as i16
}

/// SQL for the bucket of the duration `d` (bigint µs).
fn bucket_of(d: &str) -> String {
    static BOUNDS: OnceLock<String> = OnceLock::new();
    let bounds = BOUNDS.get_or_init(|| {
        let list: Vec<String> = bucket_bounds().iter().map(i64::to_string).collect();
        format!("'{{{}}}'::bigint[]", list.join(","))
    });
    format!("width_bucket({d}, {bounds})::smallint")
}

const HOUR: &str = "date_trunc('hour', s.started_at, 'UTC')";
const SERVICES: &str = "cross join lateral unnest(array['']::text[] || x.services) as k(service)";

/// A set of sagas and their events, each as a `select` of [`SAGA_COLUMNS`] /
/// [`EVENT_COLUMNS`]. The events query may refer to the sagas as `{prefix}_s`.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub sagas: &'a str,
    pub events: &'a str,
}

/// `{prefix}_s` (the sagas) and `{prefix}_steps` (one row per saga and step: `failed`,
/// `duration_us`) as CTEs, comma-separated, without `with`.
pub fn source_ctes(prefix: &str, source: Source<'_>) -> String {
    format!(
        "{prefix}_s as materialized ({sagas}), \
         {prefix}_steps as materialized ( \
           select e.saga_id, e.step, bool_or(e.step_status = 'FAILED') as failed, \
             {STEP_DURATION_US} as duration_us \
           from ({events}) e group by e.saga_id, e.step)",
        sagas = source.sagas,
        events = source.events,
    )
}

/// The count contributions of `{prefix}_s`/`{prefix}_steps`: columns `service, hour,
/// saga_type, step` and then [`COUNTS`].
///
/// Sagas are summed per hour, type, step and *set of services* before each set is expanded
/// into its service keys: sagas of one type nearly always share a set, so a rebuild expands
/// a few thousand sums instead of every saga (1M sagas: 176 s → see docs/BENCHMARKS.md).
pub fn count_rows(prefix: &str) -> String {
    let sums = COUNTS
        .map(|c| format!("sum({c})::bigint as {c}"))
        .join(", ");
    let columns = COUNTS.map(|c| format!("x.{c}")).join(", ");
    format!(
        "select k.service, x.hour, x.saga_type, x.step, {columns} from ( \
           select hour, saga_type, step, services, {sums} from ( \
             select {HOUR} as hour, s.saga_type, ''::text as step, s.services, \
               1 as total, \
               (s.status = 'STARTED')::int as started, \
               (s.status = 'IN_PROGRESS')::int as in_progress, \
               (s.status = 'COMPLETED')::int as completed, \
               (s.status = 'FAILED')::int as failed, \
               (s.status = 'COMPENSATING')::int as compensating, \
               (s.status = 'COMPENSATED')::int as compensated, \
               (s.compensation_started_at is not null)::int as compensation_started, \
               (s.compensation_started_at is not null and s.status = 'FAILED')::int \
                 as compensation_failed \
             from {prefix}_s s \
             union all \
             select {HOUR}, s.saga_type, p.step, s.services, 1, 0, 0, 0, p.failed::int, \
               0, 0, 0, 0 \
             from {prefix}_s s join {prefix}_steps p on p.saga_id = s.saga_id) r \
           group by hour, saga_type, step, services) x {SERVICES}"
    )
}

/// The duration contributions of `{prefix}_s`/`{prefix}_steps`: columns `service, hour,
/// saga_type, step, kind, bucket, n, us` — `n` durations summing to `us` µs — summed per
/// set of services before the expansion, like [`count_rows`].
pub fn duration_rows(prefix: &str) -> String {
    let saga = bucket_of("s.duration_ms * 1000");
    let compensation = bucket_of("s.compensation_duration_ms * 1000");
    let step = bucket_of("p.duration_us");
    format!(
        "select k.service, x.hour, x.saga_type, x.step, x.kind, x.bucket, x.n, x.us from ( \
           select hour, saga_type, step, kind, bucket, services, count(*) as n, \
             sum(us)::bigint as us from ( \
             select {HOUR} as hour, s.saga_type, ''::text as step, 's'::\"char\" as kind, \
               {saga} as bucket, s.services, s.duration_ms * 1000 as us \
             from {prefix}_s s where s.duration_ms is not null \
             union all \
             select {HOUR}, s.saga_type, '', 'c', {compensation}, s.services, \
               s.compensation_duration_ms * 1000 \
             from {prefix}_s s where s.compensation_duration_ms is not null \
             union all \
             select {HOUR}, s.saga_type, p.step, 't', {step}, s.services, p.duration_us \
             from {prefix}_s s join {prefix}_steps p on p.saga_id = s.saga_id \
             where p.duration_us is not null) r \
           group by hour, saga_type, step, kind, bucket, services) x {SERVICES}"
    )
}

/// One rollup table: the single description its upsert, its JSON record type and the
/// deletion of its emptied rows are all generated from.
struct Table {
    name: &'static str,
    /// The CTE of [`upsert_ctes`] that writes it.
    cte: &'static str,
    /// `hour` or `day`.
    period: &'static str,
    /// A duration histogram (`kind`, `bucket` → `count`, `sum_us`), else the [`COUNTS`].
    histogram: bool,
}

/// The four rollup tables.
const TABLES: [Table; 4] = [
    Table {
        name: "stats_hourly",
        cte: "rollup_counts",
        period: "hour",
        histogram: false,
    },
    Table {
        name: "stats_daily",
        cte: "rollup_counts_daily",
        period: "day",
        histogram: false,
    },
    Table {
        name: "stats_hourly_durations",
        cte: "rollup_durations",
        period: "hour",
        histogram: true,
    },
    Table {
        name: "stats_daily_durations",
        cte: "rollup_durations_daily",
        period: "day",
        histogram: true,
    },
];

impl Table {
    /// The primary key's columns with their types.
    fn typed_keys(&self) -> String {
        let common = format!(
            "service text, {} timestamptz, saga_type text, step text",
            self.period
        );
        if self.histogram {
            format!("{common}, kind \"char\", bucket smallint")
        } else {
            common
        }
    }

    /// The primary key's columns.
    fn keys(&self) -> String {
        names(&self.typed_keys())
    }

    /// The value columns with their types.
    fn typed_values(&self) -> String {
        if self.histogram {
            "count bigint, sum_us bigint".to_owned()
        } else {
            COUNTS.map(|c| format!("{c} bigint")).join(", ")
        }
    }

    /// True for a row that counts nothing (a key no saga contributes to any more).
    fn empty(&self) -> &'static str {
        if self.histogram {
            "t.count = 0"
        } else {
            "t.total = 0"
        }
    }
}

/// `a type, b type` → `a, b`.
fn names(typed: &str) -> String {
    typed
        .split(", ")
        .map(|c| c.split_once(' ').map_or(c, |(name, _)| name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CTEs `rollup_counts`, `rollup_counts_daily`, `rollup_durations`,
/// `rollup_durations_daily` (the [`Table::cte`]s) that add the rows of four `select`s (in
/// [`TABLES`] order; the columns of the table, by name) to the rollups, each in key order so
/// that two writers lock shared rows in the same order. Each returns the keys it wrote and
/// whether the row now counts nothing (`emptied`).
fn upsert_ctes(selects: [&str; 4]) -> String {
    let mut out = Vec::new();
    for (t, select) in TABLES.iter().zip(selects) {
        let (name, table, keys, empty) = (t.cte, t.name, t.keys(), t.empty());
        let columns = names(&t.typed_values());
        let set = columns
            .split(", ")
            .map(|c| format!("{c} = t.{c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "{name} as ( \
               insert into {table} as t ({keys}, {columns}) \
               select {keys}, {columns} from ({select}) x order by {keys} \
               on conflict ({keys}) do update set {set} \
               returning {keys}, {empty} as emptied)"
        ));
    }
    out.join(", ")
}

/// A select-list for a statement built on [`upsert_ctes`]: per rollup table (in [`TABLES`]
/// order), the keys of the rows that statement brought back to zero, as a JSON array.
/// [`delete_emptied`] takes them.
pub fn emptied_keys() -> String {
    TABLES
        .map(|t| {
            format!(
                "(select coalesce(jsonb_agg(to_jsonb(x) - 'emptied'), '[]') \
                  from {} x where x.emptied)",
                t.cte
            )
        })
        .join(", ")
}

/// Keys of rollup rows brought back to zero, per table in [`TABLES`] order.
pub type Emptied = (Value, Value, Value, Value);

/// Deletes the rollup rows listed in `emptied` if they still hold zero. Run in the
/// transaction that zeroed them, which still holds their row locks, so no writer can have
/// added to them in between. A zero row reads like a missing one, so this only keeps the
/// tables from filling with dead keys (a saga that moved to another hour, or that retention
/// removed) — by key, never by scanning them: they hold millions of rows at scale, and
/// retention runs every few minutes.
pub async fn delete_emptied(
    tx: &mut Transaction<'_, Postgres>,
    emptied: Emptied,
) -> Result<u64, sqlx::Error> {
    let (a, b, c, d) = &emptied;
    if [a, b, c, d]
        .iter()
        .all(|v| v.as_array().is_none_or(Vec::is_empty))
    {
        return Ok(0);
    }
    let deleted: i64 = sqlx::query_scalar(&DELETE_EMPTIED)
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .fetch_one(&mut **tx)
        .await?;
    Ok(deleted.max(0) as u64)
}

static DELETE_EMPTIED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let ctes: Vec<String> = TABLES
        .iter()
        .enumerate()
        .map(|(n, t)| {
            format!(
                "d{n} as (delete from {table} t \
                   where ({keys}) in (select {keys} from jsonb_to_recordset(${param}) \
                                      as r({typed})) \
                     and {empty} \
                   returning 1)",
                table = t.name,
                keys = t.keys(),
                typed = t.typed_keys(),
                empty = t.empty(),
                param = n + 1,
            )
        })
        .collect();
    format!(
        "with {} select (select count(*) from d0) + (select count(*) from d1) \
           + (select count(*) from d2) + (select count(*) from d3)",
        ctes.join(", ")
    )
});

/// CTEs (comma-separated, without `with`) that add the contributions of `plus` and
/// subtract those of `minus` from the rollup tables, net per row, in key order (two writers
/// lock shared rows in the same order). A `select` after them may read `rollup_counts` and
/// `rollup_durations` (one row per table row changed).
pub fn delta_ctes(plus: Option<Source<'_>>, minus: Option<Source<'_>>) -> String {
    let mut ctes = Vec::new();
    let mut count_parts = Vec::new();
    let mut duration_parts = Vec::new();
    for (prefix, sign, source) in [("plus", 1, plus), ("minus", -1, minus)] {
        let Some(source) = source else { continue };
        ctes.push(source_ctes(prefix, source));
        count_parts.push(format!(
            "select {sign} as sign, c.* from ({}) c",
            count_rows(prefix)
        ));
        duration_parts.push(format!(
            "select {sign} as sign, d.* from ({}) d",
            duration_rows(prefix)
        ));
    }
    if count_parts.is_empty() {
        // Nothing to add or subtract: the two CTEs still exist, empty.
        count_parts.push(format!(
            "select 0 as sign, ''::text as service, now() as hour, ''::text as saga_type, \
             ''::text as step, {} where false",
            COUNTS.map(|c| format!("0 as {c}")).join(", ")
        ));
        duration_parts.push(
            "select 0 as sign, ''::text as service, now() as hour, ''::text as saga_type, \
             ''::text as step, 's'::\"char\" as kind, 0::smallint as bucket, 0::bigint as n, \
             0::bigint as us \
             where false"
                .to_owned(),
        );
    }
    let keys = "service, hour, saga_type, step";
    let sums = COUNTS
        .map(|c| format!("sum(sign * {c})::bigint as {c}"))
        .join(", ");
    let nonzero = COUNTS.map(|c| format!("sum(sign * {c})")).join(", ");
    let zeros = COUNTS.map(|_| "0").join(", ");
    let day_sums = COUNTS
        .map(|c| format!("sum({c})::bigint as {c}"))
        .join(", ");
    let day_nonzero = COUNTS.map(|c| format!("sum({c})")).join(", ");
    let day_keys = "service, date_trunc('day', hour, 'UTC') as day, saga_type, step";
    ctes.push(format!(
        "count_delta as materialized ( \
           select {keys}, {sums} from ({parts}) x group by {keys} \
           having ({nonzero}) <> ({zeros})), \
         count_delta_day as ( \
           select {day_keys}, {day_sums} from count_delta group by 1, 2, 3, 4 \
           having ({day_nonzero}) <> ({zeros})), \
         duration_delta as materialized ( \
           select {keys}, kind, bucket, sum(sign * n)::bigint as count, \
             sum(sign * us)::bigint as sum_us \
           from ({dparts}) x group by {keys}, kind, bucket \
           having (sum(sign * n), sum(sign * us)) <> (0, 0)), \
         duration_delta_day as ( \
           select {day_keys}, kind, bucket, sum(count)::bigint as count, \
             sum(sum_us)::bigint as sum_us \
           from duration_delta group by 1, 2, 3, 4, kind, bucket \
           having (sum(count), sum(sum_us)) <> (0, 0)), \
         {upserts}",
        parts = count_parts.join(" union all "),
        dparts = duration_parts.join(" union all "),
        upserts = upsert_ctes([
            "select * from count_delta",
            "select * from count_delta_day",
            "select * from duration_delta",
            "select * from duration_delta_day",
        ]),
    ));
    ctes.join(", ")
}

/// `t` truncated to a multiple of `unit` since the epoch (UTC): the rollups' hours and days.
pub fn floor_to(t: DateTime<Utc>, unit: TimeDelta) -> DateTime<Utc> {
    t.duration_trunc(unit).unwrap_or(t)
}

/// The hour a saga counts in: its start, truncated to the hour (UTC).
pub fn hour_of(started_at: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(started_at, TimeDelta::hours(1))
}

/// The day an hour belongs to (UTC).
pub fn day_of(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, TimeDelta::days(1))
}

/// A saga as the rollups see it: the [`SAGA_COLUMNS`] of its row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SagaFacts {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub compensation_started_at: Option<DateTime<Utc>>,
    pub compensation_duration_ms: Option<i64>,
    pub services: Vec<String>,
}

impl From<&SagaState> for SagaFacts {
    fn from(s: &SagaState) -> Self {
        Self {
            saga_id: s.saga_id.clone(),
            saga_type: s.saga_type.clone(),
            status: s.status.as_str().to_owned(),
            started_at: s.started_at,
            duration_ms: s.duration_ms,
            compensation_started_at: s.compensation_started_at,
            compensation_duration_ms: s.compensation_duration_ms,
            services: s.services.clone(),
        }
    }
}

/// One step of one saga as the rollups see it: the Rust twin of the `{prefix}_steps` CTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFacts {
    pub step: String,
    /// The step reported `FAILED` at least once.
    pub failed: bool,
    /// [`STEP_DURATION_US`]; `None` while the step has not ended.
    pub duration_us: Option<i64>,
}

/// The steps of one saga from its events (`(step, step_status, occurred_at)`, any order).
pub fn step_facts<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str, DateTime<Utc>)>,
) -> Vec<StepFacts> {
    #[derive(Default)]
    struct Acc {
        first: Option<DateTime<Utc>>,
        started: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
        failed: bool,
    }
    let earliest = |slot: &mut Option<DateTime<Utc>>, at: DateTime<Utc>| {
        if slot.is_none_or(|t| at < t) {
            *slot = Some(at);
        }
    };
    let mut by_step: HashMap<&str, Acc> = HashMap::new();
    for (step, status, at) in events {
        let acc = by_step.entry(step).or_default();
        earliest(&mut acc.first, at);
        match status {
            "STARTED" => earliest(&mut acc.started, at),
            "SUCCEEDED" => earliest(&mut acc.ended, at),
            "FAILED" => {
                earliest(&mut acc.ended, at);
                acc.failed = true;
            }
            _ => {}
        }
    }
    by_step
        .into_iter()
        .map(|(step, acc)| StepFacts {
            step: step.to_owned(),
            failed: acc.failed,
            duration_us: acc.ended.map(|end| {
                let from = acc.started.or(acc.first).unwrap_or(end);
                (end - from).num_microseconds().unwrap_or(i64::MAX).max(0)
            }),
        })
        .collect()
}

type CountKey = (String, DateTime<Utc>, String, String);
type DurationKey = (String, DateTime<Utc>, String, String, char, i16);

/// The net change one ingest batch makes to the rollups: the Rust twin of [`count_rows`] and
/// [`duration_rows`], summed with a sign per saga version.
#[derive(Debug, Default)]
pub struct Delta {
    counts: HashMap<CountKey, [i64; 9]>,
    durations: HashMap<DurationKey, (i64, i64)>,
}

impl Delta {
    /// Adds (`sign` = 1) or subtracts (-1) the contribution of `saga` with its `steps`.
    pub fn add(&mut self, sign: i64, saga: &SagaFacts, steps: &[StepFacts]) {
        self.add_parts(sign, saga, true, steps.iter());
    }

    /// Replaces a saga's contribution: subtracts `old` (when it had one) and adds `new`,
    /// leaving out the parts that cancel. A saga that gained an event or two usually keeps
    /// its hour, type and services and all of its steps but the last, so of its ~2 × 6 × 25
    /// rows for a long saga only the changed step's and the saga's own change; the sum is
    /// the same as `add(-1, old)` + `add(1, new)`, term for term.
    pub fn change(
        &mut self,
        old: Option<(&SagaFacts, &[StepFacts])>,
        new: (&SagaFacts, &[StepFacts]),
    ) {
        let (saga, steps) = new;
        let Some((was, was_steps)) = old else {
            self.add(1, saga, steps);
            return;
        };
        let same_keys = hour_of(was.started_at) == hour_of(saga.started_at)
            && was.saga_type == saga.saga_type
            && was.services == saga.services;
        if !same_keys {
            self.add(-1, was, was_steps);
            self.add(1, saga, steps);
            return;
        }
        // Same rows for both versions: identical step facts cancel one for one, and the
        // saga's own rows cancel when its status, durations and compensation did not change.
        let same_saga = was.status == saga.status
            && was.duration_ms == saga.duration_ms
            && was.compensation_started_at.is_some() == saga.compensation_started_at.is_some()
            && was.compensation_duration_ms == saga.compensation_duration_ms;
        let mut matched = vec![false; was_steps.len()];
        let mut added: Vec<&StepFacts> = Vec::new();
        for s in steps {
            match (0..was_steps.len()).find(|&i| !matched[i] && was_steps[i] == *s) {
                Some(i) => matched[i] = true,
                None => added.push(s),
            }
        }
        let removed = was_steps
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|(s, _)| s);
        self.add_parts(-1, was, !same_saga, removed);
        self.add_parts(1, saga, !same_saga, added.into_iter());
    }

    /// [`Self::add`] of the saga's own rows (when `whole`) and of `steps`' rows.
    fn add_parts<'s>(
        &mut self,
        sign: i64,
        saga: &SagaFacts,
        whole: bool,
        steps: impl Iterator<Item = &'s StepFacts> + Clone,
    ) {
        let hour = hour_of(saga.started_at);
        let status = match saga.status.as_str() {
            "STARTED" => 1,
            "IN_PROGRESS" => 2,
            "COMPLETED" => 3,
            "FAILED" => 4,
            "COMPENSATING" => 5,
            "COMPENSATED" => 6,
            _ => 0,
        };
        let compensating = saga.compensation_started_at.is_some();
        let services = std::iter::once("").chain(saga.services.iter().map(String::as_str));
        for service in services {
            let key = |step: &str| {
                (
                    service.to_owned(),
                    hour,
                    saga.saga_type.clone(),
                    step.to_owned(),
                )
            };
            if whole {
                let c = self.counts.entry(key("")).or_insert([0; 9]);
                c[0] += sign;
                if status > 0 {
                    c[status] += sign;
                }
                if compensating {
                    c[7] += sign;
                    if status == 4 {
                        c[8] += sign;
                    }
                }
            }
            let mut duration = |step: &str, kind: char, us: i64| {
                let (k0, k1, k2, k3) = key(step);
                let d = self
                    .durations
                    .entry((k0, k1, k2, k3, kind, bucket_index(us)))
                    .or_insert((0, 0));
                d.0 += sign;
                d.1 += sign * us;
            };
            if whole {
                if let Some(ms) = saga.duration_ms {
                    duration("", 's', ms * 1000);
                }
                if let Some(ms) = saga.compensation_duration_ms {
                    duration("", 'c', ms * 1000);
                }
            }
            for s in steps.clone() {
                if let Some(us) = s.duration_us {
                    duration(&s.step, 't', us);
                }
            }
            for s in steps.clone() {
                let c = self.counts.entry(key(&s.step)).or_insert([0; 9]);
                c[0] += sign;
                if s.failed {
                    c[4] += sign;
                }
            }
        }
    }

    /// Rows whose net change is not zero: (counts, durations).
    pub fn len(&self) -> (usize, usize) {
        (
            self.counts
                .values()
                .filter(|c| c.iter().any(|&n| n != 0))
                .count(),
            self.durations.values().filter(|d| **d != (0, 0)).count(),
        )
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Upserts the net change into the hourly and daily rollups, in one statement.
    pub async fn apply(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let mut daily_counts: HashMap<CountKey, [i64; 9]> = HashMap::new();
        for ((service, hour, saga_type, step), c) in &self.counts {
            let key = (
                service.clone(),
                day_of(*hour),
                saga_type.clone(),
                step.clone(),
            );
            let d = daily_counts.entry(key).or_insert([0; 9]);
            for (sum, n) in d.iter_mut().zip(c) {
                *sum += n;
            }
        }
        let mut daily_durations: HashMap<DurationKey, (i64, i64)> = HashMap::new();
        for ((service, hour, saga_type, step, kind, bucket), (n, us)) in &self.durations {
            let key = (
                service.clone(),
                day_of(*hour),
                saga_type.clone(),
                step.clone(),
                *kind,
                *bucket,
            );
            let d = daily_durations.entry(key).or_insert((0, 0));
            d.0 += n;
            d.1 += us;
        }
        let counts = |map: &HashMap<CountKey, [i64; 9]>, period: &str| -> Value {
            map.iter()
                .filter(|(_, c)| c.iter().any(|&n| n != 0))
                .map(|((service, at, saga_type, step), c)| {
                    let mut row = json!({"service": service, "saga_type": saga_type, "step": step});
                    row[period] = json!(at);
                    for (name, n) in COUNTS.iter().zip(c) {
                        row[*name] = json!(n);
                    }
                    row
                })
                .collect()
        };
        let durations = |map: &HashMap<DurationKey, (i64, i64)>, period: &str| -> Value {
            map.iter()
                .filter(|(_, d)| **d != (0, 0))
                .map(|((service, at, saga_type, step, kind, bucket), (n, us))| {
                    let mut row = json!({
                        "service": service, "saga_type": saga_type, "step": step,
                        "kind": kind.to_string(), "bucket": bucket, "count": n, "sum_us": us,
                    });
                    row[period] = json!(at);
                    row
                })
                .collect()
        };
        let emptied: Emptied = sqlx::query_as(&UPSERT_DELTA)
            .bind(counts(&self.counts, "hour"))
            .bind(counts(&daily_counts, "day"))
            .bind(durations(&self.durations, "hour"))
            .bind(durations(&daily_durations, "day"))
            .fetch_one(&mut **tx)
            .await?;
        delete_emptied(tx, emptied).await?;
        Ok(())
    }
}

static UPSERT_DELTA: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let [a, b, c, d] = [0, 1, 2, 3].map(|n| {
        let t = &TABLES[n];
        format!(
            "select * from jsonb_to_recordset(${}) as r({}, {})",
            n + 1,
            t.typed_keys(),
            t.typed_values()
        )
    });
    format!(
        "with {} select {}",
        upsert_ctes([&a, &b, &c, &d]),
        emptied_keys()
    )
});

/// The rows of `saga_ids` as the rollups see them, read in the ingest transaction before
/// it rewrites them: the contribution to subtract.
pub async fn previous_rows(
    tx: &mut Transaction<'_, Postgres>,
    saga_ids: &[String],
) -> Result<Vec<SagaFacts>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {SAGA_COLUMNS} from sagas where saga_id = any($1)"
    ))
    .bind(saga_ids)
    .fetch_all(&mut **tx)
    .await
}

/// CTEs that subtract the contribution of the sagas listed by the CTE `doomed(saga_id)`
/// (defined by the caller, before these) with all their events: retention, just before it
/// deletes them in the same statement.
pub fn subtract_doomed() -> String {
    delta_ctes(
        None,
        Some(Source {
            sagas: &format!(
                "select {SAGA_COLUMNS} from sagas where saga_id in (select saga_id from doomed)"
            ),
            events: &format!(
                "select {EVENT_COLUMNS} from saga_events \
                 where saga_id in (select saga_id from doomed)"
            ),
        }),
    )
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub count_rows: u64,
    pub duration_rows: u64,
}

/// Recomputes the rollups from every stored saga and event, in one transaction that holds
/// off writers (`share` lock on `sagas` and `saga_events`; readers go on) so no batch commits
/// half inside it, then records [`ROLLUP_VERSION`].
pub async fn rebuild(pool: &PgPool) -> Result<Rebuilt, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("lock table sagas, saga_events in share mode")
        .execute(&mut *tx)
        .await?;
    // One pass over every event; the per-(saga, step) aggregate is far faster in memory.
    sqlx::query("set local work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "truncate stats_hourly, stats_hourly_durations, stats_daily, stats_daily_durations",
    )
    .execute(&mut *tx)
    .await?;
    let sagas = format!("select {SAGA_COLUMNS} from sagas");
    let events = format!("select {EVENT_COLUMNS} from saga_events");
    let sql = format!(
        "with {} select (select count(*) from rollup_counts), \
           (select count(*) from rollup_durations)",
        delta_ctes(
            Some(Source {
                sagas: &sagas,
                events: &events,
            }),
            None,
        )
    );
    let (count_rows, duration_rows): (i64, i64) = sqlx::query_as(&sql).fetch_one(&mut *tx).await?;
    sqlx::query(
        "insert into stats_rollup_version (version) values ($1) \
         on conflict (singleton) do update set version = excluded.version, built_at = now()",
    )
    .bind(ROLLUP_VERSION)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        count_rows: count_rows.max(0) as u64,
        duration_rows: duration_rows.max(0) as u64,
    })
}

/// Rebuilds the rollups unless they were built with this binary's [`ROLLUP_VERSION`].
/// Returns what the rebuild did, if one ran.
pub async fn ensure_current(pool: &PgPool) -> Result<Option<Rebuilt>, sqlx::Error> {
    let version: Option<i32> = sqlx::query_scalar("select version from stats_rollup_version")
        .fetch_optional(pool)
        .await?;
    if version == Some(ROLLUP_VERSION) {
        return Ok(None);
    }
    rebuild(pool).await.map(Some)
}

/// One histogram bucket: its index, how many durations and their sum (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub index: i16,
    pub count: i64,
    pub sum_ms: f64,
}

/// p50/p95/p99 (or any `quantiles`) of the durations in `buckets` (sorted by index, the
/// way the rollups keep them), interpolated between ranks like `percentile_cont`; `None`
/// when there is no duration.
///
/// The value at a rank is the mean of the bucket holding it. A bucket spans 9 %, so an
/// estimate is off by less than that from the exact `percentile_cont`, and exact when the
/// bucket holds one distinct value (a single duration, or equal ones).
pub fn estimate_percentiles(buckets: &[Bucket], quantiles: &[f64]) -> Option<Vec<f64>> {
    let n: i64 = buckets.iter().map(|b| b.count.max(0)).sum();
    if n == 0 {
        return None;
    }
    let value_at = |rank: i64| -> f64 {
        let mut seen = 0;
        for b in buckets.iter().filter(|b| b.count > 0) {
            seen += b.count;
            if rank < seen {
                return b.sum_ms / b.count as f64;
            }
        }
        // Unreachable for rank < n; the largest bucket is the answer otherwise.
        buckets
            .iter()
            .rev()
            .find(|b| b.count > 0)
            .map_or(0.0, |b| b.sum_ms / b.count as f64)
    };
    Some(
        quantiles
            .iter()
            .map(|q| {
                let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
                let (lo, hi) = (pos.floor() as i64, pos.ceil() as i64);
                let (a, b) = (value_at(lo), value_at(hi));
                a + (pos - lo as f64) * (b - a)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(index: i16, values: &[f64]) -> Bucket {
        Bucket {
            index,
            count: values.len() as i64,
            sum_ms: values.iter().sum(),
        }
    }

    #[test]
    fn one_value_per_bucket_gives_exact_percentile_cont() {
        // percentile_cont of {3000, 4000, 5000}: 4000, 4900, 4980.
        let b = [
            bucket(93, &[3000.0]),
            bucket(96, &[4000.0]),
            bucket(99, &[5000.0]),
        ];
        let p = estimate_percentiles(&b, &[0.5, 0.95, 0.99]).expect("some");
        assert!((p[0] - 4000.0).abs() < 1e-9, "{p:?}");
        assert!((p[1] - 4900.0).abs() < 1e-9, "{p:?}");
        assert!((p[2] - 4980.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn equal_values_in_a_bucket_are_exact_and_empty_is_none() {
        let b = [bucket(81, &[1100.0; 7])];
        assert_eq!(
            estimate_percentiles(&b, &[0.5, 0.99]),
            Some(vec![1100.0, 1100.0])
        );
        assert_eq!(estimate_percentiles(&[], &[0.5]), None);
        assert_eq!(estimate_percentiles(&[bucket(3, &[])], &[0.5]), None);
    }

    #[test]
    fn the_estimate_stays_within_a_bucket_width_of_the_exact_value() {
        // 1000 distinct durations spread over 1 ms .. 60 s, bucketed as the SQL does.
        let values: Vec<f64> = (0..1000).map(|i| 1.0 + (i as f64).powf(2.6)).collect();
        let index = |d: f64| bucket_index((d * 1000.0) as i64);
        let mut buckets: Vec<Bucket> = Vec::new();
        for &v in &values {
            let i = index(v);
            match buckets.last_mut() {
                Some(b) if b.index == i => {
                    b.count += 1;
                    b.sum_ms += v;
                }
                _ => buckets.push(bucket(i, &[v])),
            }
        }
        for q in [0.01f64, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let pos = q * 999.0;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            let exact = values[lo] + (pos - lo as f64) * (values[hi] - values[lo]);
            let est = estimate_percentiles(&buckets, &[q]).expect("some")[0];
            let err = (est - exact).abs() / exact;
            assert!(
                err < 0.0906,
                "q={q}: exact {exact}, estimate {est}, error {err}"
            );
        }
    }
}

#[cfg(test)]
mod change_tests {
    use super::*;
    use proptest::prelude::*;

    /// A delta's rows that change something, sorted: (counts, durations).
    type Rows = (Vec<(CountKey, [i64; 9])>, Vec<(DurationKey, (i64, i64))>);

    fn nonzero(d: &Delta) -> Rows {
        let mut counts: Vec<_> = d
            .counts
            .iter()
            .filter(|(_, c)| c.iter().any(|&n| n != 0))
            .map(|(k, c)| (k.clone(), *c))
            .collect();
        counts.sort();
        let mut durations: Vec<_> = d
            .durations
            .iter()
            .filter(|(_, v)| **v != (0, 0))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        durations.sort();
        (counts, durations)
    }

    /// A saga's facts from small choices, so that two draws often share hour, type,
    /// services and steps (the case `change` shortcuts) and sometimes do not.
    fn facts() -> impl Strategy<Value = (SagaFacts, Vec<StepFacts>)> {
        (
            0..2i64,
            0..2usize,
            0..6usize,
            proptest::option::of(0..3i64),
            any::<bool>(),
            proptest::option::of(0..3i64),
            proptest::collection::vec(0..3usize, 0..3),
            proptest::collection::vec(
                (0..4usize, any::<bool>(), proptest::option::of(0..3i64)),
                0..6,
            ),
        )
            .prop_map(|(hour, ty, status, dur, comp, comp_dur, services, steps)| {
                let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
                let saga = SagaFacts {
                    saga_id: "s".into(),
                    saga_type: ["A", "B"][ty].into(),
                    status: saga_tracker_sdk::contract::SagaStatus::ALL[status]
                        .as_str()
                        .into(),
                    started_at: t0 + chrono::Duration::minutes(50 * hour),
                    duration_ms: dur.map(|d| d * 700),
                    compensation_started_at: comp.then_some(t0),
                    compensation_duration_ms: comp_dur.map(|d| d * 90),
                    // Distinct and sorted, as the fold gives them.
                    services: services
                        .iter()
                        .map(|i| format!("svc{i}"))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                };
                let steps = steps
                    .into_iter()
                    .map(|(n, failed, us)| StepFacts {
                        step: format!("S{n}"),
                        failed,
                        duration_us: us.map(|u| u * 1_000_000),
                    })
                    .collect();
                (saga, steps)
            })
    }

    proptest! {
        /// `change` is `add(-1, old) + add(1, new)`, whatever the two versions share.
        #[test]
        fn change_equals_subtracting_old_and_adding_new(
            old in proptest::option::of(facts()),
            new in facts(),
        ) {
            let mut by_change = Delta::default();
            by_change.change(old.as_ref().map(|(s, st)| (s, st.as_slice())), (&new.0, &new.1));
            let mut by_add = Delta::default();
            if let Some((s, st)) = &old {
                by_add.add(-1, s, st);
            }
            by_add.add(1, &new.0, &new.1);
            prop_assert_eq!(nonzero(&by_change), nonzero(&by_add));
        }

        /// A saga that only gained a step touches only that step's rows.
        #[test]
        fn an_unchanged_saga_with_one_more_step_changes_only_that_step(base in facts()) {
            let (saga, steps) = base;
            let mut more = steps.clone();
            more.push(StepFacts { step: "EXTRA".into(), failed: false, duration_us: Some(5) });
            let mut d = Delta::default();
            d.change(Some((&saga, &steps)), (&saga, &more));
            let (counts, durations) = nonzero(&d);
            prop_assert!(counts.iter().all(|(k, _)| k.3 == "EXTRA"));
            prop_assert!(durations.iter().all(|(k, _)| k.3 == "EXTRA"));
            prop_assert_eq!(counts.len(), 1 + saga.services.len());
        }
    }
}
