//! Who is calling, and whether they may: bearer tokens (API keys or OpenID Connect JWTs),
//! two roles, and the one rule that says which endpoint needs which.
//!
//! - [`keys`] — API keys: generation, `sha256:` hashes, constant-time lookup, the key file.
//! - [`oidc`] — JWTs verified against the provider's cached JWKS.
//!
//! The rule ([`required_access`]) is decided by method and path, not by each handler, so an
//! endpoint added later is covered without anyone remembering to: `GET`/`HEAD` needs the
//! reader role, everything else — and everything under `/api/v1/admin/` — the operator role,
//! and only the probes and `/metrics` are public. The same rule marks the endpoints of the
//! OpenAPI document ([`document_security`]).
//!
//! This module never logs or returns a token: a refusal is logged with its reason only, and
//! an accepted caller is known by its configured (or claimed, sanitised) name.

pub mod keys;
pub mod oidc;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::AuthSettings;
pub use crate::config::Role;

use super::{ApiError, AppState};

/// Paths that answer without credentials: orchestrators and Prometheus do not carry tokens,
/// and what they reveal (up/ready, counters) is meant for the cluster. Put them on
/// `http.ops_addr` to keep them off the API port.
pub const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Longest bearer token considered; anything longer is refused before it is hashed or
/// parsed.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing (probes, `/metrics`).
    Public,
    /// Any accepted token, whatever its role (`/api/v1/whoami`: a caller whose role claim
    /// maps to nothing can still find out why it gets 403s).
    Authenticated,
    Reader,
    Operator,
}

/// The API's description and its reference page: public, so the page can load the
/// document without a token (it holds the API's shape, never data), and anyone can read how
/// to call the API before they have a key.
pub const PUBLIC_DOC_PATHS: [&str; 2] = ["/openapi.json", "/docs"];

/// The access rule, by method and path.
pub fn required_access(method: &Method, path: &str) -> Access {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let public_doc = PUBLIC_DOC_PATHS.contains(&path) || path.starts_with("/docs/");
    if (safe && (PUBLIC_PATHS.contains(&path) || public_doc)) || crate::ui::is_public(method, path)
    {
        Access::Public
    } else if path == "/api/v1/admin" || path.starts_with("/api/v1/admin/") || !safe {
        Access::Operator
    } else if path == "/api/v1/whoami" {
        Access::Authenticated
    } else {
        Access::Reader
    }
}

/// How the caller was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Oidc,
    /// Authentication is off (`auth.enabled = false`).
    Anonymous,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Oidc => "oidc",
            Self::Anonymous => "anonymous",
        }
    }
}

/// The caller of a request, put in the request's extensions by [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Caller {
    /// The API key's name, or the token's `name_claim`; `anonymous` with authentication off.
    #[schema(example = "grafana")]
    pub name: String,
    /// `null` for a valid OIDC token whose role claim maps to no role.
    pub role: Option<Role>,
    pub method: AuthMethod,
}

impl Caller {
    /// Everyone, when authentication is off: an operator, as before authentication existed.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Some(Role::Operator),
            method: AuthMethod::Anonymous,
        }
    }

    fn may(&self, access: Access) -> bool {
        match access {
            Access::Public | Access::Authenticated => true,
            Access::Reader => self.role.is_some(),
            Access::Operator => self.role == Some(Role::Operator),
        }
    }
}

/// Recognises callers. Cheap to clone; `disabled()` lets everyone in as [`Caller::anonymous`].
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    keys: keys::ApiKeys,
    oidc: Option<oidc::OidcVerifier>,
}

/// Why a token was refused, for the log.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Refusal {
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("the token matches no API key (and is not a JWT, or OIDC is off)")]
    UnknownKey,
    #[error("the JWT was refused: {0}")]
    Jwt(#[from] oidc::Rejection),
}

impl Authenticator {
    /// Authentication off.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// From `[auth]`: loads the key file and, with OIDC on, fetches the JWKS once (a failure
    /// there is logged, not fatal).
    pub async fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        if !settings.enabled {
            return Ok(Self::disabled());
        }
        let keys = keys::ApiKeys::load(settings).await?;
        let oidc = if settings.oidc.enabled {
            let verifier = oidc::OidcVerifier::new(&settings.oidc)?;
            verifier.warm_up().await;
            Some(verifier)
        } else {
            None
        };
        if keys.is_empty() && oidc.is_none() {
            tracing::warn!("authentication is on but no API key is configured yet and OIDC is off: every request will be refused");
        }
        Ok(Self {
            inner: Some(Arc::new(Inner { keys, oidc })),
        })
    }

    /// Whether requests must carry credentials.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Checks a token as a request's bearer token would be (the UI's sign-in form); the
    /// reason for a refusal is logged, not returned. With authentication off every token is
    /// [`Caller::anonymous`].
    pub async fn check_token(&self, token: &str) -> Result<Caller, ()> {
        let Some(inner) = &self.inner else {
            return Ok(Caller::anonymous());
        };
        let shaped = !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if !shaped {
            tracing::info!(reason = %Refusal::Malformed, "UI sign-in refused");
            return Err(());
        }
        self.authenticate(inner, token).await.map_err(|refusal| {
            tracing::info!(reason = %refusal, "UI sign-in refused");
        })
    }

    async fn authenticate(&self, inner: &Inner, token: &str) -> Result<Caller, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        if let Some(key) = inner.keys.find(token).await {
            return Ok(Caller {
                name: key.name,
                role: Some(key.role),
                method: AuthMethod::ApiKey,
            });
        }
        match &inner.oidc {
            Some(verifier) if looks_like_jwt(token) => {
                let verified = verifier.verify(token).await?;
                Ok(Caller {
                    name: verified.name,
                    role: verified.role,
                    method: AuthMethod::Oidc,
                })
            }
            _ => Err(Refusal::UnknownKey),
        }
    }
}

/// Three non-empty base64url segments: the only shape worth handing to the JWT parser.
fn looks_like_jwt(token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    segments.len() == 3
        && segments[..2].iter().all(|s| !s.is_empty())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// What the `Authorization` header holds.
enum Presented<'a> {
    Nothing,
    Token(&'a str),
    Malformed,
}

fn bearer_token(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // None at all, or several: several is ambiguous, so refuse rather than pick one.
        return if headers.contains_key(header::AUTHORIZATION) {
            Presented::Malformed
        } else {
            Presented::Nothing
        };
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            // RFC 6750's b64token characters.
            let ok = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
            if ok {
                Presented::Token(token)
            } else {
                Presented::Malformed
            }
        }
        // Another scheme (Basic, …) offers no bearer token: challenge as for none.
        _ => Presented::Nothing,
    }
}

/// Middleware: finds the caller, records its name on the request's span (the access log
/// line carries it), refuses with 401/403 problems, and leaves the [`Caller`] in the
/// request's extensions for handlers.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let access = required_access(req.method(), req.uri().path());
    if access == Access::Public {
        return next.run(req).await;
    }
    let ui = crate::ui::is_ui_path(req.uri().path());
    let caller = match &state.auth.inner {
        None => Caller::anonymous(),
        Some(inner) => {
            let mut presented = bearer_token(req.headers());
            let mut from_session = false;
            // The UI's session cookie, on UI paths only and only without a header (a proxy's
            // `Authorization` wins): see `crate::ui::session`.
            if ui && matches!(presented, Presented::Nothing) {
                if let Some(token) = crate::ui::session::token_from_cookie(req.headers()) {
                    presented = Presented::Token(token);
                    from_session = true;
                }
            }
            let outcome = match presented {
                Presented::Nothing => {
                    tracing::info!("request refused: no bearer token");
                    if ui {
                        return ui_refusal(&req, false);
                    }
                    return ApiError::Unauthenticated {
                        token_rejected: false,
                    }
                    .into_response();
                }
                Presented::Malformed => Err(Refusal::Malformed),
                Presented::Token(token) => state.auth.authenticate(inner, token).await,
            };
            match outcome {
                Ok(caller) => {
                    if from_session {
                        req.extensions_mut().insert(crate::ui::session::FromSession);
                    }
                    caller
                }
                Err(refusal) => {
                    tracing::info!(reason = %refusal, "request refused: bearer token not accepted");
                    if ui {
                        return ui_refusal(&req, from_session);
                    }
                    return ApiError::Unauthenticated {
                        token_rejected: true,
                    }
                    .into_response();
                }
            }
        }
    };
    let span = tracing::Span::current();
    span.record("caller", caller.name.as_str());
    span.record("auth", caller.method.as_str());
    if !caller.may(access) {
        tracing::info!(role = ?caller.role, "request refused: role not allowed here");
        let needed = match access {
            Access::Operator => "the operator role",
            _ => "the reader or operator role",
        };
        if ui {
            return crate::ui::error_page(ApiError::Forbidden { needed });
        }
        return ApiError::Forbidden { needed }.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// An unauthenticated UI request: a page goes to the sign-in form (dropping a session
/// cookie whose token was refused); the live fragment, fetched by script, gets a bare 401
/// so the page can say the session ended instead of swapping in a login form.
fn ui_refusal(req: &Request, session_refused: bool) -> Response {
    let live = req
        .uri()
        .path()
        .strip_prefix("/ui/sagas/")
        .is_some_and(|rest| rest.ends_with("/live"));
    if live {
        return ApiError::Unauthenticated {
            token_rejected: session_refused,
        }
        .into_response();
    }
    crate::ui::session::login_redirect(&crate::ui::path_and_query(req), session_refused)
}

/// Declares the bearer scheme in the OpenAPI document and marks each operation with what
/// [`required_access`] says of it: public ones need nothing, the others the bearer token and
/// answer 401 (and 403 where a role can be too low).
pub fn document_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`st_…`, see `saga-tracker api-key new`) or an OpenID Connect \
                     access token (JWT). Required when `auth.enabled` is true.",
                ))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                super::error::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(op) = operation.as_mut() else {
                continue;
            };
            let access = required_access(&method, path);
            if access == Access::Public {
                // An empty requirement: no credentials.
                op.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new::<_, _, &str>("bearer", [])]);
            op.responses.responses.insert(
                "401".to_owned(),
                problem("No bearer token, or one that was not accepted (type `unauthenticated`); the `WWW-Authenticate` header says which").into(),
            );
            if matches!(access, Access::Reader | Access::Operator) {
                op.responses.responses.insert(
                    "403".to_owned(),
                    problem(if access == Access::Operator {
                        "The caller's role is not operator (type `forbidden`)"
                    } else {
                        "The caller's token maps to no role (type `forbidden`)"
                    })
                    .into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_rule_opens_probes_reads_for_readers_and_the_rest_for_operators() {
        let get = Method::GET;
        assert_eq!(required_access(&get, "/healthz"), Access::Public);
        assert_eq!(required_access(&get, "/metrics"), Access::Public);
        assert_eq!(required_access(&Method::POST, "/metrics"), Access::Operator);
        assert_eq!(required_access(&get, "/api/v1/sagas"), Access::Reader);
        assert_eq!(required_access(&get, "/openapi.json"), Access::Public);
        assert_eq!(required_access(&get, "/docs"), Access::Public);
        assert_eq!(
            required_access(&get, "/docs/swagger-ui.css"),
            Access::Public
        );
        assert_eq!(required_access(&get, "/ui"), Access::Reader);
        assert_eq!(required_access(&get, "/ui/sagas/x"), Access::Reader);
        assert_eq!(required_access(&get, "/ui/export"), Access::Reader);
        assert_eq!(required_access(&get, "/ui/login"), Access::Public);
        assert_eq!(required_access(&get, "/ui/static/app.js"), Access::Public);
        assert_eq!(required_access(&Method::POST, "/ui/login"), Access::Public);
        assert_eq!(
            required_access(&Method::POST, "/ui/sagas"),
            Access::Operator
        );
        assert_eq!(required_access(&get, "/ui/sagas/x"), Access::Reader);
        assert_eq!(
            required_access(&get, "/api/v1/whoami"),
            Access::Authenticated
        );
        assert_eq!(
            required_access(&get, "/api/v1/admin/config"),
            Access::Operator
        );
        assert_eq!(required_access(&get, "/api/v1/admin"), Access::Operator);
        assert_eq!(
            required_access(&get, "/api/v1/administrator"),
            Access::Reader
        );
        assert_eq!(
            required_access(&Method::DELETE, "/api/v1/sagas/x"),
            Access::Operator
        );
        assert_eq!(
            required_access(&Method::POST, "/api/v1/dlq/replay"),
            Access::Operator
        );
    }

    #[test]
    fn only_a_single_well_formed_bearer_header_presents_a_token() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(v).expect("valid"),
                );
            }
            h
        };
        assert!(matches!(bearer_token(&with(&[])), Presented::Nothing));
        assert!(matches!(
            bearer_token(&with(&["Basic dXNlcjpwdw=="])),
            Presented::Nothing
        ));
        assert!(matches!(
            bearer_token(&with(&["Bearer st_abc"])),
            Presented::Token("st_abc")
        ));
        assert!(matches!(
            bearer_token(&with(&["bearer a.b.c"])),
            Presented::Token("a.b.c")
        ));
        assert!(matches!(
            bearer_token(&with(&["Bearer "])),
            Presented::Malformed
        ));
        assert!(matches!(
            bearer_token(&with(&["Bearer a b"])),
            Presented::Malformed
        ));
        assert!(matches!(
            bearer_token(&with(&["Bearer one", "Bearer two"])),
            Presented::Malformed
        ));
    }

    #[test]
    fn roles_allow_what_the_rule_asks() {
        let reader = Caller {
            name: "r".into(),
            role: Some(Role::Reader),
            method: AuthMethod::ApiKey,
        };
        let nobody = Caller {
            role: None,
            ..reader.clone()
        };
        assert!(reader.may(Access::Reader) && !reader.may(Access::Operator));
        assert!(nobody.may(Access::Authenticated) && !nobody.may(Access::Reader));
        assert!(Caller::anonymous().may(Access::Operator));
        assert!(
            looks_like_jwt("eyJh.eyJi.c2ln")
                && !looks_like_jwt("st_abc")
                && !looks_like_jwt("a..b")
        );
    }
}
