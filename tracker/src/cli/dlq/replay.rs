//! `dlq replay`: selected dead letters produced back to the main topic, and what became of
//! each.
//!
//! The outcome of a replayed message is observed, not assumed:
//!
//! 1. Before anything is sent, every message is decoded with the contract as the consumer
//!    would decode it now. For the valid ones the database is asked which `eventId`s it
//!    already holds: those are **duplicates** (the tracker will drop them; nothing changes).
//! 2. Each message goes to `kafka.topic` with its original key and value, its original
//!    headers except `dlq.*`/`replay.*`, and the provenance headers `replay.from`,
//!    `replay.at`, `replay.reason` and `replay.run`, through an idempotent producer that
//!    waits for the brokers' acknowledgement.
//! 3. Then, for at most `--wait`, the command watches two places: the database, where a
//!    valid event's `eventId` appearing means **stored**; and the dead-letter topic from the
//!    offsets it had before sending, where a new message carrying this run's `replay.run` and
//!    a message's `replay.from` means **dead-lettered again** (the tracker's DLQ producer
//!    keeps a message's headers). What is neither by then is **unconfirmed**, and the command
//!    exits non-zero.
//!
//! Replaying the same messages twice therefore reports "duplicate" for every valid one the
//! second time, and the store does not change: `eventId` is the idempotency key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt as _};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::read::{self, fmt_time, DlqRecord, Selection};
use super::view::{Judge, Verdict};
use crate::cli::kafka::{reader, throwaway_group, MetadataClient};
use crate::cli::Output;
use crate::config::{KafkaSettings, Settings};
use crate::store;

/// `replay.from`: `<dlq topic>/<partition>/<offset>` of the dead letter a message was
/// replayed from.
pub const HEADER_FROM: &str = "replay.from";
/// `replay.at`: when it was replayed (RFC 3339, UTC).
pub const HEADER_AT: &str = "replay.at";
/// `replay.reason`: the `dlq.reason` it had been dead-lettered for.
pub const HEADER_REASON: &str = "replay.reason";
/// `replay.run`: one id per `dlq replay` invocation, so a run recognises its own messages if
/// they come back to the dead-letter topic.
pub const HEADER_RUN: &str = "replay.run";

/// Messages sent but not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 500;
/// How often the confirmation phase looks at the database.
const CONFIRM_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub select: Selection,
    /// List what would be replayed and what the contract says of each now; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages a second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub rate: u32,
    /// How long to wait for each replayed message to be stored or dead-lettered again.
    #[arg(long, value_name = "AGE", default_value = "30s", value_parser = read::parse_age)]
    pub wait: chrono::Duration,
    /// Do not send messages the contract still rejects (they would only be dead-lettered
    /// again); list them as skipped.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the outcome of each message as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// What happened (or, with `--dry-run`, would happen) to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// This replay stored the event.
    Stored,
    /// The event was stored already (or is repeated in the selection): nothing changed.
    Duplicate { why: String },
    /// The tracker dead-lettered the replayed message again.
    #[serde(rename_all = "camelCase")]
    DeadLetteredAgain { reason: String, copy: String },
    /// Not sent (`--skip-invalid`).
    Skipped { why: String },
    /// Sending failed.
    NotProduced { error: String },
    /// Neither stored nor dead-lettered again within `--wait`.
    Unconfirmed { expected: String },
    /// `--dry-run`: what is expected.
    WouldReplay { expected: String },
}

impl Outcome {
    fn cell(&self, out: &Output) -> String {
        match self {
            Self::Stored => out.green("stored"),
            Self::Duplicate { why } => format!("{} ({why})", out.blue("duplicate")),
            Self::DeadLetteredAgain { reason, copy } => {
                format!("{} ({reason}, {copy})", out.yellow("dead-lettered again"))
            }
            Self::Skipped { why } => format!("{} ({why})", out.dim("skipped")),
            Self::NotProduced { error } => format!("{}: {error}", out.red("not sent")),
            Self::Unconfirmed { expected } => {
                format!("{} (expected: {expected})", out.red("unconfirmed"))
            }
            Self::WouldReplay { expected } => expected.clone(),
        }
    }

    fn total_key(&self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate { .. } => "duplicate",
            Self::DeadLetteredAgain { .. } => "deadLetteredAgain",
            Self::Skipped { .. } => "skipped",
            Self::NotProduced { .. } => "notProduced",
            Self::Unconfirmed { .. } => "unconfirmed",
            Self::WouldReplay { .. } => "wouldReplay",
        }
    }
}

/// One selected message and its fate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// `replay.from`.
    pub from: String,
    pub key: Option<String>,
    /// The reason it had been dead-lettered for.
    pub reason: String,
    pub contract_now: Verdict,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    run: String,
    dry_run: bool,
    from_topic: String,
    to_topic: String,
    selected: usize,
    totals: BTreeMap<&'static str, usize>,
    messages: Vec<Item>,
}

pub async fn run(args: ReplayArgs, settings: Settings, out: Output) -> anyhow::Result<()> {
    let now = Utc::now();
    let kafka = settings.kafka.clone();
    let run_id = uuid::Uuid::new_v4().to_string();

    // 1. The selection, read to the end captured now (bounded), so the total is known.
    let spinner = out.progress(None, "reading the dead-letter topic");
    let records = {
        let kafka = kafka.clone();
        let select = args.select.clone();
        let spinner = spinner.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<DlqRecord>> {
            let plan = read::plan(&kafka, &kafka.dlq_topic, &select, now)?;
            let found = read::read(&kafka, &plan, &select, now, Vec::new(), |acc, rec| {
                spinner.inc(1);
                acc.push(rec);
                true
            })?;
            Ok(found)
        })
        .await
        .context("the DLQ read panicked")??
    };
    spinner.finish_and_clear();
    if records.is_empty() {
        let what = args.select.describe(now);
        println!(
            "Nothing to replay: no message in `{}`{}.",
            kafka.dlq_topic,
            if what.is_empty() {
                String::new()
            } else {
                format!(" matches {what}")
            }
        );
        return Ok(());
    }

    // 2. What the contract says now, and which events the store already holds.
    let judge = Judge::for_records(&settings.schema_registry, &records).await?;
    let verdicts: Vec<Verdict> = records
        .iter()
        .map(|r| Verdict::of(r, now, &judge))
        .collect();
    let event_ids: Vec<(String, String)> = verdicts
        .iter()
        .filter_map(|v| v.identity().map(|(s, e)| (s.to_owned(), e.to_owned())))
        .collect();
    let pool = store::connect_lazy(&settings.database)?;
    let present = match store_check(&settings, &pool, &event_ids).await {
        Ok(p) => Some(p),
        Err(e) if args.dry_run => {
            eprintln!("note: cannot tell stored from duplicate: {e:#}");
            None
        }
        Err(e) => {
            return Err(e.context(
                "the replay needs the database to tell what becomes of each message \
                 (`--dry-run` works without it)",
            ))
        }
    };

    let mut first_of: HashMap<(String, String), String> = HashMap::new();
    let mut items: Vec<Item> = Vec::with_capacity(records.len());
    // Indices of the items that are sent.
    let mut to_send: Vec<usize> = Vec::new();
    for (i, (rec, verdict)) in records.iter().zip(&verdicts).enumerate() {
        let from = rec.source();
        let identity = verdict
            .identity()
            .map(|(s, e)| (s.to_owned(), e.to_owned()));
        let already = identity.as_ref().and_then(|id| {
            if present.as_ref().is_some_and(|p| p.contains(id)) {
                return Some("already stored".to_owned());
            }
            first_of
                .get(id)
                .map(|first| format!("same event as {first}"))
        });
        if let Some(id) = identity {
            first_of.entry(id).or_insert_with(|| from.clone());
        }
        let expected = expectation(rec, verdict, present.is_some());
        let outcome = match (&already, verdict) {
            (Some(why), _) if args.dry_run => Outcome::WouldReplay {
                expected: format!("duplicate ({why})"),
            },
            (Some(why), _) if why.starts_with("same event") => {
                // Not sent again: the first copy's fate is this one's.
                Outcome::Duplicate { why: why.clone() }
            }
            (Some(why), _) => {
                to_send.push(i);
                Outcome::Duplicate { why: why.clone() }
            }
            (None, Verdict::Invalid { reason, .. }) if args.skip_invalid => Outcome::Skipped {
                why: format!("still invalid: {reason}"),
            },
            (None, _) if args.dry_run => Outcome::WouldReplay { expected },
            (None, _) => {
                to_send.push(i);
                Outcome::Unconfirmed { expected }
            }
        };
        items.push(Item {
            from,
            key: rec.key_text(),
            reason: rec.reason(),
            contract_now: verdict.clone(),
            outcome,
        });
    }

    if args.dry_run {
        return report(&args, &out, &kafka, run_id, items, None);
    }

    // 3. Watch the DLQ from its current end, then send.
    let watcher = Watcher::start(&kafka, &run_id).await?;
    let started = Instant::now();
    let sent = send(&args, &out, &kafka, &run_id, &records, &to_send, &mut items).await;
    let sent = match sent {
        Ok(n) => n,
        Err(e) => {
            watcher.stop();
            return Err(e);
        }
    };

    // 4. Confirm.
    let waiting: Vec<usize> = to_send
        .iter()
        .copied()
        .filter(|&i| matches!(items[i].outcome, Outcome::Unconfirmed { .. }))
        .collect();
    confirm(&args, &out, &pool, &verdicts, &mut items, &waiting, watcher).await;
    report(
        &args,
        &out,
        &kafka,
        run_id,
        items,
        Some((sent, started.elapsed())),
    )
}

/// The database answers and holds which of `event_ids`.
async fn store_check(
    settings: &Settings,
    pool: &sqlx::PgPool,
    event_ids: &[(String, String)],
) -> anyhow::Result<HashSet<(String, String)>> {
    if let store::ConnectCheck::Unreachable(why) =
        store::check_connection(&settings.database).await?
    {
        bail!("cannot reach PostgreSQL: {why}");
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        store::read::stored_event_ids(pool, event_ids),
    )
    .await
    .context("the database did not answer within 30 s")?
    .context("looking the events up in the database")
}

/// What a replay should do with this message, in words.
fn expectation(rec: &DlqRecord, verdict: &Verdict, know_store: bool) -> String {
    match verdict {
        Verdict::Invalid { reason, .. } => format!("dead-lettered again ({reason})"),
        Verdict::Valid { .. } if rec.reason() == crate::ingest::REASON_DB_REJECTED => {
            "stored, unless the database refuses it again".to_owned()
        }
        Verdict::Valid { .. } if know_store => "stored".to_owned(),
        Verdict::Valid { .. } => "stored or duplicate".to_owned(),
    }
}

/// The headers of a replayed message: the original ones minus `dlq.*` and any earlier
/// `replay.*`, plus this replay's provenance.
pub fn replay_headers(rec: &DlqRecord, run_id: &str, at: &str) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &rec.headers {
        if k.starts_with("dlq.") || k.starts_with("replay.") {
            continue;
        }
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let from = rec.source();
    let reason = rec.reason();
    for (key, value) in [
        (HEADER_FROM, from.as_str()),
        (HEADER_AT, at),
        (HEADER_REASON, reason.as_str()),
        (HEADER_RUN, run_id),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

fn producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut cc = crate::ingest::client::base_config(kafka)?;
    cc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .set("client.id", "saga-tracker-cli-replay");
    for (k, v) in &kafka.properties {
        cc.set(k, v);
    }
    cc.create().context("creating the replay producer")
}

/// Sends `records[i]` for every `i` in `to_send` at most `--rate` a second, with a progress
/// bar; a failed send is recorded on its item. Returns how many were acknowledged.
async fn send(
    args: &ReplayArgs,
    out: &Output,
    kafka: &KafkaSettings,
    run_id: &str,
    records: &[DlqRecord],
    to_send: &[usize],
    items: &mut [Item],
) -> anyhow::Result<usize> {
    if to_send.is_empty() {
        return Ok(0);
    }
    let producer = producer(kafka)?;
    let bar = out.progress(
        Some(to_send.len() as u64),
        &format!("replaying to {}", kafka.topic),
    );
    let mut ticker = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let at = fmt_time(Utc::now());
    let mut in_flight = FuturesUnordered::new();
    let mut acked = 0;
    let mut failures: Vec<(usize, String)> = Vec::new();
    for &i in to_send {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((j, r)) = in_flight.next().await {
                settle(j, r, &mut acked, &mut failures, &bar);
            }
        }
        let rec = &records[i];
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&kafka.topic).headers(replay_headers(rec, run_id, &at));
        if let Some(k) = rec.key.as_deref() {
            record = record.key(k);
        }
        if let Some(p) = rec.payload.as_deref() {
            record = record.payload(p);
        }
        let fut = producer.send(record, Duration::from_secs(30));
        in_flight.push(async move { (i, fut.await.map(|_| ()).map_err(|(e, _)| e.to_string())) });
    }
    while let Some((j, r)) = in_flight.next().await {
        settle(j, r, &mut acked, &mut failures, &bar);
    }
    bar.finish_and_clear();
    for (i, error) in failures {
        items[i].outcome = Outcome::NotProduced { error };
    }
    Ok(acked)
}

fn settle(
    i: usize,
    result: Result<(), String>,
    acked: &mut usize,
    failures: &mut Vec<(usize, String)>,
    bar: &indicatif::ProgressBar,
) {
    match result {
        Ok(()) => *acked += 1,
        Err(e) => failures.push((i, e)),
    }
    bar.inc(1);
}

/// Reads the dead-letter topic from where it ended before the replay, passing on the
/// messages this run sent that came back.
struct Watcher {
    stop: Arc<AtomicBool>,
    rx: tokio::sync::mpsc::UnboundedReceiver<DlqRecord>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Watcher {
    async fn start(kafka: &KafkaSettings, run_id: &str) -> anyhow::Result<Self> {
        let kafka = kafka.clone();
        let topic = kafka.dlq_topic.clone();
        // The end of every partition, before anything is sent: a copy of ours can only be
        // after it.
        let starts = {
            let kafka = kafka.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<i32, i64>> {
                let meta = MetadataClient::new(&kafka)?;
                let cluster = meta.cluster(Duration::from_secs(10))?;
                let partitions = cluster
                    .partitions(&topic)
                    .with_context(|| format!("the dead-letter topic `{topic}` does not exist"))?;
                Ok(meta
                    .topic_size(&topic, partitions)?
                    .watermarks
                    .into_iter()
                    .map(|(p, (_, high))| (p, high))
                    .collect())
            })
            .await
            .context("the DLQ watermark lookup panicked")??
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let run_id = run_id.to_owned();
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let consumer = reader(&kafka, &throwaway_group())?;
            let mut tpl = TopicPartitionList::new();
            for (p, start) in &starts {
                tpl.add_partition_offset(&topic, *p, Offset::Offset(*start))
                    .context("building the assignment")?;
            }
            consumer
                .assign(&tpl)
                .with_context(|| format!("assigning `{topic}`"))?;
            while !flag.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    let rec = DlqRecord::from_message(&m);
                    if rec.header(HEADER_RUN).as_deref() == Some(run_id.as_str())
                        && tx.send(rec).is_err()
                    {
                        break;
                    }
                }
            }
            Ok(())
        });
        Ok(Self { stop, rx, task })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits (at most `--wait`) until every item in `waiting` is stored or dead-lettered again.
async fn confirm(
    args: &ReplayArgs,
    out: &Output,
    pool: &sqlx::PgPool,
    verdicts: &[Verdict],
    items: &mut [Item],
    waiting: &[usize],
    mut watcher: Watcher,
) {
    let mut pending: Vec<usize> = waiting.to_vec();
    let bar = out.progress(Some(pending.len() as u64), "confirming");
    let deadline = Instant::now() + args.wait.to_std().unwrap_or(Duration::from_secs(30));
    let by_from: HashMap<String, usize> = pending
        .iter()
        .map(|&i| (items[i].from.clone(), i))
        .collect();
    while !pending.is_empty() {
        while let Ok(rec) = watcher.rx.try_recv() {
            if let Some(&i) = rec.header(HEADER_FROM).and_then(|f| by_from.get(&f)) {
                if matches!(items[i].outcome, Outcome::Unconfirmed { .. }) {
                    items[i].outcome = Outcome::DeadLetteredAgain {
                        reason: rec.reason(),
                        copy: rec.source(),
                    };
                }
            }
        }
        let ids: Vec<(String, String)> = pending
            .iter()
            .filter(|&&i| matches!(items[i].outcome, Outcome::Unconfirmed { .. }))
            .filter_map(|&i| {
                verdicts[i]
                    .identity()
                    .map(|(s, e)| (s.to_owned(), e.to_owned()))
            })
            .collect();
        if !ids.is_empty() {
            if let Ok(Ok(stored)) = tokio::time::timeout(
                Duration::from_secs(10),
                store::read::stored_event_ids(pool, &ids),
            )
            .await
            {
                for &i in &pending {
                    if verdicts[i]
                        .identity()
                        .is_some_and(|(s, e)| stored.contains(&(s.to_owned(), e.to_owned())))
                        && matches!(items[i].outcome, Outcome::Unconfirmed { .. })
                    {
                        items[i].outcome = Outcome::Stored;
                    }
                }
            }
        }
        let before = pending.len();
        pending.retain(|&i| matches!(items[i].outcome, Outcome::Unconfirmed { .. }));
        bar.inc((before - pending.len()) as u64);
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
    bar.finish_and_clear();
    watcher.stop();
    let _ = watcher.task.await;
}

fn report(
    args: &ReplayArgs,
    out: &Output,
    kafka: &KafkaSettings,
    run_id: String,
    items: Vec<Item>,
    sent: Option<(usize, Duration)>,
) -> anyhow::Result<()> {
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    for item in &items {
        *totals.entry(item.outcome.total_key()).or_default() += 1;
    }
    let unconfirmed = totals.get("unconfirmed").copied().unwrap_or(0)
        + totals.get("notProduced").copied().unwrap_or(0);
    if args.json {
        let report = Report {
            run: run_id,
            dry_run: args.dry_run,
            from_topic: kafka.dlq_topic.clone(),
            to_topic: kafka.topic.clone(),
            selected: items.len(),
            totals,
            messages: items,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
    } else {
        let mut table = out.table(&["DLQ MESSAGE", "KEY", "WAS", "CONTRACT NOW", "OUTCOME"]);
        for item in &items {
            table.add_row(vec![
                item.from.clone(),
                item.key.clone().unwrap_or_else(|| "-".to_owned()),
                item.reason.clone(),
                item.contract_now.short(),
                item.outcome.cell(out),
            ]);
        }
        println!("{table}");
        println!();
        let words: Vec<String> = [
            ("stored", "stored"),
            ("duplicate", "duplicate"),
            ("deadLetteredAgain", "dead-lettered again"),
            ("skipped", "skipped"),
            ("notProduced", "not sent"),
            ("unconfirmed", "unconfirmed"),
        ]
        .iter()
        .filter_map(|(k, w)| totals.get(k).map(|n| format!("{n} {w}")))
        .collect();
        match sent {
            None => println!(
                "{} {} message(s) of `{}` would be replayed to `{}`; nothing was sent.",
                out.bold("Dry run:"),
                items.len(),
                kafka.dlq_topic,
                kafka.topic
            ),
            Some((n, took)) => println!(
                "Replayed {n} of {} selected message(s) from `{}` to `{}` in {:.1} s: {}.",
                items.len(),
                kafka.dlq_topic,
                kafka.topic,
                took.as_secs_f64(),
                words.join(", ")
            ),
        }
    }
    if unconfirmed > 0 {
        bail!(
            "{unconfirmed} message(s) could not be confirmed within {} s (is the tracker \
             consuming `{}`?)",
            args.wait.num_seconds(),
            kafka.topic
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;

    #[test]
    fn a_replayed_message_keeps_its_headers_but_not_the_dlq_ones_and_says_where_it_came_from() {
        let rec = DlqRecord {
            topic: "t.dlq".into(),
            partition: 2,
            offset: 41,
            timestamp: None,
            key: Some(b"s-1".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: vec![
                ("traceparent".into(), Some(b"00-abc-def-01".to_vec())),
                ("dlq.reason".into(), Some(b"db_rejected".to_vec())),
                ("dlq.error".into(), Some(b"23514".to_vec())),
                ("replay.from".into(), Some(b"t.dlq/0/1".to_vec())),
            ],
        };
        let h = replay_headers(&rec, "run-1", "2026-12-02T00:00:00.000Z");
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("traceparent", "00-abc-def-01"),
            ("replay.from", "t.dlq/2/41"),
            ("replay.at", "2026-12-02T00:00:00.000Z"),
            ("replay.reason", "db_rejected"),
            ("replay.run", "run-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
