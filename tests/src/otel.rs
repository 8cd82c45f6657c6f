//! Real receivers for the tracker's own telemetry: an OTLP collector process and a Loki
//! push API stand-in, each recording what it received for the test to assert on.
//!
//! - [`Rotel`] — PyPI's `rotel` (a real OpenTelemetry collector, installed by
//!   `scripts/ensure-python.sh` into its own virtualenv) listening for OTLP over gRPC and
//!   HTTP on free loopback ports. A trace processor (`tests/python/rotel_dump.py`) writes
//!   every span it receives to a JSON-lines file; [`Rotel::spans`] parses it into
//!   [`ReceivedSpan`]s (name, ids, parent, attributes, resource, links). Killed by PID on
//!   drop, or earlier with [`Rotel::kill`] to play an unreachable collector.
//! - [`LokiStandIn`] — an HTTP server on `127.0.0.1:0` serving `POST /loki/api/v1/push` as
//!   Loki does: snappy-compressed protobuf `PushRequest`s, decoded with the three message
//!   types defined here by hand. [`LokiStandIn::streams`] returns each stream's labels and
//!   lines; [`LokiStandIn::stop`] closes it (connections refused from then on).
//! - [`BlackHole`] — a listener that accepts connections and never answers, the collector
//!   or Loki behind a network that drops replies: exports hang until their timeout.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    free_port, kill_and_reap, log_dir, log_file, log_tail, unique_suffix, STARTUP_TIMEOUT,
};

/// The rotel release `scripts/ensure-python.sh` installs.
pub const ROTEL_VERSION: &str = "0.0.1a15";

/// The virtualenv holding rotel: `ROTEL_VENV`, else `~/.cache/saga-tracker/rotel-venv`.
pub fn rotel_venv() -> PathBuf {
    match std::env::var_os("ROTEL_VENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/saga-tracker/rotel-venv"),
    }
}

/// One span as the collector received it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedSpan {
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: Map<String, Value>,
    /// The resource's attributes (`service.name`, …).
    pub resource: Map<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
    pub links: Vec<ReceivedLink>,
    /// OTLP `Status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i64,
}

/// A span link as received.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Map<String, Value>,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// `service.name` of its resource.
    pub fn service_name(&self) -> Option<&str> {
        self.resource.get("service.name").and_then(Value::as_str)
    }

    /// The spans among `spans` whose parent is this span.
    pub fn children<'a>(&self, spans: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id == self.trace_id && s.parent_span_id == self.span_id)
            .collect()
    }
}

/// The spans named `name`.
pub fn spans_named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// A running rotel collector.
#[derive(Debug)]
pub struct Rotel {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    dump: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rotel {
    /// Starts rotel on two free loopback ports and waits until both accept connections.
    /// Fails (never skips) when rotel is not installed, saying how to install it.
    pub async fn start() -> anyhow::Result<Self> {
        let venv = rotel_venv();
        let python = venv.join("bin").join("python");
        ensure!(
            python.is_file(),
            "rotel is not installed in {} (run scripts/ensure-python.sh, or point ROTEL_VENV at \
             a virtualenv with `pip install rotel=={ROTEL_VERSION}`)",
            venv.display()
        );
        // The agent binary embeds Python for its processors: it needs libpython, which lives
        // in the interpreter's LIBDIR.
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, sysconfig, rotel; print(sysconfig.get_config_var('LIBDIR')); \
                 print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .output()
            .context("asking the rotel virtualenv where rotel-agent is")?;
        ensure!(
            out.status.success(),
            "the rotel virtualenv cannot import rotel: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let (Some(libdir), Some(agent)) = (lines.next(), lines.next()) else {
            bail!("unexpected answer from the rotel virtualenv: {text}");
        };
        let mut last = anyhow::anyhow!("rotel did not start");
        // A free port can be taken between the probe and rotel's bind: try a few.
        for _ in 0..3 {
            match Self::try_start(Path::new(agent), libdir).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_start(agent: &Path, libdir: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("saga-tracker-rotel-")
            .tempdir()
            .context("creating a temporary directory for rotel")?;
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let dump = dir.path().join("spans.jsonl");
        let log = log_dir()?.join(format!("rotel-{grpc_port}-{}.log", unique_suffix()));
        let (out, err) = log_file(&log)?;
        let ld_path = match std::env::var("LD_LIBRARY_PATH") {
            Ok(p) if !p.is_empty() => format!("{libdir}:{p}"),
            _ => libdir.to_owned(),
        };
        let processor = crate::python_dir().join("rotel_dump.py");
        let child = Command::new(agent)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "blackhole"])
            .arg("--otlp-with-trace-processor")
            .arg(&processor)
            .args(["--traces-batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel-agent.log"))
            .env("ROTEL_DUMP_FILE", &dump)
            .env("LD_LIBRARY_PATH", ld_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {}", agent.display()))?;
        let mut rotel = Self {
            child,
            grpc_port,
            http_port,
            dump,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for port in [grpc_port, http_port] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = rotel.child.try_wait()? {
                    bail!(
                        "rotel exited with {status} before listening on {addr}:\n{}",
                        log_tail(&rotel.log, 30)
                    );
                }
                ensure!(
                    Instant::now() < deadline,
                    "rotel did not listen on {addr}:\n{}",
                    log_tail(&rotel.log, 30)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(rotel)
    }

    /// `http://127.0.0.1:<port>`: OTLP over gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<port>`: OTLP over HTTP (base URL; `/v1/traces` is the path).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> anyhow::Result<Vec<ReceivedSpan>> {
        let text = match std::fs::read_to_string(&self.dump) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dump.display())),
        };
        // The processor appends whole lines; a line still being written is left for later.
        text.lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).with_context(|| format!("rotel_dump.py wrote {l}")))
            .collect()
    }

    /// Polls [`Rotel::spans`] until `check` accepts them (at most `timeout`); returns them.
    pub async fn wait_for_spans<F>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: F,
    ) -> anyhow::Result<Vec<ReceivedSpan>>
    where
        F: FnMut(&[ReceivedSpan]) -> anyhow::Result<()>,
    {
        crate::poll_until(timeout, what, || {
            let spans = self.spans();
            let checked = spans.and_then(|s| check(&s).map(|()| s));
            async move { checked }
        })
        .await
    }

    /// The collector's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL: from now on the tracker's exports find nobody listening.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- rotel log tail ({}) ----\n{}",
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------
// Loki's push API
// ---------------------------------------------------------------------------------------

/// Loki's `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// One stream: its label set, in Loki's `{k="v", …}` syntax, and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// One log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// One pushed line with the labels of its stream.
#[derive(Debug, Clone)]
pub struct ReceivedLine {
    pub labels: BTreeMap<String, String>,
    pub line: String,
}

impl ReceivedLine {
    /// The line parsed as JSON (`tracing-loki` writes JSON objects), or `Null`.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.line).unwrap_or(Value::Null)
    }
}

/// A Loki push endpoint on `127.0.0.1:<random port>`.
#[derive(Debug)]
pub struct LokiStandIn {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<ReceivedLine>>>,
    /// Set by [`LokiStandIn::stop`]: connections still open (keep-alive outlives the
    /// listener) get 503 from then on, as from a Loki that is going down.
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LokiStandIn {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Loki stand-in")?;
        let addr = listener.local_addr()?;
        let lines: Arc<Mutex<Vec<ReceivedLine>>> = Arc::default();
        let stopped: Arc<AtomicBool> = Arc::default();
        let (store, down) = (lines.clone(), stopped.clone());
        let router = axum::Router::new().route(
            "/loki/api/v1/push",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (store, down) = (store.clone(), down.clone());
                    async move {
                        if down.load(Ordering::Acquire) {
                            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                        }
                        receive(&store, &headers, &body)
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            addr,
            lines,
            stopped,
            task,
        })
    }

    /// The base URL to configure (`telemetry.loki.url`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<ReceivedLine> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops listening: new connections are refused, pushes on open ones get 503.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.task.abort();
    }
}

impl Drop for LokiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn receive(
    store: &Mutex<Vec<ReceivedLine>>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    use prost::Message as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("content-type") != Some("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want application/x-protobuf".into(),
        );
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(raw) => raw,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not snappy: {e}")),
    };
    let request = match PushRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a PushRequest: {e}")),
    };
    let mut lines = store.lock().unwrap_or_else(|p| p.into_inner());
    for stream in request.streams {
        let labels = parse_labels(&stream.labels);
        for entry in stream.entries {
            lines.push(ReceivedLine {
                labels: labels.clone(),
                line: entry.line,
            });
        }
    }
    (StatusCode::NO_CONTENT, String::new())
}

/// `{a="x", b="y"}` → `{a: x, b: y}` (Loki's label syntax; values are Go-quoted strings).
pub fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = BTreeMap::new();
    let mut rest = inner;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &body[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loki_label_sets_parse() {
        let l = parse_labels(r#"{level="info",service="saga-tracker"}"#);
        assert_eq!(l.get("level").map(String::as_str), Some("info"));
        assert_eq!(l.get("service").map(String::as_str), Some("saga-tracker"));
        assert_eq!(l.len(), 2);
        let l = parse_labels(r#"{a="x\"y", b = "z"}"#);
        assert_eq!(l.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(l.get("b").map(String::as_str), Some("z"));
    }
}

// ---------------------------------------------------------------------------------------
// A black hole
// ---------------------------------------------------------------------------------------

/// Accepts TCP connections on `127.0.0.1:<random port>`, never reads or writes, and keeps
/// them open until dropped.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the black hole")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
