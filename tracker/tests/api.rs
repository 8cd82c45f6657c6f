//! The REST API against a real PostgreSQL: one fresh database per test, seeded through the
//! real write path (`store::write::write_batch`), the real router served on `127.0.0.1:0`,
//! called over HTTP with reqwest.
//!
//! Set `TEST_DATABASE_URL` to point at another server (default
//! `postgres://postgres@127.0.0.1:5432`, trust auth).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use saga_tracker::api;
use saga_tracker::store::write::{write_batch, IncomingEvent, KafkaSource};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

mod common;

use common::{server_options, ServedApi, TestDb};

struct TestApp {
    api: ServedApi,
    pool: PgPool,
    // Declared last so it is dropped after the pool and the server.
    _db: Option<TestDb>,
}

/// A migrated, empty database and the API serving it, with the consumer disabled.
async fn spawn_app() -> TestApp {
    spawn_app_with(false).await
}

async fn spawn_app_with(consumer_enabled: bool) -> TestApp {
    let (db, pool) = common::migrated_test_db("saga_api").await;
    serve(pool, consumer_enabled, Some(db)).await
}

async fn serve(pool: PgPool, consumer_enabled: bool, db: Option<TestDb>) -> TestApp {
    TestApp {
        api: common::serve_api(pool.clone(), common::settings_with(&[]), consumer_enabled).await,
        pool,
        _db: db,
    }
}

impl TestApp {
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.api
            .http
            .get(format!("{}{path_and_query}", self.api.base))
            .send()
            .await
            .expect("request is answered")
    }

    /// Status and JSON body (`Value::Null` when the body is not JSON).
    async fn get_json(&self, path_and_query: &str) -> (StatusCode, Value) {
        let r = self.get(path_and_query).await;
        let status = r.status();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The saga ids of a search, asserting it succeeded.
    async fn search_ids(&self, query: &str) -> Vec<String> {
        let (status, body) = self.get_json(&format!("/api/v1/sagas?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        ids(&body)
    }

    /// A 400 problem for `query`, returning the names in `invalidParams`.
    async fn rejected_params(&self, query: &str) -> Vec<String> {
        let r = self.get(&format!("/api/v1/sagas?{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(content_type(&r), "application/problem+json", "{query}");
        let body: Value = r.json().await.expect("problem body");
        assert_eq!(
            body["type"], "https://saga-tracker.dev/problems/invalid-parameter",
            "{body}"
        );
        assert_eq!(body["status"], 400);
        body["invalidParams"]
            .as_array()
            .expect("invalidParams")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn seed(&self, events: Vec<IncomingEvent>) {
        write_batch(&self.pool, &events)
            .await
            .expect("write_batch commits");
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

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// 2026-11-01T10:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::seconds(secs)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A v1 event; adjust the optional fields with the `Ev` helpers.
fn ev(
    event_id: &str,
    saga_id: &str,
    saga_type: &str,
    step: &str,
    step_status: StepStatus,
    at: DateTime<Utc>,
    service: &str,
) -> Ev {
    Ev(IncomingEvent {
        event: SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: event_id.to_owned(),
            saga_id: saga_id.to_owned(),
            saga_type: saga_type.to_owned(),
            step: step.to_owned(),
            step_status,
            saga_status: None,
            occurred_at: at,
            service: service.to_owned(),
            sequence: None,
            business_key: None,
            trace_id: None,
            span_id: None,
            error: None,
            metadata: None,
        },
        received_at: at + chrono::Duration::milliseconds(50),
        source: None,
    })
}

struct Ev(IncomingEvent);

impl Ev {
    fn saga(mut self, s: SagaStatus) -> Self {
        self.0.event.saga_status = Some(s);
        self
    }
    fn seq(mut self, n: i64) -> Self {
        self.0.event.sequence = Some(n);
        self
    }
    fn key(mut self, k: &str) -> Self {
        self.0.event.business_key = Some(k.to_owned());
        self
    }
    fn trace(mut self, trace: &str, span: &str) -> Self {
        self.0.event.trace_id = Some(trace.to_owned());
        self.0.event.span_id = Some(span.to_owned());
        self
    }
    fn error(mut self, code: &str, message: &str) -> Self {
        self.0.event.error = Some(StepError {
            code: code.to_owned(),
            message: message.to_owned(),
        });
        self
    }
    fn meta(mut self, m: Value) -> Self {
        let Value::Object(m) = m else {
            panic!("metadata must be an object")
        };
        self.0.event.metadata = Some(m);
        self
    }
    fn kafka(mut self, partition: i32, offset: i64) -> Self {
        self.0.source = Some(KafkaSource {
            topic: "saga.tracker".to_owned(),
            partition,
            offset,
        });
        self
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A completed order, written in two batches out of order (with a redelivered duplicate).
fn order_1001() -> (Vec<IncomingEvent>, Vec<IncomingEvent>) {
    let id = "order-1001";
    let e1 = ev(
        "a1",
        id,
        "ORDER_CREATION",
        "ORDER_CREATED",
        StepStatus::Started,
        t(0),
        "order",
    )
    .seq(1)
    .saga(SagaStatus::Started)
    .key("8812")
    .trace(TRACE, "00f067aa0ba902b7")
    .meta(json!({"region": "eu", "amount": 12, "vip": true}))
    .kafka(0, 10);
    let e2 = ev(
        "a2",
        id,
        "ORDER_CREATION",
        "STOCK_RESERVED",
        StepStatus::Succeeded,
        t(1),
        "stock",
    )
    .seq(2)
    .kafka(0, 11);
    let e3 = ev(
        "a3",
        id,
        "ORDER_CREATION",
        "PAYMENT_CHARGED",
        StepStatus::Succeeded,
        t(3),
        "payment",
    )
    .seq(3)
    .kafka(1, 7);
    // No Kafka position: e.g. written by a replay tool.
    let e4 = ev(
        "a4",
        id,
        "ORDER_CREATION",
        "ORDER_CONFIRMED",
        StepStatus::Succeeded,
        t(4),
        "order",
    )
    .seq(4)
    .saga(SagaStatus::Completed);
    let first = vec![e3.0.clone(), e1.0];
    let second = vec![e4.0, e2.0, e3.0];
    (first, second)
}

/// A payment failure followed by a compensated stock reservation.
fn order_1002() -> Vec<IncomingEvent> {
    let id = "order-1002";
    let t = |s: i64| t(60 + s);
    vec![
        ev(
            "b1",
            id,
            "ORDER_CREATION",
            "ORDER_CREATED",
            StepStatus::Started,
            t(0),
            "order",
        )
        .key("8813")
        .meta(json!({"region": "us", "amount": "12"}))
        .0,
        ev(
            "b2",
            id,
            "ORDER_CREATION",
            "STOCK_RESERVED",
            StepStatus::Succeeded,
            t(1),
            "stock",
        )
        .0,
        ev(
            "b3",
            id,
            "ORDER_CREATION",
            "PAYMENT_CHARGED",
            StepStatus::Failed,
            t(2),
            "payment",
        )
        .saga(SagaStatus::Failed)
        .error("DECLINED", "card declined")
        .0,
        ev(
            "b4",
            id,
            "ORDER_CREATION",
            "STOCK_RESERVED",
            StepStatus::Compensating,
            t(3),
            "stock",
        )
        .saga(SagaStatus::Compensating)
        .0,
        ev(
            "b5",
            id,
            "ORDER_CREATION",
            "STOCK_RESERVED",
            StepStatus::Compensated,
            t(5),
            "stock",
        )
        .saga(SagaStatus::Compensated)
        .0,
    ]
}

/// A shipment still running.
fn ship_2001() -> Vec<IncomingEvent> {
    let id = "ship-2001";
    let t = |s: i64| t(120 + s);
    vec![
        ev(
            "c1",
            id,
            "SHIPPING",
            "LABEL_PRINTED",
            StepStatus::Started,
            t(0),
            "shipping",
        )
        .meta(json!({"region": "eu", "carrier": "dhl"}))
        .0,
        ev(
            "c2",
            id,
            "SHIPPING",
            "LABEL_PRINTED",
            StepStatus::Succeeded,
            t(2),
            "shipping",
        )
        .0,
    ]
}

/// Three sagas: `ship-2001` (newest, running), `order-1002` (compensated), `order-1001`
/// (oldest, completed).
async fn seed_three_sagas(app: &TestApp) {
    let (first, second) = order_1001();
    app.seed(first).await;
    app.seed(second).await;
    app.seed(order_1002()).await;
    app.seed(ship_2001()).await;
}

// ---------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn searching_without_filters_lists_every_saga_newest_first() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    let (status, page) = app.get_json("/api/v1/sagas").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), ["ship-2001", "order-1002", "order-1001"]);
    assert_eq!(page["nextCursor"], Value::Null);

    let order = &page["items"][2];
    assert_eq!(order["sagaType"], "ORDER_CREATION");
    assert_eq!(order["status"], "COMPLETED");
    assert_eq!(order["startedAt"], "2026-11-01T10:00:00Z");
    assert_eq!(order["durationMs"], 4000);
    assert_eq!(order["eventCount"], 4);
    assert_eq!(order["businessKey"], "8812");
    assert_eq!(order["traceId"], TRACE);
    assert_eq!(
        order["metadata"],
        json!({"region": "eu", "amount": 12, "vip": true})
    );
    assert_eq!(order["services"], json!(["order", "payment", "stock"]));
    assert_eq!(order["failure"], Value::Null);

    let failed = &page["items"][1];
    assert_eq!(failed["status"], "COMPENSATED");
    assert_eq!(failed["failedStep"], "PAYMENT_CHARGED");
    assert_eq!(
        failed["failure"],
        json!({"code": "DECLINED", "message": "card declined"})
    );
    assert_eq!(failed["compensationDurationMs"], 2000);
}

#[tokio::test]
async fn search_filters_by_saga_type_business_key_and_trace_id() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    assert_eq!(
        app.search_ids("sagaType=ORDER_CREATION").await,
        ["order-1002", "order-1001"]
    );
    assert_eq!(app.search_ids("sagaType=SHIPPING").await, ["ship-2001"]);
    assert_eq!(app.search_ids("sagaType=NOPE").await, Vec::<String>::new());
    assert_eq!(app.search_ids("businessKey=8813").await, ["order-1002"]);
    // Trace ids are case-insensitive on input.
    let upper = TRACE.to_ascii_uppercase();
    assert_eq!(
        app.search_ids(&format!("traceId={upper}")).await,
        ["order-1001"]
    );
    assert_eq!(
        app.search_ids("sagaType=ORDER_CREATION&businessKey=8812")
            .await,
        ["order-1001"]
    );
}

#[tokio::test]
async fn status_is_repeatable_and_means_any_of() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    assert_eq!(app.search_ids("status=COMPLETED").await, ["order-1001"]);
    assert_eq!(
        app.search_ids("status=COMPLETED&status=IN_PROGRESS").await,
        ["ship-2001", "order-1001"]
    );
    assert_eq!(
        app.search_ids("status=COMPENSATED,COMPLETED").await,
        ["order-1002", "order-1001"]
    );
    assert_eq!(app.search_ids("status=FAILED").await, Vec::<String>::new());
}

#[tokio::test]
async fn search_filters_by_start_and_update_time_ranges() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    // startedAfter is inclusive, startedBefore exclusive.
    assert_eq!(
        app.search_ids(&format!("startedAfter={}", rfc3339(t(60))))
            .await,
        ["ship-2001", "order-1002"]
    );
    assert_eq!(
        app.search_ids(&format!("startedBefore={}", rfc3339(t(60))))
            .await,
        ["order-1001"]
    );
    assert_eq!(
        app.search_ids(&format!(
            "startedAfter={}&startedBefore={}",
            rfc3339(t(30)),
            rfc3339(t(90))
        ))
        .await,
        ["order-1002"]
    );
    // The same instant with an explicit offset, `+` percent-encoded.
    assert_eq!(
        app.search_ids("startedAfter=2026-11-01T11:01:00%2B01:00")
            .await,
        ["ship-2001", "order-1002"]
    );
    // updatedAt is the newest event: order-1002's is t(65).
    assert_eq!(
        app.search_ids(&format!(
            "updatedAfter={}&updatedBefore={}",
            rfc3339(t(65)),
            rfc3339(t(66))
        ))
        .await,
        ["order-1002"]
    );
}

#[tokio::test]
async fn search_filters_by_step_service_and_minimum_duration() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    assert_eq!(
        app.search_ids("step=PAYMENT_CHARGED").await,
        ["order-1002", "order-1001"]
    );
    assert_eq!(app.search_ids("step=LABEL_PRINTED").await, ["ship-2001"]);
    assert_eq!(app.search_ids("service=shipping").await, ["ship-2001"]);
    assert_eq!(
        app.search_ids("service=stock").await,
        ["order-1002", "order-1001"]
    );
    // order-1001 took 4 s, order-1002 5 s; the running shipment has no duration.
    assert_eq!(app.search_ids("minDurationMs=4500").await, ["order-1002"]);
    assert_eq!(
        app.search_ids("minDurationMs=0").await,
        ["order-1002", "order-1001"]
    );
}

#[tokio::test]
async fn metadata_filters_match_strings_and_json_scalars_and_combine_with_and() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    assert_eq!(
        app.search_ids("meta.region=eu").await,
        ["ship-2001", "order-1001"]
    );
    assert_eq!(
        app.search_ids("meta.region=eu&meta.carrier=dhl").await,
        ["ship-2001"]
    );
    // order-1001 stores the number 12, order-1002 the string "12": both match.
    assert_eq!(
        app.search_ids("meta.amount=12").await,
        ["order-1002", "order-1001"]
    );
    assert_eq!(
        app.search_ids("meta.amount=12&meta.region=us").await,
        ["order-1002"]
    );
    assert_eq!(app.search_ids("meta.vip=true").await, ["order-1001"]);
    assert_eq!(
        app.search_ids("meta.region=mars").await,
        Vec::<String>::new()
    );
    // Values are URL-decoded and compared exactly.
    assert_eq!(app.search_ids("meta.region=EU").await, Vec::<String>::new());
}

#[tokio::test]
async fn keyset_pagination_visits_every_saga_once_in_a_stable_order() {
    let app = spawn_app().await;
    // 23 sagas; every three share a start time, so the saga id has to break ties.
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    for i in 0..23_i64 {
        let id = format!("bulk-{i:02}");
        let at = t(1000 + (i / 3) * 60);
        batch.push(
            ev(
                &format!("bulk-ev-{i}"),
                &id,
                "BULK",
                "ONLY",
                StepStatus::Started,
                at,
                "bulk",
            )
            .0,
        );
        expected.push((at, id));
    }
    app.seed(batch).await;
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => "sagaType=BULK&limit=5".to_owned(),
            Some(c) => format!("sagaType=BULK&limit=5&cursor={c}"),
        };
        let (status, page) = app.get_json(&format!("/api/v1/sagas?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        // The same cursor always gives the same page.
        let (_, again) = app.get_json(&format!("/api/v1/sagas?{query}")).await;
        assert_eq!(ids(&page), ids(&again));
        seen.extend(ids(&page));
        pages += 1;
        if pages == 1 {
            // A saga that starts later than everything already listed must not shift the
            // pages still to come.
            app.seed(vec![
                ev(
                    "late-ev",
                    "bulk-new",
                    "BULK",
                    "ONLY",
                    StepStatus::Started,
                    t(99_999),
                    "bulk",
                )
                .0,
            ])
            .await;
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, expected, "no duplicates, no gaps, listing order");

    // A page that exactly fits has no next cursor.
    let (_, all) = app.get_json("/api/v1/sagas?sagaType=BULK&limit=24").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(24));
    assert_eq!(all["nextCursor"], Value::Null);
}

#[tokio::test]
async fn limit_outside_1_to_500_is_a_400_naming_limit() {
    let app = spawn_app().await;
    assert_eq!(app.rejected_params("limit=0").await, ["limit"]);
    assert_eq!(app.rejected_params("limit=501").await, ["limit"]);
    assert_eq!(app.rejected_params("limit=many").await, ["limit"]);
    assert_eq!(app.search_ids("limit=1").await, Vec::<String>::new());
    assert_eq!(app.search_ids("limit=500").await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_status_time_and_cursor_values_are_400s_naming_the_field() {
    let app = spawn_app().await;
    assert_eq!(app.rejected_params("status=DONE").await, ["status"]);
    assert_eq!(app.rejected_params("status=").await, ["status"]);
    assert_eq!(
        app.rejected_params("startedAfter=yesterday").await,
        ["startedAfter"]
    );
    assert_eq!(
        app.rejected_params("startedBefore=2026-13-01T00:00:00Z")
            .await,
        ["startedBefore"]
    );
    assert_eq!(
        app.rejected_params("updatedAfter=1700000000").await,
        ["updatedAfter"]
    );
    assert_eq!(app.rejected_params("cursor=not-a-cursor").await, ["cursor"]);
    assert_eq!(
        app.rejected_params("sagaType=lowercase").await,
        ["sagaType"]
    );
    assert_eq!(app.rejected_params("traceId=xyz").await, ["traceId"]);
    assert_eq!(
        app.rejected_params("minDurationMs=-5").await,
        ["minDurationMs"]
    );
    assert_eq!(
        app.rejected_params("businessKey=a&businessKey=b").await,
        ["businessKey"]
    );
    // Every problem is reported at once.
    assert_eq!(
        app.rejected_params("status=DONE&limit=0&cursor=%%%").await,
        ["status", "limit", "cursor"]
    );
}

#[tokio::test]
async fn unknown_parameters_are_rejected() {
    let app = spawn_app().await;
    assert_eq!(app.rejected_params("sagatype=ORDER").await, ["sagatype"]);
    assert_eq!(app.rejected_params("page=2").await, ["page"]);
    assert_eq!(app.rejected_params("meta.=x").await, ["meta."]);
}

#[tokio::test]
async fn database_errors_are_opaque_500_problems() {
    let app = spawn_app().await;
    sqlx::query("drop table sagas cascade")
        .execute(&app.pool)
        .await
        .expect("drop table");
    let r = app.get("/api/v1/sagas?sagaType=X").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(content_type(&r), "application/problem+json");
    let text = r.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["type"], "https://saga-tracker.dev/problems/internal");
    for leak in ["sagas", "relation", "select", "postgres"] {
        assert!(!text.to_lowercase().contains(leak), "{leak} leaked: {text}");
    }
}

// ---------------------------------------------------------------------------------------
// One saga
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn saga_detail_shows_the_summary_and_the_step_timeline() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    let (status, saga) = app.get_json("/api/v1/sagas/order-1002").await;
    assert_eq!(status, StatusCode::OK, "{saga}");
    assert_eq!(saga["sagaId"], "order-1002");
    assert_eq!(saga["status"], "COMPENSATED");
    assert_eq!(saga["eventCount"], 5);

    let steps = saga["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        ["ORDER_CREATED", "STOCK_RESERVED", "PAYMENT_CHARGED"]
    );

    let stock = &steps[1];
    assert_eq!(stock["status"], "COMPENSATED");
    assert_eq!(stock["service"], "stock");
    assert_eq!(stock["eventCount"], 3);
    assert_eq!(
        stock["compensation"],
        json!({
            "startedAt": "2026-11-01T10:01:03Z",
            "endedAt": "2026-11-01T10:01:05Z",
            "durationMs": 2000,
            "failed": false,
        })
    );
    let payment = &steps[2];
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(
        payment["error"],
        json!({"code": "DECLINED", "message": "card declined"})
    );
    assert_eq!(payment["compensation"], Value::Null);

    // Ids with reserved characters work when percent-encoded.
    app.seed(vec![
        ev(
            "s1",
            "tenant/1 #2",
            "ODD",
            "X",
            StepStatus::Started,
            t(5),
            "svc",
        )
        .0,
    ])
    .await;
    let (status, odd) = app.get_json("/api/v1/sagas/tenant%2F1%20%232").await;
    assert_eq!(status, StatusCode::OK, "{odd}");
    assert_eq!(odd["sagaId"], "tenant/1 #2");
}

#[tokio::test]
async fn saga_events_come_back_in_saga_order_with_their_kafka_position() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;

    let (status, body) = app.get_json("/api/v1/sagas/order-1001/events").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sagaId"], "order-1001");
    let events = body["items"].as_array().expect("items");
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventId"].as_str())
        .collect();
    assert_eq!(ids, ["a1", "a2", "a3", "a4"], "written a3,a1 then a4,a2,a3");

    let first = &events[0];
    assert_eq!(first["step"], "ORDER_CREATED");
    assert_eq!(first["stepStatus"], "STARTED");
    assert_eq!(first["sagaStatus"], "STARTED");
    assert_eq!(first["service"], "order");
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["occurredAt"], "2026-11-01T10:00:00Z");
    assert_eq!(first["receivedAt"], "2026-11-01T10:00:00.050Z");
    assert_eq!(first["traceId"], TRACE);
    assert_eq!(first["spanId"], "00f067aa0ba902b7");
    assert_eq!(first["metadata"]["region"], "eu");
    assert_eq!(
        first["kafka"],
        json!({"topic": "saga.tracker", "partition": 0, "offset": 10})
    );
    assert_eq!(events[2]["kafka"]["partition"], 1);
    assert_eq!(events[3]["kafka"], Value::Null);
    assert_eq!(events[3]["sagaStatus"], "COMPLETED");

    let (_, failed) = app.get_json("/api/v1/sagas/order-1002/events").await;
    assert_eq!(
        failed["items"][2]["error"],
        json!({"code": "DECLINED", "message": "card declined"})
    );
}

#[tokio::test]
async fn an_unknown_saga_is_a_404_problem() {
    let app = spawn_app().await;
    for path in ["/api/v1/sagas/nope", "/api/v1/sagas/nope/events"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(content_type(&r), "application/problem+json");
        let body: Value = r.json().await.expect("problem");
        assert_eq!(
            body["type"],
            "https://saga-tracker.dev/problems/saga-not-found"
        );
        assert_eq!(body["title"], "Saga not found");
        assert_eq!(body["status"], 404);
        assert!(body["detail"].as_str().unwrap_or_default().contains("nope"));
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    let r = app.get("/api/v2/sagas").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(content_type(&r), "application/problem+json");
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["type"], "https://saga-tracker.dev/problems/not-found");

    let r = app
        .api
        .http
        .delete(format!("{}/api/v1/sagas/order-1", app.api.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(content_type(&r), "application/problem+json");
    let body: Value = r.json().await.expect("problem");
    assert_eq!(
        body["type"],
        "https://saga-tracker.dev/problems/method-not-allowed"
    );
}

// ---------------------------------------------------------------------------------------
// Probes, metrics, documentation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_is_always_ok() {
    let app = spawn_app_with(true).await;
    // Even with the consumer enabled and not running: liveness does not look at it.
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_is_ready_with_a_database_and_no_consumer() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["consumer"]["detail"], "disabled");
    // Without `database.read_url` readiness is what it always was: no replica check.
    assert!(
        body["checks"].get("read_database").is_none(),
        "a read_database check without a read replica: {body}"
    );
}

#[tokio::test]
async fn readyz_follows_the_consumer_when_it_is_enabled() {
    let app = spawn_app_with(true).await;

    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["consumer"]["status"], "fail");
    assert_eq!(
        body["checks"]["consumer"]["detail"],
        "consumer loop is not running"
    );

    app.api.consumer.set_running(true);
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "never polled: {body}"
    );

    app.api.consumer.mark_polled();
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.api.consumer.set_db_failing(true);
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["consumer"]["status"], "fail");
}

#[tokio::test]
async fn readyz_is_unready_when_the_database_is_unreachable() {
    // Nothing listens on port 1; the pool is lazy so the app starts anyway.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(server_options().port(1).database("none"));
    let app = serve(pool, false, None).await;

    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness ignores the database: {body}"
    );

    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "fail");
    assert_eq!(body["checks"]["consumer"]["status"], "ok");

    // And a query that needs the database is a 503 problem, not a 500.
    let r = app.get("/api/v1/sagas").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("problem");
    assert_eq!(
        body["type"],
        "https://saga-tracker.dev/problems/unavailable"
    );
}

#[tokio::test]
async fn openapi_json_documents_every_route_and_schema() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/v1/sagas",
        "/api/v1/sagas/{sagaId}",
        "/api/v1/sagas/{sagaId}/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} is documented");
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in [
        "SagaPage",
        "SagaSummary",
        "SagaDetail",
        "EventList",
        "Problem",
        "SagaStatus",
    ] {
        assert!(schemas.contains_key(s), "{s} is documented");
    }
    // The document served is the one the code generates.
    assert_eq!(
        doc,
        serde_json::to_value(api::openapi()).expect("serializable")
    );
}

#[tokio::test]
async fn the_docs_page_is_served_whole_from_the_binary() {
    let app = spawn_app().await;
    let r = app.get("/docs").await;
    assert_eq!(r.status(), StatusCode::OK, "/docs leads to the page");
    assert!(content_type(&r).starts_with("text/html"));
    let html = r.text().await.expect("body");
    // Every asset the page loads is relative: nothing comes from another host.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "{asset} in {html}");
        let r = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(
            r.bytes().await.expect("body").len() > 100,
            "{asset} has content"
        );
    }
    let init = app.get("/docs/swagger-initializer.js").await;
    assert!(init
        .text()
        .await
        .expect("body")
        .contains("/docs/openapi.json"));
    let doc: serde_json::Value = app
        .get("/docs/openapi.json")
        .await
        .json()
        .await
        .expect("the document");
    assert_eq!(
        doc,
        serde_json::to_value(api::openapi()).expect("serializable")
    );
}

#[tokio::test]
async fn metrics_exposes_the_http_request_histogram_by_route_template() {
    let app = spawn_app().await;
    seed_three_sagas(&app).await;
    app.get("/api/v1/sagas/order-1001").await;
    app.get("/no/such/path").await;

    let r = app.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.expect("body");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("saga_tracker_http_request_duration_seconds_bucket"))
        .collect();
    assert!(
        series
            .iter()
            .any(|l| l.contains(r#"route="/api/v1/sagas/{sagaId}""#)
                && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains(r#"route="unmatched""#) && l.contains(r#"status="404""#)),
        "{text}"
    );
    assert!(
        !text.contains("order-1001"),
        "raw paths never become label values"
    );
}

#[tokio::test]
async fn serve_returns_once_the_shutdown_token_is_cancelled() {
    let pool = PgPoolOptions::new().connect_lazy_with(server_options().port(1));
    let mut served = common::serve_api(pool, common::settings_with(&[]), false).await;

    let r = reqwest::get(format!("{}/healthz", served.base))
        .await
        .expect("served");
    assert_eq!(r.status(), StatusCode::OK);

    served.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), &mut served.task)
        .await
        .expect("serve returns promptly")
        .expect("serve task did not panic");
    assert!(result.is_ok(), "{result:?}");
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// `n` one-event sagas a second apart, every other one in region `eu`, every third failed.
async fn seed_many(app: &TestApp, n: usize) {
    let events: Vec<IncomingEvent> = (0..n)
        .map(|i| {
            let status = if i % 3 == 0 {
                StepStatus::Failed
            } else {
                StepStatus::Succeeded
            };
            let region = if i % 2 == 0 { "eu" } else { "us" };
            ev(
                &format!("x-{i}"),
                &format!("bulk-{i:05}"),
                "ORDER_CREATION",
                "ORDER_CREATED",
                status,
                t(i as i64),
                "order",
            )
            .meta(json!({ "region": region }))
            .0
        })
        .collect();
    for chunk in events.chunks(400) {
        app.seed(chunk.to_vec()).await;
    }
}

/// Every saga id of a search, following `nextCursor` to the end.
async fn all_pages(app: &TestApp, query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let q = match &cursor {
            Some(c) => format!("{query}&limit=500&cursor={c}"),
            None => format!("{query}&limit=500"),
        };
        let (status, page) = app.get_json(&format!("/api/v1/sagas?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("paging did not end");
}

/// Every saga id of a search, `limit` per page, following `nextCursor` to the end.
async fn pages_of(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.get_json(&format!("/api/v1/sagas?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = ids(&page);
        assert!(got.len() <= limit, "{page}");
        out.extend(got);
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("paging did not end");
}

// Filters served by unordered indexes (GIN on services and metadata, the duration range)
// are searched by first walking the newest 2,000 sagas after the cursor, then, when that
// finds no full page, by a plan chosen from what it found. Whichever plan answers, every
// match comes once, in order, however far back the matches lie.
#[tokio::test]
async fn searches_served_without_order_page_exactly_however_rare_their_matches() {
    let app = spawn_app().await;
    seed_many(&app, 2_500).await;
    // Three sagas older than every bulk one, so beyond the first walk.
    let old: Vec<IncomingEvent> = (0..3)
        .map(|i| {
            ev(
                &format!("old-e{i}"),
                &format!("old-{i}"),
                "ORDER_CREATION",
                "ORDER_CREATED",
                StepStatus::Succeeded,
                t(-10 - i),
                "billing",
            )
            .meta(json!({ "tier": "gold" }))
            .0
        })
        .collect();
    app.seed(old).await;
    let old_ids = ["old-0", "old-1", "old-2"];

    let eu: Vec<String> = (0..2_500)
        .rev()
        .filter(|i| i % 2 == 0)
        .map(|i| format!("bulk-{i:05}"))
        .collect();
    assert_eq!(pages_of(&app, "meta.region=eu", 70).await, eu);
    assert_eq!(pages_of(&app, "meta.tier=gold", 2).await, old_ids);
    assert_eq!(pages_of(&app, "service=billing", 1).await, old_ids);
    assert_eq!(
        pages_of(&app, "service=billing&sort=updatedAt", 2).await,
        old_ids
    );
    assert_eq!(
        pages_of(
            &app,
            "service=order&meta.region=us&sagaType=ORDER_CREATION",
            500
        )
        .await,
        (0..2_500)
            .rev()
            .filter(|i| i % 2 == 1)
            .map(|i| format!("bulk-{i:05}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        pages_of(&app, "service=no-such-service", 50).await,
        Vec::<String>::new()
    );
    assert_eq!(
        pages_of(&app, "meta.tier=gold&startedBefore=2026-11-01T09:59:50Z", 5).await,
        ["old-1", "old-2"]
    );

    // A type with a service: through the (type, service) keys, whether the pair exists or
    // not, and exact either way.
    assert_eq!(
        pages_of(&app, "service=billing&sagaType=ORDER_CREATION", 2).await,
        old_ids
    );
    for disjoint in [
        "service=billing&sagaType=PAYMENT_REFUND",
        "service=no-such-service&sagaType=ORDER_CREATION",
    ] {
        assert_eq!(
            pages_of(&app, disjoint, 50).await,
            Vec::<String>::new(),
            "{disjoint}"
        );
    }
    // Unordered conditions on top of ordered ones (a status, stuck): the walk reads, say,
    // the failed sagas in order, then keeps those the service emitted. Every bulk saga is
    // stuck: every third failed long ago and was never compensated, the others have made
    // no progress since.
    let bulk = |keep: fn(usize) -> bool| -> Vec<String> {
        (0..2_500)
            .rev()
            .filter(|&i| keep(i))
            .map(|i| format!("bulk-{i:05}"))
            .collect()
    };
    for (query, want) in [
        ("service=order&status=FAILED", bulk(|i| i % 3 == 0)),
        (
            "service=order&stuckReason=failed_not_compensated",
            bulk(|i| i % 3 == 0),
        ),
        (
            "service=order&stuckReason=no_progress",
            bulk(|i| i % 3 != 0),
        ),
        ("service=order&stuck=true", bulk(|_| true)),
        ("meta.region=eu&stuck=true", bulk(|i| i % 2 == 0)),
        (
            "meta.region=eu&stuckReason=failed_not_compensated",
            bulk(|i| i % 6 == 0),
        ),
    ] {
        assert_eq!(pages_of(&app, query, 120).await, want, "{query}");
    }
    assert_eq!(
        pages_of(&app, "service=billing&status=FAILED", 50).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_export_streams_every_match_across_pages_in_search_order() {
    let app = spawn_app().await;
    seed_many(&app, 1_203).await;

    // NDJSON with a filter: more than two of the export's internal pages.
    let r = app
        .get("/api/v1/sagas/export?format=ndjson&meta.region=eu&sagaType=ORDER_CREATION")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), "application/x-ndjson");
    let disposition = r
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"sagas-")
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    let body = r.text().await.expect("body");
    let exported: Vec<String> = body
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("each line is one JSON saga");
            assert_eq!(v["metadata"]["region"], "eu", "{l}");
            v["sagaId"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(exported.len(), 602);
    assert_eq!(
        exported,
        all_pages(&app, "meta.region=eu&sagaType=ORDER_CREATION").await,
        "the export is the search, every page of it, in order"
    );

    // CSV, no filter: a header and one row per saga, read back by a CSV parser.
    let r = app.get("/api/v1/sagas/export?format=csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("text/csv"));
    let text = r.text().await.expect("body");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, saga_tracker::api::export::CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 1_203);
    let failed = rows.iter().filter(|r| &r[2] == "FAILED").count();
    assert_eq!(failed, 401);
    assert_eq!(&rows[0][0], "bulk-01202", "newest first");
    assert_eq!(&rows[0][18], "order");
    assert!(rows[0][21].contains("\"region\""), "metadata as JSON");

    // The stuck filter and the status filter narrow it exactly as a search does.
    let r = app.get("/api/v1/sagas/export?status=FAILED").await;
    let n = r.text().await.expect("body").lines().count();
    assert_eq!(n, all_pages(&app, "status=FAILED").await.len());
}

#[tokio::test]
async fn an_export_refuses_what_a_search_refuses_and_paging_by_name() {
    let app = spawn_app().await;
    let r = app
        .get("/api/v1/sagas/export?format=xml&limit=5&cursor=abc&status=DONE&sagatype=X")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&r), "application/problem+json");
    let body: Value = r.json().await.expect("problem");
    let names: Vec<&str> = body["invalidParams"]
        .as_array()
        .expect("invalidParams")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["format", "limit", "cursor", "status", "sagatype"]);

    // Nothing matches: an empty NDJSON body, a CSV with its header only.
    let r = app.get("/api/v1/sagas/export?businessKey=nobody").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("body"), "");
    let r = app
        .get("/api/v1/sagas/export?businessKey=nobody&format=csv")
        .await;
    assert_eq!(r.text().await.expect("body").lines().count(), 1);
}
