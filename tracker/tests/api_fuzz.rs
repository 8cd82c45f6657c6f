//! REST input fuzzing: random query strings and path segments against the real router and a
//! real database. Whatever a client sends, the API answers without a 5xx, every 4xx is
//! `application/problem+json`, and no body leaks SQL or internals.
//!
//! The router is driven in-process with `tower::ServiceExt::oneshot` (no socket), so a few
//! thousand cases run in seconds. `API_FUZZ_CASES` overrides the case count (default 2000).
//!
//! Authentication is on, as in production: every case is sent with a reader's API key, and
//! again without one, which must be a 401 whatever the path and query.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use saga_tracker::api::{self, AppState};
use saga_tracker::store::write::{write_batch, IncomingEvent};
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepStatus, SCHEMA_VERSION};
use sqlx::PgPool;
use tower::ServiceExt;

const SEEDED: [&str; 3] = ["fuzz-ok", "fuzz-failed", "fuzz/with slash"];

/// The reader key every fuzz request carries.
const READER_TOKEN: &str = "st_fuzz-reader-token-0123456789abcdefghijklmnopqrstu";

/// The router's state: authentication on with one reader key, and the request-target limit
/// at its maximum so that the huge values still reach the parameter parsers (the 414 has
/// its own test in `hardening.rs`).
async fn state(pool: &PgPool) -> AppState {
    let settings = common::settings_with(&[
        ("auth.enabled", serde_json::json!(true)),
        (
            "auth.api_keys",
            serde_json::json!([{
                "name": "fuzzer",
                "role": "reader",
                "hash": saga_tracker::api::auth::keys::hash_token(READER_TOKEN),
            }]),
        ),
        ("http.max_uri_bytes", serde_json::json!(65_534)),
    ]);
    common::app_state(pool.clone(), settings, false).await
}

async fn seeded_db() -> (String, PgPool) {
    let name = common::create_database("saga_fuzz").await;
    let pool = common::migrated_pool(&name).await;
    let at = |ms: i64| {
        Utc.timestamp_millis_opt(1_763_700_000_000 + ms)
            .single()
            .expect("valid instant")
    };
    let events: Vec<IncomingEvent> = SEEDED
        .iter()
        .enumerate()
        .flat_map(|(i, saga)| {
            [
                (StepStatus::Started, Some(SagaStatus::Started), 0),
                (
                    if i == 1 {
                        StepStatus::Failed
                    } else {
                        StepStatus::Succeeded
                    },
                    Some(if i == 1 {
                        SagaStatus::Failed
                    } else {
                        SagaStatus::Completed
                    }),
                    500,
                ),
            ]
            .into_iter()
            .enumerate()
            .map(move |(j, (step_status, saga_status, ms))| IncomingEvent {
                event: SagaEvent {
                    schema_version: SCHEMA_VERSION,
                    event_id: format!("{saga}-{j}"),
                    saga_id: (*saga).to_owned(),
                    saga_type: "ORDER_CREATION".to_owned(),
                    step: "PAYMENT".to_owned(),
                    step_status,
                    saga_status,
                    occurred_at: at(ms),
                    service: "payment".to_owned(),
                    sequence: Some(j as i64),
                    business_key: Some("8812".to_owned()),
                    trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
                    span_id: None,
                    error: None,
                    metadata: serde_json::json!({"region": "eu"}).as_object().cloned(),
                },
                received_at: at(ms + 1),
                source: None,
            })
        })
        .collect();
    write_batch(&pool, &events).await.expect("seed");
    (name, pool)
}

const PARAMS: &[&str] = &[
    "sagaType",
    "status",
    "businessKey",
    "traceId",
    "step",
    "service",
    "startedAfter",
    "startedBefore",
    "updatedAfter",
    "updatedBefore",
    "minDurationMs",
    "stuck",
    "sort",
    "limit",
    "cursor",
    "top",
    "meta.region",
    "meta.",
    "meta.a%00b",
];

/// Values that sit on edges of the parsers, plus random text and bytes.
fn arb_value() -> impl Strategy<Value = String> {
    let edges = prop::sample::select(vec![
        "",
        "0",
        "-1",
        "1",
        "100",
        "101",
        "1000000",
        "99999999999999999999999",
        "-9223372036854775808",
        "1e3",
        "NaN",
        "true",
        "TRUE",
        "COMPLETED",
        "COMPLETED,FAILED",
        "completed",
        "ORDER_CREATION",
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00+01:00",
        "2025-01-01T00:00:00%2B01:00",
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "-infinity",
        "infinity",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "4BF92F3577B34DA6A3CE929D0E0E4736",
        "startedAt",
        "updatedAt",
        "%",
        "%zz",
        "%00",
        "%FF%FE",
        "%C3%28",
        "a%26b%3Dc",
        "eyJ4IjoxfQ",
        "eyJzIjoiMjAyNS0wMS0wMVQwMDowMDowMFoiLCJpIjoiJyJ9",
        "!!!",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        4 => edges,
        3 => any::<String>().prop_map(|s| encode(s.as_bytes())),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| encode(&b)),
        // Huge values: http's `Uri` itself refuses more than 64 KiB, so stay below.
        1 => (1_usize..20_000).prop_map(|n| "9".repeat(n)),
        1 => (1_usize..1_500, any::<char>())
            .prop_map(|(n, c)| encode(c.to_string().repeat(n).as_bytes())),
    ]
}

/// Percent-encodes every byte outside the unreserved set.
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(PARAMS.to_vec()).prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| encode(s.as_bytes())),
        1 => "[a-zA-Z.]{0,12}",
    ]
}

/// A path and query: one of the endpoints, with 0–8 random (possibly repeated) parameters.
fn arb_request() -> impl Strategy<Value = String> {
    let saga_id = prop_oneof![
        2 => prop::sample::select(SEEDED.to_vec()).prop_map(|s| encode(s.as_bytes())),
        2 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| encode(&b)),
        1 => any::<String>().prop_map(|s| encode(s.as_bytes())),
        1 => (1_usize..5_000).prop_map(|n| "x".repeat(n)),
    ];
    let path = prop_oneof![
        Just("/api/v1/sagas".to_owned()),
        Just("/api/v1/stats".to_owned()),
        Just("/api/v1/saga-types".to_owned()),
        saga_id.clone().prop_map(|id| format!("/api/v1/sagas/{id}")),
        saga_id.prop_map(|id| format!("/api/v1/sagas/{id}/events")),
    ];
    let query = prop::collection::vec(
        (arb_name(), arb_value(), any::<bool>()).prop_map(|(n, v, bare)| {
            if bare && v.is_empty() {
                n
            } else {
                format!("{n}={v}")
            }
        }),
        0..8,
    );
    (path, query)
        .prop_map(|(path, q)| {
            if q.is_empty() {
                path
            } else {
                format!("{path}?{}", q.join("&"))
            }
        })
        .prop_filter("http's Uri holds at most 64 KiB", |u| u.len() < 60_000)
}

const LEAKS: &[&str] = &[
    "sqlx",
    "select ",
    "syntax error",
    "relation",
    "pg_",
    "panicked",
    "postgres",
    "database error",
    "sqlstate",
    "invalid byte sequence",
];

#[test]
fn no_query_string_or_path_makes_the_api_fail_or_leak_internals() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (db, pool) = rt.block_on(seeded_db());
    let app = api::router(rt.block_on(state(&pool)));
    let cases = common::env_or("API_FUZZ_CASES", 2000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&arb_request(), |full_uri| {
        let app = app.clone();
        rt.block_on(async move {
            // Failure messages name the request, shortened: some are tens of KiB.
            let uri = short(&full_uri);
            // Without a token: refused before any parser or query runs.
            let request = Request::get(full_uri.as_str())
                .body(Body::empty())
                .map_err(|e| TestCaseError::fail(format!("{uri}: building request: {e}")))?;
            let response = app
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| TestCaseError::fail(format!("{uri}: {e}")))?;
            prop_assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{}", uri);
            prop_assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some(r#"Bearer realm="saga-tracker""#),
                "{}",
                uri
            );
            let request = Request::get(full_uri.as_str())
                .header("authorization", format!("Bearer {READER_TOKEN}"))
                .body(Body::empty())
                .map_err(|e| TestCaseError::fail(format!("{uri}: building request: {e}")))?;
            let response = app
                .oneshot(request)
                .await
                .map_err(|e| TestCaseError::fail(format!("{uri}: {e}")))?;
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
                .await
                .map_err(|e| TestCaseError::fail(format!("{uri}: body: {e}")))?;
            let text = String::from_utf8_lossy(&body).to_lowercase();
            let shown = short(&String::from_utf8_lossy(&body));
            prop_assert!(!status.is_server_error(), "{uri} -> {status}: {shown}");
            if status.is_client_error() {
                prop_assert_eq!(
                    content_type.as_str(),
                    "application/problem+json",
                    "{} -> {}",
                    uri,
                    status
                );
                let problem: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| TestCaseError::fail(format!("{uri}: problem body: {e}")))?;
                prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
                prop_assert!(problem["type"].is_string(), "{}: {}", uri, shown);
            } else {
                prop_assert_eq!(status, StatusCode::OK, "{}", uri);
            }
            // What the client sent may be echoed back (naming a bad value); anything else
            // from the list is a leak.
            let sent = percent_decoded_lowercase(&full_uri);
            for leak in LEAKS {
                prop_assert!(
                    !text.contains(leak) || sent.contains(leak),
                    "{uri} -> {status}: body mentions {leak:?}: {shown}"
                );
            }
            Ok(())
        })
    });
    rt.block_on(async {
        pool.close().await;
        common::drop_database(&db).await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn short(s: &str) -> String {
    if s.chars().count() <= 300 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(300).collect();
        format!("{head}… ({} bytes)", s.len())
    }
}

fn percent_decoded_lowercase(uri: &str) -> String {
    let decoded: Vec<u8> = form_urlencoded::parse(uri.as_bytes())
        .flat_map(|(k, v)| format!("{k}={v}&").into_bytes())
        .collect();
    String::from_utf8_lossy(&decoded).to_lowercase()
}

/// Found by the fuzzer: PostgreSQL text cannot hold U+0000, so a `%00` in a filter or a saga
/// id used to reach the database and come back as a 500. It is now a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_parameter_or_saga_id_is_a_400_naming_it() {
    let (db, pool) = seeded_db().await;
    let app = api::router(state(&pool).await);
    for (uri, field) in [
        ("/api/v1/sagas?businessKey=%00", "businessKey"),
        ("/api/v1/sagas?step=a%00b&service=x", "step"),
        ("/api/v1/sagas?meta.region=eu%00", "meta.region"),
        ("/api/v1/stats?service=%00", "service"),
        ("/api/v1/sagas/a%00b", "sagaId"),
        ("/api/v1/sagas/%00/events", "sagaId"),
    ] {
        let response = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("authorization", format!("Bearer {READER_TOKEN}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem json");
        let names: Vec<&str> = problem["invalidParams"]
            .as_array()
            .expect("invalidParams")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, [field], "{uri}: {problem}");
    }
    pool.close().await;
    common::drop_database(&db).await;
}
