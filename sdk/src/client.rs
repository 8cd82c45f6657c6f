//! The producer side: turn a [`Step`] into a contract event and deliver it to Kafka.
//!
//! `enabled = false` gives a tracker that validates nothing, connects to nothing and returns
//! at once, so services can ship the SDK dark and switch it on by configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use crate::error::Error;

/// The topic the tracker consumes by default.
pub const DEFAULT_TOPIC: &str = "saga.tracker";

/// How to reach Kafka and who we are.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// `false` turns every call into a no-op that needs no broker.
    pub enabled: bool,
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Topic to produce to.
    pub topic: String,
    /// This service's name, written into every event's `service` field.
    pub service: String,
    /// How long one delivery may take before it is reported as failed.
    pub delivery_timeout: Duration,
    /// Extra librdkafka producer properties (SASL, TLS, …), applied last.
    pub producer_properties: BTreeMap<String, String>,
}

impl TrackerConfig {
    /// An enabled configuration with the default topic and a 30 s delivery timeout.
    pub fn new(brokers: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            enabled: true,
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            service: service.into(),
            delivery_timeout: Duration::from_secs(30),
            producer_properties: BTreeMap::new(),
        }
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
}

/// One step event to record. Build it with [`Step::new`] and the `with_*` setters.
#[derive(Debug, Clone)]
pub struct Step {
    saga_id: String,
    saga_type: String,
    step: String,
    step_status: StepStatus,
    saga_status: Option<SagaStatus>,
    sequence: Option<i64>,
    business_key: Option<String>,
    error: Option<StepError>,
    metadata: Option<Map<String, Value>>,
    occurred_at: Option<chrono::DateTime<Utc>>,
}

impl Step {
    /// A step event for `saga_id`.
    pub fn new(
        saga_id: impl Into<String>,
        saga_type: impl Into<String>,
        step: impl Into<String>,
        step_status: StepStatus,
    ) -> Self {
        Self {
            saga_id: saga_id.into(),
            saga_type: saga_type.into(),
            step: step.into(),
            step_status,
            saga_status: None,
            sequence: None,
            business_key: None,
            error: None,
            metadata: None,
            occurred_at: None,
        }
    }

    /// Also report the saga-level transition.
    pub fn with_saga_status(mut self, status: SagaStatus) -> Self {
        self.saga_status = Some(status);
        self
    }

    /// Per-saga order hint.
    pub fn with_sequence(mut self, sequence: i64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// Business identifier (order number, …).
    pub fn with_business_key(mut self, key: impl Into<String>) -> Self {
        self.business_key = Some(key.into());
        self
    }

    /// Failure detail.
    pub fn with_error(mut self, code: impl Into<String>, message: impl Into<String>) -> Self {
        self.error = Some(StepError {
            code: code.into(),
            message: message.into(),
        });
        self
    }

    /// Searchable metadata (at most 16 KiB serialized).
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Override the event time (defaults to now). Useful for back-filling.
    pub fn at(mut self, occurred_at: chrono::DateTime<Utc>) -> Self {
        self.occurred_at = Some(occurred_at);
        self
    }

    /// Builds the contract event for `service`, with a fresh UUIDv7 id, and validates it.
    pub fn into_event(self, service: &str) -> Result<SagaEvent, Error> {
        let now = Utc::now();
        let event = SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7().to_string(),
            saga_id: self.saga_id,
            saga_type: self.saga_type,
            step: self.step,
            step_status: self.step_status,
            saga_status: self.saga_status,
            occurred_at: self.occurred_at.unwrap_or(now),
            service: service.to_owned(),
            sequence: self.sequence,
            business_key: self.business_key,
            trace_id: None,
            span_id: None,
            error: self.error,
            metadata: self.metadata,
        };
        Ok(event.validate(now)?)
    }
}

/// Records saga steps to Kafka. Cheap to clone; clones share one producer.
#[derive(Clone)]
pub struct SagaTracker {
    inner: Option<Inner>,
}

#[derive(Clone)]
struct Inner {
    producer: FutureProducer,
    topic: String,
    service: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for SagaTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("SagaTracker(disabled)"),
            Some(i) => f
                .debug_struct("SagaTracker")
                .field("topic", &i.topic)
                .field("service", &i.service)
                .finish_non_exhaustive(),
        }
    }
}

impl SagaTracker {
    /// Creates the producer (no network traffic happens until the first event).
    pub fn new(config: TrackerConfig) -> Result<Self, Error> {
        if !config.enabled {
            return Ok(Self { inner: None });
        }
        if config.service.trim().is_empty() {
            return Err(Error::Config("`service` must not be empty".into()));
        }
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.brokers)
            // Idempotence: broker-side dedup of producer retries, in-order per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", "5");
        for (k, v) in &config.producer_properties {
            cc.set(k, v);
        }
        let producer: FutureProducer = cc.create().map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            inner: Some(Inner {
                producer,
                topic: config.topic,
                service: config.service,
                delivery_timeout: config.delivery_timeout,
            }),
        })
    }

    /// A tracker that records nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// `false` for the no-op tracker.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records one step and waits for the broker's acknowledgement. Returns the event id.
    pub async fn record(&self, step: Step) -> Result<Option<String>, Error> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let event = step.into_event(&inner.service)?;
        self.send_event(&event).await?;
        Ok(Some(event.event_id))
    }

    /// Sends an already-built event as is (key = its `sagaId`) and awaits delivery. Used by
    /// tools that replay or generate events; services should prefer [`SagaTracker::record`].
    pub async fn send_event(&self, event: &SagaEvent) -> Result<(), Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let payload = event.to_json();
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        let record = FutureRecord::to(&inner.topic)
            .key(&event.saga_id)
            .payload(&payload)
            .headers(headers);
        inner
            .producer
            .send(record, inner.delivery_timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::Delivery(e.to_string()))
    }

    /// Waits until every event handed to the producer is delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        match &self.inner {
            None => Ok(()),
            Some(i) => i
                .producer
                .flush(timeout)
                .map_err(|e| Error::Delivery(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_disabled_tracker_needs_no_broker() {
        let t = SagaTracker::new(TrackerConfig::disabled()).expect("no-op");
        let id = t
            .record(Step::new("", "bad type", "", StepStatus::Started))
            .await
            .expect("no-op accepts anything");
        assert_eq!(id, None);
        assert!(!t.is_enabled());
    }

    #[test]
    fn steps_get_a_uuid_v7_and_are_validated() {
        let e = Step::new("s-1", "ORDER", "A", StepStatus::Started)
            .into_event("svc")
            .expect("valid");
        let id = Uuid::parse_str(&e.event_id).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        let bad = Step::new("s-1", "lower", "A", StepStatus::Started).into_event("svc");
        assert!(matches!(bad, Err(Error::Invalid(_))));
    }
}
