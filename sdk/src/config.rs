//! Configuration: where Kafka is, who we are, and how events are delivered.
//!
//! [`TrackerConfig`] is built in code ([`TrackerConfig::new`] plus `with_*` setters) or from
//! `SAGA_TRACKER_*` environment variables ([`TrackerConfig::from_env`]). It is validated when
//! the tracker is built, and every error names the field or variable at fault. This module
//! reads configuration only; it never connects to anything.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::contract::MAX_ID_CHARS;
use crate::error::Error;
use crate::security::{KafkaSecurity, SaslConfig, Secret, TlsConfig};

/// The topic the tracker consumes by default.
pub const DEFAULT_TOPIC: &str = "saga.tracker";
/// Default for [`TrackerConfig::delivery_timeout`].
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`TrackerConfig::buffer_capacity`].
pub const DEFAULT_BUFFER_CAPACITY: usize = 10_000;
/// Largest accepted [`TrackerConfig::buffer_capacity`].
pub const MAX_BUFFER_CAPACITY: usize = 1_000_000;
/// How long [`OverflowPolicy::Wait`] waits when configured from the environment without
/// `SAGA_TRACKER_OVERFLOW_TIMEOUT_MS`.
pub const DEFAULT_OVERFLOW_WAIT: Duration = Duration::from_millis(100);
/// Prefix of every environment variable [`TrackerConfig::from_env`] reads.
pub const ENV_PREFIX: &str = "SAGA_TRACKER_";

/// When a recording call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Wait for the broker's acknowledgement (`acks=all`) and return its outcome. A broker
    /// outage makes each call wait up to [`TrackerConfig::delivery_timeout`] and then fail
    /// with [`Error::Delivery`]. The default, so `record(..).await?` means "it is in Kafka".
    #[default]
    Sync,
    /// Hand the event to a bounded in-memory buffer and return at once; a background thread
    /// delivers it. Failures after the call are counted (see [`crate::Stats`] and the
    /// `saga_tracker_sdk_*` metrics), never returned. When the buffer is full the
    /// [`OverflowPolicy`] decides. Recommended on request paths.
    Async,
}

impl DeliveryMode {
    /// The configuration spelling: `sync` or `async`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(Self::Sync),
            "async" => Ok(Self::Async),
            _ => Err(format!("expected `sync` or `async`, got {s:?}")),
        }
    }
}

/// What an [`DeliveryMode::Async`] recording call does when the buffer is full (the broker is
/// slow or down and [`TrackerConfig::buffer_capacity`] events are waiting).
///
/// Either way the call never waits for the broker itself and memory stays bounded; an event
/// that is not accepted is counted in `saga_tracker_sdk_events_dropped_total{reason}` and the
/// call returns `Ok(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the new event at once (`reason="buffer_full"`). The default: tracking never
    /// slows the business flow down.
    #[default]
    Drop,
    /// Wait up to this long for room, then drop (`reason="buffer_timeout"`). Smooths bursts
    /// at the price of bounded extra latency.
    Wait(Duration),
}

/// How to reach Kafka, who we are, and how events are delivered.
///
/// Build it with [`TrackerConfig::new`] and the `with_*` setters, or with
/// [`TrackerConfig::from_env`]. Every field has a documented default.
///
/// ```
/// use std::time::Duration;
/// use saga_tracker_sdk::{DeliveryMode, OverflowPolicy, TrackerConfig};
///
/// let config = TrackerConfig::new("kafka-1:9092,kafka-2:9092", "payment-service")
///     .with_delivery(DeliveryMode::Async)
///     .with_buffer_capacity(5_000)
///     .with_overflow(OverflowPolicy::Wait(Duration::from_millis(50)))
///     .with_producer_property("security.protocol", "SASL_SSL");
/// assert!(config.validate().is_ok());
///
/// // The same from the environment:
/// let from_env = TrackerConfig::from_vars([
///     ("SAGA_TRACKER_BROKERS", "kafka-1:9092,kafka-2:9092"),
///     ("SAGA_TRACKER_SERVICE", "payment-service"),
///     ("SAGA_TRACKER_DELIVERY", "async"),
///     ("SAGA_TRACKER_BUFFER_CAPACITY", "5000"),
///     ("SAGA_TRACKER_OVERFLOW", "wait"),
///     ("SAGA_TRACKER_OVERFLOW_TIMEOUT_MS", "50"),
///     ("SAGA_TRACKER_PRODUCER_SECURITY_PROTOCOL", "SASL_SSL"),
/// ])?;
/// assert_eq!(format!("{from_env:?}"), format!("{config:?}"));
/// # Ok::<(), saga_tracker_sdk::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct TrackerConfig {
    /// `false` turns every call into a no-op that needs no broker: services ship the SDK dark
    /// and switch it on by configuration. Default `true`.
    pub enabled: bool,
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Topic to produce to. Default [`DEFAULT_TOPIC`].
    pub topic: String,
    /// This service's name, written into every event's `service` field (1–128 characters).
    pub service: String,
    /// How long one delivery may take (librdkafka `message.timeout.ms`, including retries)
    /// before it is reported as failed. In `Sync` mode it also bounds the wait for buffer
    /// room. Default 30 s.
    pub delivery_timeout: Duration,
    /// Extra librdkafka producer properties (SASL, TLS, `client.id`, …), applied after the
    /// SDK's own settings, so they can override them. Values whose key mentions a password,
    /// secret or key are redacted from `Debug` output.
    pub producer_properties: BTreeMap<String, String>,
    /// Await the broker's acknowledgement or fire and forget. Default [`DeliveryMode::Sync`].
    pub delivery: DeliveryMode,
    /// Most events accepted but not yet acknowledged (or failed) at once, across both modes.
    /// This bounds memory: about `buffer_capacity` × event size (events are usually under
    /// 1 KiB, at most about 40 KiB). Default [`DEFAULT_BUFFER_CAPACITY`].
    pub buffer_capacity: usize,
    /// What an `Async` call does when the buffer is full. Default [`OverflowPolicy::Drop`].
    pub overflow: OverflowPolicy,
    /// TLS and SASL to the brokers ([`crate::security`]). Default: plaintext, no SASL.
    /// Raw `producer_properties` are applied after these and override them.
    pub security: KafkaSecurity,
}

impl TrackerConfig {
    /// An enabled configuration with the defaults: topic [`DEFAULT_TOPIC`], `Sync` delivery
    /// with a 30 s timeout, a buffer of [`DEFAULT_BUFFER_CAPACITY`] events, drop on overflow.
    pub fn new(brokers: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            enabled: true,
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            service: service.into(),
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            producer_properties: BTreeMap::new(),
            delivery: DeliveryMode::Sync,
            buffer_capacity: DEFAULT_BUFFER_CAPACITY,
            overflow: OverflowPolicy::Drop,
            security: KafkaSecurity::default(),
        }
    }

    /// Connect over TLS ([`TlsConfig`]: CA file, client certificate for mTLS, hostname
    /// verification).
    ///
    /// ```
    /// use saga_tracker_sdk::{security::TlsConfig, TrackerConfig};
    ///
    /// let config = TrackerConfig::new("kafka-1:9093", "payment-service").with_tls(TlsConfig {
    ///     enabled: true,
    ///     ca_file: Some("/etc/kafka/ca.pem".into()),
    ///     ..TlsConfig::default()
    /// });
    /// assert_eq!(config.security.protocol(), "ssl");
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.security.tls = tls;
        self
    }

    /// Authenticate with SASL ([`SaslConfig`]: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512).
    ///
    /// ```
    /// use saga_tracker_sdk::security::{SaslConfig, SaslMechanism, Secret};
    /// use saga_tracker_sdk::TrackerConfig;
    ///
    /// let config = TrackerConfig::new("kafka-1:9093", "payment-service").with_sasl(SaslConfig {
    ///     mechanism: Some(SaslMechanism::ScramSha512),
    ///     username: Some("payment-service".into()),
    ///     password: Some(Secret::new("from-your-secret-store")),
    ///     ..SaslConfig::default()
    /// });
    /// assert_eq!(config.security.protocol(), "sasl_plaintext");
    /// assert!(!format!("{config:?}").contains("from-your-secret-store"));
    /// ```
    pub fn with_sasl(mut self, sasl: SaslConfig) -> Self {
        self.security.sasl = sasl;
        self
    }

    /// A configuration whose tracker does nothing.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new("", "disabled")
        }
    }

    /// Produce to `topic` instead of [`DEFAULT_TOPIC`].
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Turn the tracker on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Choose [`DeliveryMode::Sync`] or [`DeliveryMode::Async`].
    pub fn with_delivery(mut self, delivery: DeliveryMode) -> Self {
        self.delivery = delivery;
        self
    }

    /// Set [`TrackerConfig::delivery_timeout`].
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Set [`TrackerConfig::buffer_capacity`].
    pub fn with_buffer_capacity(mut self, capacity: usize) -> Self {
        self.buffer_capacity = capacity;
        self
    }

    /// Set the [`OverflowPolicy`].
    pub fn with_overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.overflow = overflow;
        self
    }

    /// Add one librdkafka producer property, e.g. `("security.protocol", "SASL_SSL")`.
    pub fn with_producer_property(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.producer_properties.insert(key.into(), value.into());
        self
    }

    /// Reads the configuration from `SAGA_TRACKER_*` environment variables.
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `SAGA_TRACKER_ENABLED` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) | `true` |
    /// | `SAGA_TRACKER_BROKERS` | bootstrap servers | required when enabled |
    /// | `SAGA_TRACKER_SERVICE` | this service's name | required when enabled |
    /// | `SAGA_TRACKER_TOPIC` | topic | `saga.tracker` |
    /// | `SAGA_TRACKER_DELIVERY` | `sync` or `async` | `sync` |
    /// | `SAGA_TRACKER_DELIVERY_TIMEOUT_MS` | [`TrackerConfig::delivery_timeout`] | `30000` |
    /// | `SAGA_TRACKER_BUFFER_CAPACITY` | [`TrackerConfig::buffer_capacity`] | `10000` |
    /// | `SAGA_TRACKER_OVERFLOW` | `drop` or `wait` | `drop` |
    /// | `SAGA_TRACKER_OVERFLOW_TIMEOUT_MS` | how long `wait` waits | `100` |
    /// | `SAGA_TRACKER_TLS_ENABLED` | TLS to the brokers ([`TlsConfig::enabled`]) | `false` |
    /// | `SAGA_TRACKER_TLS_CA_FILE` | PEM CA bundle | platform trust store |
    /// | `SAGA_TRACKER_TLS_CERT_FILE`, `SAGA_TRACKER_TLS_KEY_FILE` | client certificate and key (mTLS) | — |
    /// | `SAGA_TRACKER_TLS_KEY_PASSWORD[_FILE]` | passphrase of the key, inline or in a file | — |
    /// | `SAGA_TRACKER_TLS_VERIFY_HOSTNAME` | check the broker certificate's host name | `true` |
    /// | `SAGA_TRACKER_SASL_MECHANISM` | `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` | no SASL |
    /// | `SAGA_TRACKER_SASL_USERNAME` | SASL user | — |
    /// | `SAGA_TRACKER_SASL_PASSWORD[_FILE]` | SASL password, inline or in a file | — |
    /// | `SAGA_TRACKER_PRODUCER_<NAME>` | librdkafka property: `<NAME>` lowercased, `_` → `.`, `__` → `_` | — |
    ///
    /// So `SAGA_TRACKER_PRODUCER_SASL_MECHANISM=PLAIN` sets `sasl.mechanism=PLAIN`. Any other
    /// `SAGA_TRACKER_*` variable is rejected, so a typo cannot be silently ignored. Errors are
    /// [`Error::Env`] and name the variable. With `SAGA_TRACKER_ENABLED=false` the result is
    /// disabled and brokers and service are not required (the other variables are still
    /// checked).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars_os())
    }

    /// [`TrackerConfig::from_env`] over an explicit list of variables (tests, or a
    /// configuration source of your own). Variables without the `SAGA_TRACKER_` prefix are
    /// ignored.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut ours: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in vars {
            let key = k.as_ref().to_string_lossy();
            if !key.starts_with(ENV_PREFIX) {
                continue;
            }
            let value = v.as_ref().to_str().ok_or_else(|| Error::Env {
                variable: key.to_string(),
                reason: "value is not valid UTF-8".into(),
            })?;
            ours.insert(key.into_owned(), value.to_owned());
        }
        Self::from_prefixed(ours)
    }

    fn from_prefixed(mut vars: BTreeMap<String, String>) -> Result<Self, Error> {
        let mut take = |name: &str| vars.remove(&format!("{ENV_PREFIX}{name}"));
        let enabled = match take("ENABLED") {
            None => true,
            Some(v) => parse_bool(&v)
                .ok_or_else(|| env_err("ENABLED", format!("expected true or false, got {v:?}")))?,
        };
        let brokers = take("BROKERS").map(|s| s.trim().to_owned());
        let service = take("SERVICE").map(|s| s.trim().to_owned());
        let topic = take("TOPIC").map(|s| s.trim().to_owned());
        let delivery = match take("DELIVERY") {
            None => DeliveryMode::Sync,
            Some(v) => v.parse().map_err(|e| env_err("DELIVERY", e))?,
        };
        let delivery_timeout = match take("DELIVERY_TIMEOUT_MS") {
            None => DEFAULT_DELIVERY_TIMEOUT,
            Some(v) => Duration::from_millis(parse_positive("DELIVERY_TIMEOUT_MS", &v)?),
        };
        let buffer_capacity = match take("BUFFER_CAPACITY") {
            None => DEFAULT_BUFFER_CAPACITY,
            Some(v) => usize::try_from(parse_positive("BUFFER_CAPACITY", &v)?)
                .map_err(|_| env_err("BUFFER_CAPACITY", format!("{v} is too large")))?,
        };
        let overflow_wait = match take("OVERFLOW_TIMEOUT_MS") {
            None => DEFAULT_OVERFLOW_WAIT,
            Some(v) => Duration::from_millis(parse_positive("OVERFLOW_TIMEOUT_MS", &v)?),
        };
        let overflow = match take("OVERFLOW").map(|v| v.trim().to_ascii_lowercase()) {
            None => OverflowPolicy::Drop,
            Some(v) if v == "drop" => OverflowPolicy::Drop,
            Some(v) if v == "wait" => OverflowPolicy::Wait(overflow_wait),
            Some(v) => {
                return Err(env_err(
                    "OVERFLOW",
                    format!("expected `drop` or `wait`, got {v:?}"),
                ))
            }
        };
        let mut path = |name: &str| -> Option<std::path::PathBuf> {
            vars.remove(&format!("{ENV_PREFIX}{name}"))
                .filter(|v| !v.is_empty())
                .map(Into::into)
        };
        let tls_ca = path("TLS_CA_FILE");
        let tls_cert = path("TLS_CERT_FILE");
        let tls_key = path("TLS_KEY_FILE");
        let tls_key_password_file = path("TLS_KEY_PASSWORD_FILE");
        let sasl_password_file = path("SASL_PASSWORD_FILE");
        let mut take = |name: &str| vars.remove(&format!("{ENV_PREFIX}{name}"));
        let tls = TlsConfig {
            enabled: match take("TLS_ENABLED") {
                None => false,
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    env_err("TLS_ENABLED", format!("expected true or false, got {v:?}"))
                })?,
            },
            ca_file: tls_ca,
            cert_file: tls_cert,
            key_file: tls_key,
            key_password: take("TLS_KEY_PASSWORD").map(Secret::from),
            key_password_file: tls_key_password_file,
            verify_hostname: match take("TLS_VERIFY_HOSTNAME") {
                None => true,
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    env_err(
                        "TLS_VERIFY_HOSTNAME",
                        format!("expected true or false, got {v:?}"),
                    )
                })?,
            },
        };
        let sasl = SaslConfig {
            mechanism: match take("SASL_MECHANISM").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|e: String| env_err("SASL_MECHANISM", e))?,
                ),
            },
            username: take("SASL_USERNAME"),
            password: take("SASL_PASSWORD").map(Secret::from),
            password_file: sasl_password_file,
        };
        let security = KafkaSecurity { tls, sasl };
        let mut producer_properties = BTreeMap::new();
        let producer_prefix = format!("{ENV_PREFIX}PRODUCER_");
        for (variable, value) in std::mem::take(&mut vars) {
            let Some(raw) = variable.strip_prefix(&producer_prefix) else {
                return Err(Error::Env {
                    variable,
                    reason: "unknown variable; expected one of ENABLED, BROKERS, SERVICE, \
                             TOPIC, DELIVERY, DELIVERY_TIMEOUT_MS, BUFFER_CAPACITY, OVERFLOW, \
                             OVERFLOW_TIMEOUT_MS, TLS_*, SASL_* or PRODUCER_<property> after \
                             SAGA_TRACKER_"
                        .into(),
                });
            };
            let Some(property) = property_name(raw) else {
                return Err(Error::Env {
                    variable,
                    reason: "expected a librdkafka property name after SAGA_TRACKER_PRODUCER_, \
                             e.g. SAGA_TRACKER_PRODUCER_SASL_MECHANISM"
                        .into(),
                });
            };
            producer_properties.insert(property, value);
        }

        let config = Self {
            enabled,
            brokers: brokers.clone().unwrap_or_default(),
            topic: topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned()),
            service: service.clone().unwrap_or_default(),
            delivery_timeout,
            producer_properties,
            delivery,
            buffer_capacity,
            overflow,
            security,
        };
        if !enabled {
            return Ok(config);
        }
        if brokers.as_deref().is_none_or(str::is_empty) {
            return Err(env_err(
                "BROKERS",
                "is required when the tracker is enabled (set SAGA_TRACKER_ENABLED=false to \
                 run without Kafka)",
            ));
        }
        if service.as_deref().is_none_or(str::is_empty) {
            return Err(env_err(
                "SERVICE",
                "is required when the tracker is enabled",
            ));
        }
        config.check().map_err(|(field, reason)| Error::Env {
            variable: format!("{ENV_PREFIX}{}", field.env_suffix()),
            reason,
        })?;
        // `tls.ca_file` is SAGA_TRACKER_TLS_CA_FILE.
        config.security.validate().map_err(|e| Error::Env {
            variable: format!(
                "{ENV_PREFIX}{}",
                e.field.replace('.', "_").to_ascii_uppercase()
            ),
            reason: e.reason,
        })?;
        Ok(config)
    }

    /// Checks an enabled configuration; [`SagaTracker::new`](crate::SagaTracker::new) calls
    /// this. Errors are [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        self.check()
            .map_err(|(field, reason)| Error::Config(format!("`{}` {reason}", field.name())))?;
        self.security
            .validate()
            .map_err(|e| Error::Config(format!("`security.{}` {}", e.field, e.reason)))
    }

    fn check(&self) -> Result<(), (Field, String)> {
        if self.brokers.trim().is_empty() {
            return Err((Field::Brokers, "must not be empty".into()));
        }
        let service = self.service.trim();
        if service.is_empty() {
            return Err((Field::Service, "must not be empty".into()));
        }
        if service.chars().count() > MAX_ID_CHARS || service.chars().any(char::is_control) {
            return Err((
                Field::Service,
                format!("must be at most {MAX_ID_CHARS} characters without control characters"),
            ));
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || !self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err((
                Field::Topic,
                format!(
                    "must be a Kafka topic name ([a-zA-Z0-9._-]{{1,249}}), got {:?}",
                    self.topic
                ),
            ));
        }
        let timeout_ms = self.delivery_timeout.as_millis();
        if timeout_ms == 0 || timeout_ms > i32::MAX as u128 {
            return Err((
                Field::DeliveryTimeout,
                format!(
                    "must be between 1 ms and {} ms, got {timeout_ms} ms",
                    i32::MAX
                ),
            ));
        }
        if self.buffer_capacity == 0 || self.buffer_capacity > MAX_BUFFER_CAPACITY {
            return Err((
                Field::BufferCapacity,
                format!(
                    "must be between 1 and {MAX_BUFFER_CAPACITY}, got {}",
                    self.buffer_capacity
                ),
            ));
        }
        Ok(())
    }
}

/// Fields [`TrackerConfig::check`] can complain about, so the same rule can be reported by
/// field name (code) or by variable name (environment).
#[derive(Debug, Clone, Copy)]
enum Field {
    Brokers,
    Service,
    Topic,
    DeliveryTimeout,
    BufferCapacity,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Self::Brokers => "brokers",
            Self::Service => "service",
            Self::Topic => "topic",
            Self::DeliveryTimeout => "delivery_timeout",
            Self::BufferCapacity => "buffer_capacity",
        }
    }

    fn env_suffix(self) -> &'static str {
        match self {
            Self::Brokers => "BROKERS",
            Self::Service => "SERVICE",
            Self::Topic => "TOPIC",
            Self::DeliveryTimeout => "DELIVERY_TIMEOUT_MS",
            Self::BufferCapacity => "BUFFER_CAPACITY",
        }
    }
}

fn env_err(suffix: &str, reason: impl Into<String>) -> Error {
    Error::Env {
        variable: format!("{ENV_PREFIX}{suffix}"),
        reason: reason.into(),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_positive(suffix: &str, v: &str) -> Result<u64, Error> {
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(env_err(
            suffix,
            format!("expected a positive integer, got {v:?}"),
        )),
    }
}

/// `SASL_MECHANISM` → `sasl.mechanism`; `__` stands for a literal `_`.
fn property_name(raw: &str) -> Option<String> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let name = raw
        .to_ascii_lowercase()
        .split("__")
        .map(|part| part.replace('_', "."))
        .collect::<Vec<_>>()
        .join("_");
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return None;
    }
    Some(name)
}

/// Property keys whose values must not appear in logs.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|s| k.contains(s))
}

impl fmt::Debug for TrackerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .producer_properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("TrackerConfig")
            .field("enabled", &self.enabled)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("service", &self.service)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("producer_properties", &props)
            .field("delivery", &self.delivery)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("overflow", &self.overflow)
            .field("security", &self.security)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<TrackerConfig, Error> {
        TrackerConfig::from_vars(vars.iter().copied())
    }

    fn variable_of(e: Error) -> String {
        match e {
            Error::Env { variable, .. } => variable,
            other => panic!("expected an Env error, got {other:?}"),
        }
    }

    #[test]
    fn the_environment_fills_every_field() {
        let c = env(&[
            ("SAGA_TRACKER_BROKERS", "k1:9092,k2:9092"),
            ("SAGA_TRACKER_SERVICE", "payment-service"),
            ("SAGA_TRACKER_TOPIC", "sagas"),
            ("SAGA_TRACKER_DELIVERY", "ASYNC"),
            ("SAGA_TRACKER_DELIVERY_TIMEOUT_MS", "5000"),
            ("SAGA_TRACKER_BUFFER_CAPACITY", "500"),
            ("SAGA_TRACKER_OVERFLOW", "wait"),
            ("SAGA_TRACKER_OVERFLOW_TIMEOUT_MS", "250"),
            ("SAGA_TRACKER_PRODUCER_SASL_MECHANISM", "PLAIN"),
            ("SAGA_TRACKER_PRODUCER_SECURITY_PROTOCOL", "SASL_SSL"),
            ("PATH", "/usr/bin"),
        ])
        .expect("valid");
        assert!(c.enabled);
        assert_eq!(c.brokers, "k1:9092,k2:9092");
        assert_eq!(c.service, "payment-service");
        assert_eq!(c.topic, "sagas");
        assert_eq!(c.delivery, DeliveryMode::Async);
        assert_eq!(c.delivery_timeout, Duration::from_secs(5));
        assert_eq!(c.buffer_capacity, 500);
        assert_eq!(c.overflow, OverflowPolicy::Wait(Duration::from_millis(250)));
        assert_eq!(c.producer_properties["sasl.mechanism"], "PLAIN");
        assert_eq!(c.producer_properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn defaults_match_the_code_defaults() {
        let c = env(&[
            ("SAGA_TRACKER_BROKERS", "k:9092"),
            ("SAGA_TRACKER_SERVICE", "svc"),
        ])
        .expect("valid");
        let d = TrackerConfig::new("k:9092", "svc");
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn a_disabled_environment_needs_no_broker() {
        let c = env(&[("SAGA_TRACKER_ENABLED", "false")]).expect("valid");
        assert!(!c.enabled);
        // …but typos are still caught.
        let e = env(&[
            ("SAGA_TRACKER_ENABLED", "0"),
            ("SAGA_TRACKER_DELIVERY", "later"),
        ])
        .expect_err("bad mode");
        assert_eq!(variable_of(e), "SAGA_TRACKER_DELIVERY");
    }

    #[test]
    fn every_error_names_its_variable() {
        let base = [
            ("SAGA_TRACKER_BROKERS", "k:9092"),
            ("SAGA_TRACKER_SERVICE", "svc"),
        ];
        let cases: &[(&str, &str)] = &[
            ("SAGA_TRACKER_ENABLED", "maybe"),
            ("SAGA_TRACKER_DELIVERY", "eventually"),
            ("SAGA_TRACKER_DELIVERY_TIMEOUT_MS", "0"),
            ("SAGA_TRACKER_BUFFER_CAPACITY", "-1"),
            ("SAGA_TRACKER_BUFFER_CAPACITY", "99999999"),
            ("SAGA_TRACKER_OVERFLOW", "block"),
            ("SAGA_TRACKER_OVERFLOW_TIMEOUT_MS", "soon"),
            ("SAGA_TRACKER_TOPIC", "bad topic"),
            ("SAGA_TRACKER_BROKER", "typo"),
            ("SAGA_TRACKER_PRODUCER_", "x"),
            ("SAGA_TRACKER_PRODUCER_SASL-MECHANISM", "x"),
        ];
        for (var, value) in cases {
            let mut vars = base.to_vec();
            vars.push((var, value));
            let e = env(&vars).expect_err(var);
            assert!(e.to_string().contains(var), "{e}");
            assert_eq!(&variable_of(e), var);
        }
        let e = env(&[("SAGA_TRACKER_SERVICE", "svc")]).expect_err("no brokers");
        assert_eq!(variable_of(e), "SAGA_TRACKER_BROKERS");
        let e = env(&[("SAGA_TRACKER_BROKERS", "k:9092")]).expect_err("no service");
        assert_eq!(variable_of(e), "SAGA_TRACKER_SERVICE");
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_value_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let bad = OsStr::from_bytes(&[0xff, 0xfe]);
        let e = TrackerConfig::from_vars([(OsStr::new("SAGA_TRACKER_SERVICE"), bad)])
            .expect_err("not UTF-8");
        assert_eq!(variable_of(e), "SAGA_TRACKER_SERVICE");
    }

    #[test]
    fn property_names_map_underscores_to_dots() {
        assert_eq!(
            property_name("SSL_CA_LOCATION").as_deref(),
            Some("ssl.ca.location")
        );
        assert_eq!(property_name("A__B_C").as_deref(), Some("a_b.c"));
        assert_eq!(property_name("_X"), None);
        assert_eq!(property_name(""), None);
    }

    #[test]
    fn secrets_are_redacted_from_debug_output() {
        let c = TrackerConfig::new("k:9092", "svc")
            .with_producer_property("sasl.password", "hunter2")
            .with_producer_property("sasl.username", "svc-user");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("svc-user"), "{shown}");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = [
            TrackerConfig::new("", "svc"),
            TrackerConfig::new("k:9092", " "),
            TrackerConfig::new("k:9092", "svc").with_topic(""),
            TrackerConfig::new("k:9092", "svc").with_buffer_capacity(0),
            TrackerConfig::new("k:9092", "svc").with_delivery_timeout(Duration::ZERO),
        ];
        let fields = [
            "brokers",
            "service",
            "topic",
            "buffer_capacity",
            "delivery_timeout",
        ];
        for (c, field) in bad.iter().zip(fields) {
            match c.validate() {
                Err(Error::Config(msg)) => assert!(msg.contains(field), "{msg}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(TrackerConfig::disabled().validate().is_ok());
    }
}
