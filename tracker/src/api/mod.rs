//! The HTTP surface: the REST search API, probes, `/metrics`, the OpenAPI document and its
//! browsable page.
//!
//! - [`sagas`] — `/api/v1/sagas…` handlers and the search query parser.
//! - [`stats`] — `/api/v1/stats` and `/api/v1/saga-types`.
//! - [`error`] — the one error type, rendered as `application/problem+json`.
//! - [`health`] — `/healthz`, `/readyz`, `/metrics`.
//! - [`openapi`] — the OpenAPI 3.1 document (`/openapi.json`, `/docs`).
//!
//! The API reads through [`crate::store`] only and never reaches into the ingest loop; what
//! it knows about the consumer comes from [`ConsumerHealth`]. [`serve`] takes its listener
//! and cancellation token from the caller, so tests bind `127.0.0.1:0` and stop it at will.

pub mod error;
pub mod health;
pub mod openapi;
mod params;
pub mod sagas;
pub mod stats;

use std::time::Instant;

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa_scalar::{Scalar, Servable as _};

pub use error::ApiError;
pub use openapi::openapi;

use crate::health::ConsumerHealth;
use crate::stuck::StuckPolicy;

/// Route label for requests that matched no route, so stray paths cannot create series.
const UNMATCHED_ROUTE: &str = "unmatched";

/// What the handlers share. Cheap to clone: every field is a handle.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Read queries run on this pool (shared with the ingest loop).
    pub pool: PgPool,
    /// What the consumer loop last reported, for `/readyz`.
    pub consumer: ConsumerHealth,
    /// Off when this process runs without a consumer (API-only replica, tests): `/readyz` then
    /// does not require one.
    pub consumer_enabled: bool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The `[stuck]` rules the search filter and the detail view apply.
    pub stuck: StuckPolicy,
    /// `http.stats_timeout_ms`: the statement timeout of `/api/v1/stats`.
    pub stats_timeout: std::time::Duration,
}

/// Every route, with problem+json fallbacks for unknown paths and wrong methods, request
/// tracing and the HTTP latency histogram.
pub fn router(state: AppState) -> Router {
    let doc = openapi();
    let doc_json = serde_json::to_value(&doc).unwrap_or_default();
    Router::new()
        .route("/api/v1/sagas", get(sagas::search))
        .route("/api/v1/sagas/{sagaId}", get(sagas::detail))
        .route("/api/v1/sagas/{sagaId}/events", get(sagas::events))
        .route("/api/v1/stats", get(stats::stats))
        .route("/api/v1/saga-types", get(stats::saga_types))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/openapi.json",
            get(move || {
                let doc_json = doc_json.clone();
                async move { Json(doc_json) }
            }),
        )
        .merge(Scalar::with_url("/docs", doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record_http_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "http_request",
                        method = %req.method(),
                        route = route_of(req),
                    )
                })
                // Every 5xx is already logged where it arises, with its cause (`ApiError`,
                // the readiness check). Logging it again here at ERROR, without the cause,
                // doubled each one and turned every `/readyz` answer during start-up or a
                // database outage into an ERROR line.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` is cancelled, then stops accepting
/// and waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the HTTP API")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// The matched route template (`/api/v1/sagas/{sagaId}`), never the raw path, so the label
/// set stays bounded.
fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = route_of(&req).to_owned();
    let response = next.run(req).await;
    crate::metrics::http_request(method, &route, response.status().as_u16(), start.elapsed());
    response
}

/// Standard methods by name; anything else is one label value.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
