//! Typed configuration: built-in commented defaults (`config/default.toml`) → optional file →
//! `TRACKER_*` environment variables, validated once at start-up.
//!
//! Validation errors name the key as the operator would write it (`kafka.brokers`), so a bad
//! deployment fails at once with a message that says what to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use saga_tracker_sdk::security::{KafkaSecurity, SaslConfig, TlsConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The commented defaults, embedded so the binary runs with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Everything the tracker can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub stuck: StuckSettings,
    pub retention: RetentionSettings,
    pub ui: UiSettings,
    /// Where the writer schemas of Confluent-framed Avro events come from (see
    /// [`crate::ingest::avro`]). Absent from older configuration files: off.
    #[serde(default)]
    pub schema_registry: SchemaRegistrySettings,
    /// The merged sources (defaults, file, environment) as read, before typing: what
    /// `GET /api/v1/admin/config` shows, and only ever through
    /// [`crate::api::admin::redacted`]. Untyped on purpose, so a setting added later is shown
    /// without anyone remembering to add it there, while the redaction (by key name and URL
    /// password) does not depend on each section's types. Filled by [`Settings::from_figment`].
    #[serde(skip)]
    pub sources: RawSources,
}

/// [`Settings::sources`]: the merged configuration before typing. It holds every secret in
/// clear, so its `Debug` prints nothing of it — `Settings` derives `Debug`, and a `{:?}` of
/// the settings must never leak a password into a log.
#[derive(Clone, Default)]
pub struct RawSources(std::sync::Arc<serde_json::Value>);

impl std::ops::Deref for RawSources {
    type Target = serde_json::Value;

    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl std::fmt::Debug for RawSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<raw sources: see GET /api/v1/admin/config, redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub auto_offset_reset: String,
    pub create_topics: bool,
    pub create_partitions: i32,
    /// TLS (with mTLS) and SASL to the brokers, for the consumer, the DLQ producer and the
    /// admin client alike. The same typed settings as the SDK's.
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub sasl: SaslConfig,
    /// Raw librdkafka properties, applied after everything else (an escape hatch; the typed
    /// `tls`/`sasl` settings are the supported way to secure the connection).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// The `tls` and `sasl` sections as the SDK's [`KafkaSecurity`].
    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            tls: self.tls.clone(),
            sasl: self.sasl.clone(),
        }
    }
}

/// `database.ssl_mode`: PostgreSQL's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbSslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS always; the certificate is not checked (protects against passive sniffing only).
    Require,
    /// TLS, and the certificate must chain to `ssl_root_cert` (or the platform's CAs).
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl DbSslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// A streaming replica of `url` for the read side: the API, the UI (and so the CLI) and
    /// the active/stuck gauges query it, while ingest, migrations and retention stay on the
    /// primary. `""` (None): everything uses `url`. The pool size, TLS settings and password
    /// apply to both connections (a replica has the primary's roles).
    #[serde(default, deserialize_with = "empty_secret_is_none")]
    pub read_url: Option<SecretString>,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// Overrides the URL's `sslmode` when set.
    #[serde(default)]
    pub ssl_mode: Option<DbSslMode>,
    /// PEM file of the CA that signed the server's certificate (`sslrootcert`), for
    /// `verify-ca` / `verify-full`. Unset: the platform's trust store.
    #[serde(default)]
    pub ssl_root_cert: Option<PathBuf>,
    /// The role's password, overriding any in the URL (e.g. from an environment variable
    /// fed by a secret)…
    #[serde(default)]
    pub password: Option<SecretString>,
    /// …or read from this file (trailing newline ignored), e.g. a mounted Secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl DatabaseSettings {
    /// The password from `password` or `password_file`, if either is set.
    pub fn resolved_password(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => bail!(
                "invalid configuration: `database.password_file` cannot be set together with \
                 `database.password`"
            ),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(path)) => {
                let secret = saga_tracker_sdk::security::read_secret_file("password_file", path)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "invalid configuration: `database.{}` {}",
                            e.field,
                            e.reason
                        )
                    })?;
                Ok(Some(SecretString::from(secret.expose().to_owned())))
            }
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub batch_size: usize,
    pub linger_ms: u64,
    /// Batches being written at once, each in its own transaction; their offsets are still
    /// stored strictly in the order the batches were read, each only after every earlier
    /// one committed.
    pub in_flight: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

/// The HTTP listeners and the limits every request meets before a handler sees it (see
/// [`crate::api::hardening`] and [`crate::api::listener`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// A second listener serving only the probes and `/metrics`, so the API port can face
    /// clients while those stay on a port only the cluster reaches. `""` (None): they are
    /// served on `addr`.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub ops_addr: Option<SocketAddr>,
    /// Longest a statistics query may run before the API answers 503.
    pub stats_timeout_ms: u64,
    /// Longest any request may take end to end (authentication included) before a 503.
    pub request_timeout_ms: u64,
    /// Connections open at once, per listener; more wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed, so idle sockets
    /// cannot hold `max_connections` forever.
    pub idle_timeout_ms: u64,
    /// Longest request target (path and query), in bytes; longer is a 414.
    pub max_uri_bytes: usize,
    /// Largest sum of header name and value lengths, in bytes; larger is a 431.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes; larger is a 413.
    pub max_body_bytes: usize,
    /// Origins allowed to call the API from a browser; empty turns CORS off.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

impl HttpSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=3_600_000).contains(&self.stats_timeout_ms) {
            bail!("invalid configuration: `http.stats_timeout_ms` must be between 1 and 3600000");
        }
        if let Some(ops) = self.ops_addr {
            if ops == self.addr && ops.port() != 0 {
                bail!("invalid configuration: `http.ops_addr` must differ from `http.addr` (leave it empty to serve the probes on `http.addr`)");
            }
        }
        // Above the statistics timeout, so `/stats` answers with its own, more precise,
        // `query-timeout` problem first.
        if self.request_timeout_ms <= self.stats_timeout_ms || self.request_timeout_ms > 3_600_000 {
            bail!("invalid configuration: `http.request_timeout_ms` must be greater than `http.stats_timeout_ms` and at most 3600000");
        }
        // Above the request timeout, so a request still being worked on is never cut off as
        // idle: it either answers or times out (and answers) first.
        if self.idle_timeout_ms <= self.request_timeout_ms || self.idle_timeout_ms > 86_400_000 {
            bail!("invalid configuration: `http.idle_timeout_ms` must be greater than `http.request_timeout_ms` and at most 86400000");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!("invalid configuration: `http.max_connections` must be between 1 and 1000000");
        }
        // `http::Uri` refuses targets of 64 KiB and more on its own.
        if !(256..=65_534).contains(&self.max_uri_bytes) {
            bail!("invalid configuration: `http.max_uri_bytes` must be between 256 and 65534");
        }
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            bail!(
                "invalid configuration: `http.max_header_bytes` must be between 1024 and 1048576"
            );
        }
        if self.max_body_bytes > 1 << 30 {
            bail!("invalid configuration: `http.max_body_bytes` must be at most 1073741824");
        }
        for (i, origin) in self.cors_allowed_origins.iter().enumerate() {
            if !is_origin(origin) {
                bail!("invalid configuration: `http.cors_allowed_origins[{i}]` must be an origin such as \"https://grafana.example.com\" (scheme, host and optional port; no path, no \"*\")");
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, as a browser sends it in `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, host)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

/// `""` → `None`, so a TOML default and an environment variable can both say "unset".
/// As [`empty_is_none`], for a secret: the value is never echoed in an error.
fn empty_secret_is_none<'de, D>(de: D) -> Result<Option<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = String::deserialize(de)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(SecretString::from(raw.trim().to_owned())))
}

fn empty_is_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = String::deserialize(de)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.trim()
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A caller's permissions. `Operator` can do everything a `Reader` can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every `GET` under `/api/v1`, `/openapi.json`, `/docs`.
    Reader,
    /// A reader's rights plus every mutating or operational endpoint (`/api/v1/admin/…`).
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Self::Reader),
            "operator" => Ok(Self::Operator),
            _ => Err(format!(
                "unknown role {s:?}: expected \"reader\" or \"operator\""
            )),
        }
    }
}

/// Who may call the API (see [`crate::api::auth`]). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Off: every endpoint is open and the caller is `anonymous` with the operator role.
    pub enabled: bool,
    /// API keys configured inline.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
    /// More API keys, as `[[api_keys]]` entries in a TOML file (e.g. a mounted Secret).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// How often the file's modification time and size are compared with what was loaded.
    pub api_keys_file_check_secs: u64,
    pub oidc: OidcSettings,
}

/// One API key: who it is, what it may do, and the SHA-256 of its token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Shown in logs and `/api/v1/whoami`; `[A-Za-z0-9_.@-]{1,64}`, so it is safe to log.
    pub name: String,
    pub role: Role,
    /// `sha256:<64 hex digits>` of the token.
    pub hash: String,
}

/// Prefix of a stored API key hash.
pub const API_KEY_HASH_PREFIX: &str = "sha256:";

impl ApiKeyEntry {
    /// The 32 bytes of `hash`, or `None` when it is not `sha256:<64 hex digits>`.
    pub fn digest(&self) -> Option<[u8; 32]> {
        let hex = self.hash.strip_prefix(API_KEY_HASH_PREFIX)?.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(out)
    }
}

/// Whether `name` may name an API key: short and free of anything that could forge a log
/// line or need quoting.
pub fn valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// Checks a list of API keys, naming the bad entry as `{key}[i].field`: names valid and
/// unique, hashes well-formed and unique (two keys with one hash would make the role
/// ambiguous).
pub fn validate_api_keys<'a>(
    key: &str,
    entries: impl IntoIterator<Item = &'a ApiKeyEntry>,
) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    let mut digests = std::collections::HashSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if !valid_key_name(&entry.name) {
            bail!("invalid configuration: `{key}[{i}].name` must be 1 to 64 characters from A-Z a-z 0-9 _ . @ -");
        }
        if !names.insert(entry.name.as_str()) {
            bail!(
                "invalid configuration: `{key}[{i}].name` {:?} is used by another key",
                entry.name
            );
        }
        let Some(digest) = entry.digest() else {
            bail!("invalid configuration: `{key}[{i}].hash` must be \"sha256:\" followed by 64 hex digits (see `saga-tracker api-key new`)");
        };
        if !digests.insert(digest) {
            bail!("invalid configuration: `{key}[{i}].hash` is the hash of another key's token");
        }
    }
    Ok(())
}

/// Signature algorithms a JWT may use. Only asymmetric ones exist here: an HMAC key
/// (`HS*`) verified against a published JWKS would let anyone forge tokens, and `none` is
/// no signature at all, so neither can even be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// OpenID Connect access tokens (JWTs) verified against the provider's JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub enabled: bool,
    /// Required `iss`, exactly.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// The provider's JWKS document.
    pub jwks_url: String,
    /// Dotted path of the claim holding the roles (a string or an array of strings).
    pub role_claim: String,
    /// Claim values granting the operator role (checked first).
    pub operator_values: Vec<String>,
    /// Claim values granting the reader role.
    pub reader_values: Vec<String>,
    /// Claim shown as the caller's name (falls back to `sub`).
    pub name_claim: String,
    pub algorithms: Vec<JwtAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Age after which the cached JWKS is fetched again.
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches, however many tokens name an unknown `kid`.
    pub jwks_min_refresh_secs: u64,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout_ms: u64,
}

impl AuthSettings {
    fn validate(&self) -> anyhow::Result<()> {
        validate_api_keys("auth.api_keys", &self.api_keys)?;
        if !(1..=3600).contains(&self.api_keys_file_check_secs) {
            bail!(
                "invalid configuration: `auth.api_keys_file_check_secs` must be between 1 and 3600"
            );
        }
        if self.oidc.enabled {
            self.oidc.validate()?;
        }
        if self.enabled
            && self.api_keys.is_empty()
            && self.api_keys_file.is_none()
            && !self.oidc.enabled
        {
            bail!("invalid configuration: `auth.enabled` is true but no `auth.api_keys`, `auth.api_keys_file` or `auth.oidc` is configured, so every request would be refused");
        }
        Ok(())
    }
}

impl OidcSettings {
    fn validate(&self) -> anyhow::Result<()> {
        fn nonempty(key: &str, v: &str) -> anyhow::Result<()> {
            if v.trim().is_empty() {
                bail!("invalid configuration: `auth.oidc.{key}` must not be empty when `auth.oidc.enabled` is true");
            }
            Ok(())
        }
        nonempty("issuer", &self.issuer)?;
        nonempty("audience", &self.audience)?;
        nonempty("jwks_url", &self.jwks_url)?;
        nonempty("role_claim", &self.role_claim)?;
        nonempty("name_claim", &self.name_claim)?;
        // The keys decide who is an operator: fetched over plain HTTP, anyone on the path
        // could substitute their own. Loopback is allowed for local providers and tests.
        let url = self.jwks_url.as_str();
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| {
                url.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
        if !(url.starts_with("https://") || loopback) {
            bail!("invalid configuration: `auth.oidc.jwks_url` must be an https:// URL (plain http only on loopback)");
        }
        if self.role_claim.split('.').any(str::is_empty) {
            bail!("invalid configuration: `auth.oidc.role_claim` must be a dotted path such as \"realm_access.roles\"");
        }
        if self.operator_values.is_empty() && self.reader_values.is_empty() {
            bail!("invalid configuration: `auth.oidc.operator_values` and `auth.oidc.reader_values` cannot both be empty");
        }
        if self.algorithms.is_empty() {
            bail!("invalid configuration: `auth.oidc.algorithms` must list at least one algorithm");
        }
        if self.leeway_secs > 300 {
            bail!("invalid configuration: `auth.oidc.leeway_secs` must be at most 300");
        }
        if !(1..=86_400).contains(&self.jwks_refresh_secs) {
            bail!(
                "invalid configuration: `auth.oidc.jwks_refresh_secs` must be between 1 and 86400"
            );
        }
        if self.jwks_min_refresh_secs > self.jwks_refresh_secs {
            bail!("invalid configuration: `auth.oidc.jwks_min_refresh_secs` must be at most `auth.oidc.jwks_refresh_secs`");
        }
        if !(1..=60_000).contains(&self.jwks_timeout_ms) {
            bail!("invalid configuration: `auth.oidc.jwks_timeout_ms` must be between 1 and 60000");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

/// The tracker's own traces and logs leaving the process (see [`crate::telemetry`]). Both
/// are off by default; the standard `OTEL_*` variables, when set, win over these settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `service.name` of the spans and the `service` label of the Loki streams, unless
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
    pub service_name: String,
    pub otlp: OtlpSettings,
    pub loki: LokiSettings,
}

/// `[telemetry.otlp]`: spans over OTLP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSettings {
    /// Export spans. Also on whenever `OTEL_EXPORTER_OTLP_ENDPOINT` (or its `_TRACES_` form)
    /// is set, so a platform that configures every service that way needs nothing else.
    pub enabled: bool,
    /// The collector: a base URL (`/v1/traces` is appended for HTTP). Empty: the standard
    /// variables, else `http://localhost:4317` (gRPC) / `http://localhost:4318` (HTTP).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`; empty: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub protocol: String,
    /// Longest one export may take before it counts as failed.
    pub timeout_ms: u64,
    /// OpenTelemetry sampler name (`parentbased_traceidratio`, `always_on`, …), as
    /// `OTEL_TRACES_SAMPLER`; `sampler_arg` is its ratio, as `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: String,
    pub sampler_arg: String,
    /// Finished spans waiting for export, at most; beyond it new spans are dropped (and
    /// counted), so an unreachable collector costs a bounded amount of memory.
    pub max_queue_size: usize,
    /// Spans per export request.
    pub max_export_batch_size: usize,
    /// Longest a finished span waits before its batch is sent.
    pub scheduled_delay_ms: u64,
}

/// `[telemetry.loki]`: log lines pushed to Loki.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSettings {
    /// Loki's base URL (`/loki/api/v1/push` is appended); empty: off. A secret, since it
    /// may carry basic-auth credentials: never printed.
    pub url: SecretString,
    /// Encoded log batches held while Loki is slow or down, at most, in bytes; beyond it the
    /// oldest are dropped (and counted).
    pub max_buffer_bytes: usize,
    /// Longest one push may take before it counts as failed.
    pub timeout_ms: u64,
}

impl TelemetrySettings {
    fn validate(&self) -> anyhow::Result<()> {
        if self.service_name.trim().is_empty() {
            bail!("invalid configuration: `telemetry.service_name` must not be empty");
        }
        let o = &self.otlp;
        if !matches!(o.protocol.as_str(), "" | "grpc" | "http/protobuf") {
            bail!("invalid configuration: `telemetry.otlp.protocol` must be \"grpc\" or \"http/protobuf\" (or empty)");
        }
        if !(1..=600_000).contains(&o.timeout_ms) {
            bail!(
                "invalid configuration: `telemetry.otlp.timeout_ms` must be between 1 and 600000"
            );
        }
        if !(1..=1_000_000).contains(&o.max_queue_size) {
            bail!("invalid configuration: `telemetry.otlp.max_queue_size` must be between 1 and 1000000");
        }
        if o.max_export_batch_size == 0 || o.max_export_batch_size > o.max_queue_size {
            bail!("invalid configuration: `telemetry.otlp.max_export_batch_size` must be between 1 and `telemetry.otlp.max_queue_size`");
        }
        if !(1..=600_000).contains(&o.scheduled_delay_ms) {
            bail!("invalid configuration: `telemetry.otlp.scheduled_delay_ms` must be between 1 and 600000");
        }
        crate::telemetry::parse_sampler("telemetry.otlp.sampler", &o.sampler, &o.sampler_arg)?;
        let l = &self.loki;
        let url = l.url.expose_secret();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            bail!("invalid configuration: `telemetry.loki.url` must be an http:// or https:// URL (or empty)");
        }
        if !(64 * 1024..=1 << 30).contains(&l.max_buffer_bytes) {
            bail!("invalid configuration: `telemetry.loki.max_buffer_bytes` must be between 65536 and 1073741824");
        }
        if !(1..=600_000).contains(&l.timeout_ms) {
            bail!(
                "invalid configuration: `telemetry.loki.timeout_ms` must be between 1 and 600000"
            );
        }
        Ok(())
    }
}

/// `[schema_registry]`: writer schemas for Confluent-framed Avro events (magic byte 0, a
/// 4-byte schema id, Avro binary), the earlier design's wire format. Local `.avsc` files are
/// looked up first, then the registry; with neither, an Avro message is dead-lettered as
/// `avro_unknown_schema`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySettings {
    /// Base URL of a Confluent-compatible Schema Registry (`GET {url}/schemas/ids/{id}`).
    /// Empty: no registry, only `schemas`.
    pub url: String,
    /// Basic-auth user (Confluent Cloud: the API key). Empty: no authentication.
    pub username: String,
    /// Basic-auth password (Confluent Cloud: the API secret)…
    #[serde(default)]
    pub password: Option<SecretString>,
    /// …or read from this file (one trailing newline ignored), e.g. a mounted Secret.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle the registry's certificate must chain to, added to the platform's
    /// trust store (a private CA). Empty: the platform's trust store only.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub ssl_root_cert: Option<PathBuf>,
    /// Longest one schema lookup may take before it counts as failed (and is retried).
    pub timeout_ms: u64,
    /// Local writer schemas by id, looked up before the registry: `"7" =
    /// "/etc/saga-tracker/sagatracker-v1.avsc"`. For registries the tracker cannot reach.
    #[serde(default)]
    pub schemas: BTreeMap<String, PathBuf>,
}

impl Default for SchemaRegistrySettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: String::new(),
            password: None,
            password_file: None,
            ssl_root_cert: None,
            timeout_ms: 5000,
            schemas: BTreeMap::new(),
        }
    }
}

impl SchemaRegistrySettings {
    /// The password from `password` or `password_file`, if either is set.
    pub fn resolved_password(&self) -> anyhow::Result<Option<SecretString>> {
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => bail!(
                "invalid configuration: `schema_registry.password_file` cannot be set together \
                 with `schema_registry.password`"
            ),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(path)) => {
                let secret = saga_tracker_sdk::security::read_secret_file("password_file", path)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "invalid configuration: `schema_registry.{}` {}",
                            e.field,
                            e.reason
                        )
                    })?;
                Ok(Some(SecretString::from(secret.expose().to_owned())))
            }
            (None, None) => Ok(None),
        }
    }

    /// `schemas` with their ids parsed.
    pub fn local_schemas(&self) -> anyhow::Result<BTreeMap<u32, PathBuf>> {
        self.schemas
            .iter()
            .map(|(id, path)| {
                let parsed = id.trim().parse::<u32>().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid configuration: `schema_registry.schemas` key {id:?} must be a \
                         schema id (an integer from 0 to 4294967295)"
                    )
                })?;
                Ok((parsed, path.clone()))
            })
            .collect()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = self.url.trim();
        let credentials =
            !self.username.is_empty() || self.password.is_some() || self.password_file.is_some();
        if !url.is_empty() {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                anyhow::anyhow!("invalid configuration: `schema_registry.url` is not a URL ({e})")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("invalid configuration: `schema_registry.url` must be an http:// or https:// URL");
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                bail!("invalid configuration: `schema_registry.url` must not carry credentials; use `schema_registry.username` and `schema_registry.password_file`");
            }
            // Basic auth sends the password with every request: only over TLS, or to a
            // registry on this host.
            let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if credentials && parsed.scheme() == "http" && !loopback {
                bail!("invalid configuration: `schema_registry.url` must be https:// when `schema_registry.username` or a password is set (plain http only on loopback)");
            }
        } else if credentials || self.ssl_root_cert.is_some() {
            bail!("invalid configuration: `schema_registry.username`, `password`, `password_file` and `ssl_root_cert` need `schema_registry.url`");
        }
        if self.username.is_empty() != self.resolved_password()?.is_none() {
            bail!("invalid configuration: `schema_registry.username` and a password (`schema_registry.password` or `password_file`) must be set together");
        }
        if let Some(path) = &self.ssl_root_cert {
            std::fs::File::open(path).with_context(|| {
                format!(
                    "invalid configuration: `schema_registry.ssl_root_cert` ({}) cannot be read",
                    path.display()
                )
            })?;
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            bail!(
                "invalid configuration: `schema_registry.timeout_ms` must be between 1 and 60000"
            );
        }
        for (id, path) in self.local_schemas()? {
            std::fs::File::open(&path).with_context(|| {
                format!(
                    "invalid configuration: `schema_registry.schemas.{id}` ({}) cannot be read",
                    path.display()
                )
            })?;
        }
        Ok(())
    }
}

/// `[ui]`: the Saga Explorer served under `/ui` (see [`crate::ui`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiSettings {
    /// Serve the UI (and redirect `/` to it). Off leaves the API alone on the port.
    pub enabled: bool,
    /// Link from a saga page to a trace view (Tempo, Jaeger, Grafana Explore). Placeholders:
    /// `{traceId}`, `{sagaId}`, `{from}`/`{to}` (epoch milliseconds), `{fromIso}`/`{toIso}`
    /// (RFC 3339), each percent-encoded. Empty: no trace links.
    pub trace_url_template: String,
    /// The link's text, e.g. "Tempo".
    pub trace_link_label: String,
    /// Link from a saga page to its logs (Loki / Grafana Explore); same placeholders.
    pub log_url_template: String,
    pub log_link_label: String,
    /// How often an open saga page asks whether the saga changed, in milliseconds. Each ask
    /// is one primary-key read and usually a `304 Not Modified`.
    pub live_poll_ms: u64,
    /// Lifetime of the browser session made by pasting a token on `/ui/login`.
    pub session_max_age_secs: u64,
    /// Mark the session cookie `Secure`: `auto` (when the request arrived over HTTPS, as a
    /// proxy's `X-Forwarded-Proto: https` says), `always` or `never`.
    pub secure_cookie: String,
}

impl UiSettings {
    fn validate(&self) -> anyhow::Result<()> {
        for (key, template) in [
            ("ui.trace_url_template", &self.trace_url_template),
            ("ui.log_url_template", &self.log_url_template),
        ] {
            crate::ui::links::validate_template(template)
                .map_err(|e| anyhow::anyhow!("invalid configuration: `{key}` {e}"))?;
        }
        if !(250..=600_000).contains(&self.live_poll_ms) {
            bail!("invalid configuration: `ui.live_poll_ms` must be between 250 and 600000");
        }
        if !(60..=30 * 86_400).contains(&self.session_max_age_secs) {
            bail!(
                "invalid configuration: `ui.session_max_age_secs` must be between 60 and 2592000"
            );
        }
        if !matches!(self.secure_cookie.as_str(), "auto" | "always" | "never") {
            bail!("invalid configuration: `ui.secure_cookie` must be \"auto\", \"always\" or \"never\"");
        }
        Ok(())
    }
}

/// When a saga counts as stuck (see [`crate::stuck`]). Evaluated at query time from the
/// saga row and the clock, so the API is exact; `evaluate_interval_secs` only paces the
/// gauge refresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckSettings {
    /// A running saga (`STARTED`/`IN_PROGRESS`) with no event for this long is stuck, unless
    /// its type has its own threshold.
    pub default_threshold_secs: u64,
    /// Per-`sagaType` overrides of `default_threshold_secs`.
    #[serde(default)]
    pub thresholds: BTreeMap<String, u64>,
    /// A `FAILED` saga whose compensation never began this long after it failed is stuck;
    /// 0 turns the check off (for fleets whose failed sagas need no compensation).
    pub failed_uncompensated_secs: u64,
    /// A compensation that began this long ago and has not finished is stuck.
    pub compensation_timeout_secs: u64,
    /// How often the active/stuck gauges are re-read from the database.
    pub evaluate_interval_secs: u64,
}

/// Removal of old finished sagas (see [`crate::store::retention`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Off keeps everything forever.
    pub enabled: bool,
    /// Terminal sagas whose `ended_at` is older than this many days are removed.
    pub max_age_days: u64,
    /// Sagas removed per transaction: bounds lock time and WAL per statement.
    pub batch_size: i64,
    /// Pause between retention passes.
    pub interval_secs: u64,
}

impl StuckSettings {
    pub fn evaluate_interval(&self) -> Duration {
        Duration::from_secs(self.evaluate_interval_secs)
    }
}

impl RetentionSettings {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// `max_age_days` as a duration.
    pub fn max_age(&self) -> chrono::Duration {
        chrono::Duration::days(self.max_age_days.min(i64::MAX as u64 / 86_400_000) as i64)
    }
}

impl IngestSettings {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}

impl Settings {
    /// Loads defaults, then `file` if given, then `TRACKER_*` variables from the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::from_figment(Self::figment(file))
    }

    /// The layered sources, exposed so tests can add their own overrides on top.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only `TRACKER_<SECTION>__<KEY>` is a setting. Other TRACKER_* variables are not
        // ours to refuse: TRACKER_CONFIG names the file (see the CLI), and Kubernetes injects
        // TRACKER_PORT, TRACKER_SERVICE_HOST, … for a Service named `tracker`. A misspelt
        // section or key inside the `__` form still fails, naming it (`deny_unknown_fields`).
        fig.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }

    /// `TRACKER_*` variables of the process environment that are not settings (no `__`) and
    /// are therefore ignored, `TRACKER_CONFIG` aside. `run` logs one warning naming them.
    pub fn ignored_env_vars() -> Vec<String> {
        ignored_env_vars(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))
    }

    /// Extracts and validates.
    pub fn from_figment(fig: Figment) -> anyhow::Result<Self> {
        let mut settings: Settings = fig.extract().map_err(|e| {
            // figment's message already names the key path (e.g. `ingest.batch_size`).
            anyhow::anyhow!("invalid configuration: {e}")
        })?;
        settings.validate()?;
        // Whatever typed successfully is plain data, so this cannot fail in practice.
        settings.sources = RawSources(std::sync::Arc::new(
            fig.extract::<serde_json::Value>()
                .context("reading the merged configuration")?,
        ));
        Ok(settings)
    }

    /// Checks what serde cannot: non-empty names, sane ranges, a parseable database URL.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn nonempty(key: &str, v: &str) -> anyhow::Result<()> {
            if v.trim().is_empty() {
                bail!("invalid configuration: `{key}` must not be empty");
            }
            Ok(())
        }
        nonempty("kafka.brokers", &self.kafka.brokers)?;
        self.telemetry.validate()?;
        self.ui.validate()?;
        nonempty("kafka.topic", &self.kafka.topic)?;
        nonempty("kafka.dlq_topic", &self.kafka.dlq_topic)?;
        nonempty("kafka.group_id", &self.kafka.group_id)?;
        if self.kafka.topic == self.kafka.dlq_topic {
            bail!("invalid configuration: `kafka.dlq_topic` must differ from `kafka.topic`");
        }
        if !matches!(self.kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            bail!("invalid configuration: `kafka.auto_offset_reset` must be \"earliest\" or \"latest\"");
        }
        if !(1..=10_000).contains(&self.kafka.create_partitions) {
            bail!("invalid configuration: `kafka.create_partitions` must be between 1 and 10000");
        }
        let url = self.database.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("invalid configuration: `database.url` must be a postgres:// URL");
        }
        if let Some(read) = &self.database.read_url {
            let read = read.expose_secret();
            if !(read.starts_with("postgres://") || read.starts_with("postgresql://")) {
                bail!("invalid configuration: `database.read_url` must be a postgres:// URL (or empty: reads use `database.url`)");
            }
        }
        // Raw properties are plain strings (printed by `Debug`): secrets belong in the typed
        // settings, which can read files and never print.
        for key in self.kafka.properties.keys() {
            let k = key.to_ascii_lowercase();
            if k.contains("password") || k.contains("secret") || k == "sasl.jaas.config" {
                bail!(
                    "invalid configuration: `kafka.properties.{key}` holds a secret; use \
                     `kafka.sasl.password_file` / `kafka.tls.key_password_file` (or \
                     TRACKER_KAFKA__SASL__PASSWORD from a secret) instead"
                );
            }
        }
        self.kafka.security().validate().map_err(|e| {
            anyhow::anyhow!("invalid configuration: `kafka.{}` {}", e.field, e.reason)
        })?;
        if let Some(path) = &self.database.ssl_root_cert {
            std::fs::File::open(path).with_context(|| {
                format!(
                    "invalid configuration: `database.ssl_root_cert` ({}) cannot be read",
                    path.display()
                )
            })?;
        }
        self.database.resolved_password()?;
        if self.database.max_connections < 2 {
            bail!("invalid configuration: `database.max_connections` must be at least 2 (one for ingest, one for the API)");
        }
        if !(1..=50_000).contains(&self.ingest.batch_size) {
            bail!("invalid configuration: `ingest.batch_size` must be between 1 and 50000");
        }
        if !(1..=16).contains(&self.ingest.in_flight) {
            bail!("invalid configuration: `ingest.in_flight` must be between 1 and 16");
        }
        if self.ingest.in_flight as u32 >= self.database.max_connections {
            bail!(
                "invalid configuration: `ingest.in_flight` ({}) must be below `database.max_connections` ({}): each batch in flight holds a connection and the API needs one",
                self.ingest.in_flight,
                self.database.max_connections
            );
        }
        if self.ingest.linger_ms > 60_000 {
            bail!("invalid configuration: `ingest.linger_ms` must be at most 60000");
        }
        if self.ingest.retry_initial_ms == 0
            || self.ingest.retry_max_ms < self.ingest.retry_initial_ms
        {
            bail!("invalid configuration: `ingest.retry_initial_ms` must be > 0 and <= `ingest.retry_max_ms`");
        }
        self.http.validate()?;
        self.auth.validate()?;
        self.schema_registry.validate()?;
        let day = 86_400;
        let year = 365 * day;
        if !(1..=year).contains(&self.stuck.default_threshold_secs) {
            bail!("invalid configuration: `stuck.default_threshold_secs` must be between 1 and {year}");
        }
        for (saga_type, secs) in &self.stuck.thresholds {
            if !(1..=year).contains(secs) {
                bail!("invalid configuration: `stuck.thresholds.{saga_type}` must be between 1 and {year}");
            }
        }
        if self.stuck.failed_uncompensated_secs > year {
            bail!("invalid configuration: `stuck.failed_uncompensated_secs` must be between 0 (off) and {year}");
        }
        if !(1..=year).contains(&self.stuck.compensation_timeout_secs) {
            bail!("invalid configuration: `stuck.compensation_timeout_secs` must be between 1 and {year}");
        }
        if !(1..=day).contains(&self.stuck.evaluate_interval_secs) {
            bail!(
                "invalid configuration: `stuck.evaluate_interval_secs` must be between 1 and {day}"
            );
        }
        if !(1..=36_500).contains(&self.retention.max_age_days) {
            bail!("invalid configuration: `retention.max_age_days` must be between 1 and 36500");
        }
        if !(1..=100_000).contains(&self.retention.batch_size) {
            bail!("invalid configuration: `retention.batch_size` must be between 1 and 100000");
        }
        if !(1..=day).contains(&self.retention.interval_secs) {
            bail!("invalid configuration: `retention.interval_secs` must be between 1 and {day}");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!("invalid configuration: `log.format` must be \"text\" or \"json\"");
        }
        Ok(())
    }
}

/// The prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "TRACKER_";

fn ignored_env_vars(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut ignored: Vec<String> = names
        .filter(|k| {
            k.len() > ENV_PREFIX.len()
                && k[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
                && !k.contains("__")
                && !k.eq_ignore_ascii_case("TRACKER_CONFIG")
        })
        .collect();
    ignored.sort();
    ignored
}

/// Reads the default config; used by `--print-default-config`-style tooling and tests.
pub fn defaults() -> anyhow::Result<Settings> {
    Settings::from_figment(Figment::from(Toml::string(DEFAULT_CONFIG)))
        .context("the embedded default configuration must be valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    #[test]
    fn the_embedded_defaults_are_valid() {
        let s = defaults().expect("defaults load");
        assert_eq!(s.kafka.topic, "saga.tracker");
        assert_eq!(s.kafka.dlq_topic, "saga.tracker.dlq");
        assert_eq!(s.ingest.batch_size, 2000);
        assert_eq!(s.ingest.in_flight, 4);
        assert_eq!(s.stuck.default_threshold_secs, 900);
        assert_eq!(s.retention.max_age_days, 30);
        assert!(s.retention.enabled);
    }

    #[test]
    fn stuck_and_retention_keys_are_validated_by_name() {
        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("stuck.thresholds.ORDER_CREATION", 0));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("stuck.thresholds.ORDER_CREATION"), "{err}");

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("retention.batch_size", 0));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("retention.batch_size"), "{err}");
    }

    #[test]
    fn read_url_is_optional_and_checked() {
        let s = Settings::from_figment(Figment::from(Toml::string(DEFAULT_CONFIG)))
            .expect("defaults are valid");
        assert!(s.database.read_url.is_none(), "empty by default");

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG)).merge(Serialized::default(
            "database.read_url",
            "postgres://reader:s3cret@replica:5432/saga_tracker",
        ));
        let s = Settings::from_figment(fig).expect("a replica URL is valid");
        assert!(s.database.read_url.is_some());
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "the replica URL is a secret"
        );

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG)).merge(Serialized::default(
            "database.read_url",
            "mysql://s3cret@x/y",
        ));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("database.read_url"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn schema_registry_settings_are_validated_by_name() {
        let rejected = |pairs: &[(&str, &str)]| {
            let mut fig = Figment::from(Toml::string(DEFAULT_CONFIG));
            for (k, v) in pairs {
                fig = fig.merge(Serialized::default(k, v));
            }
            Settings::from_figment(fig)
                .expect_err("rejected")
                .to_string()
        };
        let err = rejected(&[("schema_registry.url", "ftp://registry")]);
        assert!(err.contains("`schema_registry.url`"), "{err}");
        let err = rejected(&[
            ("schema_registry.url", "http://registry.example:8081"),
            ("schema_registry.username", "u"),
            ("schema_registry.password", "hunter2-secret"),
        ]);
        assert!(err.contains("https://"), "{err}");
        assert!(
            !err.contains("hunter2-secret"),
            "the password leaked: {err}"
        );
        let err = rejected(&[
            ("schema_registry.url", "https://registry.example"),
            ("schema_registry.username", "u"),
        ]);
        assert!(err.contains("must be set together"), "{err}");
        let err = rejected(&[("schema_registry.username", "u")]);
        assert!(err.contains("need `schema_registry.url`"), "{err}");
        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("schema_registry.timeout_ms", 0));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("`schema_registry.timeout_ms`"), "{err}");
        let err = rejected(&[("schema_registry.schemas.7", "/nonexistent/SagaTracker.avsc")]);
        assert!(err.contains("`schema_registry.schemas.7`"), "{err}");
        let err = rejected(&[("schema_registry.schemas.x7", "/etc/hostname")]);
        assert!(err.contains("\"x7\""), "{err}");

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default(
                "schema_registry.url",
                "http://127.0.0.1:8081",
            ))
            .merge(Serialized::default("schema_registry.username", "u"))
            .merge(Serialized::default("schema_registry.password", "p"));
        let s = Settings::from_figment(fig).expect("credentials over loopback http");
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "Debug shows the password"
        );
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("ingest.batch_size", 0));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("ingest.batch_size"), "{err}");

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("ingest.batch_size", "many"));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("batch_size"), "{err}");

        let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
            .merge(Serialized::default("database.url", "mysql://x"));
        let err = Settings::from_figment(fig)
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    // figment's Jail API fixes the closure's error type; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    fn environment_variables_override_with_the_tracker_prefix() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_KAFKA__BROKERS", "kafka-a:9092");
            jail.set_env("TRACKER_INGEST__LINGER_MS", "25");
            // The CLI's `--config` may come from TRACKER_CONFIG; it is not a setting.
            jail.set_env("TRACKER_CONFIG", "/etc/saga-tracker/tracker.toml");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.kafka.brokers, "kafka-a:9092");
            assert_eq!(s.ingest.linger_ms, 25);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn kubernetes_service_variables_are_ignored_but_misspelt_settings_still_fail() {
        figment::Jail::expect_with(|jail| {
            // What Kubernetes injects for a Service named `tracker`.
            jail.set_env("TRACKER_PORT", "tcp://10.0.0.7:8080");
            jail.set_env("TRACKER_PORT_8080_TCP_ADDR", "10.0.0.7");
            jail.set_env("TRACKER_SERVICE_HOST", "10.0.0.7");
            jail.set_env("TRACKER_URL", "http://tracker:8080");
            jail.set_env("TRACKER_KAFKA__SASL__MECHANISM", "SCRAM-SHA-256");
            jail.set_env("TRACKER_KAFKA__SASL__USERNAME", "tracker");
            jail.set_env("TRACKER_KAFKA__SASL__PASSWORD", "from-a-secret");
            let s = Settings::load(None).expect("non-settings are ignored");
            assert_eq!(s.kafka.security().protocol(), "sasl_plaintext");
            assert!(
                !format!("{s:?}").contains("from-a-secret"),
                "secrets stay redacted"
            );
            let ignored = Settings::ignored_env_vars();
            for name in [
                "TRACKER_PORT",
                "TRACKER_PORT_8080_TCP_ADDR",
                "TRACKER_SERVICE_HOST",
                "TRACKER_URL",
            ] {
                assert!(ignored.iter().any(|v| v == name), "{name} in {ignored:?}");
            }
            assert!(!ignored.iter().any(|v| v.contains("__")), "{ignored:?}");

            jail.set_env("TRACKER_KAFKA__BROKER", "typo:9092");
            let err = Settings::load(None)
                .expect_err("a misspelt key fails")
                .to_string();
            assert!(err.contains("broker"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_KAFKAA__BROKERS", "typo:9092");
            let err = Settings::load(None)
                .expect_err("a misspelt section fails")
                .to_string();
            assert!(err.contains("kafkaa"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn ui_link_templates_are_checked_at_start_up() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TRACKER_UI__TRACE_URL_TEMPLATE",
                "https://jaeger.example/trace/{traceid}",
            );
            let err = Settings::load(None).expect_err("typo").to_string();
            assert!(
                err.contains("ui.trace_url_template") && err.contains("{traceid}"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_UI__LOG_URL_TEMPLATE", "grafana/explore?{sagaId}");
            let err = Settings::load(None).expect_err("not a URL").to_string();
            assert!(err.contains("ui.log_url_template"), "{err}");
            jail.set_env(
                "TRACKER_UI__LOG_URL_TEMPLATE",
                "https://g.example/explore?q={sagaId}&from={from}",
            );
            jail.set_env("TRACKER_UI__SECURE_COOKIE", "sometimes");
            let err = Settings::load(None)
                .expect_err("bad cookie mode")
                .to_string();
            assert!(err.contains("ui.secure_cookie"), "{err}");
            jail.set_env("TRACKER_UI__SECURE_COOKIE", "always");
            let s = Settings::load(None).expect("loads");
            assert!(s.ui.enabled);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn transport_security_mistakes_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_KAFKA__SASL__MECHANISM", "SCRAM-SHA-512");
            jail.set_env("TRACKER_KAFKA__SASL__USERNAME", "tracker");
            jail.set_env(
                "TRACKER_KAFKA__SASL__PASSWORD_FILE",
                "/nonexistent/password",
            );
            let err = Settings::load(None).expect_err("missing file").to_string();
            assert!(err.contains("kafka.sasl.password_file"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_KAFKA__SASL__MECHANISM", "GSSAPI");
            let err = Settings::load(None).expect_err("unsupported").to_string();
            assert!(err.contains("mechanism") || err.contains("GSSAPI"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRACKER_DATABASE__SSL_MODE", "verify-everything");
            let err = Settings::load(None).expect_err("bad mode").to_string();
            assert!(
                err.contains("ssl_mode") || err.contains("verify-everything"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("db.password", "s3cret\n")?;
            jail.set_env("TRACKER_DATABASE__PASSWORD_FILE", "db.password");
            jail.set_env("TRACKER_DATABASE__SSL_MODE", "verify-full");
            let s = Settings::load(None).expect("loads");
            let password = s.database.resolved_password().expect("reads").expect("set");
            assert_eq!(
                password.expose_secret(),
                "s3cret",
                "one trailing newline dropped"
            );
            assert_eq!(s.database.ssl_mode, Some(DbSslMode::VerifyFull));
            Ok(())
        });
    }
}
