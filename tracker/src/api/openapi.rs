//! The OpenAPI 3.1 description of the API, generated from the handlers and types.
//!
//! The handlers carry `#[utoipa::path]` and the bodies derive `ToSchema`, so the document
//! cannot drift from the code. A few types here exist only to describe things the code
//! handles by hand: the search query string (parsed from the raw query, see
//! [`super::sagas::parse_search`]) and the status enums (stored and returned as strings).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::error::{InvalidParam, Problem};
use super::health::{Check, Liveness, Readiness, ReadinessChecks};
use super::sagas::{
    CompensationSummary, CompensationView, ErrorInfo, EventList, EventView, KafkaPosition,
    SagaDetail, SagaPage, SagaSummary, StepCompensationView, StepView, StuckView,
};
use super::stats::{
    CompensationStats, Percentiles, Rates, SagaTypeCounts, SagaTypeList, StatsFilters, StatsReport,
    StatusCounts, StepReport, TypeReport,
};

/// Status of a whole saga.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = SagaStatus)]
pub enum SagaStatusSchema {
    Started,
    InProgress,
    Completed,
    Failed,
    Compensating,
    Compensated,
}

/// Status of one step.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = StepStatus)]
pub enum StepStatusSchema {
    Started,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
}

/// Why a saga is stuck.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StuckReason)]
pub enum StuckReasonSchema {
    /// `STARTED`/`IN_PROGRESS` and no event for longer than the type's threshold.
    NoProgress,
    /// `FAILED` and compensation never began within `failed_uncompensated_secs`.
    FailedNotCompensated,
    /// Compensation began and did not finish within `compensation_timeout_secs`.
    CompensationNotFinished,
}

/// Listing order of a search.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SagaSort)]
pub enum SortSchema {
    StartedAt,
    UpdatedAt,
}

/// Query parameters of `GET /api/v1/stats` (documentation only; parsing is by hand).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct StatsParams {
    /// Only this saga type, `[A-Z0-9_.-]{1,64}`.
    #[param(example = "ORDER_CREATION")]
    pub saga_type: Option<String>,
    /// `startedAt >= startedAfter` (RFC 3339; encode `+` as `%2B`).
    pub started_after: Option<DateTime<Utc>>,
    /// `startedAt < startedBefore` (RFC 3339).
    pub started_before: Option<DateTime<Utc>>,
    /// Only sagas in which this service emitted at least one event.
    pub service: Option<String>,
    /// How many steps `topFailingSteps` lists, 1–100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub top: Option<i64>,
}

/// Query parameters of `GET /api/v1/sagas` (documentation only; parsing is by hand).
///
/// Besides these, `meta.<key>=<value>` filters on metadata (repeatable, AND).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct SearchParams {
    /// Exact saga type, `[A-Z0-9_.-]{1,64}`.
    #[param(example = "ORDER_CREATION")]
    pub saga_type: Option<String>,
    /// Saga status; repeat the parameter (or separate with commas) for "any of".
    #[param(style = Form, explode)]
    pub status: Option<Vec<SagaStatusSchema>>,
    /// Exact business key (e.g. an order number).
    pub business_key: Option<String>,
    /// Exact W3C trace id (32 hex digits, case-insensitive).
    pub trace_id: Option<String>,
    /// Sagas with at least one event for this step.
    pub step: Option<String>,
    /// Sagas in which this service emitted at least one event.
    pub service: Option<String>,
    /// `startedAt >= startedAfter` (RFC 3339; encode `+` as `%2B`).
    pub started_after: Option<DateTime<Utc>>,
    /// `startedAt < startedBefore` (RFC 3339).
    pub started_before: Option<DateTime<Utc>>,
    /// `updatedAt >= updatedAfter` (RFC 3339).
    pub updated_after: Option<DateTime<Utc>>,
    /// `updatedAt < updatedBefore` (RFC 3339).
    pub updated_before: Option<DateTime<Utc>>,
    /// Finished sagas that took at least this long (running sagas never match).
    #[param(minimum = 0)]
    pub min_duration_ms: Option<i64>,
    /// `true`: only sagas stuck now (by the `[stuck]` thresholds); `false`: only the others.
    pub stuck: Option<bool>,
    /// Listing order, descending: `startedAt` (default) or `updatedAt` (most recently
    /// active first). A cursor only works with the sort it came from.
    #[param(value_type = Option<SortSchema>)]
    pub sort: Option<String>,
    /// Page size, 1–500.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// `nextCursor` from the previous page, unchanged. Keep the other parameters the same.
    pub cursor: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Saga Tracker API",
        description = "Search sagas recorded from Kafka saga step events, inspect one saga's \
            step timeline, compensation and raw events, read statistics computed in the \
            database, and probe the tracker.\n\n\
            Errors are `application/problem+json` (RFC 9457) with a stable `type` URI under \
            `https://saga-tracker.dev/problems/`: `invalid-parameter` (400, with \
            `invalidParams`), `saga-not-found` (404), `not-found` (404, no such route), \
            `method-not-allowed` (405), `internal` (500), `unavailable` (503)."
    ),
    paths(
        super::sagas::search,
        super::sagas::detail,
        super::sagas::events,
        super::stats::stats,
        super::stats::saga_types,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        SagaPage,
        SagaSummary,
        SagaDetail,
        StepView,
        CompensationView,
        CompensationSummary,
        StepCompensationView,
        StuckView,
        StuckReasonSchema,
        SortSchema,
        StatsReport,
        StatsFilters,
        StatusCounts,
        Rates,
        Percentiles,
        CompensationStats,
        TypeReport,
        StepReport,
        SagaTypeList,
        SagaTypeCounts,
        EventList,
        EventView,
        KafkaPosition,
        ErrorInfo,
        SagaStatusSchema,
        StepStatusSchema,
        Problem,
        InvalidParam,
        Liveness,
        Readiness,
        ReadinessChecks,
        Check,
    )),
    tags(
        (name = "sagas", description = "Saga search and inspection"),
        (name = "stats", description = "Statistics and counts computed in the database"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let doc = serde_json::to_value(openapi()).unwrap_or_default();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/sagas",
            "/api/v1/sagas/{sagaId}",
            "/api/v1/sagas/{sagaId}/events",
            "/api/v1/stats",
            "/api/v1/saga-types",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        let params = doc["paths"]["/api/v1/sagas"]["get"]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert!(
            params.contains(&"sagaType")
                && params.contains(&"cursor")
                && params.contains(&"stuck")
                && params.contains(&"sort"),
            "{params:?}"
        );
    }
}
