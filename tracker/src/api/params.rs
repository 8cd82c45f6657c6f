//! Query-string checks shared by the endpoints that take parameters.
//!
//! A request is checked whole: every bad parameter is collected, and the 400 names each of
//! them with its reason, so a client fixes its query in one round trip instead of one error
//! at a time. The endpoint-specific parsers (`sagas::parse_search`, `stats::parse_stats`)
//! decide which names they accept and what to do with the values; the rules that must read
//! the same everywhere (text limits, timestamps, saga types, repeats, NUL) live here.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{MAX_ID_CHARS, MAX_SAGA_TYPE_CHARS};

use super::error::{ApiError, InvalidParam};

/// Why a parameter holding U+0000 is refused (PostgreSQL text cannot hold it).
pub(crate) const NUL_REASON: &str = "must not contain NUL characters (%00)";

/// Collects the problems of one query string.
#[derive(Debug, Default)]
pub(super) struct Params {
    /// Single-valued parameters already given, to reject repeats.
    seen: Vec<&'static str>,
    errors: Vec<InvalidParam>,
}

impl Params {
    /// The decoded `(name, value)` pairs of `raw`, in order. A pair holding U+0000 is
    /// reported and left out: no stored value contains it, and PostgreSQL would fail the
    /// query with a 500 rather than match nothing.
    pub fn pairs(&mut self, raw: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(raw.as_bytes())
            .filter_map(|(name, value)| {
                if name.contains('\0') || value.contains('\0') {
                    self.error(&name.replace('\0', "\\0"), NUL_REASON);
                    None
                } else {
                    Some((name.into_owned(), value.into_owned()))
                }
            })
            .collect()
    }

    pub fn error(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(InvalidParam::new(name, reason));
    }

    pub fn unknown(&mut self, name: &str) {
        self.error(name, "unknown parameter");
    }

    /// Records a single-valued parameter; false (and an error) if it was already given.
    pub fn once(&mut self, name: &'static str) -> bool {
        if self.seen.contains(&name) {
            self.error(name, "given more than once");
            return false;
        }
        self.seen.push(name);
        true
    }

    /// A single-valued identifier (business key, step, service): 1 to `MAX_ID_CHARS`
    /// characters, the contract's limit, so no stored value is out of reach.
    pub fn ident(&mut self, name: &'static str, value: &str) -> Option<String> {
        if !self.once(name) {
            return None;
        }
        let n = value.chars().count();
        if n == 0 || n > MAX_ID_CHARS {
            self.error(name, format!("must be 1 to {MAX_ID_CHARS} characters"));
            return None;
        }
        Some(value.to_owned())
    }

    /// A single-valued saga type, checked against the contract's rule so that a typo
    /// (`order_creation`) is a 400, not an empty result.
    pub fn saga_type(&mut self, name: &'static str, value: &str) -> Option<String> {
        if !self.once(name) {
            return None;
        }
        match check_saga_type(value) {
            Ok(()) => Some(value.to_owned()),
            Err(reason) => {
                self.error(name, reason);
                None
            }
        }
    }

    /// A single-valued RFC 3339 timestamp.
    pub fn time(&mut self, name: &'static str, value: &str) -> Option<DateTime<Utc>> {
        if !self.once(name) {
            return None;
        }
        let t = parse_time(value);
        if t.is_none() {
            self.error(
                name,
                "must be an RFC 3339 timestamp such as 2026-11-21T10:00:00Z \
                 (percent-encode a `+` offset as %2B)",
            );
        }
        t
    }

    /// A single-valued integer within `range`.
    pub fn int_in(
        &mut self,
        name: &'static str,
        value: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        if !self.once(name) {
            return None;
        }
        match value.parse::<i64>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let reason = if *range.end() == i64::MAX {
                    format!("must be an integer of at least {}", range.start())
                } else {
                    format!(
                        "must be an integer between {} and {}",
                        range.start(),
                        range.end()
                    )
                };
                self.error(name, reason);
                None
            }
        }
    }

    /// A single-valued `true` or `false`.
    pub fn flag(&mut self, name: &'static str, value: &str) -> Option<bool> {
        if !self.once(name) {
            return None;
        }
        match value {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(name, "must be `true` or `false`");
                None
            }
        }
    }

    /// A half-open window `[after, before)` must not end before it starts; the error names
    /// the `…Before` parameter.
    pub fn window(
        &mut self,
        (after_name, after): (&str, Option<DateTime<Utc>>),
        (before_name, before): (&str, Option<DateTime<Utc>>),
    ) {
        if let (Some(a), Some(b)) = (after, before) {
            if b < a {
                self.error(
                    before_name,
                    format!("must not be earlier than `{after_name}`"),
                );
            }
        }
    }

    /// `value`, or a 400 naming every problem found.
    pub fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::InvalidParams(self.errors))
        }
    }
}

/// Keeps what a parameter check accepted; a rejected value leaves the filter as it was.
pub(super) fn set<T>(slot: &mut Option<T>, checked: Option<T>) {
    if checked.is_some() {
        *slot = checked;
    }
}

/// Same rule as the contract's `sagaType`.
fn check_saga_type(v: &str) -> Result<(), String> {
    let max = MAX_SAGA_TYPE_CHARS;
    if v.is_empty()
        || v.len() > max
        || !v
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(format!("must match [A-Z0-9_.-]{{1,{max}}}"));
    }
    Ok(())
}

/// RFC 3339. A `+` offset sent unencoded arrives as a space (form encoding); since a space
/// cannot otherwise appear after the seconds, it is read back as `+`.
pub(super) fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    let (head, tail) = v.split_at_checked(19)?;
    let repaired = format!("{head}{}", tail.replacen(' ', "+", 1));
    DateTime::parse_from_rfc3339(&repaired)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: Params) -> Vec<String> {
        match p.finish(()) {
            Err(ApiError::InvalidParams(ps)) => ps.into_iter().map(|p| p.name).collect(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn every_problem_is_collected_and_named() {
        let mut p = Params::default();
        let pairs = p.pairs("a=1&b%00=2&c=x%00y&d=4");
        assert_eq!(pairs, [("a".into(), "1".into()), ("d".into(), "4".into())]);
        assert_eq!(p.ident("step", "PAY"), Some("PAY".to_owned()));
        assert_eq!(p.ident("step", "PAY"), None, "a repeat is refused");
        assert_eq!(p.ident("service", ""), None);
        assert_eq!(p.saga_type("sagaType", "order_creation"), None);
        assert_eq!(p.int_in("limit", "0", 1..=500), None);
        assert_eq!(p.int_in("minDurationMs", "-1", 0..=i64::MAX), None);
        assert_eq!(p.flag("stuck", "yes"), None);
        assert_eq!(p.time("startedAfter", "yesterday"), None);
        let t = |s| parse_time(s);
        p.window(
            ("updatedAfter", t("2026-11-21T10:00:00Z")),
            ("updatedBefore", t("2026-11-21T09:00:00Z")),
        );
        assert_eq!(
            names(p),
            [
                "b\\0",
                "c",
                "step",
                "service",
                "sagaType",
                "limit",
                "minDurationMs",
                "stuck",
                "startedAfter",
                "updatedBefore"
            ]
        );
    }

    #[test]
    fn good_values_pass_and_an_unencoded_plus_offset_is_read_back() {
        let mut p = Params::default();
        assert_eq!(p.int_in("limit", "500", 1..=500), Some(500));
        assert_eq!(p.flag("stuck", "false"), Some(false));
        assert_eq!(
            p.saga_type("sagaType", "PAYMENT.REFUND-2"),
            Some("PAYMENT.REFUND-2".to_owned())
        );
        assert_eq!(
            p.time("startedAfter", "2026-11-21T12:00:00 02:00"),
            parse_time("2026-11-21T10:00:00Z")
        );
        p.window(
            ("startedAfter", parse_time("2026-11-21T10:00:00Z")),
            ("startedBefore", parse_time("2026-11-21T10:00:00Z")),
        );
        assert!(p.finish(()).is_ok());
    }
}
