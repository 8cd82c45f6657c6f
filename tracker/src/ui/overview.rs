//! The overview (`/ui`): per saga type, over a chosen window, how many sagas started, how
//! they ended, how long they took, which steps fail most, and which are stuck now — every
//! number a link to the search that lists those sagas.
//!
//! Three bounded reads: the statistics of the window from the rollups (what
//! `GET /api/v1/stats` reads), the stuck and running counts from the running sagas (what the
//! stuck gauge reads), and the volume per hour or day from the rollups' saga rows.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use maud::{html, Markup};

use super::layout::{self, Nav, Viewer};
use crate::api::ApiError;
use crate::api::AppState;
use crate::store::insight::{self, StatsFilter, StepStats, TypeStats, VolumeRow};
use crate::stuck::StuckReason;

/// The windows offered, with their length.
const WINDOWS: [(&str, i64); 5] = [
    ("1h", 3_600),
    ("6h", 6 * 3_600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];
const DEFAULT_WINDOW: &str = "24h";
/// Failing steps listed per type.
const TOP_STEPS: usize = 5;

/// The window a query asks for; an unknown one is a 400 naming the choices.
fn window(raw: &str) -> Result<(&'static str, i64), ApiError> {
    let asked = form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == "window")
        .map(|(_, v)| v.into_owned());
    let name = asked.as_deref().unwrap_or(DEFAULT_WINDOW);
    WINDOWS
        .iter()
        .find(|(w, _)| *w == name)
        .copied()
        .ok_or_else(|| ApiError::invalid("window", "must be one of 1h, 6h, 24h, 7d, 30d"))
}

/// Links into the search, all within the window.
struct Search {
    since: String,
}

impl Search {
    fn url(&self, pairs: &[(&str, &str)]) -> String {
        let mut all: Vec<(&str, String)> =
            pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        all.push(("startedAfter", self.since.clone()));
        format!("/ui/sagas?{}", layout::query(&all))
    }
}

/// `GET /ui?window=`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    let (name, secs) = match window(query.as_deref().unwrap_or("")) {
        Ok(w) => w,
        Err(e) => return super::error_page(e),
    };
    let now = Utc::now();
    // Whole minutes, so the links of one page agree with each other and with a reload.
    let since = (now - Duration::seconds(secs))
        .duration_trunc(Duration::minutes(1))
        .unwrap_or(now);
    let filter = StatsFilter {
        started_after: Some(since),
        ..StatsFilter::default()
    };
    let daily = secs > 86_400;
    let (stats, gauges, volume) = tokio::join!(
        insight::stats(&state.read_pool, &filter, state.stats_timeout),
        insight::gauge_counts(&state.read_pool, &state.stuck, now),
        insight::volume(&state.read_pool, since, daily),
    );
    let (stats, gauges, volume) = match (stats, gauges, volume) {
        (Ok(s), Ok(g), Ok(v)) => (s, g, v),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return super::error_page(e.into()),
    };
    let search = Search {
        since: since.to_rfc3339_opts(SecondsFormat::Secs, true),
    };

    let mut stuck: BTreeMap<&str, Vec<(StuckReason, i64)>> = BTreeMap::new();
    for (t, reason, n) in &gauges.stuck {
        stuck.entry(t.as_str()).or_default().push((*reason, *n));
    }
    let running: BTreeMap<&str, i64> = gauges
        .active
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    let mut types: Vec<&str> = stats
        .by_type
        .iter()
        .filter_map(|t| t.saga_type.as_deref())
        .collect();
    for t in stuck.keys().chain(running.keys()) {
        if !types.contains(t) {
            types.push(t);
        }
    }
    types.sort_unstable();
    let stuck_total: i64 = gauges.stuck.iter().map(|(_, _, n)| n).sum();
    let running_total: i64 = gauges.active.iter().map(|(_, n)| n).sum();
    let o = &stats.overall;

    let body = html! {
        div.overview-head {
            h1 { "Overview" }
            nav.windows aria-label="Time window" {
                span { "Sagas started in the last" }
                @for (w, _) in WINDOWS {
                    a href=(format!("/ui?window={w}")) aria-current=[(w == name).then_some("page")] { (w) }
                }
            }
        }
        section.totals aria-label="All saga types" {
            (metric("Started", o.total, &search.url(&[]), "total"))
            (metric("Completed", o.completed, &search.url(&[("status", "COMPLETED")]), "completed"))
            (metric("Failed", o.failed, &search.url(&[("status", "FAILED")]), "failed"))
            (metric("Compensated", o.compensated, &search.url(&[("status", "COMPENSATED")]), "compensated"))
            div.metric {
                a href="/ui/sagas?stuck=true" data-metric="stuck" {
                    span.value class=[(stuck_total > 0).then_some("alert")] { (layout::count(stuck_total)) }
                    span.label { "Stuck now" }
                }
            }
            div.metric {
                a href="/ui/sagas?status=STARTED&status=IN_PROGRESS&status=COMPENSATING" data-metric="running" {
                    span.value { (layout::count(running_total)) }
                    span.label { "Running now" }
                }
            }
        }
        section.chart-card aria-labelledby="volume-h" {
            h2 #volume-h { "Sagas started per " @if daily { "day" } @else { "hour" } ", by outcome" }
            (volume_chart(&volume, daily, since, now))
        }
        @if types.is_empty() {
            section.message {
                h2 { "No sagas yet" }
                p {
                    "Nothing started in this window. Once services record saga steps "
                    "(see docs/sdk.md) they appear here within a second; try a longer window."
                }
            }
        }
        div.type-grid {
            @for t in &types {
                (type_card(
                    t,
                    stats.by_type.iter().find(|x| x.saga_type.as_deref() == Some(t)),
                    &stats.steps,
                    stuck.get(t).map(Vec::as_slice).unwrap_or(&[]),
                    running.get(t).copied().unwrap_or(0),
                    &search,
                ))
            }
        }
    };
    super::page_response(
        StatusCode::OK,
        layout::page("Overview", Nav::Overview, &viewer, body),
    )
}

fn metric(label: &str, value: i64, href: &str, key: &str) -> Markup {
    html! {
        div.metric {
            a href=(href) data-metric=(key) {
                span.value { (layout::count(value)) }
                span.label { (label) }
            }
        }
    }
}

fn type_card(
    t: &str,
    s: Option<&TypeStats>,
    steps: &[StepStats],
    stuck: &[(StuckReason, i64)],
    running: i64,
    search: &Search,
) -> Markup {
    let failing: Vec<&StepStats> = steps
        .iter()
        .filter(|st| st.saga_type == t && st.failures > 0)
        .take(TOP_STEPS)
        .collect();
    let finished = s.map_or(0, |s| s.completed + s.failed + s.compensated);
    let rate = |n: i64| (finished > 0).then(|| n as f64 / finished as f64);
    html! {
        section.type-card data-saga-type=(t) aria-labelledby=(format!("type-{t}")) {
            h2 id=(format!("type-{t}")) { a href=(search.url(&[("sagaType", t)])) { (t) } }
            @if let Some(s) = s {
                div.numbers {
                    (metric("started", s.total, &search.url(&[("sagaType", t)]), "total"))
                    (metric("completed", s.completed, &search.url(&[("sagaType", t), ("status", "COMPLETED")]), "completed"))
                    (metric("failed", s.failed, &search.url(&[("sagaType", t), ("status", "FAILED")]), "failed"))
                    (metric("compensated", s.compensated, &search.url(&[("sagaType", t), ("status", "COMPENSATED")]), "compensated"))
                }
                (outcome_bar(s))
                p.rates {
                    "success " strong { (layout::percent(rate(s.completed))) }
                    " · failure " strong { (layout::percent(rate(s.failed))) }
                    " · compensated " strong { (layout::percent(rate(s.compensated))) }
                    " of " (layout::count(finished)) " finished"
                }
                @if let Some(p) = &s.duration_ms {
                    (durations(p))
                }
                @if s.compensation_started > 0 {
                    p.comp {
                        "Compensation began in "
                        a href=(search.url(&[("sagaType", t), ("status", "COMPENSATED"), ("status", "COMPENSATING"), ("status", "FAILED")])) {
                            (layout::count(s.compensation_started))
                        }
                        " sagas"
                        @if s.compensation_failed > 0 { ", failed in " (layout::count(s.compensation_failed)) }
                        @if let Some(p) = &s.compensation_duration_ms {
                            @if let Some(p95) = p.get(1) { "; p95 time to compensate " (layout::duration_f(*p95)) }
                        }
                    }
                }
            } @else {
                p.empty { "None started in this window." }
            }
            div.split {
                div {
                    h3 { "Most failing steps" }
                    @if failing.is_empty() {
                        p.empty { "No step failed." }
                    } @else {
                        @let max = failing.iter().map(|s| s.failures).max().unwrap_or(1).max(1);
                        table.steps {
                            thead { tr { th scope="col" { "Step" } th scope="col" class="num" { "Failed" } th scope="col" class="num" { "Rate" } } }
                            tbody {
                                @for st in &failing {
                                    tr data-step=(st.step) {
                                        td {
                                            code { (st.step) }
                                            svg.spark viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" {
                                                rect.spark-fail x="0" y="0" height="6" width=(format!("{:.1}", st.failures as f64 * 100.0 / max as f64)) {}
                                            }
                                        }
                                        td.num {
                                            a href=(search.url(&[("sagaType", t), ("failedStep", st.step.as_str())])) data-metric="step-failures" {
                                                (layout::count(st.failures))
                                            }
                                        }
                                        td.num { (layout::percent((st.sagas > 0).then(|| st.failures as f64 / st.sagas as f64))) }
                                    }
                                }
                            }
                        }
                    }
                }
                div {
                    h3 { "Now" }
                    ul.now {
                        li {
                            a href=(format!("/ui/sagas?{}", layout::query(&[("sagaType", t.to_owned()), ("status", "STARTED".into()), ("status", "IN_PROGRESS".into()), ("status", "COMPENSATING".into())]))) data-metric="running" {
                                (layout::count(running))
                            }
                            " running"
                        }
                        @if stuck.is_empty() {
                            li { "none stuck" }
                        }
                        @for (reason, n) in stuck {
                            li.stuck-line {
                                a href=(format!("/ui/sagas?{}", layout::query(&[("sagaType", t.to_owned()), ("stuckReason", reason.as_str().to_owned())]))) data-metric=(format!("stuck-{}", reason.as_str())) {
                                    (layout::count(*n))
                                }
                                " stuck: " (layout::stuck_reason_text(reason.as_str()))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Completed / compensated / failed / running shares of the type's sagas, as one bar.
fn outcome_bar(s: &TypeStats) -> Markup {
    let running = s.started + s.in_progress + s.compensating;
    let parts = [
        ("completed", s.completed),
        ("compensated", s.compensated),
        ("failed", s.failed),
        ("running", running),
    ];
    let total: i64 = parts.iter().map(|(_, n)| n).sum::<i64>().max(1);
    let mut x = 0.0;
    let segments: Vec<(&str, i64, f64, f64)> = parts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| {
            let w = *n as f64 * 100.0 / total as f64;
            let seg = (*k, *n, x, w);
            x += w;
            seg
        })
        .collect();
    html! {
        svg.outcome viewBox="0 0 100 8" preserveAspectRatio="none" role="img"
            aria-label=(parts.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")) {
            @for (k, n, x, w) in segments {
                rect class=(format!("seg {k}")) x=(format!("{x:.2}")) y="0" width=(format!("{w:.2}")) height="8" {
                    title { (k) ": " (n) }
                }
            }
        }
    }
}

/// p50 / p95 / p99 as three bars on one scale.
fn durations(p: &[f64]) -> Markup {
    let max = p.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    html! {
        div.durations {
            @for (label, v) in ["p50", "p95", "p99"].iter().zip(p.iter()) {
                div.dur {
                    span.dur-label { (label) }
                    svg.dur-bar viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" {
                        rect x="0" y="0" height="6" width=(format!("{:.1}", v * 100.0 / max)) {}
                    }
                    span.dur-value { (layout::duration_f(*v)) }
                }
            }
        }
    }
}

/// Stacked bars per period (completed, compensated, failed, other), each a link to the
/// search for that period.
fn volume_chart(
    rows: &[VolumeRow],
    daily: bool,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Markup {
    let step = if daily {
        Duration::days(1)
    } else {
        Duration::hours(1)
    };
    let first = since.duration_trunc(step).unwrap_or(since);
    let mut periods: Vec<DateTime<Utc>> = Vec::new();
    let mut p = first;
    while p <= now && periods.len() < 800 {
        periods.push(p);
        p += step;
    }
    let mut by: BTreeMap<DateTime<Utc>, [i64; 4]> = BTreeMap::new();
    for r in rows {
        let e = by.entry(r.period).or_default();
        e[0] += r.completed;
        e[1] += r.compensated;
        e[2] += r.failed;
        e[3] += (r.total - r.completed - r.compensated - r.failed).max(0);
    }
    let max = by
        .values()
        .map(|v| v.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (1000.0, 160.0, 44.0, 20.0);
    let n = periods.len().max(1) as f64;
    let bw = (w - left) / n;
    let classes = ["completed", "compensated", "failed", "running"];
    html! {
        svg #volume-chart.volume viewBox=(format!("0 0 {w} {h}")) role="img"
            aria-label=(format!("Sagas started per {}: at most {max} in one", if daily { "day" } else { "hour" })) {
            line.axis x1=(left) y1=(h - bottom) x2=(w) y2=(h - bottom) {}
            text.tick-label x=(left - 4.0) y="12" text-anchor="end" { (layout::count(max)) }
            text.tick-label x=(left - 4.0) y=(h - bottom) text-anchor="end" { "0" }
            @for (i, p) in periods.iter().enumerate() {
                @let v = by.get(p).copied().unwrap_or_default();
                @let x = left + i as f64 * bw;
                @let end = *p + step;
                @let href = format!("/ui/sagas?{}", layout::query(&[
                    ("startedAfter", p.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    ("startedBefore", end.to_rfc3339_opts(SecondsFormat::Secs, true)),
                ]));
                a href=(href) {
                    title {
                        (p.format(if daily { "%Y-%m-%d" } else { "%Y-%m-%d %H:00Z" }))
                        ": " (v.iter().sum::<i64>()) " started — "
                        (v[0]) " completed, " (v[1]) " compensated, " (v[2]) " failed, " (v[3]) " running"
                    }
                    rect.hit x=(format!("{x:.1}")) y="0" width=(format!("{:.1}", bw)) height=(h - bottom) {}
                    @for (c, y, bh) in stack(&v, h - bottom, (h - bottom - 16.0) / max as f64) {
                        rect class=(format!("seg {}", classes[c])) x=(format!("{:.1}", x + bw * 0.1)) y=(format!("{y:.1}"))
                            width=(format!("{:.1}", (bw * 0.8).max(1.0))) height=(format!("{bh:.1}")) {}
                    }
                }
                @if periods.len() <= 31 || i % (periods.len() / 12).max(1) == 0 {
                    text.tick-label x=(format!("{:.1}", x + bw / 2.0)) y=(h - 5.0) text-anchor="middle" {
                        (p.format(if daily { "%m-%d" } else { "%H:00" }))
                    }
                }
            }
        }
    }
}

/// The non-empty segments of one stacked bar, bottom up: `(index, top y, height)`.
fn stack(v: &[i64; 4], base: f64, per: f64) -> Vec<(usize, f64, f64)> {
    let mut y = base;
    v.iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let h = *n as f64 * per;
            y -= h;
            (i, y, h)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_defaults_to_a_day_and_refuses_others() {
        assert_eq!(window("").ok(), Some(("24h", 86_400)));
        assert_eq!(window("window=7d").ok(), Some(("7d", 604_800)));
        assert!(window("window=2y").is_err());
    }
}
