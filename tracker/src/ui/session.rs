//! Signing in to the UI by pasting a token, for people without a proxy in front of the
//! tracker.
//!
//! With access control on, a browser has two ways in, and both present the same token the
//! API takes:
//!
//! 1. **A forwarding proxy** (oauth2-proxy, nginx, an ingress) that adds
//!    `Authorization: Bearer <token>` to every request. Nothing here is involved: the header
//!    wins over any cookie.
//! 2. **Pasting an API key or an OIDC access token** on `/ui/login`. The token is checked
//!    exactly as a request's would be, then kept in a cookie that is `HttpOnly` (no script
//!    can read it), `SameSite=Strict` (no other site can make the browser send it), limited
//!    to `Path=/ui`, and read by the server on `/ui` paths only — so it never opens
//!    `/api/v1/*` — and re-checked on every request, so a revoked key or an expired JWT stops
//!    working at once. The cookie holds the token itself rather than a server-side session:
//!    replicas share nothing and a restart signs nobody out.
//!
//! The token is never logged, echoed into a page, or put in a URL.

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav, Viewer};
use crate::api::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "saga_tracker_session";

/// Request extension set by authentication when the token came from the session cookie.
#[derive(Debug, Clone, Copy)]
pub struct FromSession;

/// The token in the session cookie, if there is one of a plausible shape.
pub fn token_from_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        })
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    /// Why the browser was sent here (`expired`: the cookie's token is no longer accepted).
    reason: Option<String>,
}

/// Only paths of our own UI are followed after login, so `?next=` cannot send a person to
/// another site (an open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if super::is_ui_path(n.split('?').next().unwrap_or("")) && !n.starts_with("//") => {
            n.to_owned()
        }
        _ => super::PREFIX.to_owned(),
    }
}

/// Where an unauthenticated browser is sent: the login page, remembering the page it wanted.
pub fn login_redirect(next: &str, expired: bool) -> Response {
    let mut q = vec![("next", next.to_owned())];
    if expired {
        q.push(("reason", "expired".to_owned()));
    }
    let mut r = Redirect::to(&format!("/ui/login?{}", layout::query(&q))).into_response();
    if expired {
        // The cookie's token was refused: drop it, or every page would bounce here again.
        if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

/// `GET /ui/login`.
pub async fn login_page(State(state): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    if !state.auth.enabled() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let note = (q.reason.as_deref() == Some("expired"))
        .then_some("Your session ended: the token is no longer accepted. Paste a current one.");
    form_page(StatusCode::OK, &safe_next(q.next.as_deref()), note, None)
}

fn form_page(status: StatusCode, next: &str, note: Option<&str>, error: Option<&str>) -> Response {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p {
                "This tracker requires an API key or an access token. Paste one that has the "
                strong { "reader" } " or " strong { "operator" } " role ("
                code { "saga-tracker api-key new" } " makes keys). It is kept in an HttpOnly "
                "cookie for this UI only and checked on every page."
            }
            @if let Some(n) = note { p.note { (n) } }
            @if let Some(e) = error {
                ul.form-errors role="alert" { li data-param="token" { (e) } }
            }
            form #login-form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API key or access token" }
                input #token type="password" name="token" required autocomplete="off"
                    spellcheck="false" autofocus;
                button type="submit" { "Sign in" }
            }
            p.hint {
                "Behind a proxy that sets " code { "Authorization: Bearer …" }
                " you never see this page."
            }
        }
    };
    super::page_response(
        status,
        layout::page("Sign in", Nav::None, &Viewer::default(), body),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

// Hand-written so that a `{:?}` anywhere can never print the token.
impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("token", &"<redacted>")
            .field("next", &self.next)
            .finish()
    }
}

/// The post came from a page of this origin. Browsers say so in `Sec-Fetch-Site`; one that
/// does not send it is judged by `Origin` (or `Referer`), which must name the host the request
/// was sent to. Our pages send `Referrer-Policy: no-referrer`, under which a browser's form
/// post carries `Origin: null` and no `Referer` — so `Sec-Fetch-Site` is the signal that
/// works, and `null` alone is refused. A post made by another site's page is refused either
/// way, even before `SameSite` is considered.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    // A proxy may rewrite `Host` to the upstream's name and pass the original on.
    let hosts: Vec<&str> = [header::HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .collect();
    if hosts.is_empty() {
        return false;
    }
    let source = headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match source {
        Some(s) => {
            let rest = s
                .strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"))
                .unwrap_or("");
            rest.split('/')
                .next()
                .is_some_and(|origin_host| hosts.contains(&origin_host))
        }
        // Neither header: not a browser form post; curl and scripts use the API instead.
        None => false,
    }
}

/// `POST /ui/login`: checks the token like any request's, then sets the cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if !state.auth.enabled() {
        return Redirect::to(&next).into_response();
    }
    if !same_origin(&headers) {
        tracing::info!("UI sign-in refused: the form was not posted from this origin");
        return form_page(
            StatusCode::FORBIDDEN,
            &next,
            None,
            Some("This sign-in did not come from this page. Open /ui/login and try again."),
        );
    }
    let token = form.token.trim();
    match state.auth.check_token(token).await {
        Ok(caller) if caller.role.is_some() => {
            tracing::info!(caller = %caller.name, "UI sign-in");
            let mut r = Redirect::to(&next).into_response();
            let cookie = session_cookie(&state, &headers, token);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(_) => form_page(
            StatusCode::FORBIDDEN,
            &next,
            None,
            Some("This token is valid but maps to no role: it needs the reader or operator role."),
        ),
        Err(()) => form_page(
            StatusCode::UNAUTHORIZED,
            &next,
            None,
            Some("This token was not accepted (unknown API key, or an invalid or expired token)."),
        ),
    }
}

/// `POST /ui/logout`: removes the cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn session_cookie(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    let ui = &state.settings.ui;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = match ui.secure_cookie.as_str() {
        "always" => true,
        "never" => false,
        _ => https,
    };
    format!(
        "{COOKIE}={token}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ui.session_max_age_secs,
        if secure { "; Secure" } else { "" }
    )
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_leaves_the_ui() {
        assert_eq!(
            safe_next(Some("/ui/sagas?status=FAILED")),
            "/ui/sagas?status=FAILED"
        );
        assert_eq!(safe_next(Some("https://evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("/api/v1/sagas")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn the_cookie_token_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; saga_tracker_session=st_abc-DEF_1; b=2"),
        );
        assert_eq!(token_from_cookie(&h), Some("st_abc-DEF_1"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("saga_tracker_session=bad\"value"),
        );
        assert_eq!(token_from_cookie(&h), None);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("tracker:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://tracker:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        assert!(!same_origin(&h));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://tracker:8080/ui/login"),
        );
        assert!(same_origin(&h));
    }
}
