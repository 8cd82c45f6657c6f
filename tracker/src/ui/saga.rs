//! The saga page (`/ui/sagas/{id}`): the stuck banner, the failure, the step timeline drawn
//! to scale, the links out, the raw events — and its live fragment
//! (`/ui/sagas/{id}/live`).
//!
//! The timeline reads like a trace view: one lane per service, one row per step, bars from a
//! step's start to its end on a shared time axis, the compensation of a step drawn under its
//! bar in a hatched pattern (and the saga's compensation window shaded across all rows),
//! late events as hollow diamonds. It is SVG with geometry in attributes and colour in
//! classes, so it renders under the strict `Content-Security-Policy` and without script.
//!
//! **Live:** the dynamic part of the page is one element that the script re-fetches from the
//! live URL with `If-None-Match`. The server answers from the saga's row alone — one
//! primary-key read — with `304 Not Modified` until the saga changes (a new event, or its
//! stuck verdict flips), and only then reads the events and renders the fragment. The script
//! swaps it in place: no reload, no flicker, scroll position kept.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use maud::{html, Markup};
use sha2::{Digest, Sha256};

use super::layout::{self, Nav, Viewer};
use super::links::{self, LinkContext};
use crate::api::sagas::{detail_and_events, summary, EventView, SagaDetail, StepView};
use crate::api::{ApiError, AppState};
use crate::store::read::{self, SagaRow};

/// Events shown in the table at most; the rest are counted (the JSON and the API have them
/// all). A saga is a handful of events; this keeps a runaway emitter from making a page of
/// megabytes.
const MAX_EVENT_ROWS: usize = 2_000;

fn saga_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match p {
        Ok(Path(id)) if id.contains('\0') => Err(ApiError::invalid(
            "sagaId",
            "must not contain NUL characters (%00)",
        )),
        Ok(Path(id)) => Ok(id),
        Err(e) => Err(ApiError::invalid("sagaId", e.body_text())),
    }
}

/// The validator of a saga's live state: what the page shows changes only when one of these
/// does (a new event changes `updated_at`/`event_count`; time alone can only flip the stuck
/// verdict).
fn etag(row: &SagaRow, now: DateTime<Utc>, policy: &crate::stuck::StuckPolicy) -> String {
    let s = summary(row.clone(), policy, now);
    let mut h = Sha256::new();
    h.update(row.updated_at.timestamp_micros().to_le_bytes());
    h.update(row.event_count.to_le_bytes());
    h.update(row.late_event_count.to_le_bytes());
    h.update(row.status.as_bytes());
    h.update(
        s.stuck
            .as_ref()
            .map_or(String::new(), |st| format!("{}@{}", st.reason, st.since))
            .as_bytes(),
    );
    let d = h.finalize();
    format!(
        "\"{}\"",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// `GET /ui/sagas/{sagaId}`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match saga_id(id) {
        Ok(id) => id,
        Err(e) => return super::error_page(e),
    };
    let now = Utc::now().trunc_subsecs(6);
    let (row, rows) = match read::saga_with_events(&state.read_pool, &id).await {
        Ok(Some(x)) => x,
        Ok(None) => return not_found(&viewer, &id),
        Err(e) => return super::error_page(e.into()),
    };
    let tag = etag(&row, now, &state.stuck);
    let (detail, events) = match detail_and_events(&state.stuck, now, row, &rows) {
        Ok(x) => x,
        Err(e) => return super::error_page(e),
    };
    let live_url = format!("{}/live", layout::saga_url(&id));
    let body = html! {
        div.saga-head {
            p.crumbs { a href="/ui/sagas" { "Search" } " / " (detail.summary.saga_type) }
            div.live-bar {
                span #live-status role="status" aria-live="polite" { "Live updates need JavaScript; reload to refresh." }
                button #copy-json type="button" { "Copy as JSON" }
            }
        }
        div #saga-live data-live-url=(live_url) data-etag=(tag)
            data-poll-ms=(state.settings.ui.live_poll_ms) {
            (fragment(&state, &detail, &events, now))
        }
    };
    let mut r = super::page_response(
        StatusCode::OK,
        layout::page(&format!("Saga {id}"), Nav::Search, &viewer, body),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn not_found(viewer: &Viewer, id: &str) -> Response {
    super::page_response(
        StatusCode::NOT_FOUND,
        layout::page(
            "Saga not found",
            Nav::Search,
            viewer,
            html! {
                section.message {
                    h1 { "No saga “" (id) "”" }
                    p {
                        "No event of a saga with this id has been stored (or retention removed it). "
                        "If its events were just sent, they may still be on their way: "
                        a href=(layout::saga_url(id)) { "try again" } ", or "
                        a href=(format!("/ui/sagas?{}", layout::query(&[("businessKey", id.to_owned())]))) { "search it as a business key" } "."
                    }
                }
            },
        ),
    )
}

/// `GET /ui/sagas/{sagaId}/live`: the fragment, or `304` while nothing changed.
pub async fn live(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match saga_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let now = Utc::now().trunc_subsecs(6);
    let current = match read::saga_row(&state.read_pool, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return ApiError::SagaNotFound(id).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let tag = etag(&current, now, &state.stuck);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == tag);
    let mut r = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // Row and events of one snapshot, so the fragment and its tag agree.
        let (row, rows) = match read::saga_with_events(&state.read_pool, &id).await {
            Ok(Some(x)) => x,
            Ok(None) => return ApiError::SagaNotFound(id).into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        };
        let tag_now = etag(&row, now, &state.stuck);
        match detail_and_events(&state.stuck, now, row, &rows) {
            Ok((detail, events)) => {
                let mut r = fragment(&state, &detail, &events, now).into_response();
                if let Ok(v) = HeaderValue::from_str(&tag_now) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                r
            }
            Err(e) => return e.into_response(),
        }
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if unchanged {
        if let Ok(v) = HeaderValue::from_str(&tag) {
            h.insert(header::ETAG, v);
        }
    }
    r
}

/// Everything on the saga page that changes while the saga runs.
fn fragment(state: &AppState, d: &SagaDetail, events: &[EventView], now: DateTime<Utc>) -> Markup {
    let s = &d.summary;
    let late_from = events
        .len()
        .saturating_sub(s.late_event_count.max(0) as usize);
    let json = {
        let mut v = serde_json::to_value(d).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "events".into(),
                serde_json::to_value(events).unwrap_or_default(),
            );
        }
        v
    };
    let failed_view = s
        .failed_step
        .as_ref()
        .and_then(|f| d.steps.iter().find(|st| &st.step == f));
    html! {
        h1 {
            span.kind { "Saga " }
            span.saga-id { (s.saga_id) }
            " "
            span #saga-status { (layout::badge(&s.status)) }
        }
        @if let Some(st) = &s.stuck {
            div #stuck-banner.banner.stuck role="alert" {
                strong { "Stuck: " (layout::stuck_reason_text(&st.reason)) }
                " since " (layout::time(st.since)) " (" (layout::ago(st.since, now)) "). "
                (crate::humanize::stuck_explanation(&st.reason, st.threshold_secs))
            }
        }
        @if let Some(f) = &s.failed_step {
            div #failure.banner.failure {
                strong { "Failed at step " code { (f) } }
                @if let Some(v) = failed_view {
                    " (" (v.service) ")"
                    @if let Some(t) = v.ended_at { " at " (layout::time(t)) }
                }
                @if let Some(e) = &s.failure {
                    div.error { code.error-code { (e.code) } " " span.error-message { (e.message) } }
                }
                @if let Some(c) = &d.compensation {
                    div.comp-summary {
                        @match (&c.ended_at, c.duration_ms) {
                            (Some(_), Some(ms)) => { "Compensated in " strong { (layout::duration(ms)) } }
                            _ => { "Compensation " @if s.status == "COMPENSATING" { "running" } @else { "did not finish" } }
                        }
                        ": " (c.steps.iter().map(|x| x.step.as_str()).collect::<Vec<_>>().join(", "))
                        @if !c.failed_steps.is_empty() {
                            " · " span.failed-step { "failed to compensate: " (c.failed_steps.join(", ")) }
                        }
                    }
                }
            }
        }
        dl.facts {
            div { dt { "Type" } dd { a href=(format!("/ui/sagas?{}", layout::query(&[("sagaType", s.saga_type.clone())]))) { (s.saga_type) } } }
            @if let Some(k) = &s.business_key {
                div { dt { "Business key" } dd { a href=(format!("/ui/sagas?{}", layout::query(&[("businessKey", k.clone())]))) { (k) } } }
            }
            div { dt { "Started" } dd { (layout::time(s.started_at)) } }
            div {
                dt { @if s.ended_at.is_some() { "Ended" } @else { "Last activity" } }
                dd { (layout::maybe_time(s.ended_at.or(Some(s.updated_at)))) }
            }
            div {
                dt { "Duration" }
                dd {
                    @match s.duration_ms {
                        Some(ms) => (layout::duration(ms)),
                        None => span.running { "running for " (layout::duration((now - s.started_at).num_milliseconds())) },
                    }
                }
            }
            div { dt { "Current step" } dd { code { (s.current_step) } } }
            div { dt { "Events" } dd { (s.event_count) @if s.late_event_count > 0 { " (" span.late-marker { (s.late_event_count) " late" } ")" } } }
            div { dt { "Services" } dd { (s.services.join(", ")) } }
        }
        (links_out(state, d))
        section.timeline aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            (timeline(d, events, late_from))
            p.legend aria-hidden="true" {
                span.key.k-ok {} "succeeded " span.key.k-failed {} "failed " span.key.k-open {} "running "
                span.key.k-comp {} "compensation " span.key.k-late {} "late event"
            }
        }
        section.events aria-labelledby="events-h" {
            h2 #events-h { "Events " span.sub { "in saga order" } }
            div.table-wrap {
                table #events {
                    thead {
                        tr {
                            th scope="col" class="num" { "#" }
                            th scope="col" { "Occurred" }
                            th scope="col" { "Step" }
                            th scope="col" { "Step status" }
                            th scope="col" { "Saga status" }
                            th scope="col" { "Service" }
                            th scope="col" { "Error" }
                            th scope="col" { "Topic" }
                            th scope="col" class="num" { "Partition" }
                            th scope="col" class="num" { "Offset" }
                            th scope="col" class="num" { "Lag" }
                            th scope="col" { "Event id" }
                        }
                    }
                    tbody {
                        @for (i, e) in events.iter().enumerate().take(MAX_EVENT_ROWS) {
                            tr data-event-id=(e.event_id) class=[(i >= late_from).then_some("late")] {
                                td.num { (i + 1) }
                                td { (layout::time(e.occurred_at)) }
                                td { code { (e.step) } @if i >= late_from { " " span.late-marker title="arrived after the saga had ended" { "late" } } }
                                td { (layout::badge(&e.step_status)) }
                                td { @if let Some(st) = &e.saga_status { (layout::badge(st)) } }
                                td { (e.service) }
                                td { @if let Some(err) = &e.error { code { (err.code) } " " (err.message) } }
                                @match &e.kafka {
                                    Some(k) => { td { (k.topic) } td.num { (k.partition) } td.num { (k.offset) } }
                                    None => { td.none { "—" } td.none { "—" } td.none { "—" } }
                                }
                                td.num title="stored − occurred" { (layout::duration((e.ingested_at - e.occurred_at).num_milliseconds())) }
                                td.mono { (e.event_id) }
                            }
                        }
                    }
                }
            }
            @if events.len() > MAX_EVENT_ROWS {
                p.note { (events.len() - MAX_EVENT_ROWS) " more events are not shown; the JSON (Copy as JSON) and "
                    code { "GET /api/v1/sagas/{id}/events" } " have them all." }
            }
        }
        @if s.metadata.as_object().is_some_and(|m| !m.is_empty()) {
            section.metadata aria-labelledby="meta-h" {
                h2 #meta-h { "Metadata" }
                pre { (serde_json::to_string_pretty(&s.metadata).unwrap_or_default()) }
            }
        }
        script #saga-json type="application/json" { (layout::json_block(&json)) }
    }
}

fn links_out(state: &AppState, d: &SagaDetail) -> Markup {
    let ui = &state.settings.ui;
    let s = &d.summary;
    let ctx = LinkContext {
        saga_id: &s.saga_id,
        started_at: s.started_at,
        last_at: s.ended_at.unwrap_or(s.updated_at).max(s.updated_at),
    };
    let trace_links: Vec<(String, String)> = d
        .trace_ids
        .iter()
        .filter_map(|t| {
            links::render(&ui.trace_url_template, &ctx, Some(t)).map(|u| (t.clone(), u))
        })
        .collect();
    let tracker_links: Vec<(String, String)> = d
        .tracker_trace_ids
        .iter()
        .filter_map(|t| {
            links::render(&ui.trace_url_template, &ctx, Some(t)).map(|u| (t.clone(), u))
        })
        .collect();
    let log_link = links::render(
        &ui.log_url_template,
        &ctx,
        d.trace_ids.first().map(String::as_str),
    );
    html! {
        section.links aria-label="Links" {
            @if trace_links.is_empty() && !d.trace_ids.is_empty() {
                span.trace-ids { "Trace ids: " @for t in &d.trace_ids { code { (t) } " " } }
            }
            @for (t, url) in &trace_links {
                a.trace-link.button.secondary href=(url) data-trace-id=(t) rel="noopener noreferrer" target="_blank" {
                    (ui.trace_link_label) " " code { (&t[..8.min(t.len())]) "…" }
                }
            }
            @if let Some(url) = &log_link {
                a #log-link.button.secondary href=(url) rel="noopener noreferrer" target="_blank" { (ui.log_link_label) }
            }
            @for (t, url) in &tracker_links {
                a.tracker-trace-link href=(url) data-trace-id=(t) rel="noopener noreferrer" target="_blank"
                    title="The tracker's own ingest trace that stored events of this saga" {
                    "tracker ingest " code { (&t[..8.min(t.len())]) }
                }
            }
            @if ui.trace_url_template.is_empty() && ui.log_url_template.is_empty() && !d.trace_ids.is_empty() {
                span.hint { "Set " code { "ui.trace_url_template" } " to link these to your tracing tool." }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The timeline
// ---------------------------------------------------------------------------------------

const WIDTH: f64 = 1000.0;
const LABEL_W: f64 = 250.0;
const RIGHT_PAD: f64 = 90.0;
const ROW_H: f64 = 28.0;
const LANE_H: f64 = 22.0;
const AXIS_H: f64 = 24.0;

/// Maps instants to x on the bar area.
struct Scale {
    t0: DateTime<Utc>,
    span_ms: f64,
}

impl Scale {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let ms = (t - self.t0).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        LABEL_W + (ms / self.span_ms).clamp(0.0, 1.0) * (WIDTH - LABEL_W - RIGHT_PAD)
    }
}

/// A round step for about `n` ticks over `span` ms: 1, 2 or 5 × a power of ten.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

fn timeline(d: &SagaDetail, events: &[EventView], late_from: usize) -> Markup {
    let s = &d.summary;
    let t0 = s.started_at;
    let t1 = d.last_instant();
    let span_ms = ((t1 - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(1.0);
    let scale = Scale { t0, span_ms };

    // Lanes: services in order of their first step.
    let mut lanes: Vec<(&str, Vec<&StepView>)> = Vec::new();
    for st in &d.steps {
        match lanes.iter_mut().find(|(svc, _)| *svc == st.service) {
            Some((_, steps)) => steps.push(st),
            None => lanes.push((st.service.as_str(), vec![st])),
        }
    }
    let rows: usize = lanes.iter().map(|(_, st)| st.len()).sum();
    let height = AXIS_H + lanes.len() as f64 * LANE_H + rows as f64 * ROW_H + 8.0;
    let mut y_of: HashMap<&str, f64> = HashMap::new();
    let mut y = AXIS_H;
    let mut lane_marks = Vec::new();
    for (svc, steps) in &lanes {
        lane_marks.push((*svc, y, LANE_H + steps.len() as f64 * ROW_H));
        y += LANE_H;
        for st in steps {
            y_of.insert(st.step.as_str(), y);
            y += ROW_H;
        }
    }
    let step = tick_step(span_ms, 6.0);
    let ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|ms| *ms <= span_ms + 0.5)
        .take(20)
        .collect();
    let bar_end = |st: &StepView| st.ended_at.unwrap_or(t1);
    html! {
        svg #timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {}", f(height)))
            role="img" aria-labelledby="timeline-title" preserveAspectRatio="xMinYMin meet" {
            title #timeline-title {
                "Step timeline of " (s.saga_id) ": " (d.steps.len()) " steps over " (layout::duration(span_ms as i64))
            }
            defs {
                pattern #hatch patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)" {
                    rect.hatch-bg width="6" height="6" {}
                    line.hatch-line x1="0" y1="0" x2="0" y2="6" {}
                }
            }
            @for (i, (svc, y, h)) in lane_marks.iter().enumerate() {
                g.lane data-service=(svc) {
                    rect class=(if i % 2 == 0 { "lane-bg even" } else { "lane-bg odd" }) x="0" y=(f(*y)) width=(WIDTH) height=(f(*h)) {}
                    text.lane-label x="8" y=(f(y + 15.0)) { (svc) }
                }
            }
            @for ms in &ticks {
                @let x = LABEL_W + (ms / span_ms) * (WIDTH - LABEL_W - RIGHT_PAD);
                line.grid x1=(f(x)) y1=(f(AXIS_H - 4.0)) x2=(f(x)) y2=(f(height)) {}
                text.tick-label x=(f(x)) y="14" text-anchor="middle" { "+" (layout::duration(*ms as i64)) }
            }
            @if let Some(c) = &d.compensation {
                @if let Some(start) = c.started_at {
                    @let x0 = scale.x(start);
                    @let x1 = scale.x(c.ended_at.unwrap_or(t1));
                    rect.comp-window x=(f(x0)) y=(f(AXIS_H)) width=(f((x1 - x0).max(2.0))) height=(f(height - AXIS_H)) {
                        title { "Compensation of the saga" @if let Some(ms) = c.duration_ms { ": " (layout::duration(ms)) } }
                    }
                }
            }
            @for st in &d.steps {
                @let y = y_of.get(st.step.as_str()).copied().unwrap_or(AXIS_H);
                @let start = st.started_at.unwrap_or(st.first_event_at);
                @let x0 = scale.x(start);
                @let x1 = scale.x(bar_end(st));
                @let open = st.ended_at.is_none() && st.status == "STARTED";
                // The bar is the step's forward run: coloured by how that ended, whatever
                // its compensation did afterwards (drawn beneath it).
                @let outcome = if st.error.is_some() { "FAILED" } else if st.ended_at.is_some() { "SUCCEEDED" } else { st.status.as_str() };
                g.step data-step=(st.step) {
                    text.step-label x="20" y=(f(y + 13.0)) { (st.step) }
                    rect class=(format!("bar status-{outcome}{}", if open { " open" } else { "" }))
                        data-step=(st.step) data-status=(st.status) data-outcome=(outcome)
                        x=(f(x0)) y=(f(y + 3.0)) width=(f((x1 - x0).max(3.0))) height="12" rx="2" {
                        title {
                            (st.step) " · " (st.status) " · " (st.service)
                            @if let Some(ms) = st.duration_ms { " · " (layout::duration(ms)) }
                            @if let Some(e) = &st.error { " · " (e.code) ": " (e.message) }
                        }
                    }
                    text.bar-label x=(f(x1.max(x0 + 3.0) + 4.0)) y=(f(y + 13.0)) {
                        @if let Some(ms) = st.duration_ms { (layout::duration(ms)) }
                        @else if open { "running" }
                        @if st.error.is_some() { " ✕" }
                    }
                    @if let Some(c) = &st.compensation {
                        @let cx0 = scale.x(c.started_at.unwrap_or(start));
                        @let cx1 = scale.x(c.ended_at.unwrap_or(t1));
                        rect class=(if c.failed { "bar compensation failed" } else { "bar compensation" })
                            data-step=(st.step)
                            x=(f(cx0)) y=(f(y + 17.0)) width=(f((cx1 - cx0).max(3.0))) height="8" rx="1" {
                            title {
                                "compensation of " (st.step)
                                @if let Some(ms) = c.duration_ms { " · " (layout::duration(ms)) }
                                @if c.failed { " · compensation failed" }
                                @if c.ended_at.is_none() { " · running" }
                            }
                        }
                        text.comp-label x=(f(cx1.max(cx0 + 3.0) + 4.0)) y=(f(y + 25.0)) {
                            "↺ " @if let Some(ms) = c.duration_ms { (layout::duration(ms)) } @else { "…" }
                        }
                    }
                }
            }
            @for (i, e) in events.iter().enumerate() {
                @if let Some(y) = y_of.get(e.step.as_str()) {
                    @let x = scale.x(e.occurred_at);
                    @if i >= late_from {
                        path.late-marker d=(format!("M{} {} l5 5 l-5 5 l-5 -5 z", f(x), f(y - 1.0)))
                            data-event-id=(e.event_id) {
                            title { "late event: " (e.step) " " (e.step_status) " at " (layout::short_time(e.occurred_at)) }
                        }
                    } @else {
                        line.event-tick x1=(f(x)) y1=(f(y + 1.0)) x2=(f(x)) y2=(f(y + 17.0)) {
                            title { (e.step) " " (e.step_status) " at " (layout::short_time(e.occurred_at)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(1000.0, 6.0), 200.0);
        assert_eq!(tick_step(60_000.0, 6.0), 10_000.0);
        assert_eq!(tick_step(7.0, 6.0), 2.0);
        assert_eq!(tick_step(0.5, 6.0), 1.0);
    }
}
