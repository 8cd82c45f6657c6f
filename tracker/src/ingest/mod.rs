//! The Kafka side: consume, batch, decode, dead-letter, hand to the store, store offsets.
//!
//! The delivery guarantee lives here. rdkafka's automatic offset *store* is off; offsets are
//! stored (and later committed by the auto-committer, or synchronously on revoke and on
//! shutdown) only after
//!
//! 1. every invalid message of the batch has been acknowledged by the DLQ topic, and
//! 2. the database transaction holding every valid message of the batch has committed.
//!
//! A crash anywhere before that redelivers the batch; the store's `eventId` idempotency turns
//! the redelivery into duplicates that are counted and dropped. Database or DLQ failures are
//! retried with capped exponential backoff for as long as it takes; a shutdown request during
//! retries abandons the batch *without* storing its offsets, so it is redelivered later.
//! The one exception is an error that says the *data* is wrong (SQLSTATE class 22 or 23):
//! retrying would wedge the partition, so the batch is bisected down to the offending event,
//! which goes to the DLQ with reason `db_rejected`, and the rest commits.
//!
//! Each batch is one `ingest.batch` span (a root, linked to the producers' spans; see
//! [`trace`]) with children `ingest.decode`, `ingest.dead_letter`, `ingest.db_transaction`
//! (one per attempt, so retries and bisection show) and `ingest.store_offsets`.
//!
//! This module decodes with the SDK's contract and writes through `store`; it never builds
//! SQL and never touches HTTP.

pub mod avro;
pub mod client;
pub mod dlq;
pub mod topics;
pub mod trace;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt as _};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use saga_tracker_sdk::contract::{self, ContractError};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::Settings;
use crate::health::ConsumerHealth;
use crate::metrics;
use crate::metrics::CommittedBatch;
use crate::store::write::{is_permanent, write_batch_traced, IncomingEvent, KafkaSource};
use avro::{AvroDecoder, BatchSchemas};
use dlq::DeadLetters;

/// Commits stored offsets synchronously before partitions are taken away, so the next owner
/// starts exactly after what this replica has made durable.
///
/// Its statistics also clear a TLS/SASL failure the consume loop reported to
/// [`ConsumerHealth`] once a broker connection is up again.
#[derive(Debug, Default)]
pub struct IngestContext {
    health: ConsumerHealth,
}

impl ClientContext for IngestContext {
    /// librdkafka statistics (every `statistics.interval.ms`) feed the per-partition lag
    /// gauge. Partitions this replica does not fetch report 0, so `max by (partition)`
    /// across replicas is the owner's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        // Bootstrap and coordinator entries have negative node ids; only real brokers count.
        let brokers: Vec<_> = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .collect();
        // Any broker up means the credentials and the certificates work again (librdkafka
        // connects sparsely, so others may rightly sit in INIT).
        if brokers.iter().any(|b| b.state == "UP") {
            self.health.set_broker_security_failure(None);
        }
        for topic in statistics.topics.values() {
            for (partition, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 {
                    continue;
                }
                let lag = if p.fetch_state == "active" {
                    p.consumer_lag.max(0)
                } else {
                    0
                };
                metrics::consumer_lag(*partition, lag);
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(
                partitions = tpl.count(),
                "partitions revoked; committing stored offsets"
            );
            commit_stored(consumer);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

fn commit_stored<C: ConsumerContext>(consumer: &impl Consumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing stored since the last commit: nothing to do.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => {
            tracing::warn!(error = %e, "committing offsets failed; they will be redelivered and deduplicated")
        }
    }
}

/// How long the final commit and group leave may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits stored offsets, leaves the group and closes the consumer, giving up after
/// `timeout`. librdkafka's synchronous commit and close wait for the group coordinator without
/// a deadline, so with the broker gone a SIGTERM would otherwise hang forever. The work runs
/// on a plain thread (not tokio's blocking pool, which the runtime waits for on exit); if it
/// does not finish in time we log and move on — anything uncommitted is redelivered to the
/// next owner and deduplicated by `eventId`.
async fn close_consumer(consumer: StreamConsumer<IngestContext>, timeout: Duration) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            commit_stored(&consumer);
            consumer.unsubscribe();
            drop(consumer);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the consumer-close thread");
        return;
    }
    if tokio::time::timeout(timeout, done_rx).await.is_err() {
        tracing::warn!(
            timeout_s = timeout.as_secs(),
            "closing the consumer timed out (broker unreachable?); uncommitted offsets will be \
             redelivered and deduplicated"
        );
    }
}

/// The consumer with its collaborators.
pub struct Ingestor {
    consumer: StreamConsumer<IngestContext>,
    dead_letters: DeadLetters,
    /// Writer schemas and decoding of Confluent-framed Avro messages.
    avro: AvroDecoder,
    pool: PgPool,
    settings: Settings,
    health: ConsumerHealth,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("topic", &self.settings.kafka.topic)
            .field("group_id", &self.settings.kafka.group_id)
            .finish_non_exhaustive()
    }
}

/// DLQ reason for an event the database refused as data (see [`is_permanent`]).
pub const REASON_DB_REJECTED: &str = "db_rejected";

/// The batch could not be made durable before shutdown; its offsets were not stored.
#[derive(Debug)]
struct Abandoned;

/// One lane of [`Ingestor::consume`]: the batch it is filling from its partitions, and
/// whether its one writer is busy.
#[derive(Default)]
struct Lane {
    filling: Vec<OwnedMessage>,
    /// When the batch being filled must go: its first message's arrival + linger.
    due: Option<tokio::time::Instant>,
    busy: bool,
    /// A batch of this lane was abandoned at shutdown: nothing after it may store offsets.
    abandoned: bool,
}

impl Lane {
    fn push(&mut self, m: OwnedMessage, linger: Duration) {
        if self.filling.is_empty() {
            self.due = Some(tokio::time::Instant::now() + linger);
        }
        self.filling.push(m);
    }

    fn ready(&self, batch_size: usize, now: tokio::time::Instant) -> bool {
        !self.abandoned
            && !self.filling.is_empty()
            && (self.filling.len() >= batch_size || self.due.is_some_and(|at| at <= now))
    }

    fn take(&mut self) -> Vec<OwnedMessage> {
        self.due = None;
        std::mem::take(&mut self.filling)
    }
}

/// A batch whose valid events committed and whose invalid ones the DLQ acknowledged: its
/// offsets may be stored once every batch read before it is durable too.
struct Durable {
    batch: Vec<OwnedMessage>,
    span: tracing::Span,
}

/// What a durable batch reports on its `ingest.batch` span.
#[derive(Debug)]
struct BatchCounts {
    /// Events the store already held (redeliveries).
    duplicates: u64,
    /// Invalid events plus those the database refused, all sent to the DLQ.
    dead_letters: u64,
    /// `now - occurredAt` of the batch's oldest valid event, once it is durable.
    oldest_event_lag_ms: Option<i64>,
}

/// What [`Ingestor::write_isolating`] did besides committing.
#[derive(Debug, Default)]
struct Written {
    duplicates: u64,
    /// Events the database refused as data, sent to the DLQ (`db_rejected`).
    rejected: u64,
}

/// `error.type` of a failed transaction: the SQLSTATE when the database answered, else what
/// kind of failure it was (bounded values).
fn error_type(e: &sqlx::Error) -> std::borrow::Cow<'_, str> {
    match e {
        sqlx::Error::Database(db) => db.code().unwrap_or("database".into()),
        sqlx::Error::PoolTimedOut => "pool_timeout".into(),
        sqlx::Error::PoolClosed => "pool_closed".into(),
        sqlx::Error::Io(_) => "io".into(),
        sqlx::Error::Tls(_) => "tls".into(),
        sqlx::Error::Protocol(_) => "protocol".into(),
        _ => "other".into(),
    }
}

impl Ingestor {
    /// Creates the consumer and the DLQ producer. Connects to nothing: [`Ingestor::run`]
    /// checks the connection and the topics, then subscribes.
    pub fn new(settings: &Settings, pool: PgPool, health: ConsumerHealth) -> anyhow::Result<Self> {
        let k = &settings.kafka;
        let mut cc = client::base_config(k)?;
        cc.set("group.id", &k.group_id)
            .set("client.id", "saga-tracker")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // The heart of at-least-once: only we decide which offsets are safe to commit.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &k.auto_offset_reset)
            .set("enable.partition.eof", "false")
            // Kafka's default 500 ms long-poll adds straight to visibility lag when a
            // partition is quiet; 100 ms keeps lag low at a negligible request cost.
            .set("fetch.wait.max.ms", "100")
            // Feeds the consumer-lag gauge (see `IngestContext::stats`).
            .set("statistics.interval.ms", "5000")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        for (key, v) in &k.properties {
            cc.set(key, v);
        }
        let consumer: StreamConsumer<IngestContext> = cc
            .create_with_context(IngestContext {
                health: health.clone(),
            })
            .context("creating the Kafka consumer")?;
        Ok(Self {
            consumer,
            dead_letters: DeadLetters::new(k)?,
            avro: AvroDecoder::new(&settings.schema_registry)?,
            pool,
            settings: settings.clone(),
            health,
        })
    }

    /// Consumes until `shutdown` fires, then finishes the batch in flight, commits and returns.
    ///
    /// It first checks that the brokers accept the connection (TLS, SASL) and that the topics
    /// exist (creating them when `kafka.create_topics` is on); the HTTP server is already up,
    /// so `/readyz` answers 503 meanwhile. A failure there ends the run with an error that says
    /// what to fix — the process exits non-zero rather than pretending to work.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let k = &self.settings.kafka;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            checked = topics::ensure_topics(k) => checked?,
        }
        self.consumer
            .subscribe(&[k.topic.as_str()])
            .with_context(|| format!("subscribing to `{}`", k.topic))?;
        tracing::info!(security = %k.security().describe(), brokers = %k.brokers, "connected to Kafka");
        self.health.set_running(true);
        metrics::consumer_up(true);
        tracing::info!(topic = %self.settings.kafka.topic, group = %self.settings.kafka.group_id, "consumer started");
        let result = self.consume(&shutdown).await;
        tracing::info!("consumer stopping: committing stored offsets");
        let Self {
            consumer, health, ..
        } = self;
        close_consumer(consumer, CLOSE_TIMEOUT).await;
        health.set_running(false);
        metrics::consumer_up(false);
        result
    }

    /// Logs a consumer error; a TLS or SASL failure (credentials revoked, certificate expired
    /// while running) also makes `/readyz` fail until a broker connection is up again (see
    /// `IngestContext::stats`).
    fn note_consumer_error(&self, e: &rdkafka::error::KafkaError) {
        match e.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::SSL) => {
                tracing::error!(error = %e, "Kafka TLS handshake failed; the consumer is not ready");
                self.health
                    .set_broker_security_failure(Some("TLS handshake failed".into()));
            }
            Some(rdkafka::types::RDKafkaErrorCode::Authentication) => {
                tracing::error!(error = %e, "Kafka SASL authentication failed; the consumer is not ready");
                self.health
                    .set_broker_security_failure(Some("SASL authentication failed".into()));
            }
            _ => tracing::warn!(error = %e, "Kafka consumer error; retrying"),
        }
    }

    /// Reads batches and writes up to `ingest.in_flight` of them at once.
    ///
    /// The partitions are dealt over `in_flight` lanes (partition mod lanes). Each lane fills
    /// its own batch and has at most one transaction open; a batch goes when it holds
    /// `ingest.batch_size` messages or `ingest.linger_ms` after its first one arrived. Since a
    /// partition belongs to one lane and a lane writes one batch at a time, each partition's
    /// batches commit in the order they were read, and a batch's offsets are stored only
    /// after it committed — the guarantee of one batch at a time, per partition. Lanes never
    /// share a saga that the producers key by its id (the key picks the partition), so their
    /// transactions do not wait on each other's saga locks; any saga they do share (keyless
    /// messages) is serialised by its advisory lock in the store. After an abandoned batch
    /// (shutdown during retries) its lane stores no more offsets: the rest is redelivered.
    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let batch_size = self.settings.ingest.batch_size;
        let linger = self.settings.ingest.linger();
        let mut lanes: Vec<Lane> = (0..self.settings.ingest.in_flight.max(1))
            .map(|_| Lane::default())
            .collect();
        let lane_of = |m: &OwnedMessage, n: usize| m.partition().rem_euclid(n as i32) as usize;
        // One future type for every batch written, so they can share the set.
        let write = |i: usize, batch: Vec<OwnedMessage>| async move {
            (i, self.process(batch, shutdown).await)
        };
        let mut writing = FuturesUnordered::new();
        loop {
            let now = tokio::time::Instant::now();
            for (i, lane) in lanes.iter_mut().enumerate() {
                if !lane.busy && lane.ready(batch_size, now) {
                    let batch = lane.take();
                    lane.busy = true;
                    writing.push(write(i, batch));
                }
            }
            // Stop reading while a lane's batch is full and its writer busy; the others have
            // about as much queued, since messages arrive spread over the partitions.
            let can_read = lanes.iter().all(|l| l.filling.len() < batch_size);
            // An idle consumer still wakes up every second to show it is alive (`/readyz`).
            let wake = lanes
                .iter()
                .filter_map(|l| l.due.filter(|&at| at > now))
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((i, done)) = writing.next(), if !writing.is_empty() => {
                    if !self.finish(&mut lanes[i], done) {
                        break;
                    }
                },
                r = tokio::time::timeout_at(wake, self.consumer.recv()), if can_read => {
                    self.health.mark_polled();
                    match r {
                        // Linger over for some lane, or the idle tick: the loop looks again.
                        Err(_timer) => {}
                        Ok(Ok(m)) => {
                            let m = m.detach();
                            let n = lanes.len();
                            lanes[lane_of(&m, n)].push(m, linger);
                        }
                        Ok(Err(e)) => {
                            if lanes.iter().all(|l| l.filling.is_empty()) {
                                self.note_consumer_error(&e);
                                tokio::select! {
                                    _ = shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                }
                            } else {
                                // Write what we hold rather than wait on a failing consumer.
                                tracing::warn!(error = %e, "Kafka consumer error while filling a batch");
                                for lane in &mut lanes {
                                    lane.due = Some(tokio::time::Instant::now());
                                }
                            }
                        }
                    }
                }
            }
        }
        // Shutdown: what was read is still written (one attempt each; the retries stop), lane
        // by lane in read order, and offsets are stored up to a lane's first batch that did
        // not make it.
        loop {
            for (i, lane) in lanes.iter_mut().enumerate() {
                if !lane.busy && !lane.abandoned && !lane.filling.is_empty() {
                    let batch = lane.take();
                    lane.busy = true;
                    writing.push(write(i, batch));
                }
            }
            let Some((i, done)) = writing.next().await else {
                break;
            };
            self.finish(&mut lanes[i], done);
        }
        Ok(())
    }

    /// A lane's batch is done: stores its offsets when it is durable, else marks the lane so
    /// nothing after it stores any. Returns whether the batch was durable.
    fn finish(&self, lane: &mut Lane, done: Result<Durable, Abandoned>) -> bool {
        lane.busy = false;
        match done {
            Ok(done) => {
                self.store_offsets_of(done);
                true
            }
            Err(Abandoned) => {
                tracing::warn!("shutdown during retries: batch abandoned, it will be redelivered");
                lane.abandoned = true;
                false
            }
        }
    }

    /// Stores the offsets of a durable batch, in its `ingest.batch` span.
    fn store_offsets_of(&self, done: Durable) {
        let _batch = done.span.enter();
        tracing::info_span!("ingest.store_offsets", partitions = tracing::field::Empty)
            .in_scope(|| self.store_offsets(&done.batch));
    }

    /// Makes one batch durable (valid events committed, invalid ones acknowledged by the
    /// DLQ) and hands it back for its offsets to be stored, which is the caller's job: it
    /// knows whether every earlier batch is durable too. `Err` only if shutdown interrupted
    /// the retries. All of it runs in the batch's `ingest.batch` span.
    async fn process(
        &self,
        batch: Vec<OwnedMessage>,
        shutdown: &CancellationToken,
    ) -> Result<Durable, Abandoned> {
        let k = &self.settings.kafka;
        let span = trace::batch_span(&batch, &k.topic, &k.group_id);
        let trace_id = trace::sampled_trace_id(&span);
        let result = self
            .process_traced(&batch, trace_id.as_deref(), shutdown)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(counts) => {
                span.record("outcome", "committed");
                span.record("duplicates", counts.duplicates as i64);
                span.record("dead_letters", counts.dead_letters as i64);
                if let Some(lag) = counts.oldest_event_lag_ms {
                    span.record("oldest_event_lag_ms", lag);
                }
            }
            Err(Abandoned) => {
                span.record("outcome", "abandoned");
                span.record("otel.status_code", "ERROR");
            }
        }
        result.map(|_| Durable { batch, span })
    }

    /// [`Self::process`] inside the batch span; `trace_id` is the batch's sampled trace id,
    /// stored with every event the batch writes.
    async fn process_traced(
        &self,
        batch: &[OwnedMessage],
        trace_id: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<BatchCounts, Abandoned> {
        let schemas = self.resolve_schemas(batch, shutdown).await?;
        let now = Utc::now();
        let mut valid = Vec::with_capacity(batch.len());
        let mut valid_msgs: Vec<&OwnedMessage> = Vec::with_capacity(batch.len());
        let mut invalid: Vec<(&OwnedMessage, ContractError)> = Vec::new();
        let decode = tracing::info_span!(
            "ingest.decode",
            messaging.batch.message_count = batch.len() as i64,
            valid = tracing::field::Empty,
            invalid = tracing::field::Empty,
        );
        decode.in_scope(|| {
            for msg in batch {
                match decode_message(msg, now, &self.avro, &schemas) {
                    Ok(event) => {
                        valid.push(IncomingEvent {
                            event,
                            received_at: now,
                            source: Some(KafkaSource {
                                topic: msg.topic().to_owned(),
                                partition: msg.partition(),
                                offset: msg.offset(),
                            }),
                        });
                        valid_msgs.push(msg);
                    }
                    Err(e) => invalid.push((msg, e)),
                }
            }
        });
        decode.record("valid", valid.len() as i64);
        decode.record("invalid", invalid.len() as i64);
        drop(decode);

        if !invalid.is_empty() {
            let dlq = self.dead_letter_span("invalid", invalid.len());
            async {
                for (msg, why) in &invalid {
                    tracing::warn!(
                        reason = why.reason(),
                        error = %why,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "invalid event sent to the DLQ"
                    );
                    self.retry(shutdown, "DLQ send", || self.dead_letters.send(msg, why))
                        .await?;
                    metrics::dead_lettered(why.reason());
                }
                Ok(())
            }
            .instrument(dlq)
            .await?;
        }

        let written = self
            .write_isolating(&valid, &valid_msgs, trace_id, shutdown)
            .await?;
        let oldest_event_lag_ms = valid
            .iter()
            .map(|e| e.event.occurred_at)
            .min()
            .map(|oldest| (Utc::now() - oldest).num_milliseconds().max(0));
        Ok(BatchCounts {
            duplicates: written.duplicates,
            dead_letters: invalid.len() as u64 + written.rejected,
            oldest_event_lag_ms,
        })
    }

    /// Writes the valid events of a batch. Transient database errors are retried (see
    /// [`Self::write_retrying`]); a *permanent* one ([`is_permanent`]: the data itself is
    /// refused) would wedge the partition if retried, so the batch is bisected — each half
    /// written in its own transaction — until the offending events stand alone; those go to
    /// the DLQ with reason `db_rejected` and the database's message, everything else commits.
    /// A batch with one bad event costs about `2·log2(n)` extra transactions.
    async fn write_isolating(
        &self,
        valid: &[IncomingEvent],
        msgs: &[&OwnedMessage],
        trace_id: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<Written, Abandoned> {
        let mut written = Written::default();
        // Index ranges of `valid` still to write; a stack, so halves are tried in order.
        let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
        pending.push(0..valid.len());
        while let Some(range) = pending.pop() {
            match self
                .write_retrying(&valid[range.clone()], trace_id, shutdown)
                .await?
            {
                Ok(committed) => {
                    written.duplicates += committed.duplicate;
                    metrics::batch_committed(&committed);
                }
                Err(e) if range.len() > 1 => {
                    tracing::warn!(
                        error = %e,
                        events = range.len(),
                        "the database refused an event of this batch; bisecting to isolate it"
                    );
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(e) => {
                    let msg = msgs[range.start];
                    let code = match &e {
                        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                        _ => None,
                    };
                    let detail = match &code {
                        Some(code) => format!("SQLSTATE {code}: {e}"),
                        None => e.to_string(),
                    };
                    tracing::warn!(
                        reason = REASON_DB_REJECTED,
                        error = %detail,
                        partition = msg.partition(),
                        offset = msg.offset(),
                        "event refused by the database sent to the DLQ"
                    );
                    let dlq = self.dead_letter_span(REASON_DB_REJECTED, 1);
                    self.retry(shutdown, "DLQ send", || {
                        self.dead_letters
                            .send_with(msg, REASON_DB_REJECTED, None, &detail)
                    })
                    .instrument(dlq)
                    .await?;
                    metrics::dead_lettered(REASON_DB_REJECTED);
                    written.rejected += 1;
                }
            }
        }
        Ok(written)
    }

    /// One transaction for `events`, retried with capped exponential backoff while the error
    /// is transient. `Ok(Err(_))` is a permanent (data) error; `Err(Abandoned)` means shutdown
    /// interrupted the retries.
    async fn write_retrying(
        &self,
        events: &[IncomingEvent],
        trace_id: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<Result<CommittedBatch, sqlx::Error>, Abandoned> {
        let mut delay = Duration::from_millis(self.settings.ingest.retry_initial_ms);
        let max = Duration::from_millis(self.settings.ingest.retry_max_ms);
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            // A batch without valid events opens no transaction, so it gets no span.
            let span = if events.is_empty() {
                tracing::Span::none()
            } else {
                tracing::info_span!(
                    "ingest.db_transaction",
                    otel.kind = "client",
                    events = events.len() as i64,
                    attempt = i64::from(attempt),
                    duplicates = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            };
            trace::exported_attributes(
                &span,
                [
                    ("db.system.name", "postgresql".into()),
                    ("db.operation.name", "write_batch".into()),
                ],
            );
            let outcome = write_batch_traced(&self.pool, events, trace_id)
                .instrument(span.clone())
                .await;
            match &outcome {
                Ok(committed) => span.record("duplicates", committed.duplicate as i64),
                Err(e) => {
                    span.record("error.type", error_type(e).as_ref());
                    span.record("otel.status_code", "ERROR")
                }
            };
            match outcome {
                Ok(committed) => {
                    self.health.set_db_failing(false);
                    metrics::consumer_up(true);
                    return Ok(Ok(committed));
                }
                Err(e) if is_permanent(&e) => {
                    // The database answered: it is up, the data is not acceptable.
                    self.health.set_db_failing(false);
                    metrics::consumer_up(true);
                    return Ok(Err(e));
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "database write failed; retrying"
                    );
                    self.health.set_db_failing(true);
                    metrics::db_write_failed();
                    metrics::consumer_up(false);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.health.mark_polled();
                    delay = (delay * 2).min(max);
                }
            }
        }
    }

    /// The `ingest.dead_letter` span around sending `count` dead letters for `reason`.
    fn dead_letter_span(&self, reason: &'static str, count: usize) -> tracing::Span {
        let span = tracing::info_span!(
            "ingest.dead_letter",
            otel.kind = "producer",
            messaging.batch.message_count = count as i64,
            reason,
        );
        trace::exported_attributes(
            &span,
            [
                ("messaging.system", "kafka".into()),
                ("messaging.operation.type", "send".into()),
                ("messaging.operation.name", "send".into()),
                (
                    "messaging.destination.name",
                    self.settings.kafka.dlq_topic.clone().into(),
                ),
            ],
        );
        span
    }

    /// Finds the writer schema of every Confluent-framed message of the batch before it is
    /// decoded. A registry that cannot answer is retried like the database — the batch
    /// waits, `/readyz` says why, nothing is dead-lettered — because the messages are not at
    /// fault; a shutdown meanwhile abandons the batch without storing its offsets.
    async fn resolve_schemas(
        &self,
        batch: &[OwnedMessage],
        shutdown: &CancellationToken,
    ) -> Result<BatchSchemas, Abandoned> {
        let ids = AvroDecoder::framed_ids(batch.iter().map(|m| m.payload().unwrap_or_default()));
        let mut schemas = BatchSchemas::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(schemas);
        }
        let span = tracing::info_span!("ingest.resolve_schemas", schema_ids = ids.len() as i64);
        async {
            for id in ids {
                let (verdict, source) = self
                    .retry(shutdown, "Schema Registry lookup", || async move {
                        let found = self.avro.writer_schema(id).await;
                        if found.is_err() {
                            self.health.set_schema_registry_failing(true);
                            metrics::schema_registry_lookup("error");
                        }
                        found
                    })
                    .await?;
                if source == avro::Source::Registry {
                    self.health.set_schema_registry_failing(false);
                    metrics::schema_registry_lookup(match verdict {
                        avro::WriterSchema::Usable(_) => "found",
                        avro::WriterSchema::Mismatch(_) => "mismatch",
                        avro::WriterSchema::Unknown => "not_found",
                    });
                    tracing::info!(
                        schema_id = id,
                        "writer schema fetched from the Schema Registry"
                    );
                }
                schemas.insert(id, verdict);
            }
            Ok(schemas)
        }
        .instrument(span)
        .await
    }

    /// Retries `op` with capped exponential backoff until it succeeds or shutdown is requested.
    async fn retry<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        what: &str,
        mut op: F,
    ) -> Result<T, Abandoned>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut delay = Duration::from_millis(self.settings.ingest.retry_initial_ms);
        let max = Duration::from_millis(self.settings.ingest.retry_max_ms);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "{what} failed; retrying"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.health.mark_polled();
                    delay = (delay * 2).min(max);
                }
            }
        }
    }

    fn store_offsets(&self, batch: &[OwnedMessage]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let e = next
                .entry((m.topic(), m.partition()))
                .or_insert(m.offset() + 1);
            *e = (*e).max(m.offset() + 1);
        }
        tracing::Span::current().record("partitions", next.len() as i64);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, topic, partition, "building offset list");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Typically: the partition was revoked while we wrote. Its new owner re-reads
            // from the last commit and the store deduplicates.
            tracing::warn!(error = %e, "storing offsets failed; the batch may be redelivered (deduplicated)");
        }
    }
}

/// Decodes one message — Confluent-framed Avro (first byte 0, its writer schema looked up
/// in `schemas` beforehand) or JSON — applying the key rule: a message key, when present,
/// must equal the event's `sagaId` (it decides the partition, and a mismatch means an emitter
/// mixes up ids); a missing key is accepted because ordering never affects the result.
pub fn decode_message(
    msg: &OwnedMessage,
    now: chrono::DateTime<Utc>,
    avro: &AvroDecoder,
    schemas: &BatchSchemas,
) -> Result<contract::SagaEvent, ContractError> {
    decode_parts(
        msg.key(),
        msg.payload().unwrap_or_default(),
        now,
        avro,
        schemas,
    )
}

/// [`decode_message`] on a key and a value held apart from any Kafka message, so that
/// `saga-tracker dlq` can say what the tracker *now* makes of a dead-lettered message with
/// exactly the rules the consumer applies.
pub fn decode_parts(
    key: Option<&[u8]>,
    payload: &[u8],
    now: chrono::DateTime<Utc>,
    avro: &AvroDecoder,
    schemas: &BatchSchemas,
) -> Result<contract::SagaEvent, ContractError> {
    let event = if avro::framed_schema_id(payload).is_some() {
        avro.decode(payload, schemas, now)?
    } else {
        contract::decode(payload, now)?
    };
    if let Some(key) = key {
        if key != event.saga_id.as_bytes() {
            return Err(ContractError::key_mismatch(
                &String::from_utf8_lossy(key),
                &event.saga_id,
            ));
        }
    }
    Ok(event)
}
