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

use super::error::{ApiError, Problem};
use super::openapi::{
    PageParams, SagaStatusSchema, SearchParams, StepStatusSchema, StuckReasonSchema,
};
use super::params::{set, Params, NUL_REASON};
use super::AppState;
use crate::aggregate::{self, EventRecord, StepTimeline};
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
pub const MAX_METADATA_CHARS: usize = 1024;
pub const METADATA_PREFIX: &str = "meta.";

// ---------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------
//
// They also derive `Deserialize`: the command line (`saga-tracker sagas …`) reads the API's
// answers into these same types, so client and server cannot drift apart.

/// One page of search results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaPage {
    /// Sagas in listing order: the `sort` time (`startedAt` by default) descending, then
    /// `sagaId` descending.
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` (with the same filters) to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A saga's derived state: one row of the tracker's `sagas` table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// When the saga became stuck, if it is stuck at the time of the request; the same
    /// instant as `stuck.since`, kept flat so a table or a sort can use it directly.
    pub stuck_since: Option<DateTime<Utc>>,
    /// Present when the saga is stuck at the time of the request: why, and since when.
    pub stuck: Option<StuckView>,
}

/// Why and since when a saga is stuck (see the `[stuck]` configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    #[schema(example = "INSUFFICIENT_FUNDS")]
    pub code: String,
    pub message: String,
}

/// A saga with its step timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaDetail {
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// Present once compensation began: which steps were compensated, when, how long it
    /// took, and which compensations failed.
    pub compensation: Option<CompensationSummary>,
    /// One entry per step, in the order the steps first appear in saga order.
    pub steps: Vec<StepView>,
    /// The W3C trace ids the emitters sent with the saga's events (`traceId`), each once,
    /// in saga order: open them in the tracing backend (e.g. Tempo) to see the services'
    /// own spans around each step.
    #[schema(example = json!(["4bf92f3577b34da6a3ce929d0e0e4736"]))]
    pub trace_ids: Vec<String>,
    /// The tracker's own trace ids: those of the ingest batches (`ingest.batch` spans) that
    /// stored the saga's events, each once, in saga order. Only batches that were traced and
    /// sampled are recorded, so this may be shorter than the event list, or empty.
    #[schema(example = json!(["0af7651916cd43dd8448eb211c80319c"]))]
    pub tracker_trace_ids: Vec<String>,
}

impl SagaDetail {
    /// The saga's last known instant: its last update, end, or the end of any step or
    /// compensation — where a timeline of it ends (the UI's saga page and `sagas show`).
    pub fn last_instant(&self) -> DateTime<Utc> {
        let s = &self.summary;
        let mut last = s.updated_at.max(s.ended_at.unwrap_or(s.started_at));
        for st in &self.steps {
            for t in [
                st.ended_at,
                st.compensation.as_ref().and_then(|c| c.ended_at),
            ]
            .into_iter()
            .flatten()
            {
                last = last.max(t);
            }
        }
        last
    }
}

/// The saga's compensation as a whole and step by step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationView {
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The compensating action itself failed.
    pub failed: bool,
}

/// A saga's raw events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub saga_id: String,
    /// In saga order: `sequence` (absent first), then `occurredAt`, then `eventId`.
    pub items: Vec<EventView>,
}

/// One stored event, as the emitter sent it plus what the tracker recorded about it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// The trace id of the tracker's ingest batch that stored the event (its `ingest.batch`
    /// span); `null` when that batch was not traced or not sampled.
    pub tracker_trace_id: Option<String>,
    /// Where the message was read from; `null` for events that did not come through Kafka.
    pub kafka: Option<KafkaPosition>,
}

/// A Kafka message position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    params(SearchParams, PageParams),
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
    let (rows, next_cursor) = search_page(&state, &req, now).await?;
    Ok(Json(SagaPage {
        items: rows
            .into_iter()
            .map(|r| summary(r, &state.stuck, now))
            .collect(),
        next_cursor,
    }))
}

/// One page of a parsed search at `now`: the rows in listing order and the cursor of the
/// next page (`None` on the last). Shared by the API and the UI's search page.
pub async fn search_page(
    state: &AppState,
    req: &SearchRequest,
    now: DateTime<Utc>,
) -> Result<(Vec<SagaRow>, Option<String>), ApiError> {
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
    let mut rows = read::search_sagas(&state.read_pool, page, at).await?;
    let more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(&keyset_after(req.sort, last))),
        _ => None,
    };
    Ok((rows, next_cursor))
}

/// The position just after `row` in the `sort` order.
pub fn keyset_after(sort: SortKey, row: &SagaRow) -> Keyset {
    Keyset {
        sort,
        at: sort.value_of(row),
        saga_id: row.saga_id.clone(),
    }
}

/// One saga: its summary and its step timeline.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{sagaId}",
    operation_id = "getSaga",
    tag = "sagas",
    params(("sagaId" = String, Path, pattern = "^[^\\u0000]+$", min_length = 1,
        description = "The saga id (percent-encode `/` and other reserved characters)")),
    responses(
        (status = 200, description = "The saga with its steps", body = SagaDetail),
        (status = 400, description = "The saga id holds U+0000 (`%00`)", body = Problem, content_type = "application/problem+json"),
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
    let (saga, rows, records) = load_saga(&state, &saga_id).await?;
    let timeline = aggregate::timeline(&records);
    let compensation = compensation_summary(&saga, &timeline);
    let steps = timeline.into_iter().map(StepView::from).collect();
    Ok(Json(SagaDetail {
        summary: summary(saga, &state.stuck, request_time()),
        compensation,
        steps,
        trace_ids: distinct(rows.iter().map(|r| r.row.trace_id.as_deref())),
        tracker_trace_ids: distinct(rows.iter().map(|r| r.tracker_trace_id.as_deref())),
    }))
}

/// The detail view and the events (in saga order, each with whether it came late) of one
/// snapshot of a saga, as the API shows them: for pages that show both (the UI).
pub fn detail_and_events(
    policy: &StuckPolicy,
    now: DateTime<Utc>,
    saga: SagaRow,
    rows: &[StoredEvent],
) -> Result<(SagaDetail, Vec<EventView>), ApiError> {
    let records = rows
        .iter()
        .map(|r| r.row.to_record())
        .collect::<Result<Vec<_>, _>>()?;
    let timeline = aggregate::timeline(&records);
    let compensation = compensation_summary(&saga, &timeline);
    let by_id: HashMap<&str, &StoredEvent> =
        rows.iter().map(|r| (r.row.event_id.as_str(), r)).collect();
    let events = aggregate::canonical_order(&records)
        .into_iter()
        .filter_map(|rec| by_id.get(rec.event.event_id.as_str()))
        .map(|row| EventView::from(*row))
        .collect();
    let detail = SagaDetail {
        summary: summary(saga, policy, now),
        compensation,
        steps: timeline.into_iter().map(StepView::from).collect(),
        trace_ids: distinct(rows.iter().map(|r| r.row.trace_id.as_deref())),
        tracker_trace_ids: distinct(rows.iter().map(|r| r.tracker_trace_id.as_deref())),
    };
    Ok((detail, events))
}

/// The present values, each once, in the order they first appear.
fn distinct<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values
        .flatten()
        .filter(|v| seen.insert(*v))
        .map(str::to_owned)
        .collect()
}

/// One saga's raw events, in saga order.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{sagaId}/events",
    operation_id = "listSagaEvents",
    tag = "sagas",
    params(("sagaId" = String, Path, pattern = "^[^\\u0000]+$", min_length = 1,
        description = "The saga id (percent-encode `/` and other reserved characters)")),
    responses(
        (status = 200, description = "The saga's events", body = EventList),
        (status = 400, description = "The saga id holds U+0000 (`%00`)", body = Problem, content_type = "application/problem+json"),
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
    let (_, rows, records) = load_saga(&state, &saga_id).await?;
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

/// A saga's row and stored events (one snapshot), with the events decoded for the fold;
/// 404 when the saga does not exist (or was removed by retention).
async fn load_saga(
    state: &AppState,
    saga_id: &str,
) -> Result<(SagaRow, Vec<StoredEvent>, Vec<EventRecord>), ApiError> {
    let (saga, rows) = read::saga_with_events(&state.read_pool, saga_id)
        .await?
        .ok_or_else(|| ApiError::SagaNotFound(saga_id.to_owned()))?;
    let records = rows
        .iter()
        .map(|r| r.row.to_record())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((saga, rows, records))
}

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
        stuck_since: stuck.as_ref().map(|s| s.since),
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
            stuck_since: None,
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
            tracker_trace_id: stored.tracker_trace_id.clone(),
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
    for (name, value) in p.params.pairs(raw) {
        p.param(&name, &value);
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    params: Params,
    filter: SagaFilter,
    sort: Option<SortKey>,
    after: Option<Keyset>,
    limit: Option<i64>,
}

impl Parser {
    fn param(&mut self, name: &str, value: &str) {
        let p = &mut self.params;
        let f = &mut self.filter;
        match name {
            "status" => {
                for v in value.split(',') {
                    match SagaStatus::parse(v.trim()) {
                        Some(s) => {
                            let s = s.as_str().to_owned();
                            if !f.statuses.contains(&s) {
                                f.statuses.push(s);
                            }
                        }
                        None => p.error(
                            "status",
                            format!(
                                "unknown status {v:?}; expected one of {}",
                                SagaStatus::ALL.map(SagaStatus::as_str).join(", ")
                            ),
                        ),
                    }
                }
            }
            "sagaType" => set(&mut f.saga_type, p.saga_type("sagaType", value)),
            "businessKey" => set(&mut f.business_key, p.ident("businessKey", value)),
            "step" => set(&mut f.step, p.ident("step", value)),
            "failedStep" => set(&mut f.failed_step, p.ident("failedStep", value)),
            "service" => set(&mut f.service, p.ident("service", value)),
            "traceId" => {
                if p.once("traceId") {
                    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        f.trace_id = Some(value.to_ascii_lowercase());
                    } else {
                        p.error("traceId", "must be 32 hexadecimal digits (a W3C trace id)");
                    }
                }
            }
            "startedAfter" => set(&mut f.started_after, p.time("startedAfter", value)),
            "startedBefore" => set(&mut f.started_before, p.time("startedBefore", value)),
            "updatedAfter" => set(&mut f.updated_after, p.time("updatedAfter", value)),
            "updatedBefore" => set(&mut f.updated_before, p.time("updatedBefore", value)),
            "minDurationMs" => set(
                &mut f.min_duration_ms,
                p.int_in("minDurationMs", value, 0..=i64::MAX),
            ),
            "stuck" => set(&mut f.stuck, p.flag("stuck", value)),
            "stuckReason" => {
                if p.once("stuckReason") {
                    match crate::stuck::StuckReason::parse(value) {
                        Some(r) => f.stuck_reason = Some(r),
                        None => p.error(
                            "stuckReason",
                            format!(
                                "must be one of {}",
                                crate::stuck::StuckReason::ALL
                                    .map(|r| r.as_str())
                                    .join(", ")
                            ),
                        ),
                    }
                }
            }
            "sort" => {
                if p.once("sort") {
                    match SortKey::parse(value) {
                        Some(k) => self.sort = Some(k),
                        None => p.error("sort", "must be `startedAt` or `updatedAt`"),
                    }
                }
            }
            "limit" => set(&mut self.limit, p.int_in("limit", value, 1..=MAX_LIMIT)),
            "cursor" => {
                if p.once("cursor") {
                    match decode_cursor(value) {
                        Some(k) => self.after = Some(k),
                        None => p.error(
                            "cursor",
                            "not a cursor returned by this API (pass `nextCursor` unchanged)",
                        ),
                    }
                }
            }
            _ => match name.strip_prefix(METADATA_PREFIX) {
                Some(key) => self.metadata(name, key, value),
                None => p.unknown(name),
            },
        }
    }

    fn metadata(&mut self, name: &str, key: &str, value: &str) {
        let p = &mut self.params;
        if key.is_empty() || key.chars().count() > MAX_METADATA_CHARS {
            return p.error(
                name,
                format!("metadata key must be 1 to {MAX_METADATA_CHARS} characters"),
            );
        }
        if value.chars().count() > MAX_METADATA_CHARS {
            return p.error(
                name,
                format!("metadata value must be at most {MAX_METADATA_CHARS} characters"),
            );
        }
        if self.filter.metadata.len() == MAX_METADATA_FILTERS {
            return p.error(
                name,
                format!("at most {MAX_METADATA_FILTERS} metadata filters per search"),
            );
        }
        self.filter.metadata.push(MetadataMatch {
            key: key.to_owned(),
            values: metadata_values(value),
        });
    }

    fn finish(mut self) -> Result<SearchRequest, ApiError> {
        let f = &self.filter;
        let p = &mut self.params;
        p.window(
            ("startedAfter", f.started_after),
            ("startedBefore", f.started_before),
        );
        p.window(
            ("updatedAfter", f.updated_after),
            ("updatedBefore", f.updated_before),
        );
        let sort = self.sort.unwrap_or_default();
        if let Some(k) = &self.after {
            if k.sort != sort {
                p.error(
                    "cursor",
                    format!(
                        "this cursor belongs to sort={}, not sort={}; keep the sort of the \
                         search that returned it",
                        k.sort.as_str(),
                        sort.as_str()
                    ),
                );
            }
        }
        self.params.finish(SearchRequest {
            filter: self.filter,
            sort,
            after: self.after,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
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
    fn distinct_keeps_first_appearances_and_skips_absent_values() {
        let got = distinct([Some("b"), None, Some("a"), Some("b"), None].into_iter());
        assert_eq!(got, ["b", "a"]);
        assert!(distinct([None, None].into_iter()).is_empty());
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
        let r = parse_search("stuckReason=failed_not_compensated").expect("valid");
        assert_eq!(
            r.filter.stuck_reason,
            Some(crate::stuck::StuckReason::FailedNotCompensated)
        );
        assert_eq!(invalid_names("stuckReason=slow"), ["stuckReason"]);
    }
}
