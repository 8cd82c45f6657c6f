//! Start-up check that the input and DLQ topics exist, with opt-in creation.
//!
//! A tracker pointed at a missing topic would otherwise sit idle and healthy-looking; failing
//! at start with the topic's name is kinder to whoever is deploying it.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{BaseProducer, Producer};

use super::client::{create_checked, explain_failure, CheckingContext};
use crate::config::KafkaSettings;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// One metadata request within [`METADATA_TIMEOUT`].
const METADATA_ATTEMPT: Duration = Duration::from_secs(1);

/// Names of `wanted` topics that the cluster does not report (or reports with no partitions).
///
/// Metadata is requested in short attempts while the client's error callback is polled in
/// between, so a TLS or SASL failure ends the wait at once with the reason, and a broker that
/// is merely slow still gets [`METADATA_TIMEOUT`] in all.
async fn missing_topics(kafka: &KafkaSettings, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let wanted = wanted.to_vec();
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let (producer, context): (BaseProducer<CheckingContext>, _) =
            create_checked(&kafka, "metadata client")?;
        let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
        let md = loop {
            match producer.client().fetch_metadata(None, METADATA_ATTEMPT) {
                Ok(md) => break md,
                Err(e) => {
                    // Runs the error callback for what librdkafka has reported meanwhile.
                    producer.poll(Duration::from_millis(100));
                    if context.failure().is_some() || std::time::Instant::now() >= deadline {
                        return Err(explain_failure(
                            &kafka,
                            &context,
                            e,
                            "fetching cluster metadata",
                        ));
                    }
                }
            }
        };
        Ok(wanted
            .into_iter()
            .filter(|name| {
                !md.topics()
                    .iter()
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            })
            .collect())
    })
    .await
    .context("metadata task panicked")?
}

/// Fails unless both topics exist; creates them first when `kafka.create_topics` is set.
pub async fn ensure_topics(kafka: &KafkaSettings) -> anyhow::Result<()> {
    let wanted = vec![kafka.topic.clone(), kafka.dlq_topic.clone()];
    let missing = missing_topics(kafka, &wanted).await?;
    if missing.is_empty() {
        return Ok(());
    }
    if !kafka.create_topics {
        bail!(
            "Kafka topic(s) {} do not exist on {}; create them (e.g. {} partitions) or set \
             TRACKER_KAFKA__CREATE_TOPICS=true to let the tracker create them",
            missing
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            kafka.brokers,
            kafka.create_partitions
        );
    }
    let (admin, _): (AdminClient<CheckingContext>, _) = create_checked(kafka, "admin client")?;
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| NewTopic::new(t, kafka.create_partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics(new.iter(), &opts)
        .await
        .context("creating topics")?
    {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = kafka.create_partitions, "created topic")
            }
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic = %name, "topic already exists")
            }
            Err((name, code)) => bail!("could not create topic `{name}`: {code}"),
        }
    }
    // Creation is asynchronous on the broker side; wait (bounded) until metadata shows them.
    for _ in 0..50 {
        if missing_topics(kafka, &wanted).await?.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("created topics {missing:?} but the cluster still does not report them after 10 s")
}
