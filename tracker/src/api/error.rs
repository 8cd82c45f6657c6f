//! The one error type of the HTTP API and its `application/problem+json` (RFC 9457) form.
//!
//! Every failure a handler can return is a variant of [`ApiError`]; the variant decides the
//! status and the stable `type` URI, so clients can branch on `type` without parsing prose.
//! Database and other internal errors are logged here, with their real cause, and reach
//! the client only as an opaque 500 (or 503 when the database is unreachable): no SQL text,
//! driver message or row data ever leaves the process.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Base of every problem `type` URI. The URIs are identifiers: stable, not necessarily
/// dereferenceable.
pub const PROBLEM_BASE: &str = "https://saga-tracker.dev/problems/";

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more query or path parameters are malformed, out of range or unknown.
    #[error("invalid request parameters: {0:?}")]
    InvalidParams(Vec<InvalidParam>),
    /// No saga with this id has been recorded.
    #[error("saga {0:?} not found")]
    SagaNotFound(String),
    /// No route matches the path.
    #[error("no route for path {0:?}")]
    RouteNotFound(String),
    /// The route exists but not for this method.
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// Authentication is on and the request carried no acceptable bearer token. The reason
    /// a token was refused is logged by [`super::auth`], never returned: it would tell a
    /// guesser which part to change.
    #[error("unauthenticated")]
    Unauthenticated {
        /// A token was presented (and refused), rather than none at all: the challenge then
        /// says `error="invalid_token"` (RFC 6750 §3.1).
        token_rejected: bool,
    },
    /// The caller is known but its role does not allow this endpoint.
    #[error("forbidden: needs {needed}")]
    Forbidden {
        /// What the endpoint needs, in words (e.g. "the operator role").
        needed: &'static str,
    },
    /// The request target is longer than `http.max_uri_bytes`.
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// The headers add up to more than `http.max_header_bytes`.
    #[error("headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// The body is longer than `http.max_body_bytes`.
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The request ran past `http.request_timeout_ms`.
    #[error("request timed out")]
    RequestTimeout,
    /// The database failed; the cause is logged, never returned.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Anything else that is our fault (e.g. a stored row the code cannot interpret).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// One offending parameter: its wire name and why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InvalidParam {
    /// The parameter as the client spelled it, e.g. `limit` or `meta.region`.
    pub name: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl InvalidParam {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g.
    /// `https://saga-tracker.dev/problems/invalid-parameter`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem; the same for every occurrence of a `type`.
    pub title: String,
    /// The HTTP status code, repeated for convenience.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Present for `invalid-parameter`: every rejected parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_params: Option<Vec<InvalidParam>>,
}

impl ApiError {
    /// A 400 naming a single parameter.
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParams(vec![InvalidParam::new(name, reason)])
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidParams(_) => StatusCode::BAD_REQUEST,
            Self::SagaNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(e) if database_unreachable(e) || query_timed_out(e) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document for this error. Internal causes are not part of it.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, invalid_params) = match self {
            Self::InvalidParams(params) => {
                let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                (
                    "invalid-parameter",
                    "Invalid request parameter",
                    format!("invalid parameter(s): {}", names.join(", ")),
                    Some(params.clone()),
                )
            }
            Self::SagaNotFound(id) => (
                "saga-not-found",
                "Saga not found",
                format!("no saga with id {id:?} has been recorded"),
                None,
            ),
            Self::RouteNotFound(path) => (
                "not-found",
                "Not found",
                format!("no resource at {path:?}"),
                None,
            ),
            Self::MethodNotAllowed(method) => (
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not supported on this resource"),
                None,
            ),
            Self::Unauthenticated { .. } => (
                "unauthenticated",
                "Authentication required",
                "this endpoint needs `Authorization: Bearer <token>` with a valid API key or \
                 OpenID Connect access token"
                    .to_owned(),
                None,
            ),
            Self::Forbidden { needed } => (
                "forbidden",
                "Forbidden",
                format!("this endpoint needs {needed}"),
                None,
            ),
            Self::UriTooLong(limit) => (
                "uri-too-long",
                "Request target too long",
                format!("the path and query string may be at most {limit} bytes"),
                None,
            ),
            Self::HeadersTooLarge(limit) => (
                "headers-too-large",
                "Request headers too large",
                format!("the request headers may add up to at most {limit} bytes"),
                None,
            ),
            Self::PayloadTooLarge(limit) => (
                "payload-too-large",
                "Request body too large",
                format!("the request body may be at most {limit} bytes"),
                None,
            ),
            Self::RequestTimeout => (
                "request-timeout",
                "Request timed out",
                "the request took longer than the server's time limit; retry later".to_owned(),
                None,
            ),
            Self::Database(e) if query_timed_out(e) => (
                "query-timeout",
                "Query timed out",
                "the query took longer than its time limit; narrow the filters (a time window \
                 or a sagaType) or retry later"
                    .to_owned(),
                None,
            ),
            Self::Database(_) if status == StatusCode::SERVICE_UNAVAILABLE => (
                "unavailable",
                "Service unavailable",
                "the database is unavailable; retry later".to_owned(),
                None,
            ),
            Self::Database(_) | Self::Internal(_) => (
                "internal",
                "Internal server error",
                "the request failed because of an internal error; it has been logged".to_owned(),
                None,
            ),
        };
        Problem {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            invalid_params,
        }
    }
}

/// Failures of the connection rather than of the statement: the client may retry.
fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // SQLSTATE classes 08 (connection exception), 53 (insufficient resources, e.g. too
        // many connections) and 57P (server shutting down or starting up).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")),
        _ => false,
    }
}

/// The statement hit its `statement_timeout` (SQLSTATE 57014, query canceled): the
/// database is fine but busy or the question too big, so the client may retry or narrow it.
fn query_timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(e) => {
                tracing::error!(error = %e, "database error while serving a request")
            }
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error while serving a request")
            }
            _ => {}
        }
        let problem = self.problem();
        let status = self.status();
        // Serializing a struct of strings and numbers cannot fail.
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Self::Unauthenticated { token_rejected } = self {
            // RFC 6750 §3: the challenge says which scheme to use, and whether the token
            // given was the problem.
            let challenge = if token_rejected {
                r#"Bearer realm="saga-tracker", error="invalid_token""#
            } else {
                r#"Bearer realm="saga-tracker""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_params_name_every_field() {
        let p = ApiError::InvalidParams(vec![
            InvalidParam::new("limit", "must be between 1 and 500"),
            InvalidParam::new("status", "unknown status"),
        ])
        .problem();
        assert_eq!(p.status, 400);
        assert_eq!(
            p.problem_type,
            "https://saga-tracker.dev/problems/invalid-parameter"
        );
        assert!(p.detail.contains("limit, status"), "{}", p.detail);
        assert_eq!(p.invalid_params.map(|v| v.len()), Some(2));
    }

    #[test]
    fn database_errors_are_opaque() {
        let e = ApiError::Database(sqlx::Error::Protocol("select secret from sagas".into()));
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert_eq!(p.problem_type, "https://saga-tracker.dev/problems/internal");
        assert!(!p.detail.contains("select"));
    }

    #[test]
    fn a_refused_token_is_challenged_with_invalid_token_and_a_missing_one_without() {
        let r = ApiError::Unauthenticated {
            token_rejected: true,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="saga-tracker", error="invalid_token""#
        );
        let r = ApiError::Unauthenticated {
            token_rejected: false,
        }
        .into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="saga-tracker""#
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn an_exhausted_pool_is_unavailable_not_internal() {
        let p = ApiError::Database(sqlx::Error::PoolTimedOut).problem();
        assert_eq!(p.status, 503);
        assert_eq!(
            p.problem_type,
            "https://saga-tracker.dev/problems/unavailable"
        );
    }
}
