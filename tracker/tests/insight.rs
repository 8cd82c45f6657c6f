//! Saga insight against a real PostgreSQL: statistics, saga types, stuck detection (search,
//! detail, gauges), the compensation view, sorting, retention and the saga histograms.
//!
//! Same harness as `api.rs`: one fresh database per test, seeded through the real write path
//! (`store::write::write_batch`), the real router on `127.0.0.1:0`, called with reqwest.
//! Set `TEST_DATABASE_URL` to point at another server (default
//! `postgres://postgres@127.0.0.1:5432`, trust auth).
//!
//! The metrics recorder is global to the test process, so every test that reads `/metrics`
//! uses saga types of its own.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::StatusCode;
use saga_tracker::background;
use saga_tracker::config::{RetentionSettings, Settings};
use saga_tracker::metrics::{self, DbGauges};
use saga_tracker::store::insight::{self, StatsFilter};
use saga_tracker::store::rollup;
use saga_tracker::store::write::{write_batch, IncomingEvent};
use saga_tracker::stuck::StuckPolicy;
use saga_tracker_sdk::contract::{SagaStatus, StepStatus};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

mod common;

use common::{Saga, ServedApi, TestDb};

struct TestApp {
    api: ServedApi,
    pool: PgPool,
    // Declared last so it is dropped after the pool and the server.
    _db: TestDb,
}

/// The settings the tests run with: the defaults, but ORDER_CREATION has its own 300 s stuck
/// threshold, and `/api/v1/stats` gets `stats_timeout_ms`.
fn settings(stats_timeout_ms: u64) -> Settings {
    common::settings_with(&[
        ("stuck.thresholds", json!({"ORDER_CREATION": 300})),
        ("http.stats_timeout_ms", json!(stats_timeout_ms)),
    ])
}

/// The stuck rules of [`settings`], for the tests that evaluate them without the API.
fn policy() -> StuckPolicy {
    StuckPolicy::from(&settings(10_000).stuck)
}

async fn spawn_app() -> TestApp {
    spawn_app_with(10_000).await
}

async fn spawn_app_with(stats_timeout_ms: u64) -> TestApp {
    let (db, pool) = common::migrated_test_db("saga_insight").await;
    TestApp {
        api: common::serve_api(pool.clone(), settings(stats_timeout_ms), false).await,
        pool,
        _db: db,
    }
}

impl TestApp {
    async fn get_json(&self, path_and_query: &str) -> (StatusCode, Value) {
        let r = self
            .api
            .http
            .get(format!("{}{path_and_query}", self.api.base))
            .send()
            .await
            .expect("request is answered");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok_json(&self, path_and_query: &str) -> Value {
        let (status, body) = self.get_json(path_and_query).await;
        assert_eq!(status, StatusCode::OK, "{path_and_query}: {body}");
        body
    }

    async fn search_ids(&self, query: &str) -> Vec<String> {
        ids(&self.ok_json(&format!("/api/v1/sagas?{query}")).await)
    }

    /// A 400 problem for `path_and_query`, returning the names in `invalidParams`.
    async fn rejected_params(&self, path_and_query: &str) -> Vec<String> {
        let (status, body) = self.get_json(path_and_query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path_and_query}: {body}");
        assert_eq!(
            body["type"],
            "https://saga-tracker.dev/problems/invalid-parameter"
        );
        body["invalidParams"]
            .as_array()
            .expect("invalidParams")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn metrics(&self) -> String {
        common::scrape(&self.api.http, &self.api.base).await
    }

    /// Writes through the real write path and records the batch like the consumer does.
    async fn seed(&self, events: Vec<IncomingEvent>) {
        let committed = write_batch(&self.pool, &events)
            .await
            .expect("write_batch commits");
        metrics::batch_committed(&committed);
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["sagaId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The value of one series in a Prometheus text exposition, if exported.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// 2026-11-01T10:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0)
        .single()
        .expect("valid date")
        + Duration::seconds(secs)
}

fn all(sagas: Vec<Saga>) -> Vec<IncomingEvent> {
    sagas.into_iter().flat_map(|s| s.events).collect()
}

/// Four `PAY` sagas with known durations and one `SHIP` saga:
///
/// - `p1` COMPLETED in 3 s (A 1 s, B 2 s);
/// - `p2` B fails, A compensated: COMPENSATED after 5 s, compensation 2 s (A 1 s, B 1 s);
/// - `p3` A fails: FAILED after 4 s (A 4 s);
/// - `p4` running, only A started, by service `other`;
/// - `s1` SHIP COMPLETED in 10 s.
fn stats_fixture() -> Vec<IncomingEvent> {
    use SagaStatus as S;
    use StepStatus::*;
    let p1 = Saga::new("p1", "PAY")
        .ev("A", Started, t(0), "order", Some(S::Started))
        .ev("A", Succeeded, t(1), "order", None)
        .ev("B", Started, t(1), "payment", None)
        .ev("B", Succeeded, t(3), "payment", Some(S::Completed));
    let p2 = Saga::new("p2", "PAY")
        .ev("A", Started, t(100), "order", None)
        .ev("A", Succeeded, t(101), "order", None)
        .ev("B", Started, t(101), "payment", None)
        .ev("B", Failed, t(102), "payment", None)
        .ev("A", Compensating, t(103), "order", None)
        .ev("A", Compensated, t(105), "order", Some(S::Compensated));
    let p3 = Saga::new("p3", "PAY")
        .ev("A", Started, t(200), "order", None)
        .ev("A", Failed, t(204), "order", Some(S::Failed));
    let p4 = Saga::new("p4", "PAY").ev("A", Started, t(300), "other", None);
    let s1 = Saga::new("s1", "SHIP")
        .ev("PACK", Started, t(400), "ship", None)
        .ev("PACK", Succeeded, t(410), "ship", Some(S::Completed));
    all(vec![p1, p2, p3, p4, s1])
}

// ---------------------------------------------------------------------------------------
// Statistics and saga types
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn stats_count_by_status_and_type_with_rates_and_duration_percentiles() {
    let app = spawn_app().await;
    app.seed(stats_fixture()).await;

    let s = app.ok_json("/api/v1/stats").await;
    assert_eq!(s["total"], 5);
    assert_eq!(s["byStatus"]["COMPLETED"], 2);
    assert_eq!(s["byStatus"]["COMPENSATED"], 1);
    assert_eq!(s["byStatus"]["FAILED"], 1);
    assert_eq!(s["byStatus"]["STARTED"], 1);
    assert_eq!(s["rates"]["finished"], 4);
    assert_eq!(s["rates"]["success"], 0.5);

    let types: Vec<&str> = s["byType"]
        .as_array()
        .expect("byType")
        .iter()
        .filter_map(|t| t["sagaType"].as_str())
        .collect();
    assert_eq!(types, ["PAY", "SHIP"]);
    let pay = &s["byType"][0];
    assert_eq!(pay["total"], 4);
    // Finished PAY sagas took 3, 4 and 5 s: percentile_cont interpolates.
    assert_eq!(pay["durationMs"]["p50"], 4000.0);
    assert_eq!(pay["durationMs"]["p95"], 4900.0);
    assert_eq!(pay["durationMs"]["p99"], 4980.0);
    let third = 1.0 / 3.0;
    for rate in ["success", "failure", "compensation"] {
        assert_eq!(pay["rates"][rate].as_f64(), Some(third), "{rate}: {pay}");
    }
    assert_eq!(pay["compensation"]["started"], 1);
    assert_eq!(pay["compensation"]["succeeded"], 1);
    assert_eq!(pay["compensation"]["successRate"], 1.0);
    assert_eq!(pay["compensation"]["durationMs"]["p50"], 2000.0);
    assert_eq!(s["byType"][1]["durationMs"]["p50"], 10000.0);
}

#[tokio::test]
async fn stats_report_per_step_durations_and_the_most_failing_steps() {
    let app = spawn_app().await;
    app.seed(stats_fixture()).await;

    let s = app.ok_json("/api/v1/stats?top=2").await;
    let top: Vec<(String, String, i64)> = s["topFailingSteps"]
        .as_array()
        .expect("topFailingSteps")
        .iter()
        .map(|x| {
            (
                x["sagaType"].as_str().unwrap_or_default().to_owned(),
                x["step"].as_str().unwrap_or_default().to_owned(),
                x["failures"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    // Both failed once; A was run by more sagas, so it comes first.
    assert_eq!(
        top,
        [
            ("PAY".to_owned(), "A".to_owned(), 1),
            ("PAY".to_owned(), "B".to_owned(), 1)
        ]
    );
    let steps: BTreeMap<String, &Value> = s["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|x| {
            (
                format!(
                    "{}/{}",
                    x["sagaType"].as_str().unwrap_or_default(),
                    x["step"].as_str().unwrap_or_default()
                ),
                x,
            )
        })
        .collect();
    let a = steps["PAY/A"];
    assert_eq!(
        (a["sagas"].as_i64(), a["failures"].as_i64()),
        (Some(4), Some(1))
    );
    assert_eq!(a["failureRate"], 0.25);
    // A ended in p1, p2 (1 s) and p3 (4 s); p4's A is still running.
    assert_eq!(a["durationMs"]["p50"], 1000.0);
    let b = steps["PAY/B"];
    assert_eq!(b["durationMs"]["p50"], 1500.0);
    assert_eq!(steps["SHIP/PACK"]["durationMs"]["p99"], 10000.0);
    assert_eq!(steps["SHIP/PACK"]["failures"], 0);
}

#[tokio::test]
async fn stats_honour_saga_type_service_and_start_time_filters() {
    let app = spawn_app().await;
    app.seed(stats_fixture()).await;

    let s = app.ok_json("/api/v1/stats?sagaType=SHIP").await;
    assert_eq!(s["total"], 1);
    assert_eq!(s["filters"]["sagaType"], "SHIP");
    assert_eq!(s["topFailingSteps"].as_array().map(Vec::len), Some(0));

    // `payment` took part in p1 and p2 only.
    let s = app.ok_json("/api/v1/stats?service=payment").await;
    assert_eq!(s["total"], 2);
    assert_eq!(s["byStatus"]["COMPLETED"], 1);
    assert_eq!(s["byStatus"]["COMPENSATED"], 1);

    // [t(100), t(300)) holds p2 and p3.
    let s = app
        .ok_json(
            "/api/v1/stats?startedAfter=2026-11-01T10:01:40Z&startedBefore=2026-11-01T10:05:00Z",
        )
        .await;
    assert_eq!(s["total"], 2);
    assert_eq!(s["durationMs"]["p50"], 4500.0);

    // Nothing matches: zero counts, no rates.
    let s = app.ok_json("/api/v1/stats?sagaType=NOPE").await;
    assert_eq!(s["total"], 0);
    assert_eq!(s["rates"]["success"], Value::Null);
    assert_eq!(s["durationMs"], Value::Null);
}

#[tokio::test]
async fn stats_and_saga_types_reject_bad_parameters_by_name() {
    let app = spawn_app().await;
    assert_eq!(
        app.rejected_params("/api/v1/stats?sagaType=pay&top=1000&startedAfter=x&stuck=true")
            .await,
        ["sagaType", "top", "startedAfter", "stuck"]
    );
    assert_eq!(app.rejected_params("/api/v1/saga-types?x=1").await, ["x"]);
}

#[tokio::test]
async fn a_statistics_query_past_its_time_limit_is_a_503_not_a_hung_request() {
    let app = spawn_app_with(300).await;
    app.seed(stats_fixture()).await;
    // Another session holds the rollups (as a long maintenance statement would): the
    // statistics query waits on the lock until its statement timeout cancels it.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query("lock table stats_hourly, stats_daily in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    // The lock is only released after the answer, so any answer at all means the timeout
    // fired.
    let (status, body) = app.get_json("/api/v1/stats").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["type"], "https://saga-tracker.dev/problems/query-timeout",
        "{body}"
    );
    assert!(
        !body.to_string().contains("stats_hourly"),
        "no SQL leaks: {body}"
    );
    blocker.rollback().await.expect("rollback");
    // The lock is gone: the same request answers again.
    let s = app.ok_json("/api/v1/stats").await;
    assert_eq!(s["total"], 5);
}

#[tokio::test]
async fn saga_types_lists_every_type_with_counts_by_status() {
    let app = spawn_app().await;
    app.seed(stats_fixture()).await;

    let body = app.ok_json("/api/v1/saga-types").await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["sagaType"], "PAY");
    assert_eq!(items[0]["total"], 4);
    assert_eq!(items[0]["byStatus"]["FAILED"], 1);
    assert_eq!(items[0]["byStatus"]["IN_PROGRESS"], 0);
    assert_eq!(items[1]["sagaType"], "SHIP");
    assert_eq!(items[1]["byStatus"]["COMPLETED"], 1);
}

// ---------------------------------------------------------------------------------------
// Stuck detection
// ---------------------------------------------------------------------------------------

/// Sagas relative to the real clock (stuck is evaluated at request time):
///
/// - `ord-stuck` ORDER_CREATION, last event 400 s ago > its 300 s threshold: `no_progress`;
/// - `ship-fine` `<ty>`, last event 400 s ago < the 900 s default: not stuck;
/// - `pay-failed` `<ty>` FAILED 2000 s ago, never compensated: `failed_not_compensated`;
/// - `pay-comp` `<ty>` compensating since 4000 s ago: `compensation_not_finished`;
/// - `done` `<ty>` COMPLETED long ago: never stuck.
fn stuck_fixture(ty: &str) -> Vec<IncomingEvent> {
    use SagaStatus as S;
    use StepStatus::*;
    let ago = |s: i64| Utc::now() - Duration::seconds(s);
    all(vec![
        Saga::new("ord-stuck", "ORDER_CREATION")
            .ev("A", Started, ago(500), "order", None)
            .ev("A", Succeeded, ago(400), "order", None),
        Saga::new("ship-fine", ty)
            .ev("A", Started, ago(500), "ship", None)
            .ev("A", Succeeded, ago(400), "ship", None),
        Saga::new("pay-failed", ty)
            .ev("A", Started, ago(2100), "pay", None)
            .ev("A", Failed, ago(2000), "pay", Some(S::Failed)),
        Saga::new("pay-comp", ty)
            .ev("A", Started, ago(5000), "pay", None)
            .ev("B", Failed, ago(4500), "pay", None)
            .ev("A", Compensating, ago(4000), "pay", None),
        Saga::new("done", ty)
            .ev("A", Started, ago(90_000), "pay", None)
            .ev("A", Succeeded, ago(89_000), "pay", Some(S::Completed)),
    ])
}

#[tokio::test]
async fn stuck_sagas_are_searchable_and_say_why_in_the_detail() {
    let app = spawn_app().await;
    app.seed(stuck_fixture("STUCK_SEARCH")).await;

    let mut stuck = app.search_ids("stuck=true").await;
    stuck.sort();
    assert_eq!(stuck, ["ord-stuck", "pay-comp", "pay-failed"]);
    let mut fine = app.search_ids("stuck=false").await;
    fine.sort();
    assert_eq!(fine, ["done", "ship-fine"]);
    assert_eq!(
        app.search_ids("stuck=true&sagaType=ORDER_CREATION").await,
        ["ord-stuck"]
    );

    let d = app.ok_json("/api/v1/sagas/ord-stuck").await;
    assert_eq!(d["stuck"]["reason"], "no_progress");
    assert_eq!(d["stuck"]["thresholdSecs"], 300);
    let since: DateTime<Utc> = d["stuck"]["since"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("since is a timestamp");
    let updated: DateTime<Utc> = d["updatedAt"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("updatedAt");
    assert_eq!(since - updated, Duration::seconds(300));
    assert_eq!(
        d["stuckSince"], d["stuck"]["since"],
        "the flat field agrees"
    );

    let d = app.ok_json("/api/v1/sagas/pay-failed").await;
    assert_eq!(d["stuck"]["reason"], "failed_not_compensated");
    assert_eq!(d["stuck"]["thresholdSecs"], 900);
    let d = app.ok_json("/api/v1/sagas/pay-comp").await;
    assert_eq!(d["stuck"]["reason"], "compensation_not_finished");
    assert_eq!(d["stuck"]["thresholdSecs"], 1800);
    for id in ["ship-fine", "done"] {
        let d = app.ok_json(&format!("/api/v1/sagas/{id}")).await;
        assert_eq!(d["stuck"], Value::Null, "{id}");
        assert_eq!(d["stuckSince"], Value::Null, "{id}");
    }
    // Search items carry the same verdict as the detail.
    let page = app
        .ok_json("/api/v1/sagas?stuck=true&sagaType=ORDER_CREATION")
        .await;
    assert_eq!(page["items"][0]["stuck"]["reason"], "no_progress");
    assert_eq!(
        app.rejected_params("/api/v1/sagas?stuck=1").await,
        ["stuck"]
    );
}

#[tokio::test]
async fn active_and_stuck_gauges_are_read_from_the_database_by_type_and_reason() {
    let app = spawn_app().await;
    let ty = "GAUGE_TYPE";
    app.seed(stuck_fixture(ty)).await;

    let mut gauges = DbGauges::default();
    background::refresh_gauges(&app.pool, &policy(), &mut gauges)
        .await
        .expect("gauges refresh");
    let text = app.metrics().await;
    // ship-fine and pay-comp run; pay-failed and done are finished.
    assert_eq!(
        sample(
            &text,
            &format!(r#"saga_tracker_sagas_active{{saga_type="{ty}"}}"#)
        ),
        Some(2.0),
        "{text}"
    );
    for (reason, n) in [
        ("failed_not_compensated", 1.0),
        ("compensation_not_finished", 1.0),
    ] {
        let series = format!(r#"saga_tracker_sagas_stuck{{saga_type="{ty}",reason="{reason}"}}"#);
        assert_eq!(sample(&text, &series), Some(n), "{series}\n{text}");
    }

    // The compensation finishes: its stuck series drops to 0 on the next refresh.
    let done = Saga::new("pay-comp", ty).ev(
        "A",
        StepStatus::Compensated,
        Utc::now(),
        "pay",
        Some(SagaStatus::Compensated),
    );
    let mut events = done.events;
    events[0].event.event_id = "pay-comp-done".to_owned();
    events[0].event.sequence = Some(10);
    app.seed(events).await;
    background::refresh_gauges(&app.pool, &policy(), &mut gauges)
        .await
        .expect("gauges refresh");
    let text = app.metrics().await;
    let series = format!(
        r#"saga_tracker_sagas_stuck{{saga_type="{ty}",reason="compensation_not_finished"}}"#
    );
    assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"saga_tracker_sagas_active{{saga_type="{ty}"}}"#)
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_background_jobs_refresh_gauges_and_apply_retention_until_shutdown() {
    use SagaStatus as S;
    use StepStatus::*;
    let app = spawn_app().await;
    let ty = "BACKGROUND_TYPE";
    let long_ago = Utc::now() - Duration::days(90);
    app.seed(all(vec![
        Saga::new("bg-running", ty).ev("A", Started, Utc::now(), "a", None),
        Saga::new("bg-old", ty)
            .ev("A", Started, long_ago, "a", None)
            .ev("A", Succeeded, long_ago, "a", Some(S::Completed)),
    ]))
    .await;

    let stop = CancellationToken::new();
    let stuck = saga_tracker::config::StuckSettings {
        default_threshold_secs: 900,
        thresholds: BTreeMap::new(),
        failed_uncompensated_secs: 900,
        compensation_timeout_secs: 1800,
        evaluate_interval_secs: 1,
    };
    let retention = RetentionSettings {
        enabled: true,
        max_age_days: 30,
        batch_size: 10,
        interval_secs: 1,
    };
    let gauges = tokio::spawn(background::run_gauges(
        app.pool.clone(),
        stuck,
        stop.clone(),
    ));
    let retain = tokio::spawn(background::run_retention(
        app.pool.clone(),
        retention,
        stop.clone(),
    ));

    let series = format!(r#"saga_tracker_sagas_active{{saga_type="{ty}"}}"#);
    let mut done = false;
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar("select count(*) from sagas")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        if left == 1 && sample(&app.metrics().await, &series) == Some(1.0) {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(done, "gauge refreshed and the old saga removed within 10 s");

    stop.cancel();
    for job in [gauges, retain] {
        tokio::time::timeout(std::time::Duration::from_secs(5), job)
            .await
            .expect("a background job stops when its token is cancelled")
            .expect("no panic");
    }
}

// ---------------------------------------------------------------------------------------
// Compensation view and sorting
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_detail_summarises_the_compensation_step_by_step() {
    use StepStatus::*;
    let app = spawn_app().await;
    let saga = Saga::new("comp-1", "ORDER_CREATION")
        .ev("STOCK", Started, t(0), "stock", None)
        .ev("STOCK", Succeeded, t(1), "stock", None)
        .ev("CREDIT", Succeeded, t(2), "credit", None)
        .ev("PAY", Failed, t(3), "pay", None)
        .ev("CREDIT", Compensating, t(4), "credit", None)
        .ev("CREDIT", Failed, t(5), "credit", None)
        .ev("STOCK", Compensating, t(6), "stock", None)
        .ev("STOCK", Compensated, t(9), "stock", None);
    app.seed(saga.events).await;

    let d = app.ok_json("/api/v1/sagas/comp-1").await;
    let c = &d["compensation"];
    assert_eq!(c["startedAt"], "2026-11-01T10:00:04Z", "{d}");
    let steps: Vec<(&str, Option<i64>, bool)> = c["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default(),
                s["durationMs"].as_i64(),
                s["failed"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [("CREDIT", None, true), ("STOCK", Some(3000), false)]
    );
    assert_eq!(c["failedSteps"], json!(["CREDIT"]));
    assert_eq!(c["steps"][1]["endedAt"], "2026-11-01T10:00:09Z");

    app.seed(
        Saga::new("plain", "ORDER_CREATION")
            .ev("A", Succeeded, t(0), "a", Some(SagaStatus::Completed))
            .events,
    )
    .await;
    let d = app.ok_json("/api/v1/sagas/plain").await;
    assert_eq!(d["compensation"], Value::Null);
}

#[tokio::test]
async fn sort_by_update_time_pages_with_its_own_cursor() {
    use StepStatus::*;
    let app = spawn_app().await;
    // Started in one order, last active in the reverse order.
    let mut events = Vec::new();
    for i in 0..5 {
        let id = format!("s{i}");
        events.extend(
            Saga::new(&id, "ORDER_CREATION")
                .ev("A", Started, t(i), "a", None)
                .ev("A", Succeeded, t(100 - i), "a", None)
                .events,
        );
    }
    app.seed(events).await;

    assert_eq!(
        app.search_ids("sort=startedAt").await,
        ["s4", "s3", "s2", "s1", "s0"]
    );
    let first = app.ok_json("/api/v1/sagas?sort=updatedAt&limit=2").await;
    assert_eq!(ids(&first), ["s0", "s1"]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let mut seen = ids(&first);
    let mut cursor = Some(cursor);
    while let Some(c) = cursor {
        let page = app
            .ok_json(&format!("/api/v1/sagas?sort=updatedAt&limit=2&cursor={c}"))
            .await;
        seen.extend(ids(&page));
        cursor = page["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4"]);

    // A cursor only works with the sort it came from.
    let c = first["nextCursor"].as_str().unwrap_or_default();
    assert_eq!(
        app.rejected_params(&format!("/api/v1/sagas?cursor={c}"))
            .await,
        ["cursor"]
    );
    assert_eq!(
        app.rejected_params("/api/v1/sagas?sort=createdAt").await,
        ["sort"]
    );
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_removes_old_finished_sagas_with_their_events_in_batches() {
    use SagaStatus as S;
    use StepStatus::*;
    let app = spawn_app().await;
    let ago = |days: i64| Utc::now() - Duration::days(days);
    let mut sagas = Vec::new();
    for i in 0..5 {
        let status = [S::Completed, S::Failed, S::Compensated][i % 3];
        sagas.push(
            Saga::new(&format!("old-{i}"), "RETAIN")
                .ev("A", Started, ago(41), "a", None)
                .ev("A", Succeeded, ago(40), "a", Some(status)),
        );
    }
    // Young and finished; old but still running: both stay.
    sagas.push(
        Saga::new("young", "RETAIN")
            .ev("A", Started, ago(11), "a", None)
            .ev("A", Succeeded, ago(10), "a", Some(S::Completed)),
    );
    sagas.push(Saga::new("old-running", "RETAIN").ev("A", Started, ago(60), "a", None));
    app.seed(all(sagas)).await;

    let settings = RetentionSettings {
        enabled: true,
        max_age_days: 30,
        batch_size: 2,
        interval_secs: 300,
    };
    let removed = background::retention_pass(&app.pool, &settings)
        .await
        .expect("retention pass");
    assert_eq!((removed.sagas, removed.events), (5, 10));

    let mut left: Vec<String> = sqlx::query_scalar("select saga_id from sagas")
        .fetch_all(&app.pool)
        .await
        .expect("sagas");
    left.sort();
    assert_eq!(left, ["old-running", "young"]);
    let events: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&app.pool)
        .await
        .expect("events");
    assert_eq!(events, 3);
    let (status, _) = app.get_json("/api/v1/sagas/old-0").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing left to do: a second pass is a no-op.
    let again = background::retention_pass(&app.pool, &settings)
        .await
        .expect("retention pass");
    assert_eq!(again.sagas, 0);

    let text = app.metrics().await;
    let deleted = sample(
        &text,
        r#"saga_tracker_retention_deleted_total{table="sagas"}"#,
    );
    assert!(deleted.is_some_and(|n| n >= 5.0), "{text}");
}

// ---------------------------------------------------------------------------------------
// Histograms and step failures
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn terminal_sagas_feed_duration_histograms_and_failed_steps_are_counted_once() {
    use StepStatus::*;
    let app = spawn_app().await;
    let ty = "HISTO_TYPE";
    let saga = Saga::new("h1", ty)
        .ev("RESERVE", Started, t(0), "stock", None)
        .ev("PAY", Failed, t(3), "pay", None)
        .ev("RESERVE", Compensating, t(4), "stock", None)
        .ev(
            "RESERVE",
            Compensated,
            t(90),
            "stock",
            Some(SagaStatus::Compensated),
        );
    let events = saga.events;
    app.seed(events.clone()).await;
    // A redelivery stores nothing new and counts nothing.
    app.seed(events).await;

    let text = app.metrics().await;
    let bucket = |name: &str, le: &str| {
        sample(
            &text,
            &format!(r#"{name}_bucket{{saga_type="{ty}",le="{le}"}}"#),
        )
    };
    // 90 s saga, 86 s compensation.
    assert_eq!(
        bucket("saga_tracker_saga_duration_seconds", "60"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        bucket("saga_tracker_saga_duration_seconds", "120"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        bucket("saga_tracker_compensation_duration_seconds", "120"),
        Some(1.0)
    );
    assert_eq!(
        bucket("saga_tracker_compensation_duration_seconds", "86400"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"saga_tracker_step_failures_total{{saga_type="{ty}",step="PAY"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_saga_that_fails_and_is_then_compensated_is_observed_once() {
    use StepStatus::*;
    let app = spawn_app().await;
    let ty = "HISTO_TWICE";
    let saga = Saga::new("h2", ty)
        .ev("A", Started, t(0), "a", None)
        .ev("A", Failed, t(10), "a", Some(SagaStatus::Failed))
        .ev("A", Compensating, t(20), "a", None)
        .ev("A", Compensated, t(30), "a", Some(SagaStatus::Compensated));
    let mut events = saga.events;
    let later = events.split_off(2);
    app.seed(events).await;
    app.seed(later).await;

    let text = app.metrics().await;
    let count = |name: &str| sample(&text, &format!(r#"{name}_count{{saga_type="{ty}"}}"#));
    assert_eq!(
        count("saga_tracker_saga_duration_seconds"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"saga_tracker_saga_duration_seconds_bucket{{saga_type="{ty}",le="10"}}"#)
        ),
        Some(1.0),
        "observed when it failed, after 10 s: {text}"
    );
    assert_eq!(
        count("saga_tracker_compensation_duration_seconds"),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------
// Benchmark (ignored): statistics latency on a generated data set
// ---------------------------------------------------------------------------------------

/// `cargo test -p saga-tracker --test insight -- --ignored --nocapture stats_latency`
///
/// Generates `STATS_BENCH_SAGAS` sagas (default 100 000) of 4 types with 4 events each
/// (`insert … select generate_series`, 8 % failed, half of those compensated), analyzes, then
/// times `/api/v1/stats`'s queries (`store::insight::stats`) unfiltered, filtered by type
/// (a quarter of the sagas) and by the last day (1/30), and the gauge query: best and
/// median of 5 warm runs.
#[tokio::test]
#[ignore = "benchmark: generates a large data set"]
async fn stats_latency_at_scale() {
    let n: i64 = common::env_or("STATS_BENCH_SAGAS", 100_000);
    let app = spawn_app().await;
    let started = Instant::now();
    sqlx::query(include_str!("bench_stats_seed.sql"))
        .bind(n)
        .execute(&app.pool)
        .await
        .expect("generate sagas");
    sqlx::query(
        "insert into saga_events (event_id, saga_id, saga_type, step, step_status, occurred_at, \
           received_at, service) \
         select s.saga_id || '-' || k, s.saga_id, s.saga_type, \
           (array['RESERVE', 'RESERVE', 'PAY', 'PAY'])[k], \
           case when k in (1, 3) then 'STARTED' \
                when k = 4 and s.status in ('FAILED', 'COMPENSATED') then 'FAILED' \
                else 'SUCCEEDED' end, \
           s.started_at + (k - 1) * (coalesce(s.duration_ms, 60000) / 3) * interval '1 millisecond', \
           s.started_at, 'svc-' || k \
         from sagas s cross join generate_series(1, 4) k",
    )
    .execute(&app.pool)
    .await
    .expect("generate events");
    sqlx::query("analyze")
        .execute(&app.pool)
        .await
        .expect("analyze");
    println!(
        "generated {n} sagas and {} events in {:.1?}",
        n * 4,
        started.elapsed()
    );
    // The data went in behind the ingest path's back: build the rollups from it, as
    // `migrate` does for a database that predates them.
    let t0 = Instant::now();
    let rebuilt = rollup::rebuild(&app.pool).await.expect("rebuild rollups");
    println!(
        "rollups rebuilt in {:.1?}: {} count rows, {} histogram rows",
        t0.elapsed(),
        rebuilt.count_rows,
        rebuilt.duration_rows
    );
    sqlx::query("analyze")
        .execute(&app.pool)
        .await
        .expect("analyze");

    let runs = 5;
    for (label, filter) in [
        ("stats, no filter", StatsFilter::default()),
        (
            "stats, sagaType=T1",
            StatsFilter {
                saga_type: Some("T1".to_owned()),
                ..StatsFilter::default()
            },
        ),
        (
            "stats, startedAfter=now-1d",
            StatsFilter {
                started_after: Some(Utc::now() - Duration::days(1)),
                ..StatsFilter::default()
            },
        ),
        (
            "stats, service=svc-2",
            StatsFilter {
                service: Some("svc-2".to_owned()),
                ..StatsFilter::default()
            },
        ),
        (
            "stats, 7-day window, sagaType=T1, service=svc-3",
            StatsFilter {
                saga_type: Some("T1".to_owned()),
                service: Some("svc-3".to_owned()),
                started_after: Some(Utc::now() - Duration::days(10)),
                started_before: Some(Utc::now() - Duration::days(3)),
            },
        ),
    ] {
        let timeout = std::time::Duration::from_secs(600);
        insight::stats(&app.pool, &filter, timeout)
            .await
            .expect("warm-up");
        let (best, median) = timed(runs, || async {
            let s = insight::stats(&app.pool, &filter, timeout)
                .await
                .expect("stats");
            assert!(s.overall.total > 0);
        })
        .await;
        println!("{label}: best {best:.1?}, median {median:.1?} over {runs} runs ({n} sagas)");
    }
    let (best, median) = timed(runs, || async {
        let types = insight::counts_by_type(&app.pool).await.expect("types");
        assert!(!types.is_empty());
    })
    .await;
    println!("saga types: best {best:.1?}, median {median:.1?}");
    let (best, median) = timed(runs, || async {
        insight::gauge_counts(&app.pool, &policy(), Utc::now())
            .await
            .expect("gauges");
    })
    .await;
    println!("gauge counts: best {best:.1?}, median {median:.1?}");
}

/// Best and median wall time of `runs` calls of `f`.
async fn timed<F, Fut>(runs: usize, mut f: F) -> (std::time::Duration, std::time::Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f().await;
        times.push(t0.elapsed());
    }
    times.sort();
    (times[0], times[runs / 2])
}
