//! The producer side: turn a [`Step`] into a contract event and deliver it to Kafka.
//!
//! # How delivery works
//!
//! One librdkafka producer per tracker (idempotent, `acks=all`, key = `sagaId`) with its own
//! polling thread ([`ThreadedProducer`]), so delivery reports are handled without any help from
//! the caller's runtime. librdkafka's in-memory queue *is* the buffer; a semaphore with
//! [`TrackerConfig::buffer_capacity`] permits sits in front of it:
//!
//! - a recording call takes a permit before handing the event to librdkafka, and the delivery
//!   report (success or failure) gives it back, so at most `buffer_capacity` events are ever
//!   accepted and not yet settled — memory is bounded whatever the broker does;
//! - [`DeliveryMode::Async`] takes the permit with [`OverflowPolicy::Drop`] (`try_acquire`,
//!   never waits) or [`OverflowPolicy::Wait`] (waits, event-driven, up to the limit), then
//!   returns as soon as librdkafka has the event (`rd_kafka_producev` never blocks);
//! - [`DeliveryMode::Sync`] waits for a permit up to the delivery timeout, then awaits the
//!   delivery report through a oneshot channel.
//!
//! A separate bounded channel plus a sender task would copy every event once more and need a
//! runtime at construction (a sender thread instead was measured slower, docs/BENCHMARKS.md);
//! librdkafka already queues, batches, retries and reports, so the semaphore only adds what it
//! lacks: an exact bound and an async wait for room.
//!
//! `enabled = false` gives a tracker that validates nothing, connects to nothing and returns
//! at once, so services can ship the SDK dark and switch it on by configuration.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::{oneshot, Semaphore, TryAcquireError};

use crate::config::{DeliveryMode, OverflowPolicy, TrackerConfig};
use crate::context::SagaContext;
use crate::contract::SagaEvent;
use crate::error::Error;
use crate::saga::SagaRecorder;
use crate::stats::{DropReason, Recorder, Stats};
use crate::step::Step;
use crate::trace::{TraceParent, SAMPLED};

/// Extra time a `Sync` call waits for a delivery report beyond the delivery timeout.
/// librdkafka reports every message within `message.timeout.ms`; this only guards against a
/// report that never comes.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Records saga steps to Kafka. Cheap to clone; clones share one producer and one buffer.
///
/// Build one at start-up, record from anywhere, and call [`SagaTracker::shutdown`] before
/// the process exits: dropping the last clone discards whatever is still buffered.
///
/// ```no_run
/// use std::time::Duration;
/// use saga_tracker_sdk::{SagaContext, SagaTracker};
///
/// # async fn demo() -> Result<(), saga_tracker_sdk::Error> {
/// // SAGA_TRACKER_BROKERS, SAGA_TRACKER_SERVICE, SAGA_TRACKER_DELIVERY=async, …
/// let tracker = SagaTracker::from_env()?;
/// let ctx = SagaContext::new("order-8812", "ORDER_CREATION");
/// tracker.saga(&ctx).step_started("STOCK_RESERVED").await?;
/// println!("{:?}", tracker.stats());
/// tracker.shutdown(Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SagaTracker {
    /// `None` when disabled: every call returns at once.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    producer: ThreadedProducer<DeliveryContext>,
    shared: Arc<Shared>,
    topic: String,
    service: String,
    delivery_timeout: Duration,
    delivery: DeliveryMode,
    overflow: OverflowPolicy,
}

/// State shared between callers and librdkafka's polling thread.
struct Shared {
    /// One permit per free buffer slot; see the module docs.
    slots: Semaphore,
    stats: Recorder,
    /// Set by [`SagaTracker::shutdown`]; later events are dropped (`Async`) or refused (`Sync`).
    closed: AtomicBool,
    /// What the acceptance times in [`Token`]s count from.
    epoch: Instant,
    /// The `Sync` callers awaiting a delivery report, by the id their token carries.
    acks: Mutex<HashMap<usize, Ack>>,
    /// The next `Sync` id (wrapping: ids only need to differ among events in flight).
    next_ack: AtomicUsize,
}

/// A `Sync` caller awaiting its event's delivery report.
struct Ack {
    accepted_at: Instant,
    tx: oneshot::Sender<Result<(), String>>,
}

/// Travels with each message through librdkafka (its delivery opaque) and comes back in the
/// delivery report: one word rather than a box, because a box allocated on the caller's thread
/// and freed on the polling thread, once per event, made every `Async` call measurably slower
/// (the two threads then meet in the allocator; docs/BENCHMARKS.md, "SDK record call").
///
/// - even: `Async`, the acceptance time in microseconds since [`Shared::epoch`], shifted left
///   by one (wrapping; on 32-bit targets a delivery slower than ~35 minutes is misreported in
///   the delivery-duration histogram, nothing else);
/// - odd: `Sync`, the key of the caller's [`Ack`] in [`Shared::acks`], shifted left, plus one.
type Token = usize;

impl Shared {
    fn new(capacity: usize) -> Self {
        Self {
            slots: Semaphore::new(capacity),
            stats: Recorder::new(),
            closed: AtomicBool::new(false),
            epoch: Instant::now(),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicUsize::new(0),
        }
    }

    fn now_micros(&self) -> usize {
        // Truncation is the wrapping described at `Token`.
        self.epoch.elapsed().as_micros() as usize
    }

    /// The token of an `Async` event accepted now.
    fn async_token(&self) -> Token {
        self.now_micros() << 1
    }

    /// The token of a `Sync` event accepted now, whose report goes to `tx`.
    fn sync_token(&self, tx: oneshot::Sender<Result<(), String>>) -> Token {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        let ack = Ack {
            accepted_at: Instant::now(),
            tx,
        };
        self.lock_acks().insert(id, ack);
        (id << 1) | 1
    }

    /// How long the event of `token` has been in the buffer, and who awaits its report.
    fn settle(&self, token: Token) -> (Duration, Option<oneshot::Sender<Result<(), String>>>) {
        if token & 1 == 0 {
            let micros = micros_since(token >> 1, self.now_micros());
            return (Duration::from_micros(micros as u64), None);
        }
        match self.lock_acks().remove(&(token >> 1)) {
            Some(ack) => (ack.accepted_at.elapsed(), Some(ack.tx)),
            // Every `Sync` token has its entry until its one report (or failed send).
            None => (Duration::ZERO, None),
        }
    }

    fn lock_acks(&self) -> MutexGuard<'_, HashMap<usize, Ack>> {
        // The map is consistent after every statement, so a panic elsewhere cannot leave it
        // half-updated: a poisoned lock is still usable.
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Microseconds from `then` to `now`, both counted modulo 2^(bits − 1) as in a [`Token`].
fn micros_since(then: usize, now: usize) -> usize {
    now.wrapping_sub(then) & (usize::MAX >> 1)
}

/// Receives librdkafka's delivery reports on its polling thread.
struct DeliveryContext {
    shared: Arc<Shared>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Token;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Token) {
        let (took, ack) = self.shared.settle(token);
        let outcome = match result {
            Ok(_) => {
                self.shared.stats.delivered(took);
                Ok(())
            }
            Err((e, _)) => {
                let msg = e.to_string();
                self.shared.stats.failed(&msg);
                Err(msg)
            }
        };
        self.shared.slots.add_permits(1);
        if let Some(ack) = ack {
            // The caller may have given up waiting; that is fine.
            let _ = ack.send(outcome);
        }
    }
}

impl std::fmt::Debug for SagaTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("SagaTracker(disabled)"),
            Some(i) => f
                .debug_struct("SagaTracker")
                .field("topic", &i.topic)
                .field("service", &i.service)
                .field("delivery", &i.delivery)
                .field("overflow", &i.overflow)
                .field("stats", &i.shared.stats.snapshot())
                .finish_non_exhaustive(),
        }
    }
}

/// The outcome of waiting for a buffer slot.
enum Slot {
    Taken,
    Full,
    TimedOut,
    Closed,
}

impl SagaTracker {
    /// Creates the producer (no event is sent until the first call). Validates the
    /// configuration first; a disabled configuration gives [`SagaTracker::disabled`].
    ///
    /// Needs no async runtime; `Sync` mode and [`OverflowPolicy::Wait`] need a Tokio runtime
    /// with timers when recording.
    pub fn new(config: TrackerConfig) -> Result<Self, Error> {
        if !config.enabled {
            return Ok(Self::disabled());
        }
        config.validate()?;
        let capacity = config.buffer_capacity;
        let shared = Arc::new(Shared::new(capacity));
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.brokers)
            .set("client.id", "saga-tracker-sdk")
            // Idempotence: broker-side dedup of producer retries, in order per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", "5")
            // The semaphore is the real bound. librdkafka frees a message's queue entry only
            // after its delivery report returns, a moment after the permit is back, so give it
            // room for both generations rather than ever seeing QueueFull.
            .set(
                "queue.buffering.max.messages",
                capacity.saturating_mul(2).to_string(),
            );
        let security = config
            .security
            .properties()
            .map_err(|e| Error::Config(format!("`security.{}` {}", e.field, e.reason)))?;
        for (k, v) in &security {
            cc.set(*k, v.expose());
        }
        for (k, v) in &config.producer_properties {
            cc.set(k, v);
        }
        let producer: ThreadedProducer<DeliveryContext> = cc
            .create_with_context(DeliveryContext {
                shared: Arc::clone(&shared),
            })
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                producer,
                shared,
                topic: config.topic,
                service: config.service.trim().to_owned(),
                delivery_timeout: config.delivery_timeout,
                delivery: config.delivery,
                overflow: config.overflow,
            })),
        })
    }

    /// [`SagaTracker::new`] with [`TrackerConfig::from_env`].
    pub fn from_env() -> Result<Self, Error> {
        Self::new(TrackerConfig::from_env()?)
    }

    /// A tracker that records nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// `false` for the no-op tracker.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The delivery mode (`Sync` for a disabled tracker).
    pub fn delivery_mode(&self) -> DeliveryMode {
        self.inner
            .as_ref()
            .map_or(DeliveryMode::Sync, |i| i.delivery)
    }

    /// The typed helpers for one saga: `tracker.saga(&ctx).step_started("STOCK_RESERVED").await?`.
    /// See [`SagaRecorder`].
    pub fn saga<'a>(&'a self, context: &'a SagaContext) -> SagaRecorder<'a> {
        SagaRecorder::new(self, context)
    }

    /// Records one step.
    ///
    /// - `Sync`: waits for the broker's acknowledgement; `Ok(Some(event_id))` once it is in
    ///   Kafka, [`Error::Delivery`] if it could not be delivered within the delivery timeout.
    /// - `Async`: returns once the event is buffered, `Ok(Some(event_id))`; `Ok(None)` if the
    ///   overflow policy dropped it (counted as `dropped`). Delivery failures are counted,
    ///   never returned.
    /// - Disabled: `Ok(None)` at once.
    ///
    /// In every mode an event that breaks the contract is [`Error::Invalid`] and nothing is
    /// sent.
    pub async fn record(&self, step: Step) -> Result<Option<String>, Error> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        #[allow(unused_mut)] // mutated only with the `opentelemetry` feature
        let (mut event, mut traceparent) = match step.into_parts(&inner.service) {
            Ok(parts) => parts,
            Err(e) => {
                inner.shared.stats.dropped(DropReason::Invalid);
                return Err(e);
            }
        };
        // The producer span the event's ids and `traceparent` then name (see `trace`).
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace::ProducerSpan::start(&inner.topic, &mut event, &mut traceparent);
        let accepted = inner
            .dispatch(&event, traceparent.as_ref(), inner.delivery)
            .await;
        #[cfg(feature = "opentelemetry")]
        span.end(&accepted);
        Ok(accepted?.then_some(event.event_id))
    }

    /// Sends an already-built event as is (key = its `sagaId`, no validation) and awaits
    /// delivery, whatever the delivery mode. Used by tools that replay or generate events;
    /// services should prefer [`SagaTracker::record`].
    pub async fn send_event(&self, event: &SagaEvent) -> Result<(), Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let traceparent = match (&event.trace_id, &event.span_id) {
            (Some(t), Some(s)) => TraceParent::from_ids(t, s, SAMPLED),
            _ => None,
        };
        inner
            .dispatch(event, traceparent.as_ref(), DeliveryMode::Sync)
            .await
            .map(|_| ())
    }

    /// Counts since the tracker was built (all zero when disabled).
    pub fn stats(&self) -> Stats {
        self.inner
            .as_ref()
            .map_or_else(Stats::default, |i| i.shared.stats.snapshot())
    }

    /// Waits until every buffered event is delivered or failed, up to `timeout`. Blocks the
    /// calling thread; from async code prefer [`SagaTracker::shutdown`], or call this inside
    /// `spawn_blocking`. Returns [`Error::FlushTimeout`] with the number still pending.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        match &self.inner {
            None => Ok(()),
            Some(i) => i.flush(timeout),
        }
    }

    /// Stops accepting events and delivers everything buffered, up to `timeout`.
    ///
    /// Afterwards (on every clone) `Async` recording drops events (`reason="closed"`) and
    /// `Sync` recording returns [`Error::Closed`]; callers waiting for room under
    /// [`OverflowPolicy::Wait`] give up at once. Returns [`Error::FlushTimeout`] if events
    /// were still pending at the deadline (they stay queued until the last clone is dropped).
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        inner.shared.closed.store(true, Ordering::SeqCst);
        inner.shared.slots.close();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let inner = Arc::clone(inner);
                handle
                    .spawn_blocking(move || inner.flush(timeout))
                    .await
                    .map_err(|e| Error::Delivery(format!("flush task failed: {e}")))?
            }
            Err(_) => inner.flush(timeout),
        }
    }
}

impl Inner {
    fn flush(&self, timeout: Duration) -> Result<(), Error> {
        match self.producer.flush(timeout) {
            Ok(()) => Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                Err(Error::FlushTimeout {
                    pending: usize::try_from(self.producer.in_flight_count()).unwrap_or(0),
                })
            }
            Err(e) => Err(Error::Delivery(e.to_string())),
        }
    }

    /// Hands one event to librdkafka under `mode`. `Ok(true)`: delivered (`Sync`) or buffered
    /// (`Async`); `Ok(false)`: not accepted, already counted (`Async` only).
    async fn dispatch(
        &self,
        event: &SagaEvent,
        traceparent: Option<&TraceParent>,
        mode: DeliveryMode,
    ) -> Result<bool, Error> {
        let stats = &self.shared.stats;
        let slot = if self.shared.closed.load(Ordering::Relaxed) {
            Slot::Closed
        } else {
            match (mode, self.overflow) {
                (DeliveryMode::Sync, _) => self.wait_for_slot(self.delivery_timeout).await,
                (DeliveryMode::Async, OverflowPolicy::Wait(limit)) => {
                    self.wait_for_slot(limit).await
                }
                (DeliveryMode::Async, OverflowPolicy::Drop) => self.try_slot(),
            }
        };
        let refusal = match slot {
            Slot::Taken => None,
            Slot::Full => Some((DropReason::BufferFull, None)),
            Slot::TimedOut => Some((DropReason::BufferTimeout, None)),
            Slot::Closed => Some((DropReason::Closed, Some(Error::Closed))),
        };
        if let Some((reason, sync_error)) = refusal {
            stats.dropped(reason);
            return match mode {
                DeliveryMode::Async => Ok(false),
                DeliveryMode::Sync => Err(sync_error.unwrap_or_else(|| {
                    Error::Delivery(format!(
                        "the buffer stayed full for {:?} (broker slow or unreachable)",
                        self.delivery_timeout
                    ))
                })),
            };
        }

        let mut headers = OwnedHeaders::new_with_capacity(2).insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        let traceparent = traceparent.map(TraceParent::header_value);
        if let Some(tp) = &traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(tp.as_str()),
            });
        }
        let (token, report) = match mode {
            DeliveryMode::Sync => {
                let (tx, rx) = oneshot::channel();
                (self.shared.sync_token(tx), Some(rx))
            }
            DeliveryMode::Async => (self.shared.async_token(), None),
        };
        let sent = with_payload_buffer(|payload| {
            event.write_json(payload);
            let record = BaseRecord::with_opaque_to(&self.topic, token)
                .key(event.saga_id.as_str())
                .payload(payload.as_slice())
                .headers(headers);
            // Count before handing over: the report may arrive before `send` returns.
            stats.accepted();
            self.producer.send(record).map_err(|(e, _record)| e)
        });
        if let Err(e) = sent {
            // No report will come: drop the `Sync` caller's entry (its channel closes).
            let _ = self.shared.settle(token);
            self.shared.slots.add_permits(1);
            let queue_full = matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            );
            stats.withdrawn();
            if queue_full {
                stats.dropped(DropReason::BufferFull);
            } else {
                stats.refused(&e.to_string());
            }
            return match mode {
                DeliveryMode::Async => Ok(false),
                DeliveryMode::Sync => Err(Error::Delivery(e.to_string())),
            };
        }
        let Some(report) = report else {
            return Ok(true);
        };
        let outcome = if tokio::runtime::Handle::try_current().is_ok() {
            match tokio::time::timeout(self.delivery_timeout + REPORT_GRACE, report).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(Error::Delivery(format!(
                        "no delivery report within {:?}",
                        self.delivery_timeout + REPORT_GRACE
                    )))
                }
            }
        } else {
            report.await
        };
        match outcome {
            Ok(Ok(())) => Ok(true),
            Ok(Err(msg)) => Err(Error::Delivery(msg)),
            Err(_) => Err(Error::Delivery(
                "the producer went away before reporting".into(),
            )),
        }
    }

    fn try_slot(&self) -> Slot {
        match self.shared.slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Slot::Taken
            }
            Err(TryAcquireError::NoPermits) => Slot::Full,
            Err(TryAcquireError::Closed) => Slot::Closed,
        }
    }

    /// Waits up to `limit` for a slot. Without a Tokio runtime there is no timer, so it only
    /// tries once rather than wait unbounded.
    async fn wait_for_slot(&self, limit: Duration) -> Slot {
        match self.try_slot() {
            Slot::Full => {}
            other => return other,
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Slot::Full;
        }
        match tokio::time::timeout(limit, self.shared.slots.acquire()).await {
            Ok(Ok(permit)) => {
                permit.forget();
                Slot::Taken
            }
            Ok(Err(_closed)) => Slot::Closed,
            Err(_elapsed) => Slot::TimedOut,
        }
    }
}

/// A payload buffer bigger than this is not kept for the next event (metadata may reach 16 KiB,
/// and a thread should not hold that much for a rare large event).
const KEEP_PAYLOAD_BYTES: usize = 4096;

thread_local! {
    /// The wire form of the event being handed to librdkafka, which copies it
    /// (`RD_KAFKA_MSG_F_COPY`) before `send` returns: one buffer per thread, reused, instead of
    /// one allocation per event.
    static PAYLOAD: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with an empty buffer, this thread's reused one when there is one. The buffer is
/// taken out of its slot for the call, so a nested call (or a thread shutting down) simply
/// gets a fresh one.
fn with_payload_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = PAYLOAD.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    let out = f(&mut buf);
    if buf.capacity() <= KEEP_PAYLOAD_BYTES {
        // After the thread's locals are gone the buffer is simply freed.
        let _ = PAYLOAD.try_with(|slot| slot.set(buf));
    }
    out
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pending = self.shared.stats.buffered();
        if pending > 0 {
            tracing::warn!(
                pending,
                "saga tracker dropped with undelivered events; call SagaTracker::shutdown first"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_BUFFER_CAPACITY;
    use crate::contract::StepStatus;

    #[tokio::test]
    async fn a_disabled_tracker_needs_no_broker() {
        let t = SagaTracker::new(TrackerConfig::disabled()).expect("no-op");
        let id = t
            .record(Step::new("", "bad type", "", StepStatus::Started))
            .await
            .expect("no-op accepts anything");
        assert_eq!(id, None);
        assert!(!t.is_enabled());
        assert_eq!(t.stats(), Stats::default());
        t.flush(Duration::from_millis(1)).expect("nothing to flush");
        t.shutdown(Duration::from_millis(1))
            .await
            .expect("nothing to shut down");
    }

    #[test]
    fn a_bad_configuration_is_refused_before_any_connection() {
        let e = SagaTracker::new(TrackerConfig::new("127.0.0.1:1", "")).expect_err("no service");
        assert!(matches!(e, Error::Config(m) if m.contains("service")));
        let e = SagaTracker::new(
            TrackerConfig::new("127.0.0.1:1", "svc")
                .with_producer_property("no.such.property", "1"),
        )
        .expect_err("unknown property");
        assert!(matches!(e, Error::Config(m) if m.contains("no.such.property")));
    }

    #[test]
    fn an_async_token_carries_its_acceptance_time() {
        let shared = Shared::new(1);
        let token = shared.async_token();
        assert_eq!(token & 1, 0, "async tokens are even");
        std::thread::sleep(Duration::from_millis(5));
        let (took, ack) = shared.settle(token);
        assert!(took >= Duration::from_millis(5), "{took:?}");
        assert!(ack.is_none());
    }

    #[test]
    fn acceptance_times_wrap_around() {
        let top = usize::MAX >> 1;
        assert_eq!(micros_since(top, 4), 5, "across the wrap");
        assert_eq!(micros_since(3, 10), 7);
        assert_eq!(micros_since(0, 0), 0);
    }

    #[test]
    fn a_sync_token_reaches_its_own_caller_once() {
        let shared = Shared::new(2);
        let (tx_a, mut rx_a) = oneshot::channel();
        let (tx_b, mut rx_b) = oneshot::channel();
        let a = shared.sync_token(tx_a);
        let b = shared.sync_token(tx_b);
        assert_eq!((a & 1, b & 1), (1, 1), "sync tokens are odd");
        assert_ne!(a, b);
        let (_, ack) = shared.settle(b);
        ack.expect("b's caller")
            .send(Err("b".into()))
            .expect("b waits");
        let (_, ack) = shared.settle(a);
        ack.expect("a's caller").send(Ok(())).expect("a waits");
        assert_eq!(rx_a.try_recv().expect("a's report"), Ok(()));
        assert_eq!(rx_b.try_recv().expect("b's report"), Err("b".to_owned()));
        assert!(shared.settle(a).1.is_none(), "one report per token");
        assert!(shared.lock_acks().is_empty());
    }

    #[tokio::test]
    async fn a_sync_send_refused_by_the_producer_leaves_no_waiter() {
        // librdkafka refuses an oversized message inside `send`, before any broker is
        // involved: no report will ever come for it.
        let t = SagaTracker::new(
            TrackerConfig::new("127.0.0.1:1", "svc")
                .with_producer_property("message.max.bytes", "1000"),
        )
        .expect("producer");
        let e = t
            .record(
                Step::new("s", "ORDER_CREATION", "A", StepStatus::Started)
                    .with_metadata_entry("blob", "x".repeat(2000)),
            )
            .await
            .expect_err("too large for the producer");
        assert!(matches!(e, Error::Delivery(_)), "{e:?}");
        let inner = t.inner.as_ref().expect("enabled");
        assert!(inner.shared.lock_acks().is_empty());
        let stats = t.stats();
        assert_eq!((stats.failed, stats.buffered), (1, 0));
        assert_eq!(
            inner.shared.slots.available_permits(),
            DEFAULT_BUFFER_CAPACITY
        );
    }

    #[tokio::test]
    async fn invalid_steps_are_refused_and_counted_without_a_broker() {
        let t = SagaTracker::new(
            TrackerConfig::new("127.0.0.1:1", "svc").with_delivery(DeliveryMode::Async),
        )
        .expect("producer");
        let e = t
            .record(Step::new("s", "lower case", "A", StepStatus::Started))
            .await
            .expect_err("invalid");
        assert!(matches!(e, Error::Invalid(c) if c.field() == Some("sagaType")));
        assert_eq!(t.stats().dropped, 1);
    }
}
