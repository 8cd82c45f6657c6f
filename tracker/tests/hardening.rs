//! The limits every request meets, the headers every response carries, CORS, and the
//! connection cap, against the real router and listener on `127.0.0.1:0`, driven over real
//! sockets (reqwest, or raw TCP where the test needs to hold connections open).
//!
//! Most of these never reach a handler that queries, so the pool points at a port where
//! nothing listens; the timeout test gives it a "database" that accepts and never answers.

mod common;

use std::time::Duration;

use figment::providers::Serialized;
use reqwest::StatusCode;
use saga_tracker::api::auth::keys::{generate_token, hash_token};
use saga_tracker::api::hardening::{CONTENT_SECURITY_POLICY, DOCS_CONTENT_SECURITY_POLICY};
use saga_tracker::config::Settings;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{server_options, ServedApi};

/// The router with the defaults and `overrides`, its database at `db_port` (nothing listens
/// on port 1).
async fn spawn_on(overrides: &[(&str, Value)], db_port: u16) -> ServedApi {
    let pool = PgPoolOptions::new().connect_lazy_with(server_options().port(db_port));
    common::serve_api(pool, common::settings_with(overrides), false).await
}

async fn spawn(overrides: &[(&str, Value)]) -> ServedApi {
    spawn_on(overrides, 1).await
}

/// Authentication on with one reader key, returned.
fn with_reader_key(token: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("auth.enabled", json!(true)),
        (
            "auth.api_keys",
            json!([{"name": "reader", "role": "reader", "hash": hash_token(token)}]),
        ),
    ]
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts a problem+json answer of `status` and `type` slug.
async fn assert_problem(r: reqwest::Response, status: StatusCode, slug: &str) {
    assert_eq!(r.status(), status);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    let body: Value = r.json().await.expect("problem body");
    assert_eq!(
        body["type"],
        format!("https://saga-tracker.dev/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_target_over_max_uri_bytes_is_a_414_before_authentication() {
    let s = spawn(&[
        ("http.max_uri_bytes", json!(1024)),
        ("auth.enabled", json!(true)),
        (
            "auth.api_keys",
            json!([{"name": "k", "role": "reader",
            "hash": hash_token(&generate_token())}]),
        ),
    ])
    .await;
    let short = format!("{}/healthz?pad={}", s.base, "x".repeat(900));
    let r = s.http.get(short).send().await.expect("answered");
    assert_eq!(r.status(), StatusCode::OK, "under the limit");
    for path in ["/healthz", "/api/v1/sagas"] {
        let long = format!("{}{path}?pad={}", s.base, "x".repeat(2000));
        let r = s.http.get(long).send().await.expect("answered");
        assert_problem(r, StatusCode::URI_TOO_LONG, "uri-too-long").await;
    }
}

#[tokio::test]
async fn headers_over_max_header_bytes_are_a_431() {
    let s = spawn(&[("http.max_header_bytes", json!(4096))]).await;
    let url = format!("{}/healthz", s.base);
    let r = s
        .http
        .get(&url)
        .header("x-padding", "y".repeat(1000))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::OK, "under the limit");
    let r = s
        .http
        .get(&url)
        .header("x-padding", "y".repeat(3000))
        .header("x-more", "z".repeat(3000))
        .send()
        .await
        .expect("answered");
    assert_problem(
        r,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_a_413() {
    let s = spawn(&[("http.max_body_bytes", json!(1024))]).await;
    let url = format!("{}/api/v1/sagas", s.base);
    // Under the limit the request goes on to the router, which has no POST here.
    let r = s
        .http
        .post(&url)
        .body(vec![b'a'; 100])
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = s
        .http
        .post(&url)
        .body(vec![b'a'; 4096])
        .send()
        .await
        .expect("answered");
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_past_request_timeout_ms_is_a_503_problem() {
    // A "database" that accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let s = spawn_on(
        &[
            ("http.stats_timeout_ms", json!(100)),
            ("http.request_timeout_ms", json!(300)),
            ("http.idle_timeout_ms", json!(5000)),
        ],
        port,
    )
    .await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        s.http.get(format!("{}/api/v1/sagas", s.base)).send(),
    )
    .await
    .expect("answered well before the pool's own 30 s timeout")
    .expect("answered");
    assert_eq!(header(&r, "retry-after"), Some("5"));
    assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "request-timeout").await;
    held.abort();
}

// ---------------------------------------------------------------------------------------
// Headers and CORS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_the_security_headers_and_docs_its_own_policy() {
    let token = generate_token();
    let s = spawn(&with_reader_key(&token)).await;
    let cases = [
        ("/healthz", Some(&token), 200),
        ("/openapi.json", Some(&token), 200),
        ("/openapi.json", None, 200),
        ("/api/v1/sagas", None, 401),
        ("/nowhere", Some(&token), 404),
        ("/docs", Some(&token), 200),
        ("/docs/swagger-ui-bundle.js", None, 200),
        ("/ui/static/app.css", None, 200),
        ("/ui/login", None, 200),
    ];
    for (path, bearer, status) in cases {
        let mut req = s.http.get(format!("{}{path}", s.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("answered");
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(
            header(&r, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(header(&r, "x-frame-options"), Some("DENY"), "{path}");
        let expected = if path.starts_with("/docs") {
            DOCS_CONTENT_SECURITY_POLICY
        } else {
            CONTENT_SECURITY_POLICY
        };
        assert_eq!(
            header(&r, "content-security-policy"),
            Some(expected),
            "{path}"
        );
    }
    assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert!(
        !DOCS_CONTENT_SECURITY_POLICY.contains("http"),
        "nothing from another host"
    );
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let s = spawn(&[]).await;
    let r = s
        .http
        .get(format!("{}/healthz", s.base))
        .header("origin", "https://grafana.example.com")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/sagas", s.base))
        .header("origin", "https://grafana.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("answered");
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_configured_origin_may_read_with_a_bearer_token_and_no_other_origin_may() {
    let token = generate_token();
    let mut overrides = with_reader_key(&token);
    overrides.push((
        "http.cors_allowed_origins",
        json!(["https://grafana.example.com"]),
    ));
    let s = spawn(&overrides).await;
    let preflight = |origin: &'static str, method: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, format!("{}/api/v1/sagas", s.base))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .send()
    };
    // The preflight carries no token and needs none.
    let r = preflight("https://grafana.example.com", "GET")
        .await
        .expect("answered");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://grafana.example.com")
    );
    let allowed_headers = header(&r, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let methods = header(&r, "access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("GET") && !methods.contains("POST"),
        "{methods}"
    );

    let r = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .header("origin", "https://grafana.example.com")
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://grafana.example.com")
    );

    let r = preflight("https://evil.example.com", "GET")
        .await
        .expect("answered");
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .header("origin", "https://evil.example.com")
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[test]
fn a_wildcard_or_a_path_is_not_an_allowed_origin() {
    for bad in [
        "*",
        "https://grafana.example.com/",
        "grafana.example.com",
        "ftp://x",
    ] {
        let fig = Settings::figment(None).merge(Serialized::default(
            "http.cors_allowed_origins",
            json!([bad]),
        ));
        let err = Settings::from_figment(fig).expect_err(bad).to_string();
        assert!(err.contains("http.cors_allowed_origins[0]"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

/// Sends one keep-alive `GET /healthz` on `conn` and reads its whole answer, leaving the
/// connection open.
async fn healthz_keep_alive(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

/// Reads until the server closes `conn`.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    let s = spawn(&[("http.max_connections", json!(2))]).await;
    // Two connections the server has accepted (each was answered) and that stay open.
    let mut first = TcpStream::connect(s.addr).await.expect("connect");
    let mut second = TcpStream::connect(s.addr).await.expect("connect");
    assert!(healthz_keep_alive(&mut first)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(healthz_keep_alive(&mut second)
        .await
        .starts_with("HTTP/1.1 200"));

    // A third connects (the kernel's backlog accepts it) but is not served...
    let mut third = TcpStream::connect(s.addr).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let waited = tokio::time::timeout(Duration::from_millis(500), read_to_close(&mut third)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");

    // ...until one of the two closes.
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The survivor was never disturbed.
    assert!(healthz_keep_alive(&mut second)
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed_after_idle_timeout_ms() {
    let s = spawn(&[
        ("http.stats_timeout_ms", json!(100)),
        ("http.request_timeout_ms", json!(200)),
        ("http.idle_timeout_ms", json!(400)),
        ("http.max_connections", json!(1)),
    ])
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    let got = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut silent))
        .await
        .expect("closed by the server");
    assert!(got.is_empty(), "{got}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the idle timeout"
    );
    // Its slot is free again: with a cap of one, this is answered.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        s.http.get(format!("{}/healthz", s.base)).send(),
    )
    .await
    .expect("answered")
    .expect("answered");
    assert_eq!(r.status(), StatusCode::OK);
}
