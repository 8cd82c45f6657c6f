//! `GET /api/v1/sagas/export`: every saga a search matches, streamed as NDJSON or CSV.
//!
//! The filters are the search's, parsed by the same parser, so an export refuses exactly what
//! a search refuses, with the same 400. Instead of one big query (which would hold a
//! connection and a snapshot for as long as the slowest client reads), the server walks the
//! search's own keyset order page by page: each page is the index range scan a search page
//! is, the next one is fetched only when the client has taken the previous one (the body is a
//! stream, so a slow reader pauses the walk), and memory holds one page whatever the count.
//! The stuck verdict of every row is taken at the instant the export began, so `stuck=true`
//! means the same thing on the first and the last line.
//!
//! Sagas that start while an export runs sort before its position (newest first) and are not
//! included; sagas that change while it runs are written as they are when their page is read.
//! A failure part-way (the database goes away) aborts the response instead of ending it
//! cleanly, so a client never mistakes a truncated file for a complete one.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{self, Stream};

use super::error::{ApiError, InvalidParam, Problem};
use super::openapi::{ExportParams, SearchParams};
use super::sagas::{keyset_after, parse_search, summary, SagaSummary, SearchRequest};
use super::AppState;
use crate::store::read::{self, Keyset, Page, StuckAt};

/// Sagas read per page of the walk.
pub const EXPORT_PAGE: i64 = 500;

/// What the export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

/// A parsed export request.
#[derive(Debug)]
pub struct ExportRequest {
    pub format: Format,
    pub search: SearchRequest,
}

/// Parses the query of an export: `format` plus the search filters. `limit` and `cursor`
/// are refused (an export is every match), together with any bad filter in one 400.
pub fn parse_export(raw: &str) -> Result<ExportRequest, ApiError> {
    let mut errors = Vec::new();
    let mut format = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        match name.as_ref() {
            "format" => match (format, value.as_ref()) {
                (Some(_), _) => errors.push(InvalidParam::new("format", "given more than once")),
                (None, "ndjson") => format = Some(Format::Ndjson),
                (None, "csv") => format = Some(Format::Csv),
                (None, _) => errors.push(InvalidParam::new("format", "must be `ndjson` or `csv`")),
            },
            "limit" | "cursor" => errors.push(InvalidParam::new(
                name.as_ref(),
                "not accepted by the export, which returns every matching saga",
            )),
            _ => {
                rest.append_pair(&name, &value);
            }
        }
    }
    let search = match parse_search(&rest.finish()) {
        Ok(s) => Some(s),
        Err(ApiError::InvalidParams(ps)) => {
            errors.extend(ps);
            None
        }
        Err(e) => return Err(e),
    };
    match search {
        Some(search) if errors.is_empty() => Ok(ExportRequest {
            format: format.unwrap_or(Format::Ndjson),
            search,
        }),
        _ => Err(ApiError::InvalidParams(errors)),
    }
}

/// Export every saga matching the search filters.
///
/// Takes the filters of `GET /api/v1/sagas` (not `limit` or `cursor`) and streams **every**
/// match in the search's order, however many: `format=ndjson` (default) writes one search
/// result per line, `format=csv` a header and one row per saga. Memory on the server stays
/// bounded (it walks the search's keyset order one page at a time, as the client reads).
/// Sagas that start after the export began are not included. A response cut short by a
/// server failure ends without its final chunk, so it cannot pass for a complete file.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/export",
    operation_id = "exportSagas",
    tag = "sagas",
    params(ExportParams, SearchParams),
    responses(
        (status = 200, description = "Every matching saga, as NDJSON (one `SagaSummary` per line) or CSV",
            content(
                (String = "application/x-ndjson"),
                (String = "text/csv"),
            )),
        (status = 400, description = "A parameter is malformed, out of range or unknown (including `limit` and `cursor`)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let req = parse_export(query.as_deref().unwrap_or(""))?;
    respond(state, req).await
}

/// The streaming response for a parsed export (shared with the UI's export button). The
/// first page is read before the response starts, so a database that is down is a clean
/// 503 rather than a broken download.
pub async fn respond(state: AppState, req: ExportRequest) -> Result<Response, ApiError> {
    let now = Utc::now().trunc_subsecs(6);
    let first = read_page(&state, &req.search, None, now).await?;
    let format = req.format;
    let walk = Walk {
        state,
        search: req.search,
        now,
        format,
        pending: Some(first),
        header_written: false,
        done: false,
    };
    let mut response = Body::from_stream(pages(walk)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let name = format!(
        "attachment; filename=\"sagas-{}.{}\"",
        now.format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

struct Walk {
    state: AppState,
    search: SearchRequest,
    now: DateTime<Utc>,
    format: Format,
    /// A page already read (the first one, read before the response began).
    pending: Option<Vec<read::SagaRow>>,
    header_written: bool,
    done: bool,
}

async fn read_page(
    state: &AppState,
    search: &SearchRequest,
    after: Option<&Keyset>,
    now: DateTime<Utc>,
) -> Result<Vec<read::SagaRow>, sqlx::Error> {
    let page = Page {
        filter: &search.filter,
        sort: search.sort,
        after,
        limit: EXPORT_PAGE,
    };
    let at = StuckAt {
        policy: &state.stuck,
        now,
    };
    read::search_sagas(&state.read_pool, page, at).await
}

/// The body: one chunk per page, then the end. An error ends the stream with `Err`, which
/// makes hyper abort the response.
fn pages(walk: Walk) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    stream::unfold(walk, |mut w| async move {
        if w.done {
            return None;
        }
        let rows = match w.pending.take() {
            Some(rows) => rows,
            None => {
                let after = w.search.after.clone();
                match read_page(&w.state, &w.search, after.as_ref(), w.now).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!(error = %e, "export aborted: a page could not be read");
                        w.done = true;
                        return Some((Err(std::io::Error::other("export aborted")), w));
                    }
                }
            }
        };
        if (rows.len() as i64) < EXPORT_PAGE {
            w.done = true;
        }
        if let Some(last) = rows.last() {
            w.search.after = Some(keyset_after(w.search.sort, last));
        }
        let mut buf = Vec::with_capacity(rows.len() * 512);
        if w.format == Format::Csv && !w.header_written {
            write_csv_header(&mut buf);
        }
        w.header_written = true;
        for row in rows {
            let s = summary(row, &w.state.stuck, w.now);
            match w.format {
                Format::Ndjson => {
                    // Serializing owned strings, numbers and JSON values cannot fail.
                    let _ = serde_json::to_writer(&mut buf, &s);
                    buf.push(b'\n');
                }
                Format::Csv => write_csv_row(&mut buf, &s),
            }
        }
        Some((Ok(Bytes::from(buf)), w))
    })
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 22] = [
    "sagaId",
    "sagaType",
    "status",
    "startedAt",
    "updatedAt",
    "endedAt",
    "durationMs",
    "currentStep",
    "failedStep",
    "failureCode",
    "failureMessage",
    "compensationStartedAt",
    "compensationEndedAt",
    "compensationDurationMs",
    "eventCount",
    "lateEventCount",
    "businessKey",
    "traceId",
    "services",
    "stuckReason",
    "stuckSince",
    "metadata",
];

fn write_csv_header(buf: &mut Vec<u8>) {
    let mut w = csv::Writer::from_writer(buf);
    let _ = w.write_record(CSV_COLUMNS);
    let _ = w.flush();
}

fn iso(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn num<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) gets a
/// leading `'` (OWASP's advice on CSV injection): saga ids and error messages come from
/// emitters, and an export is opened by people.
fn cell(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

fn write_csv_row(buf: &mut Vec<u8>, s: &SagaSummary) {
    let failure = s.failure.as_ref();
    let record = [
        cell(&s.saga_id),
        cell(&s.saga_type),
        s.status.clone(),
        iso(Some(s.started_at)),
        iso(Some(s.updated_at)),
        iso(s.ended_at),
        num(s.duration_ms),
        cell(&s.current_step),
        cell(s.failed_step.as_deref().unwrap_or("")),
        cell(failure.map_or("", |f| f.code.as_str())),
        cell(failure.map_or("", |f| f.message.as_str())),
        iso(s.compensation_started_at),
        iso(s.compensation_ended_at),
        num(s.compensation_duration_ms),
        s.event_count.to_string(),
        s.late_event_count.to_string(),
        cell(s.business_key.as_deref().unwrap_or("")),
        s.trace_id.clone().unwrap_or_default(),
        cell(&s.services.join(";")),
        s.stuck
            .as_ref()
            .map(|v| v.reason.clone())
            .unwrap_or_default(),
        iso(s.stuck_since),
        cell(&s.metadata.to_string()),
    ];
    let mut w = csv::Writer::from_writer(buf);
    let _ = w.write_record(&record);
    let _ = w.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &str) -> Vec<String> {
        match parse_export(raw) {
            Err(ApiError::InvalidParams(ps)) => ps.into_iter().map(|p| p.name).collect(),
            other => panic!("expected a 400 for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_export_takes_the_search_filters_and_refuses_paging() {
        let r = parse_export("format=csv&status=FAILED&meta.region=eu").expect("valid");
        assert_eq!(r.format, Format::Csv);
        assert_eq!(r.search.filter.statuses, ["FAILED"]);
        assert_eq!(
            parse_export("").map(|r| r.format).ok(),
            Some(Format::Ndjson)
        );
        assert_eq!(
            names("format=xml&limit=5&cursor=x&status=DONE&foo=1"),
            ["format", "limit", "cursor", "status", "foo"]
        );
        assert_eq!(names("format=csv&format=csv"), ["format"]);
    }

    #[test]
    fn csv_cells_cannot_become_formulas_and_quote_what_they_must() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("order-1"), "order-1");
        let mut buf = Vec::new();
        let mut w = csv::Writer::from_writer(&mut buf);
        let _ = w.write_record(["a,b", "say \"hi\"", "line\nbreak"]);
        drop(w);
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\n"
        );
    }
}
