//! Read queries behind the REST API.
//!
//! The API parses and validates what the caller asked for into a [`SagaFilter`]; this module
//! turns it into one parameterised statement (every value is a bind, never spliced into the
//! SQL text) and returns plain rows. It knows nothing about HTTP, JSON shapes or cursors'
//! wire encoding.
//!
//! Listing order is `started_at desc, saga_id desc` by default, or `updated_at desc, saga_id
//! desc` ([`SortKey`]). `saga_id` is unique, so the order is total and a keyset position
//! ([`Keyset`]) names exactly one place in it: a page boundary never skips or repeats a saga,
//! however many rows arrive while someone pages, and each page is an index range scan
//! instead of an ever-growing `offset`.
//!
//! Stuck sagas are found with the rules of [`crate::stuck`] written as SQL
//! ([`push_stuck_predicate`]), evaluated against the caller's clock: nothing about stuck is
//! stored, so a search is exact at the instant it runs.
//!
//! A filter the indexes serve without order (`service` and `meta.` through GIN indexes,
//! `minDurationMs` through a range of `duration_ms`) is searched in two steps
//! ([`search_sagas`]), because PostgreSQL cannot tell a value that matches a third of the
//! sagas from one that matches none of them (an unknown array element is estimated at
//! 0.5 %, a generic plan's `duration_ms >= $1` at a third) and, guessing wrong, walks the
//! whole listing order hoping to find a page early. The first step walks a bounded stretch
//! of the order; what it finds there decides the second: a plan that follows the order
//! when matches are common, one that collects every match through its index and sorts them
//! when they are rare. Both are exact; only their cost depends on the choice.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::rows::{EventRow, EVENT_COLUMNS};
use crate::stuck::{StuckPolicy, StuckReason};

/// What a search asks for. Every field narrows the result (AND); empty means "no filter".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SagaFilter {
    /// Exact `saga_type`.
    pub saga_type: Option<String>,
    /// Any of these statuses (wire names such as `FAILED`); empty = any status.
    pub statuses: Vec<String>,
    /// Exact business key.
    pub business_key: Option<String>,
    /// Exact trace id (lowercase hex).
    pub trace_id: Option<String>,
    /// The saga has at least one event for this step.
    pub step: Option<String>,
    /// The step that failed the saga (`failed_step`).
    pub failed_step: Option<String>,
    /// This service emitted at least one of the saga's events.
    pub service: Option<String>,
    /// `started_at >= started_after`.
    pub started_after: Option<DateTime<Utc>>,
    /// `started_at < started_before`.
    pub started_before: Option<DateTime<Utc>>,
    /// `updated_at >= updated_after`.
    pub updated_after: Option<DateTime<Utc>>,
    /// `updated_at < updated_before`.
    pub updated_before: Option<DateTime<Utc>>,
    /// `duration_ms >= min_duration_ms` (sagas still running have no duration and never match).
    pub min_duration_ms: Option<i64>,
    /// Metadata conditions, all of which must hold.
    pub metadata: Vec<MetadataMatch>,
    /// Only stuck (`true`) or only not stuck (`false`) sagas, by the [`StuckAt`] given to the
    /// query.
    pub stuck: Option<bool>,
    /// Only sagas stuck now for this reason.
    pub stuck_reason: Option<StuckReason>,
}

/// The stuck rules and the instant they are evaluated at.
#[derive(Debug, Clone, Copy)]
pub struct StuckAt<'a> {
    pub policy: &'a StuckPolicy,
    pub now: DateTime<Utc>,
}

/// Which time orders a listing (always descending, then `saga_id` descending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// `started_at`: newest sagas first.
    #[default]
    StartedAt,
    /// `updated_at`: most recently active first.
    UpdatedAt,
}

impl SortKey {
    /// The wire name (`sort=` value).
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::StartedAt => "startedAt",
            SortKey::UpdatedAt => "updatedAt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [SortKey::StartedAt, SortKey::UpdatedAt]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// The row's value of the sort column.
    pub fn value_of(self, row: &SagaRow) -> DateTime<Utc> {
        match self {
            SortKey::StartedAt => row.started_at,
            SortKey::UpdatedAt => row.updated_at,
        }
    }

    /// The index orders whose statements together list this order: `updated_at` has no
    /// index of its own (so that a running saga's row, rewritten by each of its events, is
    /// updated heap-only: migration `20261207000001`), and is read as the finished sagas
    /// (`settled_at`, their `updated_at`) and the running ones, merged. A filter's statuses
    /// leave out a part none of whose sagas could match.
    fn orders(self, filter: &SagaFilter) -> &'static [Order] {
        match self {
            SortKey::StartedAt => &[Order::Started],
            SortKey::UpdatedAt => {
                let running = |status: &str| RUNNING_STATUSES.contains(&status);
                let only = |f: &dyn Fn(&str) -> bool| {
                    !filter.statuses.is_empty() && filter.statuses.iter().all(|s| f(s))
                };
                let only_running =
                    only(&running) || filter.stuck_reason == Some(StuckReason::NoProgress);
                let only_settled = only(&|s| !running(s))
                    || filter.stuck_reason == Some(StuckReason::FailedNotCompensated);
                match (only_running, only_settled) {
                    (true, _) => &[Order::Running],
                    (_, true) => &[Order::Settled],
                    _ => &[Order::Settled, Order::Running],
                }
            }
        }
    }
}

/// The statuses of a saga still running (no `settled_at`); every other status is final
/// until another event says otherwise.
const RUNNING_STATUSES: [&str; 3] = ["STARTED", "IN_PROGRESS", "COMPENSATING"];

/// [`RUNNING_STATUSES`] as a condition over `sagas s` (a literal, for `concat!`).
macro_rules! running_saga {
    () => {
        "s.status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING')"
    };
}

/// The sagas one search statement reads, in the order of one column (descending, then
/// `saga_id` descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Every saga by `started_at` (`sagas_started_idx` and the indexes ending like it).
    Started,
    /// The finished sagas by `settled_at`, equal to their `updated_at`
    /// (`sagas_settled_idx`).
    Settled,
    /// The running sagas by `updated_at`, in the order of `saga_activity`
    /// ([`search_running`]), or collected through the indexes of `sagas` and sorted.
    Running,
}

impl Order {
    fn column(self) -> &'static str {
        match self {
            Order::Started => "s.started_at",
            Order::Settled => "s.settled_at",
            Order::Running => "s.updated_at",
        }
    }

    /// The condition that keeps this order's sagas, in the form its index's predicate
    /// implies.
    fn rows(self) -> &'static str {
        match self {
            Order::Started => "",
            Order::Settled => " and s.settled_at is not null",
            Order::Running => concat!(" and ", running_saga!()),
        }
    }
}

/// One metadata condition: the saga's merged metadata contains `key` with one of `values`.
///
/// Each alternative becomes a `metadata @> '{"key": value}'` test so the GIN
/// `jsonb_path_ops` index on `sagas.metadata` serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataMatch {
    pub key: String,
    /// Accepted JSON values (e.g. both `"12"` and `12`); at least one.
    pub values: Vec<Value>,
}

/// A position in one listing order: results start strictly after this saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// The order the position belongs to; a position is meaningless in another order.
    pub sort: SortKey,
    /// The sort column's value (`started_at` or `updated_at`) of the last saga shown.
    pub at: DateTime<Utc>,
    pub saga_id: String,
}

/// One row of `sagas`, as the API shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SagaRow {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub current_step: String,
    pub failed_step: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub compensation_started_at: Option<DateTime<Utc>>,
    pub compensation_ended_at: Option<DateTime<Utc>>,
    pub compensation_duration_ms: Option<i64>,
    pub event_count: i32,
    pub late_event_count: i32,
    pub business_key: Option<String>,
    pub trace_id: Option<String>,
    pub metadata: Value,
    pub services: Vec<String>,
}

/// One row of `saga_events`: what rebuilds the event ([`EventRow`], shared with the write
/// path) plus when it was stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    #[sqlx(flatten)]
    pub row: EventRow,
    /// When the transaction that stored it began; `ingested_at - occurred_at` is the
    /// visibility lag.
    pub ingested_at: DateTime<Utc>,
    /// The trace id of the tracker's ingest batch that stored it (`ingest.batch`), when that
    /// batch was traced and sampled.
    pub tracker_trace_id: Option<String>,
}

const SAGA_COLUMNS: &str = "saga_id, saga_type, status, started_at, updated_at, ended_at, \
     duration_ms, current_step, failed_step, failure_code, failure_message, \
     compensation_started_at, compensation_ended_at, compensation_duration_ms, event_count, \
     late_event_count, business_key, trace_id, metadata, services";

/// One page request: what to match, in which order, from where, how many.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub filter: &'a SagaFilter,
    pub sort: SortKey,
    /// Start strictly after this position; its `sort` must equal `sort` (the API rejects a
    /// cursor from another order before it gets here).
    pub after: Option<&'a Keyset>,
    pub limit: i64,
}

/// Rows of the listing order the first step of a two-step search reads (at least; a page
/// larger than a quarter of it reads four pages' worth).
const PROBE_WALK_ROWS: i64 = 2000;

/// What reading one match costs when every match is collected through a bitmap scan (rows
/// scattered over the table, one heap page each), in rows of an ordered walk (consecutive
/// index entries): measured ≈ 4 on the benchmark seed (docs/bench-notes/reads-plans.md).
const COLLECT_ROW_COST: f64 = 4.0;

/// Up to `limit` sagas matching the filter, in listing order, starting after `after`.
///
/// Callers that want to know whether another page exists ask for one row more than they
/// show.
///
/// Filters the planner estimates well run as one statement. A filter served only by an
/// unordered index (see the module documentation) runs as a walk of the first
/// [`PROBE_WALK_ROWS`] rows after the cursor, which answers when it finds a full page (the
/// first `limit` matches of a prefix of the order are the first of the whole order), and
/// otherwise as a second statement whose plan that walk chose ([`collect_is_cheaper`]): the
/// ordered walk again, unbounded, or a collection of every match through the filter's
/// index (bitmap scans only) followed by a top-N sort. Every statement runs with JIT off:
/// these plans touch few rows, and compiling them costs more than it saves.
pub async fn search_sagas(
    pool: &PgPool,
    page: Page<'_>,
    stuck: StuckAt<'_>,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One snapshot for every statement of the search: the rounds read disjoint days, and a
    // saga moved between days by retention in between must be seen once.
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let days: Vec<(NaiveDate, bool)> =
        sqlx::query_as("select day, legacy from storage_partitions order by day desc")
            .fetch_all(&mut *tx)
            .await?;
    let orders = page.sort.orders(page.filter);
    let mut rows = Vec::new();
    for &order in orders {
        let part = match order {
            Order::Running => search_running(&mut tx, page, stuck).await?,
            _ => search_order(&mut tx, page, order, stuck, &days).await?,
        };
        rows.extend(part);
    }
    tx.commit().await?;
    if orders.len() > 1 {
        merge_pages(&mut rows, page);
    }
    Ok(rows)
}

/// The running sagas of a search by `updated_at`. The first of them in that order (after the
/// cursor, within the bounds: a page's worth when the filter has no other condition, else
/// [`PROBE_WALK_ROWS`]) come from `saga_activity` (one row per running saga, kept by
/// triggers on `sagas`), then their rows, filtered, by key: when they hold a page, it is the
/// page (every later running saga is older). Otherwise, unless they
/// were all the running sagas, every running match is collected through the filter's
/// indexes and sorted — the rarer the matches, the cheaper. Two plain statements rather
/// than a join: planning a join of `saga_activity` with every day partition of `sagas` took
/// 30 ms at 35 days, the execution 1 ms.
async fn search_running(
    tx: &mut sqlx::PgConnection,
    page: Page<'_>,
    stuck: StuckAt<'_>,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    // With no condition but the time bounds (which `saga_activity` applies itself), the
    // first `limit` running sagas are the page; otherwise a stretch to find a page in.
    let only_bounds = SagaFilter {
        updated_after: None,
        updated_before: None,
        ..page.filter.clone()
    } == SagaFilter::default();
    let walk = if only_bounds {
        page.limit
    } else {
        PROBE_WALK_ROWS.max(page.limit.saturating_mul(4))
    };
    set_plan(&mut *tx, Plan::Walk).await?;
    let mut qb = QueryBuilder::new("select saga_id, bucket_day from saga_activity a where true");
    if let Some(k) = page.after {
        qb.push(" and (a.active_at, a.saga_id) < (")
            .push_bind(k.at)
            .push(", ")
            .push_bind(&k.saga_id)
            .push(")");
    }
    if let Some(t) = page.filter.updated_after {
        qb.push(" and a.active_at >= ").push_bind(t);
    }
    if let Some(t) = page.filter.updated_before {
        qb.push(" and a.active_at < ").push_bind(t);
    }
    qb.push(" order by a.active_at desc, a.saga_id desc limit ")
        .push_bind(walk);
    let keys: Vec<(String, NaiveDate)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let all_running = (keys.len() as i64) < walk;
    let (ids, mut days): (Vec<String>, Vec<NaiveDate>) = keys.into_iter().unzip();
    days.sort_unstable();
    days.dedup();
    // A saga's row is on one day only, so the ids and the days together name exactly these
    // rows; the days bound the partitions planned. A condition only an unordered index
    // serves is intersected with the ids as bitmaps (a service no running saga has: no row
    // read), unless a step's probe needs its index scan.
    let plan = if needs_probe(page.filter) {
        collect_plan(page.filter)
    } else {
        Plan::Indexed
    };
    set_plan(&mut *tx, plan).await?;
    let mut qb = QueryBuilder::new("select ");
    qb.push(SAGA_COLUMNS)
        .push(" from sagas s where s.saga_id = any(")
        .push_bind(ids)
        .push(") and s.bucket_day = any(")
        .push_bind(days)
        .push(")");
    push_order_bounds(&mut qb, page, Order::Running);
    push_filter(&mut qb, page.filter, stuck);
    qb.push(" order by s.updated_at desc, s.saga_id desc limit ")
        .push_bind(page.limit);
    let rows = fetch(&mut *tx, qb).await?;
    if all_running || rows.len() as i64 >= page.limit {
        return Ok(rows);
    }
    set_plan(&mut *tx, collect_plan(page.filter)).await?;
    let collect = search_query(page, Order::Running, stuck, Days::All, None);
    fetch(&mut *tx, collect).await
}

/// The plan that collects the running sagas matching `filter` through its indexes: bitmap
/// scans only, unless a step is probed, which needs the index scan `Collect` forbids (as in
/// `search_days`).
fn collect_plan(filter: &SagaFilter) -> Plan {
    if filter.step.is_some() {
        Plan::Indexed
    } else {
        Plan::Collect
    }
}

/// Sorts rows found by several statements into the listing order and keeps the first page.
fn merge_pages(rows: &mut Vec<SagaRow>, page: Page<'_>) {
    rows.sort_by(|a, b| {
        (page.sort.value_of(b), &b.saga_id).cmp(&(page.sort.value_of(a), &a.saga_id))
    });
    rows.truncate(page.limit.max(0) as usize);
}

/// The search over the sagas of one index order ([`Order::Started`] or
/// [`Order::Settled`]), in two rounds: the recent days, then the older ones only if one of
/// their sagas could come before the first round's last row.
async fn search_order(
    tx: &mut sqlx::PgConnection,
    page: Page<'_>,
    order: Order,
    stuck: StuckAt<'_>,
    days: &[(NaiveDate, bool)],
) -> Result<Vec<SagaRow>, sqlx::Error> {
    let cut = stuck.now.date_naive() - chrono::Days::new(RECENT_DAYS);
    let (recent, older): (Vec<_>, Vec<_>) = days.iter().copied().partition(|(day, _)| *day >= cut);
    if recent.is_empty() || older.is_empty() {
        let (rows, _) = search_days(tx, page, order, stuck, Days::All, days, None).await?;
        return Ok(rows);
    }
    let (mut rows, walked) =
        search_days(tx, page, order, stuck, Days::From(cut), &recent, None).await?;
    if rows.len() as i64 >= page.limit {
        let last = &rows[page.limit as usize - 1];
        let last = (page.sort.value_of(last), last.saga_id.as_str());
        if !older_may_beat(tx, page, order, cut, last).await? {
            return Ok(rows);
        }
    }
    // The older days' plan is chosen from what the first round's walk found: a second
    // bounded walk there would cost a statement (planned over every older day) to learn
    // about the same.
    let (more, _) = search_days(tx, page, order, stuck, Days::Before(cut), &older, walked).await?;
    rows.extend(more);
    merge_pages(&mut rows, page);
    Ok(rows)
}

/// How many days back from today the first round of a search reads ([`search_sagas`]).
const RECENT_DAYS: u64 = 1;

/// Which day partitions (`bucket_day`) one round of a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Days {
    All,
    From(NaiveDate),
    Before(NaiveDate),
}

/// Whether a saga stored before `cut` may come before `last` in the listing order (after
/// the cursor and within the filter's bounds on the sort column): the first such saga of the
/// order, one index probe per older day.
async fn older_may_beat(
    tx: &mut sqlx::PgConnection,
    page: Page<'_>,
    order: Order,
    cut: NaiveDate,
    last: (DateTime<Utc>, &str),
) -> Result<bool, sqlx::Error> {
    // The order's index of each older day, read from its start: one row each. Left to
    // itself the planner sees every row of those days satisfy `bucket_day < cut` and sorts
    // them all (450 ms at 1M sagas).
    set_plan(&mut *tx, Plan::Walk).await?;
    let column = order.column();
    let mut qb = QueryBuilder::new(format!(
        "select {column}, s.saga_id from sagas s where s.bucket_day < "
    ));
    qb.push_bind(cut);
    push_order_bounds(&mut qb, page, order);
    qb.push(format_args!(
        " order by {column} desc, s.saga_id desc limit 1"
    ));
    let first: Option<(DateTime<Utc>, String)> =
        qb.build_query_as().fetch_optional(&mut *tx).await?;
    Ok(first.is_some_and(|(at, id)| (at, id.as_str()) > last))
}

/// What a bounded walk found: `(matches, rows walked)`.
type Walked = Option<(i64, i64)>;

/// One round of [`search_sagas`]: the search over the sagas stored on `days` (whose
/// partitions, `partitions`, size the plan choice). A filter that needs a probe walks first,
/// unless `walked` already says what a walk finds; returns what its walk found.
async fn search_days(
    tx: &mut sqlx::PgConnection,
    page: Page<'_>,
    order: Order,
    stuck: StuckAt<'_>,
    days: Days,
    partitions: &[(NaiveDate, bool)],
    walked: Walked,
) -> Result<(Vec<SagaRow>, Walked), sqlx::Error> {
    if !needs_probe(page.filter) {
        set_plan(&mut *tx, Plan::Planner).await?;
        let rows = fetch(&mut *tx, search_query(page, order, stuck, days, None)).await?;
        return Ok((rows, None));
    }
    let (found, walk) = match walked {
        Some(w) => w,
        None => {
            let walk = PROBE_WALK_ROWS.max(page.limit.saturating_mul(4));
            set_plan(&mut *tx, Plan::Walk).await?;
            let rows = fetch(&mut *tx, search_query(page, order, stuck, days, Some(walk))).await?;
            let found = rows.len() as i64;
            if found >= page.limit {
                return Ok((rows, Some((found, walk))));
            }
            (found, walk)
        }
    };
    let plan = if found == 0 && only_duration(page.filter) {
        // A walk that found no finished saga long enough may have read only the newest
        // sagas, still running (at a hundred sagas a second lasting half a minute, the first
        // 3,000 of the order have no duration yet), so it says nothing of how many there
        // are; collecting them could mean most of the table. The planner's estimate for a
        // range of `duration_ms` is good (a custom plan reads the column's histogram): few
        // are collected, many are walked to.
        set_plan(&mut *tx, Plan::Collect).await?;
        let estimate = estimated_rows(&mut *tx, page, order, stuck, days).await?;
        if estimate > (walk as f64) * 4.0 {
            Plan::Walk
        } else if page.filter.step.is_some() {
            // Few to collect, each to be probed for the step: the probe needs its index
            // scan, which `Collect` forbids (it hashed every event of the step instead).
            Plan::Planner
        } else {
            Plan::Collect
        }
    } else if collect_is_cheaper(
        found,
        walk,
        page.limit,
        stored_sagas_estimate(&mut *tx, partitions).await?,
    ) {
        Plan::Collect
    } else {
        Plan::Walk
    };
    set_plan(&mut *tx, plan).await?;
    let rows = fetch(&mut *tx, search_query(page, order, stuck, days, None)).await?;
    Ok((rows, Some((found, walk))))
}

/// After `found` matches in a walk of `walked` rows, whether collecting every match of
/// `sagas` (about `found / walked` of them, each at [`COLLECT_ROW_COST`]) reads less than
/// walking on until `limit` of them are found (about `limit × walked / found` rows). The
/// walk's cost does not depend on the table's size and the collection's grows with it, so
/// the larger the table, the rarer matches must be to be collected.
fn collect_is_cheaper(found: i64, walked: i64, limit: i64, sagas: f64) -> bool {
    if found == 0 {
        return true;
    }
    let density = found as f64 / walked as f64;
    COLLECT_ROW_COST * density * sagas < limit as f64 / density
}

/// The planner's count of the sagas stored on these days (`reltuples` of their partitions,
/// kept by vacuum and analyze).
async fn stored_sagas_estimate(
    tx: &mut sqlx::PgConnection,
    partitions: &[(NaiveDate, bool)],
) -> Result<f64, sqlx::Error> {
    let names: Vec<String> = partitions
        .iter()
        .map(|&(day, legacy)| super::partitions::partition_name("sagas", day, legacy))
        .collect();
    sqlx::query_scalar(
        "select coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 from pg_class c \
         where c.relkind = 'r' and c.relname = any($1) \
           and c.oid in (select inhrelid from pg_inherits where inhparent = 'sagas'::regclass)",
    )
    .bind(names)
    .fetch_one(&mut *tx)
    .await
}

/// Whether the filter has a condition only an unordered index serves and none that a
/// selective ordered one does (a business key or trace id names a handful of sagas, and
/// the planner knows it).
fn needs_probe(filter: &SagaFilter) -> bool {
    let unordered =
        filter.service.is_some() || !filter.metadata.is_empty() || filter.min_duration_ms.is_some();
    unordered && filter.business_key.is_none() && filter.trace_id.is_none()
}

/// Whether `minDurationMs` is the filter's only condition served without order.
fn only_duration(filter: &SagaFilter) -> bool {
    filter.min_duration_ms.is_some() && filter.service.is_none() && filter.metadata.is_empty()
}

/// The plans a search statement may take, set for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Whatever the planner prefers.
    Planner,
    /// Index scans only: the listing order's index, walked in order.
    Walk,
    /// Bitmap scans only: every match of the filter's indexes, then a top-N sort.
    Collect,
    /// Index or bitmap scans, never a sequential one: the running sagas ([`Order::Running`])
    /// through their partial index or a selective one, whatever a day partition without
    /// statistics yet looks like to the planner.
    Indexed,
}

async fn set_plan(tx: &mut sqlx::PgConnection, plan: Plan) -> Result<(), sqlx::Error> {
    let (seq, index, bitmap) = match plan {
        Plan::Planner => ("on", "on", "on"),
        Plan::Walk => ("off", "on", "off"),
        Plan::Collect => ("off", "off", "on"),
        Plan::Indexed => ("off", "on", "on"),
    };

    // A custom plan per execution: planned for the values at hand (a generic plan knows
    // neither how common a status is nor whether a duration is beyond every saga's) and
    // under the settings just made (a cached generic plan would not follow them). No
    // parallel workers: a page reads a few hundred buffers, and at 10M sagas the planner,
    // expecting an unknown service in 0.5 % of them, started two workers to read 100
    // buffers (12 ms, of which the work was well under one).
    sqlx::query(
        "select set_config('jit', 'off', true), \
         set_config('max_parallel_workers_per_gather', '0', true), \
         set_config('plan_cache_mode', 'force_custom_plan', true), \
         set_config('enable_seqscan', $1, true), set_config('enable_indexscan', $2, true), \
         set_config('enable_bitmapscan', $3, true)",
    )
    .bind(seq)
    .bind(index)
    .bind(bitmap)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The planner's estimate of the matches of the search statement: the rows going into its
/// top-N sort (planned, not run; the plan of a collection is a sort of every match).
async fn estimated_rows(
    conn: &mut sqlx::PgConnection,
    page: Page<'_>,
    order: Order,
    stuck: StuckAt<'_>,
    days: Days,
) -> Result<f64, sqlx::Error> {
    let mut qb = search_query_from(
        QueryBuilder::new("explain (format json) select "),
        page,
        order,
        stuck,
        days,
        None,
    );
    let plan: sqlx::types::Json<Value> = qb.build_query_scalar().fetch_one(&mut *conn).await?;
    Ok(sort_input_rows(&plan.0).unwrap_or(f64::INFINITY))
}

/// The `Plan Rows` of the first `Sort` node of an `explain (format json)` plan, depth first.
fn sort_input_rows(node: &Value) -> Option<f64> {
    match node {
        Value::Array(items) => items.iter().find_map(sort_input_rows),
        Value::Object(map) => {
            if map.get("Node Type").and_then(Value::as_str) == Some("Sort") {
                return map.get("Plan Rows").and_then(Value::as_f64);
            }
            ["Plan", "Plans"]
                .iter()
                .filter_map(|k| map.get(*k))
                .find_map(sort_input_rows)
        }
        _ => None,
    }
}

async fn fetch(
    conn: &mut sqlx::PgConnection,
    mut qb: QueryBuilder<'_, Postgres>,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    qb.build_query_as::<SagaRow>().fetch_all(conn).await
}

/// The search statement; with `walk`, over only the first `walk` rows of the listing order
/// after the cursor (and within the filter's bounds on the sort column, so a time window far
/// back walks from its start).
fn search_query<'a>(
    page: Page<'a>,
    order: Order,
    stuck: StuckAt<'a>,
    days: Days,
    walk: Option<i64>,
) -> QueryBuilder<'a, Postgres> {
    search_query_from(QueryBuilder::new("select "), page, order, stuck, days, walk)
}

/// [`search_query`] after `qb`'s text (`select `, or `explain … select `).
fn search_query_from<'a>(
    mut qb: QueryBuilder<'a, Postgres>,
    page: Page<'a>,
    order: Order,
    stuck: StuckAt<'a>,
    days: Days,
    walk: Option<i64>,
) -> QueryBuilder<'a, Postgres> {
    let column = order.column();
    qb.push(SAGA_COLUMNS);
    // A bound on the partition key, in the statement itself: the plan reads only these
    // days' partitions (pruned when planned, every plan being a custom one).
    let push_days = |qb: &mut QueryBuilder<'a, Postgres>| match days {
        Days::All => {}
        Days::From(d) => {
            qb.push(" and s.bucket_day >= ").push_bind(d);
        }
        Days::Before(d) => {
            qb.push(" and s.bucket_day < ").push_bind(d);
        }
    };
    if let Some(walk) = walk {
        // The walk reads the first `walk` sagas, in order, that match every condition an
        // ordered index can serve (a status, a failed step, stuck, a time range), so a filter
        // such as `service` + `status=FAILED` walks the failed sagas, not every saga. The
        // limit keeps the planner from moving the unordered conditions into the walk, so it
        // reads exactly its rows of the order and no more.
        qb.push(" from (select * from sagas s where true");
        push_days(&mut qb);
        push_order_bounds(&mut qb, page, order);
        push_ordered(&mut qb, page.filter, stuck);
        qb.push(format_args!(
            " order by {column} desc, s.saga_id desc limit "
        ))
        .push_bind(walk)
        .push(") s where true");
        push_unordered(&mut qb, page.filter);
    } else {
        qb.push(" from sagas s where true");
        push_days(&mut qb);
        push_order_bounds(&mut qb, page, order);
        push_filter(&mut qb, page.filter, stuck);
    }
    qb.push(format_args!(
        " order by {column} desc, s.saga_id desc limit "
    ))
    .push_bind(page.limit);
    qb
}

/// The order's rows, and the conditions on its column: the cursor, and the filter's time
/// bounds on that column (repeated by [`push_filter`]; harmless, and they bound a walk's
/// index range).
fn push_order_bounds<'a>(qb: &mut QueryBuilder<'a, Postgres>, page: Page<'a>, order: Order) {
    let column = order.column();
    qb.push(order.rows());
    if let Some(k) = page.after {
        // Row comparison matches the (time desc, saga_id desc) index exactly.
        qb.push(format_args!(" and ({column}, s.saga_id) < ("))
            .push_bind(k.at)
            .push(", ")
            .push_bind(&k.saga_id)
            .push(")");
    }
    let f = page.filter;
    let (after, before) = match page.sort {
        // `updated_at < t` implies `started_at < t` (see `push_filter`).
        SortKey::StartedAt => (
            f.started_after,
            min_time(f.started_before, f.updated_before),
        ),
        SortKey::UpdatedAt => (f.updated_after, f.updated_before),
    };
    if let Some(t) = after {
        qb.push(format_args!(" and {column} >= ")).push_bind(t);
    }
    if let Some(t) = before {
        qb.push(format_args!(" and {column} < ")).push_bind(t);
    }
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Appends ` and …` for every condition of `filter` to a query over `sagas s`. Shared by
/// the search and the statistics, so both read a filter the same way.
pub(crate) fn push_filter<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    filter: &'a SagaFilter,
    stuck: StuckAt<'a>,
) {
    push_ordered(qb, filter, stuck);
    push_unordered(qb, filter);
}

/// The conditions an ordered index may serve (all but [`push_unordered`]'s).
fn push_ordered<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    filter: &'a SagaFilter,
    stuck: StuckAt<'a>,
) {
    if let Some(t) = &filter.saga_type {
        qb.push(" and s.saga_type = ").push_bind(t);
    }
    match filter.statuses.as_slice() {
        [] => {}
        // An equality, not `= any(…)`: the `(status, started_at desc, saga_id desc)` indexes
        // then give the listing order, so a rare status is not found by walking every
        // saga's start (PostgreSQL 15 reads an `= any` index scan without its order).
        [one] => {
            qb.push(" and s.status = ").push_bind(one);
        }
        many => {
            qb.push(" and s.status = any(").push_bind(many).push(")");
        }
    }
    if let Some(k) = &filter.business_key {
        qb.push(" and s.business_key = ").push_bind(k);
    }
    if let Some(t) = &filter.trace_id {
        qb.push(" and s.trace_id = ").push_bind(t);
    }
    if let Some(step) = &filter.failed_step {
        qb.push(" and s.failed_step = ").push_bind(step);
    }
    if let Some(t) = filter.started_after {
        qb.push(" and s.started_at >= ").push_bind(t);
    }
    if let Some(t) = filter.started_before {
        qb.push(" and s.started_at < ").push_bind(t);
    }
    if let Some(t) = filter.updated_after {
        // No index has `updated_at` (see `SortKey::orders`); what implies the bound per
        // part lets the planner read the recent ones from `sagas_settled_idx` and the
        // running ones from their partial index instead of filtering every saga.
        qb.push(" and s.updated_at >= ")
            .push_bind(t)
            .push(" and (s.settled_at >= ")
            .push_bind(t)
            .push(concat!(" or ", running_saga!(), ")"));
    }
    if let Some(t) = filter.updated_before {
        // A saga starts no later than its last event, so `updated_at < t` implies
        // `started_at < t`. Saying so lets the planner bound its walk of the `started_at`
        // order instead of filtering the whole table (7.1 s → ms at 10M sagas for a bound
        // a month back: docs/BENCHMARKS.md). It removes no row the filter keeps.
        qb.push(" and s.updated_at < ").push_bind(t);
        qb.push(" and s.started_at < ").push_bind(t);
    }
    // What a stuck rule implies about the status, written outside the `coalesce` the
    // planner cannot see into: the candidates are then read in listing order from the
    // unfinished sagas' partial index (`sagas_open_started_idx`, whose predicate each of
    // these implies) or the status index, instead of found among every saga's start.
    if let Some(want) = filter.stuck {
        if want {
            qb.push(" and ").push(OPEN_SAGA);
        }
        qb.push(if want { " and " } else { " and not " });
        push_stuck_predicate(qb, stuck);
    }
    if let Some(reason) = filter.stuck_reason {
        qb.push(match reason {
            StuckReason::NoProgress => " and s.status in ('STARTED', 'IN_PROGRESS')",
            StuckReason::CompensationNotFinished => {
                " and (s.status = 'COMPENSATING' \
                 or (s.status = 'FAILED' and s.compensation_ended_at is null))"
            }
            StuckReason::FailedNotCompensated => " and s.status = 'FAILED'",
        });
        qb.push(" and coalesce(");
        push_stuck_reason(qb, reason, stuck);
        qb.push(", false)");
    }
}

/// The predicate of `sagas_open_started_idx`: sagas that may be stuck for some reason
/// (running, or failed with a compensation that has not finished or never began).
const OPEN_SAGA: &str = concat!(
    "(",
    running_saga!(),
    " or (s.status = 'FAILED' and s.compensation_ended_at is null))"
);

/// The conditions only an unordered index serves ([`needs_probe`]), and `step`, a probe of
/// the saga's events per row: outside a walk it runs only for the rows the other conditions
/// keep, instead of making the walk itself read far down the order.
fn push_unordered<'a>(qb: &mut QueryBuilder<'a, Postgres>, filter: &'a SagaFilter) {
    if let Some(step) = &filter.step {
        // Served by `saga_events_step_idx (step, saga_id)`. A saga's events share its day
        // partition, so naming it lets each probe read one partition's index instead of
        // every day's (run-time partition pruning).
        qb.push(
            " and exists (select 1 from saga_events e where e.saga_id = s.saga_id \
             and e.bucket_day = s.bucket_day and e.step = ",
        )
        .push_bind(step)
        .push(")");
    }
    if let Some(service) = &filter.service {
        qb.push(" and ");
        push_service(qb, service.clone(), filter.saga_type.clone());
    }
    if let Some(ms) = filter.min_duration_ms {
        qb.push(" and s.duration_ms >= ").push_bind(ms);
    }
    push_metadata(qb, &filter.metadata);
}

/// "`service` emitted one of the saga's events" over `sagas s`, in the form the GIN index
/// `sagas_service_keys_idx` serves: with the saga's type when the filter names one (one
/// key per type and service, so a pair no saga has is one probe), then the exact
/// conditions, which decide (the index keys only propose candidates; see the migration
/// `20261204000002`). The caller states the type's equality itself.
pub(crate) fn push_service(
    qb: &mut QueryBuilder<'_, Postgres>,
    service: String,
    saga_type: Option<String>,
) {
    // The exact test first: the planner evaluates quals in order of cost, this one is cheap,
    // and on a walked row it is all that runs when the row does not match.
    qb.push("s.services @> array[")
        .push_bind(service.clone())
        .push("]::text[] and saga_service_keys(s.saga_type, s.services) @> array[");
    match saga_type {
        Some(t) => {
            qb.push_bind(t).push(" || chr(31) || ").push_bind(service);
        }
        None => {
            qb.push_bind(service);
        }
    }
    qb.push("]::text[]");
}

/// The rules of [`crate::stuck::StuckPolicy::rule`] as one boolean SQL expression over
/// `sagas s` (never null): the `or` of [`push_stuck_reason`] for every reason.
pub(crate) fn push_stuck_predicate(qb: &mut QueryBuilder<'_, Postgres>, at: StuckAt<'_>) {
    qb.push("coalesce(");
    for (i, reason) in StuckReason::ALL.into_iter().enumerate() {
        if i > 0 {
            qb.push(" or ");
        }
        push_stuck_reason(qb, reason, at);
    }
    qb.push(", false)");
}

/// "Stuck for `reason`" as a parenthesised SQL condition over `sagas s` (null counts as
/// false). Thresholds and the clock are binds; per-type thresholds are one JSON object
/// looked up by `saga_type`.
pub(crate) fn push_stuck_reason(
    qb: &mut QueryBuilder<'_, Postgres>,
    reason: StuckReason,
    at: StuckAt<'_>,
) {
    let p = at.policy;
    match reason {
        StuckReason::NoProgress => {
            let thresholds: Map<String, Value> = p
                .thresholds
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect();
            qb.push("(s.status in ('STARTED', 'IN_PROGRESS') and s.updated_at <= ")
                .push_bind(at.now)
                .push(" - coalesce((")
                .push_bind(Value::Object(thresholds))
                .push("::jsonb ->> s.saga_type)::bigint, ")
                .push_bind(p.default_threshold_secs)
                .push(") * interval '1 second')");
        }
        StuckReason::CompensationNotFinished => {
            qb.push(
                "((s.status = 'COMPENSATING' \
                 and coalesce(s.compensation_started_at, s.updated_at) <= ",
            )
            .push_bind(at.now)
            .push(" - ")
            .push_bind(p.compensation_timeout_secs)
            .push(" * interval '1 second')")
            .push(
                " or (s.status = 'FAILED' and s.compensation_started_at is not null \
                 and s.compensation_ended_at is null and s.compensation_started_at <= ",
            )
            .push_bind(at.now)
            .push(" - ")
            .push_bind(p.compensation_timeout_secs)
            .push(" * interval '1 second'))");
        }
        StuckReason::FailedNotCompensated => {
            qb.push("(s.status = 'FAILED' and s.compensation_started_at is null and ")
                .push_bind(p.failed_uncompensated_secs)
                .push(" > 0 and coalesce(s.ended_at, s.updated_at) <= ")
                .push_bind(at.now)
                .push(" - ")
                .push_bind(p.failed_uncompensated_secs)
                .push(" * interval '1 second')");
        }
    }
}

/// Conditions with a single accepted value are merged into one containment document (one
/// index probe); a condition with alternatives becomes an `or` of containments.
fn push_metadata(qb: &mut QueryBuilder<'_, Postgres>, conditions: &[MetadataMatch]) {
    let mut merged = Map::new();
    let mut alternatives = Vec::new();
    for m in conditions {
        match m.values.as_slice() {
            [] => {}
            [one] if !merged.contains_key(&m.key) => {
                merged.insert(m.key.clone(), one.clone());
            }
            _ => alternatives.push(m),
        }
    }
    if !merged.is_empty() {
        qb.push(" and s.metadata @> ")
            .push_bind(Value::Object(merged))
            .push("::jsonb");
    }
    for m in alternatives {
        qb.push(" and (");
        for (i, v) in m.values.iter().enumerate() {
            if i > 0 {
                qb.push(" or ");
            }
            let mut doc = Map::new();
            doc.insert(m.key.clone(), v.clone());
            qb.push("s.metadata @> ")
                .push_bind(Value::Object(doc))
                .push("::jsonb");
        }
        qb.push(")");
    }
}

/// Whether a saga with this id is stored (one primary-key probe).
pub async fn saga_exists(pool: &PgPool, saga_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from sagas where saga_id = $1)")
        .bind(saga_id)
        .fetch_one(pool)
        .await
}

/// Which of these `(saga_id, event_id)` pairs are stored (one primary-key probe per pair,
/// in one statement): how `saga-tracker dlq replay` tells an event this replay stored from
/// one already present. By pair, because an `eventId` is unique per saga, and because the
/// primary key `(saga_id, event_id, bucket_day)` serves only lookups that name the saga
/// (an `event_id` alone was a scan of every stored event).
pub async fn stored_event_ids(
    pool: &PgPool,
    events: &[(String, String)],
) -> Result<std::collections::HashSet<(String, String)>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Default::default());
    }
    let (sagas, ids): (Vec<&str>, Vec<&str>) =
        events.iter().map(|(s, e)| (s.as_str(), e.as_str())).unzip();
    let found: Vec<(String, String)> = sqlx::query_as(
        "select e.saga_id, e.event_id from unnest($1::text[], $2::text[]) as w(saga_id, event_id) \
         join saga_events e on e.saga_id = w.saga_id and e.event_id = w.event_id",
    )
    .bind(sagas)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// One saga's row alone (one primary-key probe): what the live view compares before it
/// reads the events.
pub async fn saga_row(pool: &PgPool, saga_id: &str) -> Result<Option<SagaRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {SAGA_COLUMNS} from sagas s where saga_id = $1"
    ))
    .bind(saga_id)
    .fetch_optional(pool)
    .await
}

/// One saga's row and all its stored events, read from one snapshot so the summary and the
/// events always agree. `None` if the saga is unknown.
pub async fn saga_with_events(
    pool: &PgPool,
    saga_id: &str,
) -> Result<Option<(SagaRow, Vec<StoredEvent>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    #[derive(sqlx::FromRow)]
    struct WithDay {
        #[sqlx(flatten)]
        saga: SagaRow,
        bucket_day: NaiveDate,
    }
    let saga = sqlx::query_as::<_, WithDay>(&format!(
        "select {SAGA_COLUMNS}, bucket_day from sagas where saga_id = $1"
    ))
    .bind(saga_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(WithDay { saga, bucket_day }) = saga else {
        tx.rollback().await?;
        return Ok(None);
    };
    let events = sqlx::query_as::<_, StoredEvent>(&format!(
        // The saga's day, as a value: the plan reads that day's partition alone, and
        // planning it does not consider the other days' (8 ms of planning at 35 days when
        // the day was a sub-select).
        "select {EVENT_COLUMNS}, ingested_at, tracker_trace_id from saga_events \
         where saga_id = $1 and bucket_day = $2 \
         order by sequence asc nulls first, occurred_at asc, event_id asc"
    ))
    .bind(saga_id)
    .bind(bucket_day)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((saga, events)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page<'a>(filter: &'a SagaFilter, after: Option<&'a Keyset>, limit: i64) -> Page<'a> {
        Page {
            filter,
            sort: SortKey::StartedAt,
            after,
            limit,
        }
    }

    fn at(policy: &StuckPolicy) -> StuckAt<'_> {
        StuckAt {
            policy,
            now: Utc::now(),
        }
    }

    #[test]
    fn an_empty_filter_lists_everything_in_keyset_order() {
        let f = SagaFilter::default();
        let p = StuckPolicy::default();
        let sql =
            search_query(page(&f, None, 51), Order::Started, at(&p), Days::All, None).into_sql();
        assert!(
            sql.ends_with(
                "from sagas s where true order by s.started_at desc, s.saga_id desc limit $1"
            ),
            "{sql}"
        );
    }

    #[test]
    fn every_value_is_a_bind_parameter() {
        let f = SagaFilter {
            saga_type: Some("ORDER'; drop table sagas; --".into()),
            statuses: vec!["FAILED".into(), "COMPENSATED".into()],
            metadata: vec![
                MetadataMatch {
                    key: "region".into(),
                    values: vec![json!("eu")],
                },
                MetadataMatch {
                    key: "amount".into(),
                    values: vec![json!("12"), json!(12)],
                },
            ],
            ..SagaFilter::default()
        };
        let k = Keyset {
            sort: SortKey::StartedAt,
            at: Utc::now(),
            saga_id: "x".into(),
        };
        let p = StuckPolicy::default();
        let sql = search_query(
            page(&f, Some(&k), 10),
            Order::Started,
            at(&p),
            Days::All,
            None,
        )
        .into_sql();
        assert!(!sql.contains("drop table"), "{sql}");
        assert!(!sql.contains("region") && !sql.contains("eu"), "{sql}");
        assert!(sql.contains("s.status = any($4)"), "{sql}");
        assert!(
            sql.contains(
                "s.metadata @> $5::jsonb and (s.metadata @> $6::jsonb or s.metadata @> $7::jsonb)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("where true and (s.started_at, s.saga_id) < ($1, $2)"),
            "{sql}"
        );
    }

    #[test]
    fn updated_at_order_reads_the_finished_and_the_running_sagas_apart() {
        let f = SagaFilter {
            stuck: Some(true),
            ..SagaFilter::default()
        };
        let k = Keyset {
            sort: SortKey::UpdatedAt,
            at: Utc::now(),
            saga_id: "x".into(),
        };
        let p = StuckPolicy::default();
        let q = Page {
            sort: SortKey::UpdatedAt,
            ..page(&f, Some(&k), 10)
        };
        assert_eq!(
            SortKey::UpdatedAt.orders(&f),
            [Order::Settled, Order::Running]
        );
        let sql = search_query(q, Order::Settled, at(&p), Days::All, None).into_sql();
        assert!(
            sql.contains("coalesce((s.status in ('STARTED', 'IN_PROGRESS')"),
            "{sql}"
        );
        assert!(
            sql.ends_with("order by s.settled_at desc, s.saga_id desc limit $13"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "where true and s.settled_at is not null and (s.settled_at, s.saga_id) < ($1, $2)"
            ),
            "{sql}"
        );
        let sql = search_query(q, Order::Running, at(&p), Days::All, None).into_sql();
        assert!(
            sql.contains(
                "where true and s.status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING') \
                 and (s.updated_at, s.saga_id) < ($1, $2)"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("order by s.updated_at desc, s.saga_id desc limit $13"),
            "{sql}"
        );
    }

    #[test]
    fn a_filter_that_only_running_or_only_finished_sagas_match_reads_one_part() {
        let orders = |statuses: &[&str], stuck_reason: Option<StuckReason>| {
            let f = SagaFilter {
                statuses: statuses.iter().map(|s| (*s).to_owned()).collect(),
                stuck_reason,
                ..SagaFilter::default()
            };
            SortKey::UpdatedAt.orders(&f).to_vec()
        };
        assert_eq!(
            orders(&["IN_PROGRESS", "COMPENSATING"], None),
            [Order::Running]
        );
        assert_eq!(orders(&["COMPLETED", "FAILED"], None), [Order::Settled]);
        assert_eq!(
            orders(&["COMPLETED", "STARTED"], None),
            [Order::Settled, Order::Running]
        );
        assert_eq!(orders(&[], Some(StuckReason::NoProgress)), [Order::Running]);
        assert_eq!(
            orders(&[], Some(StuckReason::FailedNotCompensated)),
            [Order::Settled]
        );
        assert_eq!(
            orders(&[], Some(StuckReason::CompensationNotFinished)),
            [Order::Settled, Order::Running]
        );
        assert_eq!(
            SortKey::StartedAt.orders(&SagaFilter::default()),
            [Order::Started]
        );
    }

    #[test]
    fn one_status_is_an_equality_so_its_index_gives_the_order() {
        let f = SagaFilter {
            statuses: vec!["COMPLETED".into()],
            ..SagaFilter::default()
        };
        let p = StuckPolicy::default();
        let sql =
            search_query(page(&f, None, 51), Order::Started, at(&p), Days::All, None).into_sql();
        assert!(
            sql.contains("where true and s.status = $1 order by"),
            "{sql}"
        );
    }

    #[test]
    fn failed_not_compensated_says_the_status_it_implies() {
        let f = SagaFilter {
            stuck_reason: Some(StuckReason::FailedNotCompensated),
            ..SagaFilter::default()
        };
        let p = StuckPolicy::default();
        let sql =
            search_query(page(&f, None, 51), Order::Started, at(&p), Days::All, None).into_sql();
        assert!(
            sql.contains("where true and s.status = 'FAILED' and coalesce((s.status = 'FAILED'"),
            "{sql}"
        );
    }

    #[test]
    fn a_bounded_walk_reads_the_order_within_its_time_bounds_then_filters() {
        let before = Utc::now();
        let f = SagaFilter {
            service: Some("payment".into()),
            started_after: Some(before - chrono::Duration::days(2)),
            updated_before: Some(before),
            ..SagaFilter::default()
        };
        let k = Keyset {
            sort: SortKey::StartedAt,
            at: before,
            saga_id: "x".into(),
        };
        let p = StuckPolicy::default();
        let sql = search_query(
            page(&f, Some(&k), 51),
            Order::Started,
            at(&p),
            Days::All,
            Some(4000),
        )
        .into_sql();
        // The ordered conditions (here the time bounds) inside the walk, the service outside.
        assert!(
            sql.contains(
                "from (select * from sagas s where true and (s.started_at, s.saga_id) < ($1, $2) \
                 and s.started_at >= $3 and s.started_at < $4 \
                 and s.started_at >= $5 and s.updated_at < $6 and s.started_at < $7 \
                 order by s.started_at desc, s.saga_id desc limit $8) s where true \
                 and s.services @> array[$9]::text[] \
                 and saga_service_keys(s.saga_type, s.services) @> array[$10]::text[] \
                 order by s.started_at desc, s.saga_id desc limit $11"
            ),
            "{sql}"
        );
    }

    #[test]
    fn a_type_with_a_service_asks_the_index_for_their_pair() {
        let f = SagaFilter {
            saga_type: Some("ORDER".into()),
            service: Some("fraud".into()),
            ..SagaFilter::default()
        };
        let p = StuckPolicy::default();
        let sql =
            search_query(page(&f, None, 51), Order::Started, at(&p), Days::All, None).into_sql();
        assert!(
            sql.contains(
                "s.saga_type = $1 and s.services @> array[$2]::text[] \
                 and saga_service_keys(s.saga_type, s.services) @> array[$3 || chr(31) || $4]::text[]"
            ),
            "{sql}"
        );
    }

    #[test]
    fn stuck_searches_state_the_statuses_their_rules_imply() {
        let p = StuckPolicy::default();
        for (filter, implied) in [
            (
                SagaFilter {
                    stuck: Some(true),
                    ..SagaFilter::default()
                },
                format!(" and {OPEN_SAGA} and coalesce("),
            ),
            (
                SagaFilter {
                    stuck_reason: Some(StuckReason::NoProgress),
                    ..SagaFilter::default()
                },
                " and s.status in ('STARTED', 'IN_PROGRESS') and coalesce(".to_owned(),
            ),
            (
                SagaFilter {
                    stuck_reason: Some(StuckReason::CompensationNotFinished),
                    ..SagaFilter::default()
                },
                " and (s.status = 'COMPENSATING' or (s.status = 'FAILED' \
                 and s.compensation_ended_at is null)) and coalesce("
                    .to_owned(),
            ),
        ] {
            let sql = search_query(
                page(&filter, None, 51),
                Order::Started,
                at(&p),
                Days::All,
                None,
            )
            .into_sql();
            assert!(sql.contains(&implied), "{sql}");
        }
        // Not stuck implies nothing.
        let f = SagaFilter {
            stuck: Some(false),
            ..SagaFilter::default()
        };
        let sql =
            search_query(page(&f, None, 51), Order::Started, at(&p), Days::All, None).into_sql();
        assert!(sql.contains("where true and not coalesce("), "{sql}");
    }

    #[test]
    fn the_estimate_is_what_goes_into_the_sort() {
        let plan = json!([{"Plan": {"Node Type": "Limit", "Plan Rows": 51, "Plans": [
            {"Node Type": "Sort", "Plan Rows": 5168, "Plans": [
                {"Node Type": "Append", "Plan Rows": 5168, "Plans": [
                    {"Node Type": "Bitmap Heap Scan", "Plan Rows": 900000}]}]}]}}]);
        assert_eq!(sort_input_rows(&plan), Some(5168.0));
        let ordered = json!([{"Plan": {"Node Type": "Limit", "Plan Rows": 51, "Plans": [
            {"Node Type": "Merge Append", "Plan Rows": 9000}]}}]);
        assert_eq!(sort_input_rows(&ordered), None);
    }

    #[test]
    fn rarer_matches_are_collected_and_the_larger_the_table_the_rarer() {
        assert!(collect_is_cheaper(0, 2000, 51, 1e9));
        assert!(collect_is_cheaper(7, 2000, 51, 1e6));
        assert!(!collect_is_cheaper(8, 2000, 51, 1e6));
        assert!(collect_is_cheaper(2, 2000, 51, 1e7));
        assert!(!collect_is_cheaper(3, 2000, 51, 1e7));
        // A small table is cheaper to collect whatever the density.
        assert!(collect_is_cheaper(50, 2000, 51, 1e4));
    }

    #[test]
    fn only_filters_served_without_order_take_two_steps() {
        let probe = |f: SagaFilter| needs_probe(&f);
        assert!(!probe(SagaFilter::default()));
        assert!(!probe(SagaFilter {
            saga_type: Some("T".into()),
            statuses: vec!["FAILED".into()],
            ..SagaFilter::default()
        }));
        assert!(probe(SagaFilter {
            service: Some("s".into()),
            ..SagaFilter::default()
        }));
        assert!(probe(SagaFilter {
            min_duration_ms: Some(1),
            ..SagaFilter::default()
        }));
        assert!(probe(SagaFilter {
            metadata: vec![MetadataMatch {
                key: "k".into(),
                values: vec![json!("v")],
            }],
            ..SagaFilter::default()
        }));
        assert!(!probe(SagaFilter {
            service: Some("s".into()),
            business_key: Some("b".into()),
            ..SagaFilter::default()
        }));
    }
}
