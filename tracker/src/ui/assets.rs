//! The stylesheet and the script, embedded in the binary and served under `/ui/static/`.
//!
//! Pages refer to them with a content hash in the query string (`app.css?v=…`), so a browser
//! may keep them for a year and still never runs an old script against a new page after an
//! upgrade.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
const ICON: &str = include_str!("assets/icon.svg");

struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.css",
        body: CSS,
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "app.js",
        body: JS,
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "icon.svg",
        body: ICON,
        content_type: "image/svg+xml",
    },
];

/// The first 12 hex digits of the SHA-256 of every asset, in [`ASSETS`] order.
fn versions() -> &'static [String; 3] {
    static V: OnceLock<[String; 3]> = OnceLock::new();
    V.get_or_init(|| {
        ASSETS.map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
        })
    })
}

/// `/ui/static/<name>?v=<hash>`: the URL pages use.
pub fn url(name: &str) -> String {
    let v = ASSETS
        .iter()
        .position(|a| a.name == name)
        .map_or("", |i| versions()[i].as_str());
    format!("/ui/static/{name}?v={v}")
}

/// `GET /ui/static/{file}`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == file) else {
        return crate::ui::error_page(crate::api::ApiError::RouteNotFound(format!(
            "/ui/static/{file}"
        )));
    };
    let asset = &ASSETS[i];
    let etag = format!("\"{}\"", versions()[i]);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
