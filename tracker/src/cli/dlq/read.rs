//! Which dead-letter messages a command is about ([`Selection`]), and the bounded read that
//! finds them.
//!
//! A read never follows the topic: it captures every partition's high watermark when it
//! starts and stops there, so `summary`, `show` and `replay` end even while the tracker keeps
//! dead-lettering (and `replay` can count its selection before it sends anything). A time
//! range starts each partition at the offset `offsets_for_times` gives for `--from`/`--since`
//! (the broker's index), and every message is also checked against the range itself, so the
//! answer is exact even where the broker's index is coarse.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, TimeZone as _, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::kafka::{reader, throwaway_group, MetadataClient};
use crate::config::KafkaSettings;
use crate::ingest::dlq as headers;

/// How long a partition may stay silent, before its end is reached, until the read gives up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for the metadata request that lists the topic's partitions.
const METADATA_DEADLINE: Duration = Duration::from_secs(10);

/// The selection shared by `dlq summary`, `dlq show` and `dlq replay`. Every filter narrows
/// (AND); a repeated `--reason` is any of them (OR).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only messages dead-lettered for this reason (e.g. `db_rejected`, `missing_field`);
    /// repeatable.
    #[arg(long = "reason", value_name = "REASON")]
    pub reasons: Vec<String>,
    /// Only messages dead-lettered within this long before now: `90s`, `30m`, `24h`, `7d`.
    #[arg(long, value_name = "AGE", value_parser = parse_age, conflicts_with = "from")]
    pub since: Option<chrono::Duration>,
    /// Only messages dead-lettered at or after this time (RFC 3339, or a date: 2026-12-01).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only messages dead-lettered before this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only messages with this key (the saga id).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Only this partition of the dead-letter topic.
    #[arg(long, value_name = "P")]
    pub partition: Option<i32>,
    /// With --partition: the first offset to take.
    #[arg(long, value_name = "A", requires = "partition")]
    pub from_offset: Option<i64>,
    /// With --partition: the last offset to take (inclusive).
    #[arg(long, value_name = "B", requires = "partition")]
    pub to_offset: Option<i64>,
}

impl Selection {
    /// The start of the time range, resolved against `now`.
    pub fn start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.since.map(|d| now - d).or(self.from)
    }

    /// Whether a message matches every filter but the offsets (those bound the read).
    pub fn matches(&self, rec: &DlqRecord, start: Option<DateTime<Utc>>) -> bool {
        if let Some(start) = start {
            if rec.timestamp.is_none_or(|t| t < start) {
                return false;
            }
        }
        if let Some(end) = self.to {
            if rec.timestamp.is_none_or(|t| t >= end) {
                return false;
            }
        }
        if !self.reasons.is_empty() && !self.reasons.iter().any(|r| *r == rec.reason()) {
            return false;
        }
        if let Some(key) = &self.key {
            if rec.key.as_deref() != Some(key.as_bytes()) {
                return false;
            }
        }
        true
    }

    /// The selection in words, for "nothing matched" sentences: `reason db_rejected, since
    /// 2026-12-01T00:00:00Z`.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let mut parts = Vec::new();
        if !self.reasons.is_empty() {
            parts.push(format!("reason {}", self.reasons.join(" or ")));
        }
        if let Some(start) = self.start(now) {
            parts.push(format!("since {}", fmt_time(start)));
        }
        if let Some(end) = self.to {
            parts.push(format!("before {}", fmt_time(end)));
        }
        if let Some(key) = &self.key {
            parts.push(format!("key {key:?}"));
        }
        if let Some(p) = self.partition {
            let mut s = format!("partition {p}");
            match (self.from_offset, self.to_offset) {
                (Some(a), Some(b)) => s.push_str(&format!(" offsets {a}..={b}")),
                (Some(a), None) => s.push_str(&format!(" from offset {a}")),
                (None, Some(b)) => s.push_str(&format!(" up to offset {b}")),
                (None, None) => {}
            }
            parts.push(s);
        }
        parts.join(", ")
    }
}

/// `90s`, `30m`, `24h`, `7d`, `2w`.
pub fn parse_age(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not an age such as 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{s:?}: the unit must be s, m, h, d or w (e.g. 24h)"
            ))
        }
    };
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`) or a UTC date (`2026-12-01`, its midnight).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
        .ok_or_else(|| {
            format!(
                "{s:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z) or a date (2026-12-01)"
            )
        })
}

/// A time as these commands print it: UTC, to the millisecond.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One message of the dead-letter topic, as read.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The DLQ message's own timestamp: when it was dead-lettered.
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Every header in order (a key may repeat); `None` is a header without a value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a dead-lettered message was first read from (its `dlq.original.*` headers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub topic: String,
    pub partition: Option<i32>,
}

impl DlqRecord {
    pub fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last value of header `name`, as text (lossy for non-UTF-8).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `dlq.reason`, or `unknown` for a message some other producer put there.
    pub fn reason(&self) -> String {
        self.header(headers::HEADER_REASON)
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// `topic/partition/offset` of this DLQ message: what `replay.from` names.
    pub fn source(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The key as text (lossy), for display.
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    pub fn origin(&self) -> Origin {
        Origin {
            topic: self
                .header(headers::HEADER_TOPIC)
                .unwrap_or_else(|| "?".to_owned()),
            partition: self
                .header(headers::HEADER_PARTITION)
                .and_then(|p| p.parse().ok()),
        }
    }

    /// `dlq.original.offset`.
    pub fn original_offset(&self) -> Option<i64> {
        self.header(headers::HEADER_OFFSET)
            .and_then(|o| o.parse().ok())
    }

    /// `dlq.original.timestamp` (epoch ms).
    pub fn original_timestamp(&self) -> Option<DateTime<Utc>> {
        self.header(headers::HEADER_TIMESTAMP)
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    }
}

/// The offsets to read in one partition: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Where the read of `topic` for `sel` starts and ends in each partition, and the high
/// watermarks at that moment (what `replay` watches from for new dead letters).
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: String,
    pub ranges: Vec<Range>,
    pub high_watermarks: BTreeMap<i32, i64>,
}

impl Plan {
    /// The number of offsets the read covers (an upper bound of the messages it finds).
    pub fn span(&self) -> i64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// Works out the [`Plan`]. Blocking.
pub fn plan(
    kafka: &KafkaSettings,
    topic: &str,
    sel: &Selection,
    now: DateTime<Utc>,
) -> anyhow::Result<Plan> {
    let meta = MetadataClient::new(kafka)?;
    let cluster = meta.cluster(METADATA_DEADLINE)?;
    let Some(partitions) = cluster.partitions(topic) else {
        bail!(
            "the dead-letter topic `{topic}` does not exist on {} (is `kafka.dlq_topic` right?)",
            kafka.brokers
        );
    };
    let partitions: Vec<i32> = match sel.partition {
        Some(p) if !partitions.contains(&p) => bail!(
            "the dead-letter topic `{topic}` has no partition {p} (it has {})",
            partitions.len()
        ),
        Some(p) => vec![p],
        None => partitions.to_vec(),
    };
    let mut ranges = Vec::new();
    let mut high_watermarks = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = meta.watermarks(topic, p)?;
        high_watermarks.insert(p, high);
        let mut start = low;
        let mut end = high;
        if let Some(a) = sel.from_offset {
            start = start.max(a);
        }
        if let Some(b) = sel.to_offset {
            end = end.min(b.saturating_add(1));
        }
        ranges.push(Range {
            partition: p,
            start,
            end,
        });
    }
    if let Some(start_time) = sel.start(now) {
        let consumer = reader(kafka, &throwaway_group())?;
        let mut tpl = TopicPartitionList::new();
        for r in &ranges {
            tpl.add_partition_offset(
                topic,
                r.partition,
                Offset::Offset(start_time.timestamp_millis()),
            )
            .context("building the time lookup")?;
        }
        // An optimisation only: every message is checked against the range anyway, so a
        // broker that cannot look offsets up by time just makes the read start earlier.
        if let Ok(found) = consumer.offsets_for_times(tpl, Duration::from_secs(10)) {
            for e in found.elements() {
                if let Some(r) = ranges.iter_mut().find(|r| r.partition == e.partition()) {
                    match e.offset() {
                        Offset::Offset(o) => r.start = r.start.max(o),
                        // No message at or after the time: nothing to read there.
                        Offset::End => r.start = r.end,
                        _ => {}
                    }
                }
            }
        }
    }
    ranges.retain(|r| r.start < r.end);
    Ok(Plan {
        topic: topic.to_owned(),
        ranges,
        high_watermarks,
    })
}

/// Reads every range of `plan`, partition by partition in offset order, handing each
/// message that `sel` matches to `visit` (with `state`, which it folds into) until it
/// returns `false`. Returns the state. Blocking.
pub fn read<S, F>(
    kafka: &KafkaSettings,
    plan: &Plan,
    sel: &Selection,
    now: DateTime<Utc>,
    mut state: S,
    mut visit: F,
) -> anyhow::Result<S>
where
    F: FnMut(&mut S, DlqRecord) -> bool,
{
    if plan.ranges.is_empty() {
        return Ok(state);
    }
    let consumer = reader(kafka, &throwaway_group())?;
    let start_time = sel.start(now);
    for r in &plan.ranges {
        if !read_range(&consumer, &plan.topic, *r, &mut |rec| {
            !sel.matches(&rec, start_time) || visit(&mut state, rec)
        })? {
            break;
        }
    }
    Ok(state)
}

/// One partition from `r.start` to `r.end`; `false` when `visit` asked to stop.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    r: Range,
    visit: &mut dyn FnMut(DlqRecord) -> bool,
) -> anyhow::Result<bool> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))
        .context("building the assignment")?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning `{topic}` partition {}", r.partition))?;
    let mut next = r.start;
    let mut last_progress = Instant::now();
    let mut last_error: Option<KafkaError> = None;
    while next < r.end {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == r.partition => {
                // The end moved back (retention) or gaps (transaction markers) hid it.
                break;
            }
            Some(Err(e)) => last_error = Some(e),
            Some(Ok(m)) => {
                if m.partition() != r.partition {
                    continue;
                }
                last_progress = Instant::now();
                next = m.offset() + 1;
                if m.offset() >= r.end {
                    break;
                }
                if !visit(DlqRecord::from_message(&m)) {
                    return Ok(false);
                }
            }
        }
        if last_progress.elapsed() > IDLE_TIMEOUT {
            let why = last_error.map_or_else(|| "no error reported".to_owned(), |e| e.to_string());
            bail!(
                "reading `{topic}` partition {} stalled at offset {next} (expected up to {}) \
                 for {} s: {why}",
                r.partition,
                r.end,
                IDLE_TIMEOUT.as_secs()
            );
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse_as_people_write_them() {
        assert_eq!(parse_age("24h"), Ok(chrono::Duration::hours(24)));
        assert_eq!(parse_age("90s"), Ok(chrono::Duration::seconds(90)));
        assert_eq!(parse_age("7d"), Ok(chrono::Duration::days(7)));
        assert!(parse_age("24").unwrap_err().contains("unit"));
        assert!(parse_age("h").is_err());
        assert_eq!(
            parse_time("2026-12-01").map(fmt_time),
            Ok("2026-12-01T00:00:00.000Z".to_owned())
        );
        assert_eq!(
            parse_time("2026-12-01T10:00:00+01:00").map(fmt_time),
            Ok("2026-12-01T09:00:00.000Z".to_owned())
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    fn record(reason: &str, key: &str, at_ms: i64) -> DlqRecord {
        DlqRecord {
            topic: "t.dlq".into(),
            partition: 0,
            offset: 7,
            timestamp: Utc.timestamp_millis_opt(at_ms).single(),
            key: Some(key.as_bytes().to_vec()),
            payload: None,
            headers: vec![(
                headers::HEADER_REASON.into(),
                Some(reason.as_bytes().to_vec()),
            )],
        }
    }

    #[test]
    fn a_selection_narrows_by_reason_key_and_time() {
        let rec = record("db_rejected", "order-1", 1_000_000);
        let all = Selection::default();
        assert!(all.matches(&rec, None));
        let by_reason = Selection {
            reasons: vec!["not_json".into(), "db_rejected".into()],
            ..Default::default()
        };
        assert!(by_reason.matches(&rec, None));
        let other_reason = Selection {
            reasons: vec!["not_json".into()],
            ..Default::default()
        };
        assert!(!other_reason.matches(&rec, None));
        let other_key = Selection {
            key: Some("order-2".into()),
            ..Default::default()
        };
        assert!(!other_key.matches(&rec, None));
        let start = Utc.timestamp_millis_opt(1_000_001).single();
        assert!(!all.matches(&rec, start), "before the range");
        let before = Selection {
            to: Utc.timestamp_millis_opt(1_000_000).single(),
            ..Default::default()
        };
        assert!(!before.matches(&rec, None), "`--to` is exclusive");
        assert_eq!(rec.source(), "t.dlq/0/7");
    }
}
