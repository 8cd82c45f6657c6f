//! `saga-tracker dlq summary|show|replay`: the dead-letter topic, read and replayed with
//! the tracker's own `[kafka]` settings (TLS, SASL and `kafka.properties` included).
//!
//! Every read is bounded ([`read`]): it stops at the ends the topic had when the command
//! started. [`view`] decodes a message for a person and says what the contract makes of it
//! today; [`replay`] sends messages back to the main topic and reports what became of each.

pub mod read;
pub mod replay;
pub mod view;

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use self::read::{fmt_time, DlqRecord, Selection};
use self::view::{Judge, MessageView};
use super::Output;
use crate::config::Settings;

/// `saga-tracker dlq --help`'s examples.
pub const HELP: &str = "\
Examples:
  saga-tracker dlq summary --since 24h
  saga-tracker dlq show --reason db_rejected --limit 5
  saga-tracker dlq replay --reason db_rejected --dry-run
  saga-tracker dlq replay --reason db_rejected

The dead-letter topic is read with the tracker's own settings (--config, TRACKER_* variables),
up to where it ends when the command starts. See `saga-tracker dlq <command> --help`.";

const SUMMARY_HELP: &str = "\
Examples:
  saga-tracker dlq summary                 # the whole dead-letter topic
  saga-tracker dlq summary --since 24h     # dead-lettered in the last day
  saga-tracker dlq summary --from 2026-12-01 --to 2026-12-02T12:00:00Z --json

Reads `kafka.dlq_topic` up to where it ends now (the tracker may keep adding) and counts by
`dlq.reason` and by original topic/partition. Uses the `[kafka]` settings of --config and
TRACKER_KAFKA__* variables, exactly as the tracker does.";

const SHOW_HELP: &str = "\
Examples:
  saga-tracker dlq show --reason not_json --limit 5
  saga-tracker dlq show --key order-8812
  saga-tracker dlq show --partition 0 --from-offset 120 --to-offset 130 --ndjson

Each message is printed with its position, every header, its payload (pretty JSON, an escaped
text or a hex preview) and what the event contract says of it now: `valid` means a replay
would be accepted, `invalid: <reason>` that it would be dead-lettered again.";

const REPLAY_HELP: &str = "\
Examples:
  saga-tracker dlq replay --reason db_rejected --dry-run   # what would happen, sends nothing
  saga-tracker dlq replay --reason db_rejected --since 24h
  saga-tracker dlq replay --key order-8812 --rate 10 --wait 60s --json

Selected messages are produced to `kafka.topic` with their original key, value and headers
(minus dlq.*), plus replay.from=<dlq topic>/<partition>/<offset>, replay.at, replay.reason and
replay.run. Then each is confirmed: stored (its eventId appeared in the database), duplicate
(it was stored already: nothing changes), or dead-lettered again (a new DLQ message carries
its replay.from). Exits 1 if any message cannot be confirmed within --wait. Replaying twice
changes nothing: the second run reports every valid message as a duplicate.";

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Count dead-lettered messages by reason and by original topic/partition.
    #[command(after_help = SUMMARY_HELP)]
    Summary {
        #[command(flatten)]
        select: Selection,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Show dead-lettered messages: headers, payload, and the contract's verdict today.
    #[command(after_help = SHOW_HELP)]
    Show {
        #[command(flatten)]
        select: Selection,
        /// At most this many messages (the first ones, in partition and offset order).
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
        /// Print a JSON array.
        #[arg(long, conflicts_with = "ndjson")]
        json: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        ndjson: bool,
    },
    /// Produce selected dead letters back to the main topic and report what became of each.
    #[command(after_help = REPLAY_HELP)]
    Replay(replay::ReplayArgs),
}

pub async fn run(command: DlqCommand, settings: Settings, out: Output) -> anyhow::Result<()> {
    match command {
        DlqCommand::Summary { select, json } => summary(select, json, settings, out).await,
        DlqCommand::Show {
            select,
            limit,
            json,
            ndjson,
        } => show(select, limit, json, ndjson, settings, out).await,
        DlqCommand::Replay(args) => replay::run(args, settings, out).await,
    }
}

/// Reads the selection on a blocking thread, folding each message into `state`.
async fn scan<S, F>(
    settings: &Settings,
    select: &Selection,
    now: DateTime<Utc>,
    state: S,
    visit: F,
) -> anyhow::Result<S>
where
    S: Send + 'static,
    F: FnMut(&mut S, DlqRecord) -> bool + Send + 'static,
{
    let kafka = settings.kafka.clone();
    let select = select.clone();
    tokio::task::spawn_blocking(move || {
        let plan = read::plan(&kafka, &kafka.dlq_topic, &select, now)?;
        read::read(&kafka, &plan, &select, now, state, visit)
    })
    .await
    .context("the DLQ read panicked")?
}

/// Count, first and last time seen.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tally {
    count: u64,
    first: Option<String>,
    last: Option<String>,
    #[serde(skip)]
    first_t: Option<DateTime<Utc>>,
    #[serde(skip)]
    last_t: Option<DateTime<Utc>>,
}

impl Tally {
    fn add(&mut self, t: Option<DateTime<Utc>>) {
        self.count += 1;
        if let Some(t) = t {
            if self.first_t.is_none_or(|f| t < f) {
                self.first_t = Some(t);
                self.first = Some(fmt_time(t));
            }
            if self.last_t.is_none_or(|l| t > l) {
                self.last_t = Some(t);
                self.last = Some(fmt_time(t));
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    all: Tally,
    by_reason: BTreeMap<String, Tally>,
    by_origin: BTreeMap<(String, Option<i32>), Tally>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReasonRow {
    reason: String,
    #[serde(flatten)]
    tally: Tally,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OriginRow {
    topic: String,
    partition: Option<i32>,
    #[serde(flatten)]
    tally: Tally,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryReport {
    topic: String,
    selection: String,
    total: u64,
    first: Option<String>,
    last: Option<String>,
    by_reason: Vec<ReasonRow>,
    by_origin: Vec<OriginRow>,
}

async fn summary(
    select: Selection,
    json: bool,
    settings: Settings,
    out: Output,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let spinner = out.progress(None, "reading the dead-letter topic");
    let bar = spinner.clone();
    let counts = scan(&settings, &select, now, Counts::default(), move |c, rec| {
        bar.inc(1);
        c.all.add(rec.timestamp);
        c.by_reason
            .entry(rec.reason())
            .or_default()
            .add(rec.timestamp);
        let o = rec.origin();
        c.by_origin
            .entry((o.topic, o.partition))
            .or_default()
            .add(rec.timestamp);
        true
    })
    .await?;
    spinner.finish_and_clear();
    let topic = &settings.kafka.dlq_topic;
    let mut by_reason: Vec<ReasonRow> = counts
        .by_reason
        .into_iter()
        .map(|(reason, tally)| ReasonRow { reason, tally })
        .collect();
    // Most frequent first: that is where to look.
    by_reason.sort_by_key(|r| std::cmp::Reverse(r.tally.count));
    let by_origin: Vec<OriginRow> = counts
        .by_origin
        .into_iter()
        .map(|((topic, partition), tally)| OriginRow {
            topic,
            partition,
            tally,
        })
        .collect();
    let report = SummaryReport {
        topic: topic.clone(),
        selection: select.describe(now),
        total: counts.all.count,
        first: counts.all.first.clone(),
        last: counts.all.last.clone(),
        by_reason,
        by_origin,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the summary")?
        );
        return Ok(());
    }
    let range = if report.selection.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.selection)
    };
    if report.total == 0 {
        println!(
            "The dead-letter topic `{topic}` holds no messages{range}: nothing was dead-lettered."
        );
        return Ok(());
    }
    println!(
        "{} message(s) in `{topic}`{range}, dead-lettered from {} to {}.",
        out.bold(report.total),
        report.first.as_deref().unwrap_or("?"),
        report.last.as_deref().unwrap_or("?")
    );
    println!();
    let mut t = out.table(&["REASON", "COUNT", "FIRST", "LAST"]);
    for r in &report.by_reason {
        t.add_row(vec![
            r.reason.clone(),
            r.tally.count.to_string(),
            r.tally.first.clone().unwrap_or_default(),
            r.tally.last.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    println!();
    let mut t = out.table(&["ORIGINAL TOPIC", "PARTITION", "COUNT", "FIRST", "LAST"]);
    for r in &report.by_origin {
        t.add_row(vec![
            r.topic.clone(),
            r.partition
                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
            r.tally.count.to_string(),
            r.tally.first.clone().unwrap_or_default(),
            r.tally.last.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    println!();
    println!(
        "{}",
        out.dim("Next: `saga-tracker dlq show --reason <reason>` to see messages, `dlq replay --dry-run` after a fix.")
    );
    Ok(())
}

async fn show(
    select: Selection,
    limit: usize,
    json: bool,
    ndjson: bool,
    settings: Settings,
    out: Output,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let found = scan(&settings, &select, now, Vec::new(), move |acc, rec| {
        if acc.len() < limit {
            acc.push(rec);
        }
        acc.len() < limit
    })
    .await?;
    let judge = Judge::for_records(&settings.schema_registry, &found).await?;
    let views: Vec<MessageView> = found
        .iter()
        .map(|r| MessageView::of(r, now, &judge))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&views).context("serializing the messages")?
        );
        return Ok(());
    }
    if ndjson {
        for v in &views {
            println!(
                "{}",
                serde_json::to_string(v).context("serializing a message")?
            );
        }
        return Ok(());
    }
    let topic = &settings.kafka.dlq_topic;
    if views.is_empty() {
        let what = select.describe(now);
        if what.is_empty() {
            println!("The dead-letter topic `{topic}` holds no messages.");
        } else {
            println!("No message in `{topic}` matches {what}.");
        }
        return Ok(());
    }
    for (n, v) in views.iter().enumerate() {
        if n > 0 {
            println!();
        }
        print_message(v, &out);
    }
    if views.len() == limit {
        println!();
        println!(
            "{}",
            out.dim(format!(
                "(the first {limit}; --limit N for more, or narrow with --reason/--key/--since)"
            ))
        );
    }
    Ok(())
}

fn print_message(v: &MessageView, out: &Output) {
    let label = |s: &str| out.bold(format!("  {s:<10}"));
    println!(
        "{}  dead-lettered {}  key {}",
        out.bold(format!("{}/{}/{}", v.topic, v.partition, v.offset)),
        v.timestamp.as_deref().unwrap_or("?"),
        v.key
            .as_deref()
            .map_or_else(|| "(none)".to_owned(), |k| format!("{k:?}"))
    );
    let field = v
        .field
        .as_deref()
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default();
    println!("{} {}{field}", label("reason"), out.yellow(&v.reason));
    if let Some(e) = &v.error {
        println!("{} {e}", label("error"));
    }
    let o = &v.original;
    println!(
        "{} {}/{}/{}{}",
        label("original"),
        o.topic.as_deref().unwrap_or("?"),
        o.partition
            .map_or_else(|| "?".to_owned(), |p| p.to_string()),
        o.offset.map_or_else(|| "?".to_owned(), |p| p.to_string()),
        o.timestamp
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default()
    );
    let pad = " ".repeat(12);
    for (i, h) in v.headers.iter().enumerate() {
        let head = if i == 0 {
            label("headers")
        } else {
            pad.clone()
        };
        println!("{head} {}: {}", h.key, h.display());
    }
    println!(
        "{} {}, {} bytes",
        label("payload"),
        v.payload.kind(),
        v.payload_bytes
    );
    for line in v.payload.lines() {
        println!("{pad} {line}");
    }
    let verdict = v.contract_now.line();
    let verdict = if verdict.starts_with("valid") {
        out.green(verdict)
    } else {
        out.red(verdict)
    };
    println!("{} {verdict}", label("now"));
    if let Some(note) = v.note {
        println!("{pad} {}", out.dim(format!("note: {note}")));
    }
}
