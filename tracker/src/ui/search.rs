//! The search page (`/ui/sagas`), the quick box (`/ui/go`) and the export button
//! (`/ui/export`).
//!
//! The page's query string is the API's: every control of the form is named like the
//! search parameter it sets, so a search URL of the API opens here with `/api/v1` swapped
//! for `/ui`, and the page's own URL is the whole view (filters, sort, page). Two
//! concessions to HTML forms are translated before the API's parser sees the query
//! ([`canonical`]): empty controls are dropped, `datetime-local` values (which have no zone)
//! are read as UTC, and the `metadata` text area's `key=value` lines become `meta.key=value`.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use maud::{html, Markup};

use super::layout::{self, Nav, Viewer};
use crate::api::error::InvalidParam;
use crate::api::sagas::{parse_search, search_page, summary, SagaSummary, SearchRequest};
use crate::api::{export, ApiError, AppState};
use crate::store::read::{self, SortKey};

const TIME_PARAMS: [(&str, &str); 4] = [
    ("startedAfter", "Started after"),
    ("startedBefore", "Started before"),
    ("updatedAfter", "Updated after"),
    ("updatedBefore", "Updated before"),
];

const STATUSES: [&str; 6] = [
    "STARTED",
    "IN_PROGRESS",
    "COMPLETED",
    "FAILED",
    "COMPENSATING",
    "COMPENSATED",
];

const LIMITS: [&str; 4] = ["25", "50", "100", "500"];

/// A UI query translated for the API: the canonical pairs, the metadata lines as typed (to
/// show them back), the quick box's unmatched query, and what could not be translated.
#[derive(Debug, Default)]
pub struct Canonical {
    pub pairs: Vec<(String, String)>,
    pub metadata_text: String,
    pub not_found: Option<String>,
    pub errors: Vec<InvalidParam>,
}

impl Canonical {
    /// The pairs as a query string.
    pub fn query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    /// The query without the paging parameters (for export links and "first page").
    fn filters_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            if k != "cursor" && k != "limit" {
                s.append_pair(k, v);
            }
        }
        s.finish()
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn value<'a>(&'a self, name: &'a str) -> &'a str {
        self.values(name).next().unwrap_or("")
    }
}

/// A `datetime-local` value (`2026-12-01T10:00` or with seconds) as UTC in RFC 3339; any
/// other text is passed on for the API's parser to judge.
fn utc_time(v: &str) -> String {
    for f in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, f) {
            return t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true);
        }
    }
    v.to_owned()
}

/// The UI's query string → the API's.
pub fn canonical(raw: &str) -> Canonical {
    let mut c = Canonical::default();
    let mut metadata_lines = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_ref() {
            "q" => c.not_found = Some(value.to_owned()),
            "metadata" => {
                for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    match line.split_once('=') {
                        Some((k, v)) if !k.trim().is_empty() => {
                            metadata_lines.push(line.to_owned());
                            c.pairs
                                .push((format!("meta.{}", k.trim()), v.trim().to_owned()));
                        }
                        _ => c.errors.push(InvalidParam::new(
                            "metadata",
                            format!("{line:?} is not `key=value`"),
                        )),
                    }
                }
            }
            n if TIME_PARAMS.iter().any(|(p, _)| *p == n) => {
                c.pairs.push((n.to_owned(), utc_time(value)));
            }
            n => {
                if let Some(key) = n.strip_prefix("meta.") {
                    metadata_lines.push(format!("{key}={value}"));
                }
                c.pairs.push((n.to_owned(), value.to_owned()));
            }
        }
    }
    c.metadata_text = metadata_lines.join("\n");
    c
}

/// The results of a valid search.
struct Results {
    rows: Vec<SagaSummary>,
    next_cursor: Option<String>,
    now: DateTime<Utc>,
}

async fn run(state: &AppState, req: &SearchRequest) -> Result<Results, ApiError> {
    let now = Utc::now();
    let (rows, next_cursor) = search_page(state, req, now).await?;
    Ok(Results {
        rows: rows
            .into_iter()
            .map(|r| summary(r, &state.stuck, now))
            .collect(),
        next_cursor,
        now,
    })
}

/// `GET /ui/sagas`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    let mut c = canonical(query.as_deref().unwrap_or(""));
    let parsed = parse_search(&c.query());
    let (results, req) = match parsed {
        Ok(req) if c.errors.is_empty() => match run(&state, &req).await {
            Ok(r) => (Some(r), Some(req)),
            Err(e) => return super::error_page(e),
        },
        Ok(_) => (None, None),
        Err(ApiError::InvalidParams(ps)) => {
            c.errors.extend(ps);
            (None, None)
        }
        Err(e) => return super::error_page(e),
    };
    let types = crate::store::insight::counts_by_type(&state.read_pool)
        .await
        .map(|rows| {
            let mut t: Vec<String> = rows.into_iter().map(|(t, _, _)| t).collect();
            t.dedup();
            t
        })
        .unwrap_or_default();
    let status = if c.errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::BAD_REQUEST
    };
    let body = html! {
        h1 { "Search sagas" }
        @if let Some(q) = &c.not_found {
            p.note role="status" #not-found {
                "No saga has the id, business key or trace id “" (q) "”."
            }
        }
        (form(&c, &types))
        @if !c.errors.is_empty() {
            ul.form-errors role="alert" {
                @for e in &c.errors {
                    li data-param=(ui_param(&e.name)) { code { (e.name) } ": " (e.reason) }
                }
            }
        }
        @if let (Some(r), Some(req)) = (&results, &req) {
            (results_table(&c, r, req))
        }
    };
    super::page_response(status, layout::page("Search", Nav::Search, &viewer, body))
}

/// The form control an API parameter name comes from.
fn ui_param(name: &str) -> &str {
    if name.starts_with("meta.") {
        "metadata"
    } else {
        name
    }
}

/// An RFC 3339 value as a `datetime-local` value in UTC (what the control shows).
fn local_value(v: &str) -> String {
    DateTime::parse_from_rfc3339(v)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| v.to_owned())
}

fn form(c: &Canonical, types: &[String]) -> Markup {
    let statuses: Vec<&str> = c
        .values("status")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let text = |name: &'static str, label: &'static str, hint: &'static str| {
        let id = format!("f-{name}");
        html! {
            div.field {
                label for=(id) { (label) }
                input id=(id) type="text" name=(name) value=(c.value(name)) placeholder=(hint)
                    spellcheck="false" autocomplete="off";
            }
        }
    };
    html! {
        form #search-form method="get" action="/ui/sagas" {
            div.fields {
                div.field {
                    label for="f-sagaType" { "Saga type" }
                    input #f-sagaType type="text" name="sagaType" value=(c.value("sagaType"))
                        list="saga-types" placeholder="any" spellcheck="false" autocomplete="off";
                    datalist #saga-types { @for t in types { option value=(t) {} } }
                }
                (text("businessKey", "Business key", "e.g. order number"))
                (text("traceId", "Trace id", "32 hex digits"))
                (text("step", "Step", "has an event for this step"))
                (text("service", "Service", "emitted by this service"))
                div.field {
                    label for="f-minDurationMs" { "Min. duration (ms)" }
                    input #f-minDurationMs type="number" min="0" name="minDurationMs"
                        value=(c.value("minDurationMs")) placeholder="finished sagas only";
                }
                @for (name, label) in TIME_PARAMS {
                    div.field {
                        label for=(format!("f-{name}")) { (label) " (UTC)" }
                        input id=(format!("f-{name}")) type="datetime-local" step="1" name=(name)
                            value=(local_value(c.value(name)));
                    }
                }
            }
            fieldset.statuses {
                legend { "Status" }
                @for s in STATUSES {
                    label.check {
                        input type="checkbox" name="status" value=(s) checked[statuses.contains(&s)];
                        (layout::badge(s))
                    }
                }
            }
            div.fields {
                div.field.wide {
                    label for="f-metadata" { "Metadata (one key=value per line)" }
                    textarea #f-metadata name="metadata" rows="2" spellcheck="false"
                        placeholder="region=eu" { (c.metadata_text) }
                }
                div.field {
                    label for="f-stuck" { "Stuck" }
                    select #f-stuck name="stuck" {
                        option value="" selected[c.value("stuck").is_empty()] { "any" }
                        option value="true" selected[c.value("stuck") == "true"] { "stuck now" }
                        option value="false" selected[c.value("stuck") == "false"] { "not stuck" }
                    }
                }
                div.field {
                    label for="f-stuckReason" { "Stuck reason" }
                    select #f-stuckReason name="stuckReason" {
                        option value="" { "any" }
                        @for r in crate::stuck::StuckReason::ALL {
                            option value=(r.as_str()) selected[c.value("stuckReason") == r.as_str()] {
                                (layout::stuck_reason_text(r.as_str()))
                            }
                        }
                    }
                }
                div.field {
                    label for="f-sort" { "Sort by" }
                    select #f-sort name="sort" {
                        option value="startedAt" selected[c.value("sort") != "updatedAt"] { "Started (newest first)" }
                        option value="updatedAt" selected[c.value("sort") == "updatedAt"] { "Last activity (newest first)" }
                    }
                }
                div.field {
                    label for="f-limit" { "Per page" }
                    select #f-limit name="limit" {
                        @for l in LIMITS {
                            option value=(l) selected[c.value("limit") == l || (c.value("limit").is_empty() && l == "50")] { (l) }
                        }
                    }
                }
            }
            div.actions {
                button type="submit" { "Search" }
                a.button.secondary href="/ui/sagas" { "Clear" }
            }
        }
    }
}

fn results_table(c: &Canonical, r: &Results, req: &SearchRequest) -> Markup {
    let filters = c.filters_query();
    let with = |extra: &[(&str, String)]| {
        let mut q = filters.clone();
        for (k, v) in extra {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&layout::query(&[(k, v.clone())]));
        }
        q
    };
    let limit = req.limit.to_string();
    let sort_link = |key: SortKey, label: &str| {
        let mut pairs: Vec<(String, String)> = c
            .pairs
            .iter()
            .filter(|(k, _)| k != "sort" && k != "cursor")
            .cloned()
            .collect();
        pairs.push(("sort".into(), key.as_str().into()));
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let current = req.sort == key;
        html! {
            a href=(format!("/ui/sagas?{q}")) aria-sort=[current.then_some("descending")] {
                (label) @if current { " ↓" }
            }
        }
    };
    html! {
        section.results aria-labelledby="results-heading" {
            div.results-bar {
                h2 #results-heading {
                    span #result-count { (r.rows.len()) }
                    @if r.rows.len() == 1 { " saga" } @else { " sagas" }
                    @if req.after.is_some() { " on this page" }
                    @if r.next_cursor.is_some() { ", more on the next page" }
                }
                div.export {
                    "Export every match: "
                    a #export-ndjson.button.secondary href=(format!("/ui/export?{}", with(&[("format", "ndjson".into())]))) download { "NDJSON" }
                    a #export-csv.button.secondary href=(format!("/ui/export?{}", with(&[("format", "csv".into())]))) download { "CSV" }
                    a.button.secondary href=(format!("/api/v1/sagas?{}", c.query())) { "as API" }
                }
            }
            @if r.rows.is_empty() {
                p.empty { "No saga matches these filters." }
            } @else {
                div.table-wrap {
                    table #results {
                        thead {
                            tr {
                                th scope="col" { "Saga" }
                                th scope="col" { "Type" }
                                th scope="col" { "Status" }
                                th scope="col" { "Step" }
                                th scope="col" { (sort_link(SortKey::StartedAt, "Started")) }
                                th scope="col" { "Duration" }
                                th scope="col" { (sort_link(SortKey::UpdatedAt, "Last activity")) }
                                th scope="col" { "Services" }
                                th scope="col" class="num" { "Events" }
                            }
                        }
                        tbody {
                            @for s in &r.rows { (row(s, r.now)) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if req.after.is_some() {
                    a #first-page href=(format!("/ui/sagas?{}", with(&[("limit", limit.clone())]))) { "← First page" }
                }
                @if let Some(next) = &r.next_cursor {
                    a #next-page rel="next" href=(format!("/ui/sagas?{}", with(&[("limit", limit.clone()), ("cursor", next.clone())]))) { "Next page →" }
                }
            }
        }
    }
}

fn row(s: &SagaSummary, now: DateTime<Utc>) -> Markup {
    html! {
        tr data-saga-id=(s.saga_id) {
            td {
                a.saga-link href=(layout::saga_url(&s.saga_id)) { (s.saga_id) }
                @if let Some(k) = &s.business_key { div.sub { "key " (k) } }
            }
            td { (s.saga_type) }
            td {
                (layout::badge(&s.status))
                @if let Some(st) = &s.stuck { " " (layout::stuck_marker(&st.reason, st.since)) }
                @if s.late_event_count > 0 { " " span.late-marker title="events arrived after the saga ended" { "late" } }
            }
            td {
                @if let Some(f) = &s.failed_step {
                    span.failed-step title=(s.failure.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default()) { "✕ " (f) }
                    @if *f != s.current_step { div.sub { "now " (s.current_step) } }
                } @else {
                    (s.current_step)
                }
            }
            td { (layout::time(s.started_at)) }
            td {
                @match s.duration_ms {
                    Some(ms) => (layout::duration(ms)),
                    None => span.running { "running " (layout::duration((now - s.started_at).num_milliseconds())) },
                }
            }
            td title=(layout::short_time(s.updated_at)) { (layout::ago(s.updated_at, now)) }
            td.services { (s.services.join(", ")) }
            td.num { (s.event_count) }
        }
    }
}

/// `GET /ui/go?q=`: a saga id opens the saga; a trace id or business key opens the saga
/// when exactly one matches, else the search for it.
pub async fn go(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let q = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if q.is_empty() || q.contains('\0') {
        return Redirect::to("/ui/sagas").into_response();
    }
    match read::saga_exists(&state.read_pool, &q).await {
        Ok(true) => return Redirect::to(&layout::saga_url(&q)).into_response(),
        Ok(false) => {}
        Err(e) => return super::error_page(e.into()),
    }
    let is_trace = q.len() == 32 && q.bytes().all(|b| b.is_ascii_hexdigit());
    let param = if is_trace { "traceId" } else { "businessKey" };
    let value = if is_trace {
        q.to_ascii_lowercase()
    } else {
        q.clone()
    };
    let search = layout::query(&[(param, value.clone()), ("limit", "2".into())]);
    let Ok(req) = parse_search(&search) else {
        // Too long for a business key: nothing can match it.
        return Redirect::to(&format!("/ui/sagas?{}", layout::query(&[("q", q)]))).into_response();
    };
    match run(&state, &req).await {
        Ok(r) if r.rows.len() == 1 => {
            Redirect::to(&layout::saga_url(&r.rows[0].saga_id)).into_response()
        }
        Ok(r) if r.rows.is_empty() => {
            Redirect::to(&format!("/ui/sagas?{}", layout::query(&[("q", q)]))).into_response()
        }
        Ok(_) => {
            Redirect::to(&format!("/ui/sagas?{}", layout::query(&[(param, value)]))).into_response()
        }
        Err(e) => super::error_page(e),
    }
}

/// `GET /ui/export?format=…&<filters>`: the API's export for the page's filters (the page
/// cannot add an `Authorization` header to a download, so the UI serves it on its own path,
/// under the same access rule).
pub async fn export(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let c = canonical(query.as_deref().unwrap_or(""));
    if !c.errors.is_empty() {
        return super::error_page(ApiError::InvalidParams(c.errors));
    }
    let mut pairs = c.pairs;
    pairs.retain(|(k, _)| k != "limit" && k != "cursor");
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    match export::parse_export(&q) {
        Ok(req) => match export::respond(state, req).await {
            Ok(r) => r,
            Err(e) => super::error_page(e),
        },
        Err(e) => super::error_page(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_become_the_apis_parameters() {
        let c = canonical(
            "sagaType=ORDER_CREATION&step=&status=FAILED&startedAfter=2026-12-01T10%3A00\
             &metadata=region%3Deu%0D%0Atier%3Dgold&meta.x=1&limit=50",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(
            c.query(),
            "sagaType=ORDER_CREATION&status=FAILED&startedAfter=2026-12-01T10%3A00%3A00Z\
             &meta.region=eu&meta.tier=gold&meta.x=1&limit=50"
        );
        assert_eq!(c.metadata_text, "region=eu\ntier=gold\nx=1");
        assert!(parse_search(&c.query()).is_ok());
    }

    #[test]
    fn a_metadata_line_without_a_value_is_named() {
        let c = canonical("metadata=region");
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0].name, "metadata");
    }

    #[test]
    fn api_times_pass_through_and_show_as_utc() {
        let c = canonical("updatedBefore=2026-12-01T10%3A00%3A00%2B01%3A00");
        assert_eq!(c.value("updatedBefore"), "2026-12-01T10:00:00+01:00");
        assert_eq!(local_value(c.value("updatedBefore")), "2026-12-01T09:00:00");
    }
}
