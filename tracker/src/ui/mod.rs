//! The Saga Explorer: a web UI for the people on call, rendered by the tracker itself.
//!
//! Pages are HTML rendered on the server (maud templates compiled into the binary) from the
//! same reads the REST API uses, with one small script for what HTML cannot do alone (a saga
//! page that updates while the saga runs, copy-as-JSON). So:
//!
//! - every view is a URL: a search is a plain `GET` whose query string uses the API's own
//!   parameter names, and a link pasted in an incident channel opens the same view;
//! - nothing is loaded from another host and there is no front-end build: the stylesheet and
//!   the script are embedded ([`assets`]), so the UI works air-gapped and under a
//!   `Content-Security-Policy` of `'self'` only (no inline script or style: the timeline is
//!   SVG drawn with attributes, coloured by classes);
//! - the pages work without JavaScript; the script only adds to them.
//!
//! Modules: [`overview`] (per-type health, `/ui`), [`search`] (`/ui/sagas`, the quick box
//! `/ui/go`, the export `/ui/export`), [`saga`] (`/ui/sagas/{id}` and its live fragment),
//! [`session`] (pasting a token on `/ui/login` when access control is on), [`links`] (URL
//! templates for trace and log views), [`layout`] (the page shell and small formatters).
//!
//! Access is decided by [`crate::api::auth`] like every other route: a page needs the reader
//! role. The UI adds one way of presenting the token — the session cookie made by
//! `/ui/login`, which is read on `/ui` paths only — and never a way around it.
//!
//! No page issues an unbounded query: a search page is one keyset page, a saga page one
//! saga, the overview reads the rollups and the running sagas (the same reads as
//! `/api/v1/stats` and the stuck gauge).

pub mod assets;
pub mod layout;
pub mod links;
pub mod overview;
pub mod saga;
pub mod search;
pub mod session;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::api::{ApiError, AppState};

/// Where the UI lives.
pub const PREFIX: &str = "/ui";

/// The UI's routes (merged into the API router when `ui.enabled`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PREFIX) }))
        .route("/ui", get(overview::page))
        .route("/ui/", get(|| async { Redirect::permanent(PREFIX) }))
        .route("/ui/sagas", get(search::page))
        .route("/ui/go", get(search::go))
        .route("/ui/export", get(search::export))
        .route("/ui/sagas/{sagaId}", get(saga::page))
        .route("/ui/sagas/{sagaId}/live", get(saga::live))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", axum::routing::post(session::logout))
        .route("/ui/static/{file}", get(assets::serve))
}

/// Whether `path` belongs to the UI (where the session cookie is read).
pub fn is_ui_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/ui/")
}

/// UI paths that need no credentials: the login form, the sign-out, and the stylesheet and
/// script (which hold no data), so the login page renders styled.
pub fn is_public(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    match *method {
        Method::GET | Method::HEAD => {
            path == "/" || path == "/ui/login" || path.starts_with("/ui/static/")
        }
        // The login form posts the token it authenticates itself; sign-out only removes the
        // cookie. Both check that the post came from our own page (`session`).
        Method::POST => path == "/ui/login" || path == "/ui/logout",
        _ => false,
    }
}

/// An error as a page: the problem's title and detail in the shell, with its status.
pub fn error_page(err: ApiError) -> Response {
    let status = err.status();
    if status.is_server_error() {
        // Logs the cause (database, internal) exactly as the API does, once.
        drop(err.into_response());
        return page_response(
            status,
            layout::message_page(
                "Something went wrong",
                "The tracker could not answer this page (the database may be unavailable). \
                 The cause is in the tracker's log. Try again in a few seconds.",
            ),
        );
    }
    let problem = err.problem();
    page_response(
        status,
        layout::message_page(&problem.title, &problem.detail),
    )
}

/// A rendered page with its status, marked uncacheable: pages show live data and, with
/// access control on, data only their caller may see.
pub fn page_response(status: StatusCode, body: maud::Markup) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The path and query of the request, for `?next=` after login.
pub fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| PREFIX.to_owned(), |pq| pq.as_str().to_owned())
}
