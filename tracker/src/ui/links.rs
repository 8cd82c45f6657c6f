//! Links out of a saga page: URL templates for a trace view and a log view, filled from the
//! saga's trace ids, its id and its time range (`[ui] trace_url_template`,
//! `log_url_template`).
//!
//! A template is checked once, at start-up ([`validate_template`]), so a typo in a placeholder
//! stops the process with the key named instead of producing broken links. Values are
//! percent-encoded as they are put in, so a saga id such as `order/8812 ü` cannot change the
//! shape of the URL.

use chrono::{DateTime, SecondsFormat, Utc};

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 6] = ["traceId", "sagaId", "from", "to", "fromIso", "toIso"];

/// Margin added on each side of a saga's time range, so logs written just before its first
/// event or just after its last one are in the window.
const MARGIN_MS: i64 = 60_000;

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("must be an http:// or https:// URL (or empty)")]
    NotHttp,
    #[error("has an unknown placeholder `{{{0}}}`; known: {{traceId}}, {{sagaId}}, {{from}}, {{to}}, {{fromIso}}, {{toIso}} (write a literal brace as %7B or %7D)")]
    Unknown(String),
    #[error("has an unclosed `{{` (write a literal brace as %7B)")]
    Unclosed,
    #[error("has a stray `}}` (write a literal brace as %7D)")]
    Stray,
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    Value(&'a str),
}

fn parse(template: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(TemplateError::Stray);
        }
        parts.push(Part::Text(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TemplateError::Unclosed)?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(TemplateError::Unknown(name.to_owned()));
        }
        parts.push(Part::Value(name));
        rest = &after[close + 1..];
    }
    parts.push(Part::Text(rest));
    Ok(parts)
}

/// Checks a template as configured; the empty template (no link) is valid.
pub fn validate_template(template: &str) -> Result<(), TemplateError> {
    if template.is_empty() {
        return Ok(());
    }
    if !(template.starts_with("http://") || template.starts_with("https://")) {
        return Err(TemplateError::NotHttp);
    }
    parse(template).map(|_| ())
}

/// What a link is filled from.
#[derive(Debug, Clone)]
pub struct LinkContext<'a> {
    pub saga_id: &'a str,
    /// The first event of the saga.
    pub started_at: DateTime<Utc>,
    /// The last event (or the end) of the saga.
    pub last_at: DateTime<Utc>,
}

/// `template` filled in for `ctx` (and `trace_id`, when the template uses it); `None` for the
/// empty template, or when the template needs a trace id and there is none.
pub fn render(template: &str, ctx: &LinkContext<'_>, trace_id: Option<&str>) -> Option<String> {
    if template.is_empty() {
        return None;
    }
    let parts = parse(template).ok()?;
    let from = ctx.started_at - chrono::Duration::milliseconds(MARGIN_MS);
    let to = ctx.last_at + chrono::Duration::milliseconds(MARGIN_MS);
    let mut out = String::with_capacity(template.len() + 64);
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Value(name) => {
                let value = match name {
                    "traceId" => trace_id?.to_owned(),
                    "sagaId" => ctx.saga_id.to_owned(),
                    "from" => from.timestamp_millis().to_string(),
                    "to" => to.timestamp_millis().to_string(),
                    "fromIso" => from.to_rfc3339_opts(SecondsFormat::Millis, true),
                    _ => to.to_rfc3339_opts(SecondsFormat::Millis, true),
                };
                out.extend(form_urlencoded::byte_serialize(value.as_bytes()).map(|s| {
                    // `byte_serialize` writes a space as `+`, which only query strings read
                    // as a space; `%20` is a space in a path too.
                    if s == "+" {
                        "%20"
                    } else {
                        s
                    }
                }));
            }
        }
    }
    Some(out)
}

/// Whether the template needs a trace id (one link per trace id) or not (one link).
pub fn uses_trace_id(template: &str) -> bool {
    template.contains("{traceId}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LinkContext<'static> {
        let t = DateTime::from_timestamp_millis(1_764_590_400_000).unwrap_or_default();
        LinkContext {
            saga_id: "order/8812 ü",
            started_at: t,
            last_at: t + chrono::Duration::seconds(5),
        }
    }

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let url = render(
            "https://jaeger.example/trace/{traceId}?saga={sagaId}&start={from}&end={to}",
            &ctx(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        );
        assert_eq!(
            url.as_deref(),
            Some(
                "https://jaeger.example/trace/4bf92f3577b34da6a3ce929d0e0e4736?saga=order%2F8812%20%C3%BC&start=1764590340000&end=1764590465000"
            )
        );
        let iso = render("http://g/x?f={fromIso}&t={toIso}", &ctx(), None);
        assert_eq!(
            iso.as_deref(),
            Some("http://g/x?f=2025-12-01T11%3A59%3A00.000Z&t=2025-12-01T12%3A01%3A05.000Z")
        );
    }

    #[test]
    fn a_trace_template_without_a_trace_id_gives_no_link() {
        assert_eq!(render("http://t/{traceId}", &ctx(), None), None);
        assert_eq!(render("", &ctx(), Some("a")), None);
        assert!(uses_trace_id("http://t/{traceId}"));
        assert!(!uses_trace_id("http://t/{sagaId}"));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert_eq!(validate_template(""), Ok(()));
        assert_eq!(
            validate_template("ftp://x/{traceId}"),
            Err(TemplateError::NotHttp)
        );
        assert_eq!(
            validate_template("http://x/{traceid}"),
            Err(TemplateError::Unknown("traceid".into()))
        );
        assert_eq!(
            validate_template("http://x/{traceId"),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(validate_template("http://x/}"), Err(TemplateError::Stray));
        assert_eq!(
            validate_template("https://g/explore?left=%7B%22q%22:%22{traceId}%22%7D"),
            Ok(())
        );
    }
}
