//! Probes and the Prometheus scrape endpoint.
//!
//! Liveness and readiness answer different questions, so they check different things:
//!
//! - `/healthz` (liveness): "is this process able to serve HTTP at all?" It checks nothing
//!   else, so a database outage never gets healthy pods restarted in a loop.
//! - `/readyz` (readiness): "should this replica get traffic and count as working?" It checks
//!   the real dependencies: the database answers a ping within [`DB_PING_TIMEOUT`], and the
//!   consumer (when enabled) is running, its writes are not failing, and it polled the broker
//!   within [`MAX_POLL_AGE`]. With `database.read_url`, the read replica must answer too
//!   (the API cannot serve without it), and its lag is reported — but a lagging replica
//!   stays ready: lag is for the alert, and failing readiness on it would take every replica
//!   out of service at once.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store;

/// How long `/readyz` waits for `select 1`.
pub const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A consumer that has not polled for longer than this is considered wedged.
pub const MAX_POLL_AGE: Duration = Duration::from_secs(30);

/// Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Liveness answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness answer: overall verdict plus each check, so an operator sees which one failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// The primary (`database.url`).
    pub database: Check,
    pub consumer: Check,
    /// The read replica (`database.read_url`); absent when reads use the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_database: Option<ReplicaCheck>,
}

/// The read replica's check: does it answer, and how far behind the primary it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplicaCheck {
    /// `ok` or `fail`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Why it failed, or notes: `replay paused`, `not a standby`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// WAL bytes the primary has written and the replica not yet replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0)]
    pub lag_bytes: Option<i64>,
    /// Age of the replica's view: its last replayed transaction's age while WAL is
    /// outstanding, 0 when caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.0)]
    pub lag_seconds: Option<f64>,
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `fail`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Why it failed, or a note such as `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn ok(detail: Option<&str>) -> Self {
        Self {
            status: "ok",
            detail: detail.map(str::to_owned),
        }
    }

    fn fail(detail: impl Into<String>) -> Self {
        Self {
            status: "fail",
            detail: Some(detail.into()),
        }
    }

    fn passed(&self) -> bool {
        self.status == "ok"
    }
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = Liveness))
)]
pub async fn healthz() -> Response {
    no_store(Json(Liveness { status: "ok" }).into_response())
}

/// Readiness: 200 when the database and the consumer are healthy, else 503 naming the
/// failed check.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "A dependency is unhealthy; `checks` says which", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match store::ping(&state.pool, DB_PING_TIMEOUT).await {
        Ok(()) => Check::ok(None),
        Err(e) => {
            // The cause (host names, driver messages) goes to the log, not to the client.
            tracing::warn!(error = format!("{e:#}"), "readiness: database check failed");
            Check::fail("database did not answer a ping")
        }
    };
    let consumer = consumer_check(&state);
    let read_database = match state.settings.database.read_url {
        Some(_) => Some(replica_check(&state).await),
        None => None,
    };
    let ready = database.passed()
        && consumer.passed()
        && read_database.as_ref().is_none_or(|r| r.status == "ok");
    let body = Readiness {
        status: if ready { "ready" } else { "unready" },
        checks: ReadinessChecks {
            database,
            consumer,
            read_database,
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    no_store((status, Json(body)).into_response())
}

async fn replica_check(state: &AppState) -> ReplicaCheck {
    match store::replica::lag(&state.pool, &state.read_pool, DB_PING_TIMEOUT).await {
        Ok(lag) => {
            let mut notes = Vec::new();
            if !lag.in_recovery {
                notes.push("not a standby: `database.read_url` names a primary");
            }
            if lag.replay_paused {
                notes.push("replay paused on the replica");
            }
            if lag.in_recovery && !lag.against_primary {
                notes.push("lag measured from the replica alone: the primary did not answer");
            }
            ReplicaCheck {
                status: "ok",
                detail: (!notes.is_empty()).then(|| notes.join("; ")),
                lag_bytes: lag.bytes,
                lag_seconds: lag.seconds,
            }
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "readiness: read replica (database.read_url) check failed"
            );
            ReplicaCheck {
                status: "fail",
                detail: Some(
                    "read database (database.read_url) did not answer: the API cannot serve reads"
                        .into(),
                ),
                lag_bytes: None,
                lag_seconds: None,
            }
        }
    }
}

fn consumer_check(state: &AppState) -> Check {
    if !state.consumer_enabled {
        return Check::ok(Some("disabled"));
    }
    let c = &state.consumer;
    if !c.is_running() {
        return Check::fail("consumer loop is not running");
    }
    if c.db_failing() {
        return Check::fail("consumer cannot write to the database");
    }
    if c.schema_registry_failing() {
        return Check::fail("consumer cannot reach the Schema Registry (Avro events wait)");
    }
    if let Some(failure) = c.broker_security_failure() {
        // The failure names what failed (TLS or SASL) without any secret; the full
        // explanation is in the log.
        return Check::fail(format!("consumer cannot connect to the brokers: {failure}"));
    }
    match c.since_last_poll_ms() {
        None => Check::fail("consumer has not polled the broker yet"),
        Some(ms) if ms > MAX_POLL_AGE.as_millis() as i64 => Check::fail(format!(
            "consumer last polled the broker {} s ago (limit {} s)",
            ms / 1000,
            MAX_POLL_AGE.as_secs()
        )),
        Some(_) => Check::ok(None),
    }
}

/// Prometheus scrape endpoint.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format",
        body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        body,
    )
        .into_response()
}

/// Probe answers describe this instant; a cache must not replay them.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
