//! Aggregates: `GET /api/v1/stats` and `GET /api/v1/saga-types`.
//!
//! The numbers are computed by PostgreSQL ([`store::insight`]); this module parses the query
//! string (by hand, like the search, so every bad parameter is named in one 400) and shapes
//! the answer. Rates are derived here from the counts, so they always agree with them.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::openapi::StatsParams;
use super::params::{set, Params};
use super::AppState;
use crate::store::insight::{self, StatsFilter, StepStats, TypeStats};

/// Default and largest `top`.
pub const DEFAULT_TOP: usize = 10;
pub const MAX_TOP: usize = 100;

// ---------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------

/// Statistics over the sagas matching the filters.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// The filters applied, as understood.
    pub filters: StatsFilters,
    /// Matching sagas.
    pub total: i64,
    pub by_status: StatusCounts,
    pub rates: Rates,
    /// Duration percentiles of the finished sagas (all types together).
    pub duration_ms: Option<Percentiles>,
    pub compensation: CompensationStats,
    /// One entry per saga type, by name.
    pub by_type: Vec<TypeReport>,
    /// The `top` steps with the most failures (only steps that failed at least once).
    pub top_failing_steps: Vec<StepReport>,
    /// Every `(sagaType, step)`, most failures first, then most sagas (at most 500).
    pub steps: Vec<StepReport>,
}

/// The filters of a statistics request.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsFilters {
    pub saga_type: Option<String>,
    pub started_after: Option<chrono::DateTime<chrono::Utc>>,
    pub started_before: Option<chrono::DateTime<chrono::Utc>>,
    pub service: Option<String>,
}

/// Sagas per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusCounts {
    #[serde(rename = "STARTED")]
    pub started: i64,
    #[serde(rename = "IN_PROGRESS")]
    pub in_progress: i64,
    #[serde(rename = "COMPLETED")]
    pub completed: i64,
    #[serde(rename = "FAILED")]
    pub failed: i64,
    #[serde(rename = "COMPENSATING")]
    pub compensating: i64,
    #[serde(rename = "COMPENSATED")]
    pub compensated: i64,
}

/// Outcome shares of the **finished** sagas (`COMPLETED` + `FAILED` + `COMPENSATED`); they
/// add up to 1. `null` when no saga finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// Finished sagas: `COMPLETED` + `FAILED` + `COMPENSATED`.
    pub finished: i64,
    /// `COMPLETED / finished`.
    pub success: Option<f64>,
    /// `FAILED / finished`: ended failed, not (or not successfully) compensated.
    pub failure: Option<f64>,
    /// `COMPENSATED / finished`: failed and fully rolled back.
    pub compensation: Option<f64>,
}

/// p50, p95 and p99 of a duration in milliseconds, estimated from log-scale histograms with
/// 8 buckets per doubling and interpolated between ranks like `percentile_cont`: within 9 %
/// of the exact value, and exact when the rank falls in a bucket holding one distinct value.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Compensations of the matching sagas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationStats {
    /// Sagas whose compensation began.
    pub started: i64,
    /// Of those, finished: the saga reached `COMPENSATED`.
    pub succeeded: i64,
    /// Of those, failed: the saga ended `FAILED` after compensation began.
    pub failed: i64,
    /// Of those, still `COMPENSATING`.
    pub in_progress: i64,
    /// `succeeded / (succeeded + failed)`; `null` when none ended.
    pub success_rate: Option<f64>,
    /// Time to compensate (compensation start to `COMPENSATED`).
    pub duration_ms: Option<Percentiles>,
}

/// Statistics of one saga type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeReport {
    #[schema(example = "ORDER_CREATION")]
    pub saga_type: String,
    pub total: i64,
    pub by_status: StatusCounts,
    pub rates: Rates,
    pub duration_ms: Option<Percentiles>,
    pub compensation: CompensationStats,
}

/// Statistics of one step of one saga type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub saga_type: String,
    #[schema(example = "PAYMENT_CHARGED")]
    pub step: String,
    /// Sagas in which the step reported anything.
    pub sagas: i64,
    /// Sagas in which the step reported `FAILED` at least once.
    pub failures: i64,
    /// `failures / sagas`.
    pub failure_rate: f64,
    /// Step duration (first `STARTED`, else first event, to first `SUCCEEDED`/`FAILED`) over
    /// the sagas where the step ended.
    pub duration_ms: Option<Percentiles>,
}

/// Every saga type with its counts by status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaTypeList {
    /// By type name.
    pub items: Vec<SagaTypeCounts>,
}

/// One saga type's counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaTypeCounts {
    #[schema(example = "ORDER_CREATION")]
    pub saga_type: String,
    pub total: i64,
    pub by_status: StatusCounts,
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Statistics: counts by status and type, outcome rates, duration percentiles per type and
/// per step, the most failing steps, and compensation success and time.
///
/// Filters narrow the sagas counted (AND): `sagaType`, `startedAfter`/`startedBefore`
/// (half-open `[after, before)` on `startedAt`) and `service`. Counts are exact: the
/// database sums daily and hourly rollups kept by the ingest transaction, plus the partial
/// hours at the ends of a time window computed from the sagas themselves, in one snapshot.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    operation_id = "getStats",
    tag = "stats",
    params(StatsParams),
    responses(
        (status = 200, description = "Statistics over the matching sagas", body = StatsReport),
        (status = 400, description = "A parameter is malformed, out of range or unknown",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the query ran past `http.stats_timeout_ms` (type `query-timeout`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<StatsReport>, ApiError> {
    let (filter, top) = parse_stats(query.as_deref().unwrap_or(""))?;
    let stats = insight::stats(&state.read_pool, &filter, state.stats_timeout).await?;
    let steps: Vec<StepReport> = stats.steps.iter().map(step_report).collect();
    let top_failing_steps = steps
        .iter()
        .filter(|s| s.failures > 0)
        .take(top)
        .cloned()
        .collect();
    let o = &stats.overall;
    Ok(Json(StatsReport {
        filters: StatsFilters {
            saga_type: filter.saga_type,
            started_after: filter.started_after,
            started_before: filter.started_before,
            service: filter.service,
        },
        total: o.total,
        by_status: status_counts(o),
        rates: rates(o),
        duration_ms: percentiles(o.duration_ms.as_deref()),
        compensation: compensation(o),
        by_type: stats
            .by_type
            .iter()
            .map(|t| TypeReport {
                saga_type: t.saga_type.clone().unwrap_or_default(),
                total: t.total,
                by_status: status_counts(t),
                rates: rates(t),
                duration_ms: percentiles(t.duration_ms.as_deref()),
                compensation: compensation(t),
            })
            .collect(),
        top_failing_steps,
        steps,
    }))
}

/// Every saga type recorded, with its counts by status.
#[utoipa::path(
    get,
    path = "/api/v1/saga-types",
    operation_id = "listSagaTypes",
    tag = "stats",
    responses(
        (status = 200, description = "Saga types with counts by status", body = SagaTypeList),
        (status = 400, description = "This endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn saga_types(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SagaTypeList>, ApiError> {
    // No parameters: anything given is a mistake worth naming.
    let mut p = Params::default();
    for (name, _) in p.pairs(query.as_deref().unwrap_or("")) {
        p.unknown(&name);
    }
    p.finish(())?;
    let mut by_type: BTreeMap<String, SagaTypeCounts> = BTreeMap::new();
    for (saga_type, status, n) in insight::counts_by_type(&state.read_pool).await? {
        let entry = by_type
            .entry(saga_type.clone())
            .or_insert_with(|| SagaTypeCounts {
                saga_type,
                total: 0,
                by_status: StatusCounts::default(),
            });
        entry.total += n;
        let c = &mut entry.by_status;
        match status.as_str() {
            "STARTED" => c.started += n,
            "IN_PROGRESS" => c.in_progress += n,
            "COMPLETED" => c.completed += n,
            "FAILED" => c.failed += n,
            "COMPENSATING" => c.compensating += n,
            "COMPENSATED" => c.compensated += n,
            // Only the tracker writes `status`, with the names above.
            _ => {}
        }
    }
    Ok(Json(SagaTypeList {
        items: by_type.into_values().collect(),
    }))
}

// ---------------------------------------------------------------------------------------
// Shaping
// ---------------------------------------------------------------------------------------

fn status_counts(t: &TypeStats) -> StatusCounts {
    StatusCounts {
        started: t.started,
        in_progress: t.in_progress,
        completed: t.completed,
        failed: t.failed,
        compensating: t.compensating,
        compensated: t.compensated,
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn rates(t: &TypeStats) -> Rates {
    let finished = t.completed + t.failed + t.compensated;
    Rates {
        finished,
        success: ratio(t.completed, finished),
        failure: ratio(t.failed, finished),
        compensation: ratio(t.compensated, finished),
    }
}

fn compensation(t: &TypeStats) -> CompensationStats {
    let succeeded = t.compensated;
    let failed = t.compensation_failed;
    CompensationStats {
        started: t.compensation_started,
        succeeded,
        failed,
        in_progress: (t.compensation_started - succeeded - failed).max(0),
        success_rate: ratio(succeeded, succeeded + failed),
        duration_ms: percentiles(t.compensation_duration_ms.as_deref()),
    }
}

fn percentiles(p: Option<&[f64]>) -> Option<Percentiles> {
    match p? {
        [p50, p95, p99] => Some(Percentiles {
            p50: *p50,
            p95: *p95,
            p99: *p99,
        }),
        _ => None,
    }
}

fn step_report(s: &StepStats) -> StepReport {
    StepReport {
        saga_type: s.saga_type.clone(),
        step: s.step.clone(),
        sagas: s.sagas,
        failures: s.failures,
        failure_rate: ratio(s.failures, s.sagas).unwrap_or(0.0),
        duration_ms: percentiles(s.duration_ms.as_deref()),
    }
}

// ---------------------------------------------------------------------------------------
// Query parsing
// ---------------------------------------------------------------------------------------

/// Parses the statistics query string; every bad parameter is named in one 400.
pub fn parse_stats(raw: &str) -> Result<(StatsFilter, usize), ApiError> {
    let mut p = Params::default();
    let mut f = StatsFilter::default();
    let mut top = None;
    for (name, value) in p.pairs(raw) {
        match name.as_str() {
            "sagaType" => set(&mut f.saga_type, p.saga_type("sagaType", &value)),
            "service" => set(&mut f.service, p.ident("service", &value)),
            "startedAfter" => set(&mut f.started_after, p.time("startedAfter", &value)),
            "startedBefore" => set(&mut f.started_before, p.time("startedBefore", &value)),
            "top" => set(&mut top, p.int_in("top", &value, 1..=MAX_TOP as i64)),
            _ => p.unknown(&name),
        }
    }
    p.window(
        ("startedAfter", f.started_after),
        ("startedBefore", f.started_before),
    );
    let top = top.map_or(DEFAULT_TOP, |n| n as usize);
    p.finish((f, top))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_names(raw: &str) -> Vec<String> {
        match parse_stats(raw) {
            Err(ApiError::InvalidParams(ps)) => ps.into_iter().map(|p| p.name).collect(),
            other => panic!("expected a 400 for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn stats_parameters_are_parsed_and_every_bad_one_is_named() {
        let (f, top) = parse_stats("sagaType=ORDER_CREATION&service=payment&top=3").expect("valid");
        assert_eq!(f.saga_type.as_deref(), Some("ORDER_CREATION"));
        assert_eq!(f.service.as_deref(), Some("payment"));
        assert_eq!(top, 3);
        assert_eq!(parse_stats("").map(|(_, t)| t).ok(), Some(DEFAULT_TOP));
        assert_eq!(
            invalid_names("sagaType=x&top=0&startedAfter=now&status=FAILED&service="),
            ["sagaType", "top", "startedAfter", "status", "service"]
        );
        assert_eq!(
            invalid_names("startedAfter=2026-01-02T00:00:00Z&startedBefore=2026-01-01T00:00:00Z"),
            ["startedBefore"]
        );
        assert_eq!(invalid_names("top=1&top=2"), ["top"]);
    }

    #[test]
    fn rates_partition_the_finished_sagas() {
        let t = TypeStats {
            saga_type: None,
            total: 10,
            started: 1,
            in_progress: 1,
            completed: 4,
            failed: 1,
            compensating: 0,
            compensated: 3,
            duration_ms: None,
            compensation_started: 4,
            compensation_failed: 1,
            compensation_duration_ms: Some(vec![1.0, 2.0, 3.0]),
        };
        let r = rates(&t);
        assert_eq!(r.finished, 8);
        assert_eq!(
            (r.success, r.failure, r.compensation),
            (Some(0.5), Some(0.125), Some(0.375))
        );
        let c = compensation(&t);
        assert_eq!((c.succeeded, c.failed, c.in_progress), (3, 1, 0));
        assert_eq!(c.success_rate, Some(0.75));
        assert_eq!(c.duration_ms.map(|p| p.p99), Some(3.0));
    }
}
