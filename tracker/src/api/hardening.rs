//! What every request meets before a handler sees it, and what every response carries: size
//! limits (414, 431, 413), the request timeout (503), CORS, and security headers.
//!
//! The limits are answered here as `application/problem+json` like every other error, rather
//! than by tower-http's plain-text responses: clients branch on one error format. hyper's own
//! limits still apply underneath (a request line of 64 KiB or more, over 100 headers, or
//! headers beyond its read buffer are refused by hyper before any of this runs).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ApiError;
use crate::config::HttpSettings;

/// The policy for every response except the API reference under `/docs`: nothing loads from
/// anywhere else, no inline script or style, no framing, no plugins. The Saga Explorer
/// (`/ui`) is built to run under it: its script and stylesheet are files of its own origin and
/// its charts are SVG attributes, not `style`. JSON ignores the header; it costs nothing there.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The policy of the API reference (`/docs`, Swagger UI served from the binary). Still
/// nothing from another host and no inline script (the page's script is a file), but Swagger
/// UI sets `style` attributes from its scripts and shows its icons as `data:` images, so
/// inline styles are allowed on these pages alone.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The request limits, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

impl From<&HttpSettings> for Limits {
    fn from(s: &HttpSettings) -> Self {
        Self {
            max_uri_bytes: s.max_uri_bytes,
            max_header_bytes: s.max_header_bytes,
            max_body_bytes: s.max_body_bytes,
        }
    }
}

/// Middleware: refuses a request target, headers or a declared body over the limits. A
/// body without a `Content-Length` (chunked) is bounded by `RequestBodyLimitLayer` as it is
/// read.
pub async fn enforce_limits(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path().len(), |pq| pq.as_str().len());
    if target > limits.max_uri_bytes {
        return ApiError::UriTooLong(limits.max_uri_bytes).into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > limits.max_header_bytes {
        return ApiError::HeadersTooLarge(limits.max_header_bytes).into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return ApiError::PayloadTooLarge(limits.max_body_bytes).into_response();
    }
    next.run(req).await
}

/// Middleware: answers 503 `request-timeout` when the rest of the stack takes longer than
/// `timeout`. Written here rather than with tower-http's `TimeoutLayer`, whose answer is an
/// empty 408 — a status that says the *client* was too slow to send its request, which is
/// not what happened.
pub async fn timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
            ApiError::RequestTimeout.into_response()
        }
    }
}

/// Middleware: the security headers of every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let docs = path == "/docs" || path.starts_with("/docs/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if docs {
            DOCS_CONTENT_SECURITY_POLICY
        } else {
            CONTENT_SECURITY_POLICY
        }),
    );
    response
}

/// The CORS layer for `http.cors_allowed_origins`, or `None` when the list is empty (no
/// CORS headers at all). Reads only (`GET`, `HEAD`); the `Authorization` header may be sent
/// and `WWW-Authenticate` read, so a browser app can use a bearer token and see why it was
/// refused. No cookies are involved, so credentials mode stays off.
pub fn cors(settings: &HttpSettings) -> Option<CorsLayer> {
    if settings.cors_allowed_origins.is_empty() {
        return None;
    }
    // Validation checked each origin's form, which is also a valid header value.
    let origins: Vec<HeaderValue> = settings
        .cors_allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([header::AUTHORIZATION, header::ACCEPT])
            .expose_headers([
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("retry-after"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
