//! The Kafka plumbing `dlq` and `doctor` share: clients built from `[kafka]` (so TLS, SASL
//! and `kafka.properties` apply exactly as they do for the tracker), cluster metadata,
//! watermarks and a group's committed offsets — every call bounded by a deadline, so a
//! broker that does not answer makes a command fail in seconds with words, never hang.
//!
//! Everything here blocks (librdkafka's synchronous calls): callers run it inside
//! `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::ingest::client::{base_config, create_checked, explain_failure, CheckingContext};

/// One metadata request; repeated within the caller's deadline.
const ATTEMPT: Duration = Duration::from_secs(1);

/// What the cluster reports: how many brokers, and each topic's partition ids.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub brokers: usize,
    pub topics: BTreeMap<String, Vec<i32>>,
}

impl Cluster {
    /// The partition ids of `topic`, `None` when the cluster does not have it.
    pub fn partitions(&self, topic: &str) -> Option<&[i32]> {
        self.topics
            .get(topic)
            .map(Vec::as_slice)
            .filter(|p| !p.is_empty())
    }
}

/// A metadata client (a producer: librdkafka hands a producer's connection errors to the
/// context with their reason text, so a TLS or SASL failure can be explained).
pub struct MetadataClient {
    producer: BaseProducer<CheckingContext>,
    context: CheckingContext,
    kafka: KafkaSettings,
}

impl std::fmt::Debug for MetadataClient {
    // Not derived: the client's configuration holds secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataClient")
            .field("brokers", &self.kafka.brokers)
            .finish_non_exhaustive()
    }
}

impl MetadataClient {
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        let (producer, context) = create_checked(kafka, "metadata client")?;
        Ok(Self {
            producer,
            context,
            kafka: kafka.clone(),
        })
    }

    /// All topics and brokers, asking in short attempts until `deadline` passes; a TLS or
    /// SASL failure ends the wait at once with its explanation.
    pub fn cluster(&self, deadline: Duration) -> anyhow::Result<Cluster> {
        let until = Instant::now() + deadline;
        loop {
            match self.producer.client().fetch_metadata(None, ATTEMPT) {
                Ok(md) => {
                    let topics = md
                        .topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .map(|t| {
                            let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                            ids.sort_unstable();
                            (t.name().to_owned(), ids)
                        })
                        .collect();
                    return Ok(Cluster {
                        brokers: md.brokers().len(),
                        topics,
                    });
                }
                Err(e) => {
                    self.producer.poll(Duration::from_millis(100));
                    if self.context.failure().is_some() {
                        return Err(explain_failure(&self.kafka, &self.context, e, "metadata"));
                    }
                    if Instant::now() >= until {
                        anyhow::bail!(
                            "no Kafka broker of `kafka.brokers` = {} ({}) answered within {} s \
                             (last error: {e})",
                            self.kafka.brokers,
                            self.kafka.security().describe(),
                            deadline.as_secs()
                        );
                    }
                }
            }
        }
    }

    /// `(low, high)` watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.producer
            .client()
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .with_context(|| format!("reading the offsets of `{topic}` partition {partition}"))
    }

    /// The number of messages a topic holds and its per-partition watermarks.
    pub fn topic_size(&self, topic: &str, partitions: &[i32]) -> anyhow::Result<TopicSize> {
        let mut size = TopicSize::default();
        for &p in partitions {
            let (low, high) = self.watermarks(topic, p)?;
            size.messages += (high - low).max(0);
            size.watermarks.insert(p, (low, high));
        }
        Ok(size)
    }
}

/// What a topic holds.
#[derive(Debug, Clone, Default)]
pub struct TopicSize {
    /// The sum of `high - low` over the partitions.
    pub messages: i64,
    /// `(low, high)` per partition.
    pub watermarks: BTreeMap<i32, (i64, i64)>,
}

/// A consumer that never joins a group and never commits: it is assigned partitions and
/// reads them. `group` is the id it presents — a throwaway one for reads, the tracker's own
/// for looking up committed offsets (which does not join the group either).
pub fn reader(kafka: &KafkaSettings, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut cc = base_config(kafka)?;
    // Set after `kafka.properties` (applied by `base_config`) on purpose: whatever the
    // tracker's own consumer is told, this one must never commit into anybody's group.
    cc.set("group.id", group)
        .set("client.id", "saga-tracker-cli")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    cc.create().context("creating the Kafka consumer")
}

/// A group id nobody else uses, for [`reader`]s that only read.
pub fn throwaway_group() -> String {
    format!("saga-tracker-cli-{}", uuid::Uuid::new_v4().simple())
}

/// The offsets `group` has committed on `partitions` of `topic`; a partition without a
/// commit is absent.
pub fn committed(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer = reader(kafka, group)?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("reading the committed offsets of the group `{group}`"))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// `n` for a person: `999`, `12.3k`, `2.1M`, `4.0G`.
pub fn humanize(n: i64) -> String {
    let a = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    if a < 1_000.0 {
        format!("{n}")
    } else if a < 1_000_000.0 {
        format!("{sign}{:.1}k", a / 1_000.0)
    } else if a < 1_000_000_000.0 {
        format!("{sign}{:.1}M", a / 1_000_000.0)
    } else {
        format!("{sign}{:.1}G", a / 1_000_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::humanize;

    #[test]
    fn counts_read_like_a_person_writes_them() {
        assert_eq!(humanize(0), "0");
        assert_eq!(humanize(999), "999");
        assert_eq!(humanize(12_345), "12.3k");
        assert_eq!(humanize(2_100_000), "2.1M");
        assert_eq!(humanize(4_000_000_000), "4.0G");
    }
}
