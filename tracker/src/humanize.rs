//! How durations, instants and stuck verdicts are written for people — the one wording the
//! Saga Explorer ([`crate::ui`]) and the command line ([`crate::cli`]) share, so a saga reads
//! the same in a browser and in a terminal.
//!
//! Pure text: no HTML, no colour, no I/O.

use chrono::{DateTime, Utc};

/// `2026-12-01 10:00:05.123Z`.
pub fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

/// A duration the way people say it: `850 ms`, `4.2 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => {
            let s = ms as f64 / 1000.0;
            if s < 10.0 {
                format!("{s:.2} s")
            } else {
                format!("{s:.1} s")
            }
        }
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, (ms / 1000) % 60),
        3_600_000..=86_399_999 => format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60),
        _ => format!("{} d {} h", ms / 86_400_000, (ms / 3_600_000) % 24),
    }
}

/// A fractional millisecond figure (a percentile).
pub fn duration_f(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        duration(ms.round() as i64)
    }
}

/// How long ago `t` was, at `now`: `12 s ago`.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ms = (now - t).num_milliseconds();
    if ms < 0 {
        return "just now".to_owned();
    }
    format!("{} ago", duration(ms - ms % 1000))
}

/// A stuck reason (the API's `stuck.reason`) in words.
pub fn stuck_reason_text(reason: &str) -> &'static str {
    match reason {
        "no_progress" => "no progress",
        "failed_not_compensated" => "failed, compensation never began",
        "compensation_not_finished" => "compensation not finished",
        _ => "stuck",
    }
}

/// What a stuck reason means for this saga, with the threshold that applied.
pub fn stuck_explanation(reason: &str, threshold_secs: i64) -> String {
    let t = duration(threshold_secs * 1000);
    match reason {
        "no_progress" => format!("No event for longer than the type's threshold ({t})."),
        "failed_not_compensated" => {
            format!("It failed and no compensation began within {t}.")
        }
        "compensation_not_finished" => {
            format!("Compensation began and has not finished within {t}.")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(4_200), "4.20 s");
        assert_eq!(duration(42_000), "42.0 s");
        assert_eq!(duration(192_000), "3 min 12 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(duration(273_600_000), "3 d 4 h");
        assert_eq!(duration(-5), "0 ms");
    }

    #[test]
    fn stuck_reasons_have_words_and_an_explanation() {
        assert_eq!(stuck_reason_text("no_progress"), "no progress");
        assert_eq!(
            stuck_explanation("failed_not_compensated", 900),
            "It failed and no compensation began within 15 min 0 s."
        );
    }
}
