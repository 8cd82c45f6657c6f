//! The saga resources: search, one saga with its step timeline, one saga's raw events.
//!
//! The search query string is parsed by hand ([`parse_search`]) rather than by a serde
//! extractor so that repeated parameters (`status=A&status=B`), prefixed parameters
//! (`meta.region=eu`) and unknown parameters are all handled, and so that every bad value is
//! reported at once, by name, in one 400 problem.
//!
//! Handlers only translate: HTTP in → [`store::read`] → [`aggregate`] → JSON out.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use saga_tracker_sdk::contract::SagaStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, InvalidParam, Problem};
use super::openapi::{SagaStatusSchema, SearchParams, StepStatusSchema, StuckReasonSchema};
use super::AppState;
use crate::aggregate::{self, StepTimeline};
use crate::store::read::{
    self, Keyset, MetadataMatch, Page, SagaFilter, SagaRow, SortKey, StoredEvent, StuckAt,
};
use crate::stuck::{SagaClock, Stuck, StuckPolicy};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 500;
/// Most `meta.*` conditions in one search: each is an index probe.
pub const MAX_METADATA_FILTERS: usize = 20;
/// Longest accepted metadata key or value.
const MAX_METADATA_CHARS: usize = 1024;
/// Longest accepted identifier-like value (matches the contract's limit on ids).
const MAX_ID_CHARS: usize = saga_tracker_sdk::contract::MAX_ID_CHARS;
const METADATA_PREFIX: &str = "meta.";

// ---------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------

/// One page of search results.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaPage {
    /// Sagas in listing order: the `sort` time (`startedAt` by default) descending, then
    /// `sagaId` descending.
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` (with the same filters) to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A saga's derived state: one row of the tracker's `sagas` table.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaSummary {
    /// The saga id chosen by the emitters.
    #[schema(example = "order-8812")]
    pub saga_id: String,
    #[schema(example = "ORDER_CREATION")]
    pub saga_type: String,
    #[schema(value_type = SagaStatusSchema)]
    pub status: String,
    /// `occurredAt` of the saga's earliest event.
    pub started_at: DateTime<Utc>,
    /// `occurredAt` of the saga's newest event (last activity).
    pub updated_at: DateTime<Utc>,
    /// When the saga reached a terminal status; `null` while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// `endedAt - startedAt` in milliseconds; `null` while it runs.
    pub duration_ms: Option<i64>,
    /// Step of the latest event in saga order.
    pub current_step: String,
    /// The step that failed, if any.
    pub failed_step: Option<String>,
    /// Why it failed, if known.
    pub failure: Option<ErrorInfo>,
    pub compensation_started_at: Option<DateTime<Utc>>,
    pub compensation_ended_at: Option<DateTime<Utc>>,
    pub compensation_duration_ms: Option<i64>,
    /// Distinct events stored for this saga.
    pub event_count: i32,
    /// Events that arrived after the saga had reached an absorbing status.
    pub late_event_count: i32,
    pub business_key: Option<String>,
    pub trace_id: Option<String>,
    /// The metadata of all events merged (later events win per key).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Services that emitted events for this saga.
    pub services: Vec<String>,
    /// Present when the saga is stuck at the time of the request: why, and since when.
    pub stuck: Option<StuckView>,
}

/// Why and since when a saga is stuck (see the `[stuck]` configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckView {
    /// When the saga became stuck: its reference time (last event, failure, or compensation
    /// start, by reason) plus the threshold.
    pub since: DateTime<Utc>,
    #[schema(value_type = StuckReasonSchema)]
    pub reason: String,
    /// The threshold that applied, in seconds.
    pub threshold_secs: i64,
}

impl From<Stuck> for StuckView {
    fn from(s: Stuck) -> Self {
        Self {
            since: s.since,
            reason: s.reason.as_str().to_owned(),
            threshold_secs: s.threshold_secs,
        }
    }
}

/// A failure reason: `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorInfo {
    #[schema(example = "INSUFFICIENT_FUNDS")]
    pub code: String,
    pub message: String,
}

/// A saga with its step timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaDetail {
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// Present once compensation began: which steps were compensated, when, how long it
    /// took, and which compensations failed.
    pub compensation: Option<CompensationSummary>,
    /// One entry per step, in the order the steps first appear in saga order.
    pub steps: Vec<StepView>,
}

/// The saga's compensation as a whole and step by step.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationSummary {
    /// When compensation of the saga began (saga level, as in the summary).
    pub started_at: Option<DateTime<Utc>>,
    /// When the saga reached `COMPENSATED`; `null` while compensating or after it failed.
    pub ended_at: Option<DateTime<Utc>>,
    /// `endedAt − startedAt` in milliseconds.
    pub duration_ms: Option<i64>,
    /// Steps whose compensation failed.
    pub failed_steps: Vec<String>,
    /// Every step with a compensation, in order of compensation start.
    pub steps: Vec<StepCompensationView>,
}

/// The compensation of one step, for the compensation summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepCompensationView {
    #[schema(example = "STOCK_RESERVED")]
    pub step: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The compensating action failed.
    pub failed: bool,
}

/// One step of a saga, folded from all of the step's events.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    #[schema(example = "PAYMENT_CHARGED")]
    pub step: String,
    /// The step's latest status.
    #[schema(value_type = StepStatusSchema)]
    pub status: String,
    /// Service that ran the step.
    pub service: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<ErrorInfo>,
    /// Present once the step's compensation started.
    pub compensation: Option<CompensationView>,
    /// Events recorded for this step.
    pub event_count: usize,
    /// `occurredAt` of the step's first event.
    pub first_event_at: DateTime<Utc>,
}

/// The compensation of one step.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationView {
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The compensating action itself failed.
    pub failed: bool,
}

/// A saga's raw events.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub saga_id: String,
    /// In saga order: `sequence` (absent first), then `occurredAt`, then `eventId`.
    pub items: Vec<EventView>,
}

/// One stored event, as the emitter sent it plus what the tracker recorded about it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: String,
    pub step: String,
    #[schema(value_type = StepStatusSchema)]
    pub step_status: String,
    /// The saga-level transition the emitter reported, if any.
    #[schema(value_type = Option<SagaStatusSchema>)]
    pub saga_status: Option<String>,
    /// Event time at the emitter.
    pub occurred_at: DateTime<Utc>,
    /// When the tracker read the message.
    pub received_at: DateTime<Utc>,
    /// When the transaction that stored it began; `ingestedAt - occurredAt` is the
    /// visibility lag.
    pub ingested_at: DateTime<Utc>,
    pub service: String,
    pub sequence: Option<i64>,
    pub business_key: Option<String>,
    pub error: Option<ErrorInfo>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// Where the message was read from; `null` for events that did not come through Kafka.
    pub kafka: Option<KafkaPosition>,
}

/// A Kafka message position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Search sagas.
///
/// Every filter narrows the result (AND). Metadata conditions are written
/// `meta.<key>=<value>` (repeatable): the saga's merged metadata must hold `key` with that
/// value as a JSON string, or, when the value reads as a JSON number, `true`, `false` or
/// `null`, with that JSON value (`meta.amount=12` matches `"12"` and `12`). Keys are taken
/// literally (a dot in a key is part of the key, not a path).
///
/// Results are ordered by `startedAt` (or, with `sort=updatedAt`, `updatedAt`) descending,
/// then `sagaId` descending. Paginate with `nextCursor`: keep the filters and the sort, add
/// `cursor`. `stuck=true` keeps the sagas that are stuck at the time of the request.
#[utoipa::path(
    get,
    path = "/api/v1/sagas",
    operation_id = "searchSagas",
    tag = "sagas",
    params(SearchParams),
    responses(
        (status = 200, description = "One page of matching sagas", body = SagaPage),
        (status = 400, description = "A parameter is malformed, out of range or unknown",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SagaPage>, ApiError> {
    let req = parse_search(query.as_deref().unwrap_or(""))?;
    let now = request_time();
    let page = Page {
        filter: &req.filter,
        sort: req.sort,
        after: req.after.as_ref(),
        limit: req.limit + 1,
    };
    let at = StuckAt {
        policy: &state.stuck,
        now,
    };
    let mut rows = read::search_sagas(&state.pool, page, at).await?;
    let more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(&Keyset {
            sort: req.sort,
            at: match req.sort {
                SortKey::StartedAt => last.started_at,
                SortKey::UpdatedAt => last.updated_at,
            },
            saga_id: last.saga_id.clone(),
        })),
        _ => None,
    };
    Ok(Json(SagaPage {
        items: rows
            .into_iter()
            .map(|r| summary(r, &state.stuck, now))
            .collect(),
        next_cursor,
    }))
}

/// One saga: its summary and its step timeline.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{sagaId}",
    operation_id = "getSaga",
    tag = "sagas",
    params(("sagaId" = String, Path, description = "The saga id (percent-encode `/` and other reserved characters)")),
    responses(
        (status = 200, description = "The saga with its steps", body = SagaDetail),
        (status = 404, description = "No saga with this id", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    saga_id: Result<Path<String>, PathRejection>,
) -> Result<Json<SagaDetail>, ApiError> {
    let saga_id = path_saga_id(saga_id)?;
    let (saga, rows) = read::saga_with_events(&state.pool, &saga_id)
        .await?
        .ok_or(ApiError::SagaNotFound(saga_id))?;
    let records = rows
        .iter()
        .map(|r| r.row.to_record())
        .collect::<Result<Vec<_>, _>>()?;
    let timeline = aggregate::timeline(&records);
    let compensation = compensation_summary(&saga, &timeline);
    let steps = timeline.into_iter().map(StepView::from).collect();
    Ok(Json(SagaDetail {
        summary: summary(saga, &state.stuck, request_time()),
        compensation,
        steps,
    }))
}

/// One saga's raw events, in saga order.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{sagaId}/events",
    operation_id = "listSagaEvents",
    tag = "sagas",
    params(("sagaId" = String, Path, description = "The saga id (percent-encode `/` and other reserved characters)")),
    responses(
        (status = 200, description = "The saga's events", body = EventList),
        (status = 404, description = "No saga with this id", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    saga_id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventList>, ApiError> {
    let saga_id = path_saga_id(saga_id)?;
    let (_, rows) = read::saga_with_events(&state.pool, &saga_id)
        .await?
        .ok_or_else(|| ApiError::SagaNotFound(saga_id.clone()))?;
    let records = rows
        .iter()
        .map(|r| r.row.to_record())
        .collect::<Result<Vec<_>, _>>()?;
    // `event_id` is the table's primary key, so this index is one-to-one.
    let by_id: HashMap<&str, &StoredEvent> =
        rows.iter().map(|r| (r.row.event_id.as_str(), r)).collect();
    let items = aggregate::canonical_order(&records)
        .into_iter()
        .filter_map(|rec| by_id.get(rec.event.event_id.as_str()))
        .map(|row| EventView::from(*row))
        .collect();
    Ok(Json(EventList { saga_id, items }))
}

/// Why a parameter holding U+0000 is refused (PostgreSQL text cannot hold it).
pub(crate) const NUL_REASON: &str = "must not contain NUL characters (%00)";

fn path_saga_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match p {
        Ok(Path(id)) if id.contains('\0') => Err(ApiError::invalid("sagaId", NUL_REASON)),
        Ok(Path(id)) => Ok(id),
        Err(e) => Err(ApiError::invalid("sagaId", e.body_text())),
    }
}

// ---------------------------------------------------------------------------------------
// Row → view conversions
// ---------------------------------------------------------------------------------------

fn error_info(code: Option<&String>, message: Option<&String>) -> Option<ErrorInfo> {
    match (code, message) {
        (None, None) => None,
        (code, message) => Some(ErrorInfo {
            code: code.cloned().unwrap_or_default(),
            message: message.cloned().unwrap_or_default(),
        }),
    }
}

/// The clock stuck detection reads for one request, at PostgreSQL's precision so the SQL
/// filter and the Rust verdict see the same instant.
fn request_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A row as the API shows it, with its stuck verdict at `now`.
pub fn summary(r: SagaRow, policy: &StuckPolicy, now: DateTime<Utc>) -> SagaSummary {
    let stuck = policy
        .evaluate(
            &SagaClock {
                saga_type: &r.saga_type,
                status: &r.status,
                updated_at: r.updated_at,
                ended_at: r.ended_at,
                compensation_started_at: r.compensation_started_at,
                compensation_ended_at: r.compensation_ended_at,
            },
            now,
        )
        .map(StuckView::from);
    SagaSummary {
        stuck,
        ..SagaSummary::from(r)
    }
}

/// The compensation block of the detail view; `None` when nothing was compensated.
fn compensation_summary(saga: &SagaRow, timeline: &[StepTimeline]) -> Option<CompensationSummary> {
    let mut steps: Vec<StepCompensationView> = timeline
        .iter()
        .filter_map(|s| {
            let c = s.compensation.as_ref()?;
            Some(StepCompensationView {
                step: s.step.clone(),
                started_at: c.started_at,
                ended_at: c.ended_at,
                duration_ms: c.duration_ms,
                failed: c.failed,
            })
        })
        .collect();
    if saga.compensation_started_at.is_none() && steps.is_empty() {
        return None;
    }
    // Stable: steps that began compensating at the same instant keep timeline order.
    steps.sort_by_key(|s| s.started_at);
    Some(CompensationSummary {
        started_at: saga.compensation_started_at,
        ended_at: saga.compensation_ended_at,
        duration_ms: saga.compensation_duration_ms,
        failed_steps: steps
            .iter()
            .filter(|s| s.failed)
            .map(|s| s.step.clone())
            .collect(),
        steps,
    })
}

impl From<SagaRow> for SagaSummary {
    /// The row alone, without a stuck verdict (see [`summary`]).
    fn from(r: SagaRow) -> Self {
        Self {
            stuck: None,
            failure: error_info(r.failure_code.as_ref(), r.failure_message.as_ref()),
            saga_id: r.saga_id,
            saga_type: r.saga_type,
            status: r.status,
            started_at: r.started_at,
            updated_at: r.updated_at,
            ended_at: r.ended_at,
            duration_ms: r.duration_ms,
            current_step: r.current_step,
            failed_step: r.failed_step,
            compensation_started_at: r.compensation_started_at,
            compensation_ended_at: r.compensation_ended_at,
            compensation_duration_ms: r.compensation_duration_ms,
            event_count: r.event_count,
            late_event_count: r.late_event_count,
            business_key: r.business_key,
            trace_id: r.trace_id,
            metadata: r.metadata,
            services: r.services,
        }
    }
}

impl From<StepTimeline> for StepView {
    fn from(s: StepTimeline) -> Self {
        Self {
            step: s.step,
            status: s.status.as_str().to_owned(),
            service: s.service,
            started_at: s.started_at,
            ended_at: s.ended_at,
            duration_ms: s.duration_ms,
            error: s.error.map(|e| ErrorInfo {
                code: e.code,
                message: e.message,
            }),
            compensation: s.compensation.map(|c| CompensationView {
                started_at: c.started_at,
                ended_at: c.ended_at,
                duration_ms: c.duration_ms,
                failed: c.failed,
            }),
            event_count: s.event_count,
            first_event_at: s.first_event_at,
        }
    }
}

impl From<&StoredEvent> for EventView {
    fn from(stored: &StoredEvent) -> Self {
        let r = &stored.row;
        let kafka = match (&r.kafka_topic, r.kafka_partition, r.kafka_offset) {
            (Some(topic), Some(partition), Some(offset)) => Some(KafkaPosition {
                topic: topic.clone(),
                partition,
                offset,
            }),
            _ => None,
        };
        Self {
            event_id: r.event_id.clone(),
            step: r.step.clone(),
            step_status: r.step_status.clone(),
            saga_status: r.saga_status.clone(),
            occurred_at: r.occurred_at,
            received_at: r.received_at,
            ingested_at: stored.ingested_at,
            service: r.service.clone(),
            sequence: r.sequence,
            business_key: r.business_key.clone(),
            error: error_info(r.error_code.as_ref(), r.error_message.as_ref()),
            metadata: r.metadata.clone(),
            trace_id: r.trace_id.clone(),
            span_id: r.span_id.clone(),
            kafka,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Query parsing
// ---------------------------------------------------------------------------------------

/// A parsed, validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub filter: SagaFilter,
    pub sort: SortKey,
    pub after: Option<Keyset>,
    pub limit: i64,
}

/// Parses a raw query string (without the `?`). Collects every problem before failing, so
/// one 400 names all offending parameters.
pub fn parse_search(raw: &str) -> Result<SearchRequest, ApiError> {
    let mut p = Parser::default();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        // PostgreSQL text cannot hold U+0000; no stored value contains it, so say so here
        // rather than let the query fail as a 500.
        if name.contains('\0') || value.contains('\0') {
            p.error(&name.replace('\0', "\\0"), NUL_REASON);
            continue;
        }
        p.param(&name, &value);
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    filter: SagaFilter,
    sort: Option<SortKey>,
    after: Option<Keyset>,
    limit: Option<i64>,
    /// Single-valued parameters already given, to reject repeats.
    seen: Vec<&'static str>,
    errors: Vec<InvalidParam>,
}

impl Parser {
    fn param(&mut self, name: &str, value: &str) {
        match name {
            "status" => {
                for v in value.split(',') {
                    match SagaStatus::parse(v.trim()) {
                        Some(s) => {
                            let s = s.as_str().to_owned();
                            if !self.filter.statuses.contains(&s) {
                                self.filter.statuses.push(s);
                            }
                        }
                        None => self.error(
                            "status",
                            format!(
                                "unknown status {v:?}; expected one of {}",
                                SagaStatus::ALL.map(SagaStatus::as_str).join(", ")
                            ),
                        ),
                    }
                }
            }
            "sagaType" => {
                if self.once("sagaType") {
                    match check_saga_type(value) {
                        Ok(()) => self.filter.saga_type = Some(value.to_owned()),
                        Err(reason) => self.error("sagaType", reason),
                    }
                }
            }
            "businessKey" => self.ident("businessKey", value, |f, v| f.business_key = Some(v)),
            "step" => self.ident("step", value, |f, v| f.step = Some(v)),
            "service" => self.ident("service", value, |f, v| f.service = Some(v)),
            "traceId" => {
                if self.once("traceId") {
                    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        self.filter.trace_id = Some(value.to_ascii_lowercase());
                    } else {
                        self.error("traceId", "must be 32 hexadecimal digits (a W3C trace id)");
                    }
                }
            }
            "startedAfter" => self.time("startedAfter", value, |f, t| f.started_after = Some(t)),
            "startedBefore" => self.time("startedBefore", value, |f, t| f.started_before = Some(t)),
            "updatedAfter" => self.time("updatedAfter", value, |f, t| f.updated_after = Some(t)),
            "updatedBefore" => self.time("updatedBefore", value, |f, t| f.updated_before = Some(t)),
            "minDurationMs" => {
                if self.once("minDurationMs") {
                    match value.parse::<i64>() {
                        Ok(ms) if ms >= 0 => self.filter.min_duration_ms = Some(ms),
                        _ => self.error("minDurationMs", "must be a non-negative integer"),
                    }
                }
            }
            "stuck" => {
                if self.once("stuck") {
                    match value {
                        "true" => self.filter.stuck = Some(true),
                        "false" => self.filter.stuck = Some(false),
                        _ => self.error("stuck", "must be `true` or `false`"),
                    }
                }
            }
            "sort" => {
                if self.once("sort") {
                    match SortKey::parse(value) {
                        Some(k) => self.sort = Some(k),
                        None => self.error("sort", "must be `startedAt` or `updatedAt`"),
                    }
                }
            }
            "limit" => {
                if self.once("limit") {
                    match value.parse::<i64>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => self.limit = Some(n),
                        _ => self.error(
                            "limit",
                            format!("must be an integer between 1 and {MAX_LIMIT}"),
                        ),
                    }
                }
            }
            "cursor" => {
                if self.once("cursor") {
                    match decode_cursor(value) {
                        Some(k) => self.after = Some(k),
                        None => self.error(
                            "cursor",
                            "not a cursor returned by this API (pass `nextCursor` unchanged)",
                        ),
                    }
                }
            }
            _ => match name.strip_prefix(METADATA_PREFIX) {
                Some(key) => self.metadata(name, key, value),
                None => self.error(name, "unknown parameter"),
            },
        }
    }

    fn error(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(InvalidParam::new(name, reason));
    }

    /// Records a single-valued parameter; false (and an error) if it was already given.
    fn once(&mut self, name: &'static str) -> bool {
        if self.seen.contains(&name) {
            self.error(name, "given more than once");
            return false;
        }
        self.seen.push(name);
        true
    }

    fn ident(&mut self, name: &'static str, value: &str, set: fn(&mut SagaFilter, String)) {
        if !self.once(name) {
            return;
        }
        let n = value.chars().count();
        if n == 0 || n > MAX_ID_CHARS {
            self.error(name, format!("must be 1 to {MAX_ID_CHARS} characters"));
        } else {
            set(&mut self.filter, value.to_owned());
        }
    }

    fn time(&mut self, name: &'static str, value: &str, set: fn(&mut SagaFilter, DateTime<Utc>)) {
        if !self.once(name) {
            return;
        }
        match parse_time(value) {
            Some(t) => set(&mut self.filter, t),
            None => self.error(
                name,
                "must be an RFC 3339 timestamp such as 2026-11-21T10:00:00Z \
                 (percent-encode a `+` offset as %2B)",
            ),
        }
    }

    fn metadata(&mut self, name: &str, key: &str, value: &str) {
        if key.is_empty() || key.chars().count() > MAX_METADATA_CHARS {
            return self.error(
                name,
                format!("metadata key must be 1 to {MAX_METADATA_CHARS} characters"),
            );
        }
        if value.chars().count() > MAX_METADATA_CHARS {
            return self.error(
                name,
                format!("metadata value must be at most {MAX_METADATA_CHARS} characters"),
            );
        }
        if self.filter.metadata.len() == MAX_METADATA_FILTERS {
            return self.error(
                name,
                format!("at most {MAX_METADATA_FILTERS} metadata filters per search"),
            );
        }
        self.filter.metadata.push(MetadataMatch {
            key: key.to_owned(),
            values: metadata_values(value),
        });
    }

    fn finish(self) -> Result<SearchRequest, ApiError> {
        let mut errors = self.errors;
        let f = &self.filter;
        for (after, before, name) in [
            (f.started_after, f.started_before, "startedBefore"),
            (f.updated_after, f.updated_before, "updatedBefore"),
        ] {
            if let (Some(a), Some(b)) = (after, before) {
                if b < a {
                    let from = name.replace("Before", "After");
                    errors.push(InvalidParam::new(
                        name,
                        format!("must not be earlier than `{from}`"),
                    ));
                }
            }
        }
        let sort = self.sort.unwrap_or_default();
        if let Some(k) = &self.after {
            if k.sort != sort {
                errors.push(InvalidParam::new(
                    "cursor",
                    format!(
                        "this cursor belongs to sort={}, not sort={}; keep the sort of the \
                         search that returned it",
                        k.sort.as_str(),
                        sort.as_str()
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::InvalidParams(errors));
        }
        Ok(SearchRequest {
            filter: self.filter,
            sort,
            after: self.after,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// Same rule as the contract, so a typo (`order_creation`) is a 400, not an empty page.
pub(super) fn check_saga_type(v: &str) -> Result<(), String> {
    let max = saga_tracker_sdk::contract::MAX_SAGA_TYPE_CHARS;
    if v.is_empty()
        || v.len() > max
        || !v
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(format!("must match [A-Z0-9_.-]{{1,{max}}}"));
    }
    Ok(())
}

/// RFC 3339. A `+` offset sent unencoded arrives as a space (form encoding); since a space
/// cannot otherwise appear after the seconds, it is read back as `+`.
pub(super) fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    let (head, tail) = v.split_at_checked(19)?;
    let repaired = format!("{head}{}", tail.replacen(' ', "+", 1));
    DateTime::parse_from_rfc3339(&repaired)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The JSON values a metadata filter value stands for: always the string itself, plus the
/// JSON scalar when the text is one (`12`, `1.5`, `true`, `false`, `null`).
fn metadata_values(v: &str) -> Vec<Value> {
    let mut values = vec![Value::String(v.to_owned())];
    if let Ok(scalar @ (Value::Number(_) | Value::Bool(_) | Value::Null)) =
        serde_json::from_str::<Value>(v)
    {
        values.push(scalar);
    }
    values
}

/// Wire form of a [`Keyset`]: base64url (no padding) of a small versioned JSON object. Opaque
/// to clients; the version lets the format change without misreading old cursors.
#[derive(Serialize, Deserialize)]
struct CursorV1 {
    v: u8,
    /// The sort column's value in microseconds since the epoch (PostgreSQL's precision, so
    /// the round trip is exact).
    t: i64,
    id: String,
    /// The sort the position belongs to (`startedAt`, `updatedAt`). Absent in cursors
    /// issued before sorting existed, which were all `startedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
}

pub fn encode_cursor(k: &Keyset) -> String {
    let c = CursorV1 {
        v: 1,
        t: k.at.timestamp_micros(),
        id: k.saga_id.clone(),
        s: Some(k.sort.as_str().to_owned()),
    };
    // Serializing an integer and a string cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap_or_default())
}

pub fn decode_cursor(s: &str) -> Option<Keyset> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
    let c: CursorV1 = serde_json::from_slice(&bytes).ok()?;
    if c.v != 1 {
        return None;
    }
    let sort = match c.s.as_deref() {
        None => SortKey::StartedAt,
        Some(s) => SortKey::parse(s)?,
    };
    Some(Keyset {
        sort,
        at: DateTime::from_timestamp_micros(c.t)?,
        saga_id: c.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invalid_names(raw: &str) -> Vec<String> {
        match parse_search(raw) {
            Err(ApiError::InvalidParams(ps)) => ps.into_iter().map(|p| p.name).collect(),
            other => panic!("expected a 400 for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_query_uses_the_default_limit() {
        let r = parse_search("").expect("valid");
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert_eq!(r.filter, SagaFilter::default());
        assert!(r.after.is_none());
    }

    #[test]
    fn status_is_repeatable_and_comma_separated() {
        let r = parse_search("status=FAILED&status=COMPENSATED,IN_PROGRESS&status=FAILED")
            .expect("valid");
        assert_eq!(r.filter.statuses, ["FAILED", "COMPENSATED", "IN_PROGRESS"]);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(
            invalid_names("limit=0&status=DONE&startedAfter=yesterday&cursor=xyz&foo=1"),
            ["limit", "status", "startedAfter", "cursor", "foo"]
        );
        assert_eq!(invalid_names("limit=501"), ["limit"]);
        assert_eq!(invalid_names("limit=ten"), ["limit"]);
        assert_eq!(invalid_names("sagaType=order"), ["sagaType"]);
        assert_eq!(invalid_names("traceId=abc"), ["traceId"]);
        assert_eq!(invalid_names("sagaType=A&sagaType=B"), ["sagaType"]);
        assert_eq!(invalid_names("meta.=x"), ["meta."]);
        assert_eq!(invalid_names("businessKey="), ["businessKey"]);
        assert_eq!(invalid_names("minDurationMs=-1"), ["minDurationMs"]);
        assert_eq!(
            invalid_names("startedAfter=2026-01-02T00:00:00Z&startedBefore=2026-01-01T00:00:00Z"),
            ["startedBefore"]
        );
    }

    #[test]
    fn timestamps_accept_offsets_even_when_the_plus_was_not_encoded() {
        let want = "2026-11-21T09:00:00Z".parse::<DateTime<Utc>>().ok();
        let r = parse_search("startedAfter=2026-11-21T10:00:00%2B01:00").expect("valid");
        assert_eq!(r.filter.started_after, want);
        let r = parse_search("startedAfter=2026-11-21T10:00:00+01:00").expect("valid");
        assert_eq!(r.filter.started_after, want);
    }

    #[test]
    fn metadata_values_match_strings_and_json_scalars() {
        let r =
            parse_search("meta.region=eu&meta.amount=12&meta.vip=true&meta.a.b=x").expect("valid");
        let m = &r.filter.metadata;
        assert_eq!(m[0].values, [json!("eu")]);
        assert_eq!(m[1].values, [json!("12"), json!(12)]);
        assert_eq!(m[2].values, [json!("true"), json!(true)]);
        assert_eq!(
            (m[3].key.as_str(), &m[3].values),
            ("a.b", &vec![json!("x")])
        );
    }

    #[test]
    fn cursors_round_trip_exactly() {
        let k = Keyset {
            sort: SortKey::UpdatedAt,
            at: DateTime::from_timestamp_micros(1_763_726_400_123_456).unwrap_or_default(),
            saga_id: "order/8812 ü".into(),
        };
        let c = encode_cursor(&k);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_cursor(&c), Some(k));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(
            decode_cursor(&URL_SAFE_NO_PAD.encode(b"{\"v\":2,\"t\":0,\"id\":\"x\"}")),
            None
        );
        // Cursors from before `sort` existed are startedAt positions.
        let old = decode_cursor(&URL_SAFE_NO_PAD.encode(b"{\"v\":1,\"t\":0,\"id\":\"x\"}"));
        assert_eq!(old.map(|k| k.sort), Some(SortKey::StartedAt));
    }

    #[test]
    fn a_cursor_from_another_sort_is_rejected() {
        let k = Keyset {
            sort: SortKey::UpdatedAt,
            at: DateTime::from_timestamp_micros(0).unwrap_or_default(),
            saga_id: "x".into(),
        };
        let c = encode_cursor(&k);
        assert_eq!(invalid_names(&format!("cursor={c}")), ["cursor"]);
        assert_eq!(
            invalid_names(&format!("sort=startedAt&cursor={c}")),
            ["cursor"]
        );
        let r = parse_search(&format!("sort=updatedAt&cursor={c}")).expect("valid");
        assert_eq!((r.sort, r.after), (SortKey::UpdatedAt, Some(k)));
    }

    #[test]
    fn stuck_and_sort_are_parsed_and_checked() {
        let r = parse_search("stuck=true&sort=updatedAt").expect("valid");
        assert_eq!((r.filter.stuck, r.sort), (Some(true), SortKey::UpdatedAt));
        assert_eq!(
            parse_search("stuck=false").map(|r| r.filter.stuck).ok(),
            Some(Some(false))
        );
        assert_eq!(invalid_names("stuck=yes&sort=createdAt"), ["stuck", "sort"]);
    }
}
