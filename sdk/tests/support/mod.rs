//! Shared helpers for the SDK's integration tests: an in-process Kafka-protocol broker
//! (librdkafka's mock cluster) and a consumer that reads a topic back from the beginning.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Partitions of every test topic: more than one, so keying matters.
pub const PARTITIONS: i32 = 3;

/// The one broker's id in a mock cluster.
pub const BROKER: i32 = 1;

/// A one-broker Kafka cluster living inside the test process.
pub struct Kafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

impl Kafka {
    pub fn start() -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let bootstrap = cluster.bootstrap_servers();
        Self { cluster, bootstrap }
    }

    /// A fresh topic name, created with [`PARTITIONS`] partitions.
    pub fn topic(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}.{}", N.fetch_add(1, Ordering::Relaxed));
        self.cluster
            .create_topic(&name, PARTITIONS, 1)
            .expect("create topic");
        name
    }

    pub fn broker_down(&self) {
        self.cluster.broker_down(BROKER).expect("broker down");
    }

    pub fn broker_up(&self) {
        self.cluster.broker_up(BROKER).expect("broker up");
    }

    /// Reads exactly `n` messages from every partition of `topic`, from the beginning,
    /// failing the test if they do not arrive within 30 s.
    pub async fn read(&self, topic: &str, n: usize) -> Vec<OwnedMessage> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{topic}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
                .expect("consume");
            out.push(m.detach());
        }
        // Nothing more should follow.
        if let Ok(Ok(extra)) =
            tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await
        {
            panic!(
                "unexpected extra message: {:?}",
                extra.payload_view::<str>()
            );
        }
        out
    }
}

/// The value of header `name` on `m`, as UTF-8.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
