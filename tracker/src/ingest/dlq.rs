//! The dead-letter producer: invalid messages go here, unchanged, with headers saying why.
//!
//! A message's offset is stored only after its DLQ copy is acknowledged, so a crash can
//! duplicate a DLQ entry (at-least-once) but never lose one.

use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use saga_tracker_sdk::contract::ContractError;

use crate::config::KafkaSettings;

/// Header names set on every DLQ message.
pub const HEADER_REASON: &str = "dlq.reason";
pub const HEADER_ERROR: &str = "dlq.error";
pub const HEADER_FIELD: &str = "dlq.field";
pub const HEADER_TOPIC: &str = "dlq.original.topic";
pub const HEADER_PARTITION: &str = "dlq.original.partition";
pub const HEADER_OFFSET: &str = "dlq.original.offset";
pub const HEADER_TIMESTAMP: &str = "dlq.original.timestamp";

/// Sends to the DLQ topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetters {
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        let mut cc = super::client::base_config(kafka)?;
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        // `kafka.properties` may override the four above; re-apply them last.
        for (k, v) in &kafka.properties {
            cc.set(k, v);
        }
        Ok(Self {
            producer: cc.create().context("creating the DLQ producer")?,
            topic: kafka.dlq_topic.clone(),
        })
    }

    /// Sends one message the contract rejected and waits for the broker's acknowledgement.
    pub async fn send(&self, msg: &OwnedMessage, why: &ContractError) -> anyhow::Result<()> {
        self.send_with(msg, why.reason(), why.field(), why.detail())
            .await
    }

    /// Sends one message with an explicit `reason` (a bounded code such as `db_rejected`),
    /// optional field and human detail, and waits for the broker's acknowledgement.
    pub async fn send_with(
        &self,
        msg: &OwnedMessage,
        reason: &str,
        field: Option<&str>,
        detail: &str,
    ) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        // Keep the emitter's headers (traceparent, content-type) for whoever replays it.
        if let Some(orig) = msg.headers() {
            for h in orig.iter() {
                if !h.key.starts_with("dlq.") {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
        }
        let detail: String = detail.chars().take(1000).collect();
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let timestamp = msg.timestamp().to_millis().map(|t| t.to_string());
        headers = headers
            .insert(Header {
                key: HEADER_REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(detail.as_str()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(offset.as_str()),
            });
        if let Some(field) = field {
            headers = headers.insert(Header {
                key: HEADER_FIELD,
                value: Some(field),
            });
        }
        if let Some(ts) = &timestamp {
            headers = headers.insert(Header {
                key: HEADER_TIMESTAMP,
                value: Some(ts.as_str()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| anyhow::anyhow!("DLQ delivery to `{}` failed: {e}", self.topic))
    }
}
