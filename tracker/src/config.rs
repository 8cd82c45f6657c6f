//! Typed configuration: built-in commented defaults (`config/default.toml`) → optional file →
//! `TRACKER_*` environment variables, validated once at start-up.
//!
//! Validation errors name the key as the operator would write it (`kafka.brokers`), so a bad
//! deployment fails at once with a message that says what to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
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
    pub log: LogSettings,
    pub stuck: StuckSettings,
    pub retention: RetentionSettings,
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
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub batch_size: usize,
    pub linger_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Longest a statistics query may run before the API answers 503.
    pub stats_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
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
        // TRACKER_CONFIG names the file (see the CLI), it is not a setting.
        fig.merge(Env::prefixed("TRACKER_").ignore(&["config"]).split("__"))
    }

    /// Extracts and validates.
    pub fn from_figment(fig: Figment) -> anyhow::Result<Self> {
        let settings: Settings = fig.extract().map_err(|e| {
            // figment's message already names the key path (e.g. `ingest.batch_size`).
            anyhow::anyhow!("invalid configuration: {e}")
        })?;
        settings.validate()?;
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
        if self.database.max_connections < 2 {
            bail!("invalid configuration: `database.max_connections` must be at least 2 (one for ingest, one for the API)");
        }
        if !(1..=50_000).contains(&self.ingest.batch_size) {
            bail!("invalid configuration: `ingest.batch_size` must be between 1 and 50000");
        }
        if self.ingest.linger_ms > 60_000 {
            bail!("invalid configuration: `ingest.linger_ms` must be at most 60000");
        }
        if self.ingest.retry_initial_ms == 0
            || self.ingest.retry_max_ms < self.ingest.retry_initial_ms
        {
            bail!("invalid configuration: `ingest.retry_initial_ms` must be > 0 and <= `ingest.retry_max_ms`");
        }
        if !(1..=3_600_000).contains(&self.http.stats_timeout_ms) {
            bail!("invalid configuration: `http.stats_timeout_ms` must be between 1 and 3600000");
        }
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
        assert_eq!(s.ingest.batch_size, 500);
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
}
