//! Statistics rollups: per hour, saga type, step and service, the counts and duration
//! histograms `GET /api/v1/stats` adds up instead of scanning every saga and event.
//!
//! # One definition, three users
//!
//! What a saga contributes to the rollups — its status counts, its durations, and per step
//! whether it failed and how long it took — is defined once, here, as SQL over two
//! relations: some sagas (the columns of [`SAGA_COLUMNS`]) and their events
//! ([`EVENT_COLUMNS`]). The same text serves
//!
//! - the ingest transaction ([`apply_ingest`]): it adds the contribution of every saga it
//!   touched as the saga is now, and subtracts the one it had before the batch (the saga row
//!   as it was, and its events minus the ones this batch inserted). The net change of each
//!   rollup row is applied in one statement; rows whose net change is zero are not touched;
//! - retention ([`subtract_doomed`]), which subtracts what it deletes;
//! - the rebuild ([`rebuild`]), which computes everything from the stored sagas — the
//!   backfill of an existing database, and the reference the tests compare the incremental
//!   rollups with.
//!
//! Because a contribution is a deterministic function of the stored rows and the ingest path
//! serialises per saga (advisory locks), adding and subtracting the same function keeps the
//! rollups equal to a rebuild at every commit: nothing is approximate except the percentiles
//! read from the histograms (see [`estimate_percentiles`]).
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
//! Durations (ms) fall in log-scale buckets, 8 per doubling: bucket 0 is under 1 ms, bucket
//! `b ≥ 1` covers `[2^((b-1)/8), 2^(b/8))`, about 9 % wide. Each bucket keeps its count and
//! exact sum, so its mean is exact.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

/// The version of the contribution rules below. Bump it whenever their meaning changes:
/// `migrate` then rebuilds the rollups from the stored sagas.
pub const ROLLUP_VERSION: i32 = 1;

/// Columns of the saga relation a contribution is computed from.
pub const SAGA_COLUMNS: &str = "saga_id, saga_type, status, started_at, duration_ms, \
    compensation_started_at, compensation_duration_ms, services";

/// The same columns as a record type, to read saga rows back from JSON.
const SAGA_RECORD: &str = "x(saga_id text, saga_type text, status text, \
    started_at timestamptz, duration_ms bigint, compensation_started_at timestamptz, \
    compensation_duration_ms bigint, services text[])";

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

/// A step's duration in ms (numeric, exact to the microsecond): first `STARTED` — or first
/// event when the step never reported `STARTED` — to first `SUCCEEDED`/`FAILED`, at least 0;
/// null while the step has not ended.
pub const STEP_DURATION_MS: &str = "case \
    when min(e.occurred_at) filter (where e.step_status in ('SUCCEEDED', 'FAILED')) is null \
        then null \
    else greatest(0, extract(epoch from \
        min(e.occurred_at) filter (where e.step_status in ('SUCCEEDED', 'FAILED')) \
        - coalesce(min(e.occurred_at) filter (where e.step_status = 'STARTED'), \
                   min(e.occurred_at))) * 1000) end";

/// The histogram bucket of a duration `d` in ms (see the module docs).
fn bucket_of(d: &str) -> String {
    format!("(case when {d} < 1 then 0 else 1 + floor(8 * ln(({d})::float8) / ln(2::float8)) end)::smallint")
}

const HOUR: &str = "date_trunc('hour', s.started_at, 'UTC')";
const SERVICES: &str = "cross join lateral unnest(array['']::text[] || s.services) as k(service)";

/// A set of sagas and their events, each as a `select` of [`SAGA_COLUMNS`] /
/// [`EVENT_COLUMNS`]. The events query may refer to the sagas as `{prefix}_s`.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub sagas: &'a str,
    pub events: &'a str,
}

/// `{prefix}_s` (the sagas) and `{prefix}_steps` (one row per saga and step: `failed`,
/// `duration_ms`) as CTEs, comma-separated, without `with`.
pub fn source_ctes(prefix: &str, source: Source<'_>) -> String {
    format!(
        "{prefix}_s as materialized ({sagas}), \
         {prefix}_steps as materialized ( \
           select e.saga_id, e.step, bool_or(e.step_status = 'FAILED') as failed, \
             {STEP_DURATION_MS} as duration_ms \
           from ({events}) e group by e.saga_id, e.step)",
        sagas = source.sagas,
        events = source.events,
    )
}

/// The count contributions of `{prefix}_s`/`{prefix}_steps`: columns `service, hour,
/// saga_type, step` and then [`COUNTS`], one row per saga/step and service key.
pub fn count_rows(prefix: &str) -> String {
    format!(
        "select k.service, {HOUR} as hour, s.saga_type, ''::text as step, \
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
         from {prefix}_s s {SERVICES} \
         union all \
         select k.service, {HOUR}, s.saga_type, p.step, 1, 0, 0, 0, p.failed::int, 0, 0, 0, 0 \
         from {prefix}_s s join {prefix}_steps p on p.saga_id = s.saga_id {SERVICES}"
    )
}

/// The duration contributions of `{prefix}_s`/`{prefix}_steps`: columns `service, hour,
/// saga_type, step, kind, bucket, ms`, one row per duration and service key.
pub fn duration_rows(prefix: &str) -> String {
    let saga = bucket_of("s.duration_ms");
    let compensation = bucket_of("s.compensation_duration_ms");
    let step = bucket_of("p.duration_ms");
    format!(
        "select k.service, {HOUR} as hour, s.saga_type, ''::text as step, 's'::\"char\" as kind, \
           {saga} as bucket, s.duration_ms::numeric as ms \
         from {prefix}_s s {SERVICES} where s.duration_ms is not null \
         union all \
         select k.service, {HOUR}, s.saga_type, '', 'c', {compensation}, \
           s.compensation_duration_ms::numeric \
         from {prefix}_s s {SERVICES} where s.compensation_duration_ms is not null \
         union all \
         select k.service, {HOUR}, s.saga_type, p.step, 't', {step}, p.duration_ms \
         from {prefix}_s s join {prefix}_steps p on p.saga_id = s.saga_id {SERVICES} \
         where p.duration_ms is not null"
    )
}

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
             ''::text as step, 's'::\"char\" as kind, 0::smallint as bucket, 0::numeric as ms \
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
    let columns = COUNTS.join(", ");
    let increments = COUNTS
        .map(|c| format!("{c} = t.{c} + excluded.{c}"))
        .join(", ");
    ctes.push(format!(
        "count_delta as ( \
           select {keys}, {sums} from ({parts}) x group by {keys} \
           having ({nonzero}) <> ({zeros})), \
         rollup_counts as ( \
           insert into stats_hourly as t ({keys}, {columns}) \
           select {keys}, {columns} from count_delta order by {keys} \
           on conflict ({keys}) do update set {increments} \
           returning 1), \
         duration_delta as ( \
           select {keys}, kind, bucket, sum(sign)::bigint as count, sum(sign * ms) as sum_ms \
           from ({dparts}) x group by {keys}, kind, bucket \
           having (sum(sign), sum(sign * ms)) <> (0, 0)), \
         rollup_durations as ( \
           insert into stats_hourly_durations as t ({keys}, kind, bucket, count, sum_ms) \
           select {keys}, kind, bucket, count, sum_ms from duration_delta \
           order by {keys}, kind, bucket \
           on conflict ({keys}, kind, bucket) do update \
             set count = t.count + excluded.count, sum_ms = t.sum_ms + excluded.sum_ms \
           returning 1)",
        parts = count_parts.join(" union all "),
        dparts = duration_parts.join(" union all "),
    ));
    ctes.join(", ")
}

/// The previous rows of `saga_ids` as a JSON array of [`SAGA_COLUMNS`] objects, read in the
/// ingest transaction before it rewrites them; [`apply_ingest`] subtracts their contribution.
pub async fn previous_rows(
    tx: &mut Transaction<'_, Postgres>,
    saga_ids: &[String],
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select coalesce(jsonb_agg(to_jsonb(x)), '[]'::jsonb) \
         from (select {SAGA_COLUMNS} from sagas where saga_id = any($1)) x"
    ))
    .bind(saga_ids)
    .fetch_one(&mut **tx)
    .await
}

/// Applies the net change of one ingest batch: plus the contribution of `saga_ids` as they
/// are now (after the upsert), minus the one of `previous` (from [`previous_rows`]) with
/// the events stored before this batch (all of theirs but `inserted_event_ids`).
pub async fn apply_ingest(
    tx: &mut Transaction<'_, Postgres>,
    saga_ids: &[String],
    previous: &Value,
    inserted_event_ids: &[String],
) -> Result<(), sqlx::Error> {
    let plus_sagas = format!("select {SAGA_COLUMNS} from sagas where saga_id = any($1)");
    let plus_events = format!("select {EVENT_COLUMNS} from saga_events where saga_id = any($1)");
    let minus_sagas = format!("select {SAGA_COLUMNS} from jsonb_to_recordset($2) as {SAGA_RECORD}");
    let minus_events = format!(
        "select {EVENT_COLUMNS} from saga_events \
         where saga_id = any($1) and not (event_id = any($3))"
    );
    let sql = format!(
        "with {} select 1",
        delta_ctes(
            Some(Source {
                sagas: &plus_sagas,
                events: &plus_events,
            }),
            Some(Source {
                sagas: &minus_sagas,
                events: &minus_events,
            }),
        )
    );
    sqlx::query(&sql)
        .bind(saga_ids)
        .bind(previous)
        .bind(inserted_event_ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

/// Deletes rollup rows whose counts all went back to zero (every saga they counted was
/// removed or moved to another hour). Harmless to keep, so retention does this at the end of
/// a pass rather than the ingest path on every batch.
pub async fn prune_zero_rows(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let counts = sqlx::query("delete from stats_hourly where total = 0")
        .execute(pool)
        .await?
        .rows_affected();
    let durations = sqlx::query("delete from stats_hourly_durations where count = 0")
        .execute(pool)
        .await?
        .rows_affected();
    Ok(counts + durations)
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
    sqlx::query("truncate stats_hourly, stats_hourly_durations")
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
        let index = |d: f64| -> i16 { 1 + (8.0 * d.ln() / 2f64.ln()).floor() as i16 };
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
