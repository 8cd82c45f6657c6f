//! The OpenAPI 3.1 description of the API, generated from the handlers and types.
//!
//! The handlers carry `#[utoipa::path]` and the bodies derive `ToSchema`, so the document
//! cannot drift from the code. A few types here exist only to describe things the code
//! handles by hand: the search query string (parsed from the raw query, see
//! [`super::sagas::parse_search`]) and the status enums (stored and returned as strings).
//!
//! The parameters carry the same limits the parsers enforce (lengths, patterns, ranges), so a
//! client or a generator that follows the document is never refused: `scripts/schemathesis.sh`
//! checks exactly that, and the tests below tie each limit to the constant the parser uses.
//! What OpenAPI cannot say (a time window must not end before it starts, a cursor is only
//! valid with the sort it came from) is said in the descriptions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};

use super::auth::{AuthMethod, Caller};
use super::error::{InvalidParam, Problem};
use super::health::{Check, Liveness, Readiness, ReadinessChecks, ReplicaCheck};
use super::sagas::{
    CompensationSummary, CompensationView, ErrorInfo, EventList, EventView, KafkaPosition,
    SagaDetail, SagaPage, SagaSummary, StepCompensationView, StepView, StuckView,
    MAX_METADATA_CHARS, MAX_METADATA_FILTERS, METADATA_PREFIX,
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
    #[param(
        example = "ORDER_CREATION",
        pattern = "^[A-Z0-9_.-]{1,64}$",
        min_length = 1,
        max_length = 64
    )]
    pub saga_type: Option<String>,
    /// `startedAt >= startedAfter` (RFC 3339; encode `+` as `%2B`).
    pub started_after: Option<DateTime<Utc>>,
    /// `startedAt < startedBefore` (RFC 3339). Must not be earlier than `startedAfter`.
    pub started_before: Option<DateTime<Utc>>,
    /// Only sagas in which this service emitted at least one event (1–128 characters).
    #[param(pattern = "^[^\\u0000]{1,128}$", min_length = 1, max_length = 128)]
    pub service: Option<String>,
    /// How many steps `topFailingSteps` lists, 1–100.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub top: Option<i64>,
}

/// The `meta.<key>=<value>` metadata filters of a search (documentation only).
///
/// OpenAPI cannot name a parameter by a pattern. The filters are therefore described as one
/// query parameter with `style: form, explode: true` and an object schema: with that style
/// each property of the object is sent as a parameter of its own, named by the property, so
/// `{"meta.region": "eu"}` is exactly `meta.region=eu` on the wire. `propertyNames` limits the
/// names to `meta.` plus a key of 1–1024 characters, `additionalProperties` the values to
/// strings of at most 1024, and `maxProperties` the count to `MAX_METADATA_FILTERS` (none
/// may hold U+0000). Chosen over prose in the operation description because tools read it:
/// schemathesis then generates these filters and checks that the server accepts what the
/// document promises (`patternProperties` would say the same, but utoipa does not model it).
#[derive(Debug)]
pub struct MetadataFilters;

impl PartialSchema for MetadataFilters {
    fn schema() -> RefOr<Schema> {
        let string = |max: usize| {
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .max_length(Some(max))
        };
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .description(Some(
                "Metadata filters, each sent as its own parameter `meta.<key>=<value>` \
                 (repeatable with different keys, AND): the saga's merged metadata must hold \
                 `<key>` with that value as a JSON string or, when the value reads as a JSON \
                 number, `true`, `false` or `null`, as that JSON value. Keys are taken \
                 literally (a dot in a key is part of it). At most 20 filters; keys 1–1024 \
                 characters, values at most 1024.",
            ))
            .property_names(Some(
                string(METADATA_PREFIX.len() + MAX_METADATA_CHARS)
                    .min_length(Some(METADATA_PREFIX.len() + 1))
                    .pattern(Some("^meta\\.[^\\u0000]{1,1024}$")),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
                string(MAX_METADATA_CHARS)
                    .pattern(Some("^[^\\u0000]*$"))
                    .into(),
            ))))
            .max_properties(Some(MAX_METADATA_FILTERS))
            .examples([serde_json::json!({"meta.region": "eu"})])
            .into()
    }
}

impl ToSchema for MetadataFilters {}

/// Query parameters of `GET /api/v1/sagas` (documentation only; parsing is by hand).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct SearchParams {
    /// Exact saga type, `[A-Z0-9_.-]{1,64}`.
    #[param(
        example = "ORDER_CREATION",
        pattern = "^[A-Z0-9_.-]{1,64}$",
        min_length = 1,
        max_length = 64
    )]
    pub saga_type: Option<String>,
    /// Saga status; repeat the parameter (or separate with commas) for "any of".
    #[param(style = Form, explode)]
    pub status: Option<Vec<SagaStatusSchema>>,
    /// Exact business key (e.g. an order number), 1–128 characters.
    #[param(pattern = "^[^\\u0000]{1,128}$", min_length = 1, max_length = 128)]
    pub business_key: Option<String>,
    /// Exact W3C trace id (32 hex digits, case-insensitive).
    #[param(pattern = "^[0-9a-fA-F]{32}$", min_length = 32, max_length = 32)]
    pub trace_id: Option<String>,
    /// Sagas with at least one event for this step (1–128 characters).
    #[param(pattern = "^[^\\u0000]{1,128}$", min_length = 1, max_length = 128)]
    pub step: Option<String>,
    /// Sagas whose `failedStep` (the step that failed them) is this one (1–128 characters).
    #[param(pattern = "^[^\\u0000]{1,128}$", min_length = 1, max_length = 128)]
    pub failed_step: Option<String>,
    /// Sagas in which this service emitted at least one event (1–128 characters).
    #[param(pattern = "^[^\\u0000]{1,128}$", min_length = 1, max_length = 128)]
    pub service: Option<String>,
    /// `startedAt >= startedAfter` (RFC 3339; encode `+` as `%2B`).
    pub started_after: Option<DateTime<Utc>>,
    /// `startedAt < startedBefore` (RFC 3339). Must not be earlier than `startedAfter`.
    pub started_before: Option<DateTime<Utc>>,
    /// `updatedAt >= updatedAfter` (RFC 3339).
    pub updated_after: Option<DateTime<Utc>>,
    /// `updatedAt < updatedBefore` (RFC 3339). Must not be earlier than `updatedAfter`.
    pub updated_before: Option<DateTime<Utc>>,
    /// Finished sagas that took at least this long (running sagas never match).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub min_duration_ms: Option<i64>,
    /// `true`: only sagas stuck now (by the `[stuck]` thresholds); `false`: only the others.
    pub stuck: Option<bool>,
    /// Only sagas stuck now for this reason (the `stuck.reason` of the results).
    #[param(value_type = Option<StuckReasonSchema>)]
    pub stuck_reason: Option<String>,
    /// Listing order, descending: `startedAt` (default) or `updatedAt` (most recently
    /// active first). A cursor only works with the sort it came from.
    #[param(value_type = Option<SortSchema>)]
    pub sort: Option<String>,
    /// `meta.<key>=<value>` metadata filters: see [`MetadataFilters`]. With this style the
    /// object's properties are the parameters, so no parameter is named `meta` itself.
    #[param(inline, style = Form, explode, value_type = Option<MetadataFilters>)]
    pub meta: Option<BTreeMap<String, String>>,
}

/// The paging parameters of `GET /api/v1/sagas` (documentation only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct PageParams {
    /// Page size, 1–500.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// `nextCursor` from the previous page, unchanged. Keep the other parameters the same:
    /// a cursor is only valid with the `sort` of the search that returned it.
    #[param(pattern = "^[A-Za-z0-9_-]+=*$", min_length = 1)]
    pub cursor: Option<String>,
}

/// The format of `GET /api/v1/sagas/export` (documentation only).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ExportParams {
    /// `ndjson` (default): one saga per line, each the JSON of a search result; `csv`: a
    /// header row, then one saga per row (`services` joined with `;`, `metadata` as JSON).
    #[param(value_type = Option<ExportFormatSchema>)]
    pub format: Option<String>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ExportFormat)]
pub enum ExportFormatSchema {
    Ndjson,
    Csv,
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
            `method-not-allowed` (405), `internal` (500), `unavailable` (503).\n\n\
            With `auth.enabled`, every endpoint except `/healthz`, `/readyz` and `/metrics` \
            needs `Authorization: Bearer <token>` (an API key or an OpenID Connect access \
            token): `unauthenticated` (401, with a `WWW-Authenticate` challenge) without an \
            acceptable one, `forbidden` (403) when the caller's role is too low — readers may \
            `GET`, operators may also use `/api/v1/admin/…`. Every request is also bounded: \
            `uri-too-long` (414), `headers-too-large` (431), `payload-too-large` (413), \
            `request-timeout` (503)."
    ),
    paths(
        super::sagas::search,
        super::export::export,
        super::sagas::detail,
        super::sagas::events,
        super::stats::stats,
        super::stats::saga_types,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::admin::whoami,
        super::admin::config,
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
        ExportFormatSchema,
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
        ReplicaCheck,
        Check,
        Caller,
        AuthMethod,
        crate::config::Role,
    )),
    tags(
        (name = "sagas", description = "Saga search and inspection"),
        (name = "stats", description = "Statistics and counts computed in the database"),
        (name = "operations", description = "Probes and metrics"),
        (name = "auth", description = "Who the caller is"),
        (name = "admin", description = "Operator-only endpoints"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    super::auth::document_security(&mut doc);
    doc
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
            "/api/v1/sagas/export",
            "/api/v1/sagas/{sagaId}",
            "/api/v1/sagas/{sagaId}/events",
            "/api/v1/stats",
            "/api/v1/saga-types",
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/whoami",
            "/api/v1/admin/config",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["paths"]["/api/v1/admin/config"]["get"]["security"][0]["bearer"],
            serde_json::json!([])
        );
        assert!(doc["paths"]["/api/v1/admin/config"]["get"]["responses"]["403"].is_object());
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
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

    /// The schema of query parameter `name` of `GET path`.
    fn param(doc: &serde_json::Value, path: &str, name: &str) -> serde_json::Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
    }

    #[test]
    fn every_limit_in_the_document_is_the_one_the_parsers_enforce() {
        use saga_tracker_sdk::contract::{MAX_ID_CHARS, MAX_SAGA_TYPE_CHARS};

        use crate::api::sagas::MAX_LIMIT;
        use crate::api::stats::MAX_TOP;

        let doc = serde_json::to_value(openapi()).unwrap_or_default();
        let ident = format!("^[^\\u0000]{{1,{MAX_ID_CHARS}}}$");
        let saga_type = format!("^[A-Z0-9_.-]{{1,{MAX_SAGA_TYPE_CHARS}}}$");
        for path in ["/api/v1/sagas", "/api/v1/stats"] {
            let s = &param(&doc, path, "sagaType")["schema"];
            assert_eq!(
                (&s["pattern"], &s["maxLength"]),
                (&saga_type.clone().into(), &MAX_SAGA_TYPE_CHARS.into()),
                "{path}"
            );
            let s = &param(&doc, path, "service")["schema"];
            assert_eq!(
                (&s["pattern"], &s["maxLength"]),
                (&ident.clone().into(), &MAX_ID_CHARS.into()),
                "{path}"
            );
        }
        for name in ["businessKey", "step"] {
            let s = &param(&doc, "/api/v1/sagas", name)["schema"];
            assert_eq!(
                (&s["pattern"], &s["minLength"], &s["maxLength"]),
                (&ident.clone().into(), &1.into(), &MAX_ID_CHARS.into()),
                "{name}"
            );
        }
        assert_eq!(
            param(&doc, "/api/v1/sagas", "limit")["schema"]["maximum"],
            MAX_LIMIT
        );
        assert_eq!(
            param(&doc, "/api/v1/sagas", "minDurationMs")["schema"]["maximum"],
            i64::MAX
        );
        assert_eq!(
            param(&doc, "/api/v1/stats", "top")["schema"]["maximum"],
            MAX_TOP
        );
        let meta = param(&doc, "/api/v1/sagas", "meta");
        assert_eq!(
            (&meta["style"], &meta["explode"]),
            (&"form".into(), &true.into())
        );
        let s = &meta["schema"];
        assert_eq!(s["maxProperties"], MAX_METADATA_FILTERS);
        assert_eq!(
            s["propertyNames"]["pattern"],
            format!("^meta\\.[^\\u0000]{{1,{MAX_METADATA_CHARS}}}$")
        );
        assert_eq!(s["additionalProperties"]["maxLength"], MAX_METADATA_CHARS);
    }

    #[test]
    fn values_at_the_documented_limits_are_accepted_and_one_past_them_refused() {
        use saga_tracker_sdk::contract::{MAX_ID_CHARS, MAX_SAGA_TYPE_CHARS};

        use crate::api::sagas::parse_search;

        let longest = "ü".repeat(MAX_ID_CHARS);
        let key = "k".repeat(MAX_METADATA_CHARS);
        let ok = format!(
            "service={longest}&step={longest}&businessKey={longest}&sagaType={}&traceId={}&meta.{key}={}",
            "A".repeat(MAX_SAGA_TYPE_CHARS),
            "aB".repeat(16),
            "v".repeat(MAX_METADATA_CHARS),
        );
        assert!(parse_search(&ok).is_ok(), "{ok}");
        let filters: String = (0..MAX_METADATA_FILTERS)
            .map(|i| format!("&meta.k{i}=v"))
            .collect();
        assert!(parse_search(&filters[1..]).is_ok());
        for bad in [
            format!("service={longest}x"),
            "service=".to_owned(),
            format!("sagaType={}", "A".repeat(MAX_SAGA_TYPE_CHARS + 1)),
            format!("meta.{key}x=v"),
            format!("{}&meta.one=more", &filters[1..]),
        ] {
            assert!(parse_search(&bad).is_err(), "{bad}");
        }
    }
}
