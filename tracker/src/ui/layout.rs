//! The page shell (header, navigation, the quick box, sign-out) and the small formatters
//! every page shares: times, durations, status badges.
//!
//! Times are shown in UTC, always with the zone, because an incident channel mixes people
//! from several: the exact instant is in each `<time datetime>` and its tooltip.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets;
use crate::api::auth::Caller;
pub use crate::humanize::{ago, duration, duration_f, short_time, stuck_reason_text};

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Search,
    None,
}

/// Who is looking, for the header: taken from the request by [`crate::api::auth::authorize`].
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The caller's name and role; absent on public pages (login).
    pub caller: Option<Caller>,
    /// The token came from the session cookie (so a sign-out button makes sense).
    pub session: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            caller: parts.extensions.get::<Caller>().cloned(),
            session: parts
                .extensions
                .get::<super::session::FromSession>()
                .is_some(),
        })
    }
}

/// A whole page: `title` in the tab, `body` in `<main>`.
pub fn page(title: &str, nav: Nav, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Saga Explorer" }
                link rel="icon" href=(assets::url("icon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Saga Explorer" }
                    nav aria-label="Main" {
                        a href="/ui" aria-current=[(nav == Nav::Overview).then_some("page")] { "Overview" }
                        a href="/ui/sagas" aria-current=[(nav == Nav::Search).then_some("page")] { "Search" }
                        a href="/docs" { "API" }
                    }
                    form #go role="search" action="/ui/go" method="get" {
                        label for="go-q" { "Go to saga" }
                        input #go-q type="search" name="q" required
                            placeholder="saga id, business key or trace id"
                            autocomplete="off" spellcheck="false" aria-keyshortcuts="/";
                        button type="submit" { "Go" }
                    }
                    @if let Some(c) = &viewer.caller {
                        @if c.method != crate::api::auth::AuthMethod::Anonymous {
                            span.whoami title="Signed in" {
                                (c.name)
                                @if let Some(role) = c.role { " · " (role_name(role)) }
                            }
                        }
                    }
                    @if viewer.session {
                        form #logout action="/ui/logout" method="post" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
                footer.bottom {
                    "Saga Tracker " (env!("CARGO_PKG_VERSION")) " · times in UTC · "
                    a href="/docs" { "REST API" }
                }
            }
        }
    }
}

fn role_name(role: crate::config::Role) -> &'static str {
    match role {
        crate::config::Role::Reader => "reader",
        crate::config::Role::Operator => "operator",
    }
}

/// A page holding only a heading and a sentence (errors, refusals).
pub fn message_page(title: &str, detail: &str) -> Markup {
    page(
        title,
        Nav::None,
        &Viewer::default(),
        html! {
            section.message {
                h1 { (title) }
                p { (detail) }
                p { a href="/ui" { "Back to the overview" } " · " a href="/ui/sagas" { "Search" } }
            }
        },
    )
}

/// `2026-12-01 10:00:05.123Z` in a `<time>` with the RFC 3339 instant.
pub fn time(t: DateTime<Utc>) -> Markup {
    let iso = t.to_rfc3339_opts(SecondsFormat::Millis, true);
    html! { time datetime=(iso) title=(iso) { (short_time(t)) } }
}

/// An optional time, or an em dash.
pub fn maybe_time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.none { "—" } },
    }
}

/// A status badge; colour by class, the text itself says the status (not colour alone).
pub fn badge(status: &str) -> Markup {
    html! { span.badge data-status=(status) { (status.replace('_', " ")) } }
}

/// The stuck marker of a result row.
pub fn stuck_marker(reason: &str, since: DateTime<Utc>) -> Markup {
    let text = stuck_reason_text(reason);
    html! {
        span.stuck-marker title=(format!("{text} since {}", short_time(since))) {
            "stuck"
        }
    }
}

/// A count with thousands separators: `1 234 567` (thin spaces, as in SI).
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A share as a percentage: `97.3 %`.
pub fn percent(share: Option<f64>) -> String {
    match share {
        Some(s) => format!("{:.1} %", s * 100.0),
        None => "—".to_owned(),
    }
}

/// Query-string encoding of `(name, value)` pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A saga page's URL: the id percent-encoded as one path segment.
pub fn saga_url(saga_id: &str) -> String {
    format!("/ui/sagas/{}", encode_segment(saga_id))
}

/// Percent-encodes everything but unreserved characters, so `/`, `?`, `#` and `%` in an id
/// stay inside one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: `<` is escaped so the text can never
/// close the element, whatever a saga's metadata holds.
pub fn json_block(value: &serde_json::Value) -> PreEscaped<String> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    PreEscaped(
        text.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
    }

    #[test]
    fn saga_ids_stay_one_path_segment() {
        assert_eq!(
            saga_url("order/8812 ü?#%"),
            "/ui/sagas/order%2F8812%20%C3%BC%3F%23%25"
        );
    }

    #[test]
    fn a_json_block_cannot_close_its_script_element() {
        let v = serde_json::json!({"note": "</script><script>alert(1)</script>"});
        let out = json_block(&v).0;
        assert!(!out.contains("</script"));
        let back: serde_json::Value =
            serde_json::from_str(&out).expect("still JSON after escaping");
        assert_eq!(back, v);
    }
}
