//! Log lines pushed to Loki: `tracing-loki` encodes them, a small relay of ours bounds them.
//!
//! Labels are `service` and `level` only — never anything unbounded such as a saga id;
//! everything else is in the line's JSON: the event's fields, the fields of the spans it is
//! in, and `trace_id`/`span_id` of the innermost span ([`WithIds`]).
//!
//! Why a relay: `tracing-loki` 0.2.7 hands events to its background task through a bounded
//! channel (512 events, dropping beyond), but the task moves them into a queue with no limit
//! while a push fails or hangs (its HTTP client has no timeout), and only drops a batch after
//! errors have backed it off past 30 s. A Loki that is down or black-holed would grow the
//! tracker's memory with every line logged. So `tracing-loki` pushes to a listener of ours on
//! `127.0.0.1:<random port>`, which always answers at once and keeps the encoded batches
//! (snappy-compressed protobuf, exactly what Loki accepts) in a queue of at most
//! `telemetry.loki.max_buffer_bytes`, dropping the oldest beyond it. One task forwards them
//! to Loki with `telemetry.loki.timeout_ms` per push and backs off while pushes fail. What
//! the tracker holds for Loki is therefore at most: 512 events in `tracing-loki`'s channel,
//! the lines logged during one loopback round trip in its queue, and `max_buffer_bytes` here
//! (plus the one batch in flight).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use loki_api::prost::Message as _;
use secrecy::ExposeSecret as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::callsite::Callsite;
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::Signal;
use crate::config::TelemetrySettings;

/// Where and how to push. Its `Debug` leaves out the URL, which may hold credentials.
#[derive(Clone)]
pub struct LokiConfig {
    /// Loki's base URL; `loki/api/v1/push` is appended.
    pub url: reqwest::Url,
    /// The `service` label.
    pub service_name: String,
    pub max_buffer_bytes: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for LokiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiConfig")
            .field("url", &"<redacted>")
            .field("service_name", &self.service_name)
            .field("max_buffer_bytes", &self.max_buffer_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `None` when `telemetry.loki.url` is empty.
pub fn resolve(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<LokiConfig>> {
    let l = &settings.loki;
    let raw = l.url.expose_secret().trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let mut url = reqwest::Url::parse(raw)
        .context("invalid configuration: `telemetry.loki.url` is not a URL")?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    if url.cannot_be_a_base() {
        bail!("invalid configuration: `telemetry.loki.url` must be an http(s) base URL");
    }
    Ok(Some(LokiConfig {
        url,
        service_name: super::otlp::service_name(settings, env),
        max_buffer_bytes: l.max_buffer_bytes,
        timeout: Duration::from_millis(l.timeout_ms),
    }))
}

/// The running relay and `tracing-loki` task.
pub struct Loki {
    controller: tracing_loki::BackgroundTaskController,
    encoder: tokio::task::JoinHandle<()>,
    relay: Arc<Relay>,
    forwarder: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Loki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loki").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// Longest [`Loki::shutdown`] spends pushing what is left.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

impl Loki {
    /// Lets `tracing-loki` send what it holds, pushes the queue, and stops: at most
    /// [`SHUTDOWN_FLUSH`] in all, whatever Loki does.
    pub async fn shutdown(self) {
        let Self {
            controller,
            encoder,
            relay,
            forwarder,
            stop,
        } = self;
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, async move {
            controller.shutdown().await;
            let _ = encoder.await;
            while !relay.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop.cancel();
        // A push still waiting on a slow Loki is abandoned rather than awaited.
        forwarder.abort();
    }
}

/// Starts the relay and `tracing-loki`'s task (inside the Tokio runtime) and returns the
/// layer to install.
pub fn start(config: LokiConfig) -> anyhow::Result<(WithIds<tracing_loki::Layer>, Loki)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("binding the local Loki relay on 127.0.0.1")?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let relay = Arc::new(Relay {
        queue: Mutex::new(Queue::default()),
        max_bytes: config.max_buffer_bytes,
        ready: Notify::new(),
    });
    let stop = CancellationToken::new();
    let router = axum::Router::new()
        .route("/loki/api/v1/push", axum::routing::post(accept))
        .with_state(relay.clone());
    let serve_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await;
    });
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .context("building the Loki HTTP client")?;
    let push_url = config
        .url
        .join("loki/api/v1/push")
        .context("joining loki/api/v1/push to `telemetry.loki.url`")?;
    let forwarder = tokio::spawn(forward(relay.clone(), client, push_url, stop.clone()));

    let relay_url = reqwest::Url::parse(&format!("http://{local}/"))?;
    let (layer, controller, task) = tracing_loki::builder()
        .label("service", &config.service_name)
        .context("the Loki `service` label")?
        .build_controller_url(relay_url)
        .context("building the Loki layer")?;
    let encoder = tokio::spawn(task);
    Ok((
        WithIds { inner: layer },
        Loki {
            controller,
            encoder,
            relay,
            forwarder,
            stop,
        },
    ))
}

/// Encoded push bodies waiting for Loki, oldest first.
#[derive(Default)]
struct Queue {
    bodies: VecDeque<Bytes>,
    bytes: usize,
}

struct Relay {
    queue: Mutex<Queue>,
    max_bytes: usize,
    ready: Notify,
}

impl Relay {
    fn push(&self, body: Bytes) {
        let mut dropped = Vec::new();
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.bytes += body.len();
            q.bodies.push_back(body);
            while q.bytes > self.max_bytes {
                let Some(old) = q.bodies.pop_front() else {
                    break;
                };
                q.bytes -= old.len();
                dropped.push(old);
            }
        }
        for body in dropped {
            crate::metrics::telemetry_dropped(Signal::Logs, lines_in(&body));
        }
        self.ready.notify_one();
    }

    fn front(&self) -> Option<Bytes> {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.bodies.front().cloned()
    }

    /// Removes `body` if it is still first (it may have been dropped for space meanwhile).
    fn pop_if_front(&self, body: &Bytes) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.bodies
            .front()
            .is_some_and(|f| f.as_ptr() == body.as_ptr())
        {
            if let Some(b) = q.bodies.pop_front() {
                q.bytes -= b.len();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bodies
            .is_empty()
    }
}

/// The relay's endpoint: queue and answer at once, whatever Loki is doing.
async fn accept(State(relay): State<Arc<Relay>>, body: Bytes) -> StatusCode {
    relay.push(body);
    StatusCode::NO_CONTENT
}

/// Log lines in one encoded push body; decoded only when the body is dropped or failed.
fn lines_in(body: &[u8]) -> u64 {
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .ok()
        .and_then(|raw| loki_api::logproto::PushRequest::decode(raw.as_slice()).ok())
        .map(|req| req.streams.iter().map(|s| s.entries.len() as u64).sum())
        .unwrap_or(1)
}

/// Pushes the queue to Loki in order, backing off (1 s doubling to 30 s) while it fails.
async fn forward(
    relay: Arc<Relay>,
    client: reqwest::Client,
    url: reqwest::Url,
    stop: CancellationToken,
) {
    let mut backoff = Duration::ZERO;
    loop {
        let Some(body) = relay.front() else {
            tokio::select! {
                _ = relay.ready.notified() => continue,
                _ = stop.cancelled() => return,
            }
        };
        let sent = client
            .post(url.clone())
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(body.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match sent {
            Ok(_) => {
                relay.pop_if_front(&body);
                backoff = Duration::ZERO;
            }
            Err(e) => {
                // Without the URL: it may carry basic-auth credentials.
                let e = e.without_url();
                super::export_failed(Signal::Logs, lines_in(&body), &e.to_string());
                backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// `tracing-loki`'s layer, told the OpenTelemetry ids of every span when it is first
/// entered, as if the span had fields `trace_id` and `span_id`; `tracing-loki` then writes
/// them into every line logged inside the span.
#[derive(Debug)]
pub struct WithIds<L> {
    inner: L,
}

/// Marks a span whose ids were handed on already.
struct IdsRecorded;

struct IdsCallsite;
static IDS_CALLSITE: IdsCallsite = IdsCallsite;
static IDS_METADATA: Metadata<'static> = Metadata::new(
    "otel_ids",
    "saga_tracker::telemetry::loki",
    Level::INFO,
    None,
    None,
    None,
    FieldSet::new(
        &["trace_id", "span_id"],
        tracing_core::identify_callsite!(&IDS_CALLSITE),
    ),
    Kind::SPAN,
);

impl Callsite for IdsCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &IDS_METADATA
    }
}

impl<S, L> Layer<S> for WithIds<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(id, values, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx.clone());
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<IdsRecorded>().is_some() {
            return;
        }
        let Some(ids) = super::ids::of_span(&span) else {
            return;
        };
        span.extensions_mut().insert(IdsRecorded);
        drop(span);
        let fields = IDS_METADATA.fields();
        let (Some(trace_field), Some(span_field)) =
            (fields.field("trace_id"), fields.field("span_id"))
        else {
            return;
        };
        let values = [
            (&trace_field, Some(&ids.trace_id as &dyn tracing::Value)),
            (&span_field, Some(&ids.span_id as &dyn tracing::Value)),
        ];
        let value_set = fields.value_set(&values);
        self.inner.on_record(id, &Record::new(&value_set), ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(max_bytes: usize) -> Relay {
        Relay {
            queue: Mutex::new(Queue::default()),
            max_bytes,
            ready: Notify::new(),
        }
    }

    #[test]
    fn the_relay_holds_at_most_max_bytes_and_drops_the_oldest() {
        let relay = relay(4096);
        for i in 0..100u8 {
            relay.push(Bytes::from(vec![i; 1000]));
        }
        let q = relay.queue.lock().expect("lock");
        assert!(q.bytes <= 4096, "{} bytes held", q.bytes);
        assert_eq!(q.bodies.len(), 4);
        assert_eq!(
            q.bodies.front().map(|b| b[0]),
            Some(96),
            "the newest are kept"
        );
        assert_eq!(q.bytes, q.bodies.iter().map(Bytes::len).sum::<usize>());
    }

    #[test]
    fn a_batch_sent_is_removed_but_not_one_dropped_for_space_meanwhile() {
        let relay = relay(2500);
        relay.push(Bytes::from(vec![1; 1000]));
        let in_flight = relay.front().expect("a batch");
        relay.push(Bytes::from(vec![2; 1000]));
        relay.push(Bytes::from(vec![3; 1000])); // drops the one in flight
        relay.pop_if_front(&in_flight);
        let q = relay.queue.lock().expect("lock");
        assert_eq!(q.bodies.len(), 2, "the batch after it must stay queued");
        assert_eq!(q.bytes, 2000);
    }

    #[test]
    fn a_dropped_batch_counts_its_lines() {
        let entry = |line: &str| loki_api::logproto::EntryAdapter {
            timestamp: None,
            line: line.to_owned(),
        };
        let request = loki_api::logproto::PushRequest {
            streams: vec![
                loki_api::logproto::StreamAdapter {
                    labels: r#"{level="info",service="saga-tracker"}"#.into(),
                    entries: vec![entry("a"), entry("b")],
                    hash: 0,
                },
                loki_api::logproto::StreamAdapter {
                    labels: r#"{level="warn",service="saga-tracker"}"#.into(),
                    entries: vec![entry("c")],
                    hash: 0,
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy");
        assert_eq!(lines_in(&body), 3);
        assert_eq!(
            lines_in(b"not snappy"),
            1,
            "an unreadable batch counts as one"
        );
    }
}
