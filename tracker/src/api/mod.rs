//! The HTTP surface: the REST search API, probes, `/metrics`, the OpenAPI document and its
//! browsable page, and what guards them.
//!
//! - [`sagas`] — `/api/v1/sagas…` handlers and the search query parser.
//! - [`stats`] — `/api/v1/stats` and `/api/v1/saga-types`.
//! - [`admin`] — `/api/v1/whoami` and the operator endpoints (`/api/v1/admin/config`).
//! - [`error`] — the one error type, rendered as `application/problem+json`.
//! - [`health`] — `/healthz`, `/readyz`, `/metrics`.
//! - [`openapi`] — the OpenAPI 3.1 document (`/openapi.json`; `/docs` is Swagger UI on it).
//! - [`export`] — `/api/v1/sagas/export`: every match of a search, streamed.
//! - [`auth`] — bearer tokens (API keys, OIDC), roles, and which endpoint needs which.
//! - [`hardening`] — request limits, the request timeout, CORS, security headers.
//! - [`listener`] — the connection cap and idle timeout under both listeners.
//!
//! A request passes, outermost first: the tracing span (continuing the caller's W3C
//! `traceparent`, see `request_span`), the access log and latency
//! histogram ([`observe_request`]), security headers, CORS, the size limits, the timeout,
//! authentication and authorisation, then the handler. So every refusal is logged, counted
//! and carries the headers, and the cheap refusals come before authentication does any work.
//!
//! The probes and `/metrics` are served with the API ([`Surface::All`]) or, with
//! `http.ops_addr`, on a listener of their own ([`Surface::Ops`]) while the API listener
//! serves the rest ([`Surface::Api`]).
//!
//! The API reads through [`crate::store`] only and never reaches into the ingest loop; what
//! it knows about the consumer comes from [`ConsumerHealth`]. [`serve`] takes its listener
//! and cancellation token from the caller, so tests bind `127.0.0.1:0` and stop it at will.

pub mod admin;
pub mod auth;
pub mod error;
pub mod export;
pub mod hardening;
pub mod health;
pub mod listener;
pub mod openapi;
mod params;
pub mod sagas;
pub mod stats;

use std::sync::Arc;
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
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use auth::Authenticator;
pub use error::ApiError;
pub use openapi::openapi;

use crate::config::Settings;
use crate::health::ConsumerHealth;
use crate::stuck::StuckPolicy;

/// Route label for requests that matched no route, so stray paths cannot create series.
const UNMATCHED_ROUTE: &str = "unmatched";

/// What the handlers share. Cheap to clone: every field is a handle.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The primary (`database.url`), shared with the ingest loop. Handlers do not query it:
    /// `/readyz` pings it, and the replica lag is measured against it.
    pub pool: PgPool,
    /// Every read query (API, UI, export) runs on this pool: the replica at
    /// `database.read_url`, or a handle to [`Self::pool`] when none is configured.
    pub read_pool: PgPool,
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
    /// Who may call, from `[auth]`.
    pub auth: Authenticator,
    /// The settings the process runs with: `[http]` shapes the router's limits, and
    /// `/api/v1/admin/config` shows them (redacted).
    pub settings: Arc<Settings>,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything: the API, the probes and `/metrics` (no `http.ops_addr`).
    All,
    /// The API without the probes and `/metrics`, which are on the ops listener.
    Api,
    /// Only `/healthz`, `/readyz` and `/metrics`, without authentication or CORS.
    Ops,
}

impl Surface {
    fn describe(self) -> &'static str {
        match self {
            Self::All => "API, probes and /metrics",
            Self::Api => "API",
            Self::Ops => "probes and /metrics",
        }
    }
}

/// Every route on one listener ([`Surface::All`]).
pub fn router(state: AppState) -> Router {
    router_for(state, Surface::All)
}

/// The routes of `surface`, with problem+json fallbacks for unknown paths and wrong methods,
/// and the layers described in the module documentation.
pub fn router_for(state: AppState, surface: Surface) -> Router {
    let http = state.settings.http.clone();
    let mut routes = Router::new();
    if surface != Surface::Ops {
        let doc = openapi();
        let doc_json = serde_json::to_value(&doc).unwrap_or_default();
        routes = routes
            .route("/api/v1/sagas", get(sagas::search))
            // A static segment wins over `{sagaId}`: a saga whose id is `export` is read
            // with `GET /api/v1/sagas?…` or the UI, not at this path.
            .route("/api/v1/sagas/export", get(export::export))
            .route("/api/v1/sagas/{sagaId}", get(sagas::detail))
            .route("/api/v1/sagas/{sagaId}/events", get(sagas::events))
            .route("/api/v1/stats", get(stats::stats))
            .route("/api/v1/saga-types", get(stats::saga_types))
            .route("/api/v1/whoami", get(admin::whoami))
            .route("/api/v1/admin/config", get(admin::config))
            .route(
                "/openapi.json",
                get(move || {
                    let doc_json = doc_json.clone();
                    async move { Json(doc_json) }
                }),
            )
            // Swagger UI with its assets compiled into the binary (utoipa-swagger-ui's
            // `vendored` feature): the reference page works air-gapped.
            .merge(
                utoipa_swagger_ui::SwaggerUi::new("/docs")
                    .url("/docs/openapi.json", doc)
                    .config(
                        utoipa_swagger_ui::Config::from("/docs/openapi.json")
                            .try_it_out_enabled(true)
                            .persist_authorization(false)
                            .display_request_duration(true)
                            .validator_url("none"),
                    ),
            );
        if state.settings.ui.enabled {
            routes = routes.merge(crate::ui::router());
        }
    }
    if surface != Surface::Api {
        routes = routes
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/metrics", get(health::metrics));
    }
    let mut routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Innermost first: each `layer` wraps what is already there.
    if surface != Surface::Ops {
        routes = routes.layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    }
    routes = routes
        .layer(middleware::from_fn_with_state(
            http.request_timeout(),
            hardening::timeout,
        ))
        .layer(RequestBodyLimitLayer::new(http.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            hardening::Limits::from(&http),
            hardening::enforce_limits,
        ));
    if surface != Surface::Ops {
        if let Some(cors) = hardening::cors(&http) {
            routes = routes.layer(cors);
        }
    }
    routes
        .layer(middleware::from_fn(hardening::security_headers))
        .layer(middleware::from_fn(observe_request))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // `observe_request` writes the one line per request.
                .on_request(())
                .on_response(())
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
    serve_surface(listener, state, Surface::All, shutdown).await
}

/// As [`serve`], for the routes of `surface`. The listener is capped at
/// `http.max_connections` open connections with `http.idle_timeout_ms`.
pub async fn serve_surface(
    listener: TcpListener,
    state: AppState,
    surface: Surface,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, serves = surface.describe(), "HTTP listening");
    }
    let http = &state.settings.http;
    let listener =
        listener::CappedListener::new(listener, http.max_connections, http.idle_timeout());
    axum::serve(listener, router_for(state, surface))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .with_context(|| format!("serving HTTP ({})", surface.describe()))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// The request's span, `http_request`: a server span named `{method} {route}`, continuing
/// the trace of an incoming W3C `traceparent` header (a root otherwise). `caller` and `auth`
/// are filled in by [`auth::authorize`]. The HTTP semantic-convention attributes go to the
/// exporter only (as fields they would repeat `method` and `route` in every log line), and
/// without an OpenTelemetry layer (export off) none of that is done at all.
fn request_span(req: &Request) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let route = route_of(req);
    let span = tracing::info_span!(
        "http_request",
        otel.kind = "server",
        otel.name = %format_args!("{} {route}", req.method()),
        method = %req.method(),
        route,
        otel.status_code = tracing::field::Empty,
        // Filled in by `auth::authorize`: the caller's name, never its token.
        caller = tracing::field::Empty,
        auth = tracing::field::Empty,
    );
    // `Ok` only when an OpenTelemetry layer records the span.
    if span.set_parent(incoming_trace(req.headers())).is_ok() {
        span.set_attribute("http.request.method", method_label(req.method()));
        span.set_attribute("http.route", route.to_owned());
        span.set_attribute("url.path", req.uri().path().to_owned());
    }
    span
}

/// The caller's span named by the request's `traceparent` header (and its `tracestate`),
/// read with OpenTelemetry's W3C propagator; the empty context (a new trace) without one.
fn incoming_trace(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator as _;

    if !headers.contains_key("traceparent") {
        return opentelemetry::Context::new();
    }
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Request headers as the propagator's [`opentelemetry::propagation::Extractor`].
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The matched route template (`/api/v1/sagas/{sagaId}`), never the raw path, so the label
/// set stays bounded.
fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// The access log line and the latency histogram, in one place. Runs inside the request's
/// span, so the line carries the method, the route and (once authenticated) the caller. The
/// probes and the scrape, polled every few seconds, log at DEBUG.
async fn observe_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = route_of(&req).to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let span = tracing::Span::current();
    tracing_opentelemetry::OpenTelemetrySpanExt::set_attribute(
        &span,
        "http.response.status_code",
        i64::from(status),
    );
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let elapsed = start.elapsed();
    crate::metrics::http_request(method, &route, status, elapsed);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if auth::PUBLIC_PATHS.contains(&route.as_str()) {
        tracing::debug!(status, latency_ms, "request served");
    } else {
        tracing::info!(status, latency_ms, "request served");
    }
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
