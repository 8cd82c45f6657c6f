//! Bad input never stops ingestion: the poison catalogue (malformed values, a mismatched key)
//! and events the *database* refuses each land in the DLQ with a reason, are counted by
//! reason, and the good events around them are all stored.
//!
//! In-process: the real tracker against librdkafka's mock cluster and a real PostgreSQL, one
//! database and one cluster per test.

mod common;

use common::{unique, InProcessTracker, MockKafka, TrackerSetup};

#[path = "../../sdk/tests/support/poison.rs"]
mod poison;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use serde_json::Value;

const TOPIC: &str = "saga.tracker";
const DLQ: &str = "saga.tracker.dlq";

/// The test's topics on a fresh mock cluster.
type Kafka = MockKafka;

fn start_kafka() -> Kafka {
    Kafka::start(&[(TOPIC, 3), (DLQ, 1)])
}

impl Kafka {
    /// Produces one message (`key = None` sends a null key) tagged with a `poison.name`
    /// header, which the DLQ copy keeps.
    async fn send(&self, key: Option<&str>, payload: &[u8], name: &str) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "poison.name",
            value: Some(name),
        });
        let mut rec: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(TOPIC).payload(payload).headers(headers);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        self.producer
            .send(rec, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("{name}: message delivered: {e}"));
    }

    /// Reads `n` DLQ messages: `poison.name` → (`dlq.reason`, `dlq.field`, `dlq.error`).
    async fn read_dlq(&self, n: usize) -> HashMap<String, (String, Option<String>, String)> {
        let dlq: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("dlq-reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("dlq consumer");
        dlq.subscribe(&[DLQ]).expect("subscribe");
        let mut out = HashMap::new();
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} DLQ messages within 30 s", out.len()))
                .expect("DLQ message");
            let mut h: HashMap<String, String> = HashMap::new();
            if let Some(headers) = m.headers() {
                for x in headers.iter() {
                    let v = x.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    h.insert(x.key.to_owned(), v.unwrap_or_default());
                }
            }
            assert!(
                h.contains_key("dlq.original.offset"),
                "DLQ copy carries its origin"
            );
            let name = h.get("poison.name").cloned().unwrap_or_default();
            let reason = h.get("dlq.reason").cloned().expect("dlq.reason header");
            let entry = (
                reason,
                h.get("dlq.field").cloned(),
                h.get("dlq.error").cloned().unwrap_or_default(),
            );
            // Dead letters are at-least-once: a repeat must say the same thing.
            if let Some(prev) = out.insert(name.clone(), entry.clone()) {
                assert_eq!(prev, entry, "{name} dead-lettered twice, differently");
            }
        }
        out
    }
}

type Tracker = InProcessTracker;

/// Starts the tracker on a fresh database; `setup` runs after the migrations, before the
/// consumer starts.
async fn spawn_tracker(kafka: &Kafka, setup: &[&str]) -> Tracker {
    Tracker::spawn(TrackerSetup {
        batch_size: 200,
        linger_ms: 50,
        setup_sql: setup,
        ..TrackerSetup::new(&kafka.bootstrap, "saga_poison")
    })
    .await
}

impl Tracker {
    async fn stored(&self, ids: &[String]) -> i64 {
        sqlx::query_scalar("select count(*) from saga_events where event_id = any($1)")
            .bind(ids)
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }

    /// Waits (bounded: 60 s) until every id in `ids` is stored.
    async fn wait_stored(&self, ids: &[String]) {
        for _ in 0..600 {
            if self.stored(ids).await == ids.len() as i64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "only {} of {} good events stored within 60 s",
            self.stored(ids).await,
            ids.len()
        );
    }
}

/// `saga_tracker_dlq_messages_total{reason="…"}` values from a Prometheus scrape.
fn dlq_counts(metrics: &str) -> BTreeMap<String, f64> {
    let prefix = "saga_tracker_dlq_messages_total{reason=\"";
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn good_event(saga_id: &str, event_id: &str, step: &str) -> Vec<u8> {
    let mut m = poison::valid_event(saga_id, event_id);
    m.insert("step".into(), Value::String(step.to_owned()));
    Value::Object(m).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_of_the_catalogue_is_dead_lettered_with_its_reason_and_the_good_events_around_it_are_stored(
) {
    let kafka = start_kafka();
    let tracker = spawn_tracker(&kafka, &[]).await;

    let run = uuid::Uuid::new_v4().simple().to_string();
    let poison_saga = format!("poisoned-{run}");
    let catalogue = poison::catalogue(&poison_saga);
    assert!(catalogue.len() >= 30, "catalogue has {}", catalogue.len());
    let mut good_ids = Vec::new();
    for (i, p) in catalogue.iter().enumerate() {
        let key = p.key.as_deref().unwrap_or(&poison_saga);
        kafka.send(Some(key), &p.payload, p.name).await;
        // A good event right behind each poison, on the poisoned saga's partition.
        let id = format!("good-{run}-{i}");
        kafka
            .send(
                Some(&poison_saga),
                &good_event(&poison_saga, &id, &format!("STEP_{i}")),
                "good",
            )
            .await;
        good_ids.push(id);
    }
    // A null key is not poison: the event is accepted.
    let null_key_saga = format!("null-key-{run}");
    let id = format!("good-{run}-null-key");
    kafka
        .send(None, &good_event(&null_key_saga, &id, "NULL_KEY"), "good")
        .await;
    good_ids.push(id);

    tracker.wait_stored(&good_ids).await;
    let (status, saga) = {
        let r = reqwest::get(format!("{}/api/v1/sagas/{poison_saga}", tracker.base))
            .await
            .expect("saga request");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!(status, 200);
    assert_eq!(saga["eventCount"], catalogue.len(), "{saga:#}");

    let dead = kafka.read_dlq(catalogue.len()).await;
    let mut failures = Vec::new();
    for p in &catalogue {
        match dead.get(p.name) {
            None => failures.push(format!("{}: not in the DLQ", p.name)),
            Some((reason, field, _)) => {
                if reason != p.reason || field.as_deref() != p.field {
                    failures.push(format!(
                        "{}: expected {}/{:?}, DLQ says {reason}/{field:?}",
                        p.name, p.reason, p.field
                    ));
                }
            }
        }
    }
    assert!(!dead.contains_key("good"), "a good event was dead-lettered");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for p in &catalogue {
        *expected.entry(p.reason.to_owned()).or_default() += 1.0;
    }
    // Counters are process-wide; the other test of this binary only adds `db_rejected`.
    let mut counted = dlq_counts(&tracker.metrics().await);
    counted.remove("db_rejected");
    assert_eq!(counted, expected, "DLQ counters by reason");

    common::drop_database(&tracker.stop().await).await;
}

/// Makes the database refuse, as data, any event whose step starts with `POISON_DB`: a check
/// violation (23514) or an untranslatable character (22P05), as PostgreSQL would raise them.
const REJECT_TRIGGER: &str = r#"
create function test_reject_poison() returns trigger language plpgsql as $$
begin
    if new.step = 'POISON_DB_CHECK' then
        raise exception 'test check refuses step %', new.step using errcode = '23514';
    elsif new.step = 'POISON_DB_ENCODING' then
        raise exception 'test refuses the encoding of step %', new.step using errcode = '22P05';
    end if;
    return new;
end $$;
create trigger test_reject_poison before insert on saga_events
    for each row execute function test_reject_poison();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_rejects_because_of_one_event_commits_the_rest_and_dead_letters_the_offender(
) {
    let kafka = start_kafka();
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Everything is produced before the tracker starts, so the offenders share full batches
    // with good events.
    let mut good_ids = Vec::new();
    let offenders = [
        (17, "POISON_DB_CHECK"),
        (90, "POISON_DB_ENCODING"),
        (91, "POISON_DB_CHECK"),
    ];
    for i in 0..150 {
        let saga = format!("db-{run}-{}", i % 10);
        let id = format!("ev-{run}-{i}");
        let (step, name) = match offenders.iter().find(|(at, _)| *at == i) {
            Some((_, step)) => (step.to_string(), format!("offender-{i}")),
            None => {
                good_ids.push(id.clone());
                (format!("STEP_{i}"), "good".to_owned())
            }
        };
        kafka
            .send(Some(&saga), &good_event(&saga, &id, &step), &name)
            .await;
    }
    let tracker = spawn_tracker(&kafka, &[REJECT_TRIGGER]).await;
    tracker.wait_stored(&good_ids).await;

    let dead = kafka.read_dlq(offenders.len()).await;
    for (at, step) in offenders {
        let (reason, _, error) = dead
            .get(&format!("offender-{at}"))
            .unwrap_or_else(|| panic!("offender {at} not in the DLQ: {dead:?}"));
        assert_eq!(reason, "db_rejected");
        let code = if step == "POISON_DB_CHECK" {
            "23514"
        } else {
            "22P05"
        };
        assert!(
            error.contains(code) && error.contains(step),
            "dlq.error names the SQLSTATE and the database's message: {error}"
        );
    }
    assert!(!dead.contains_key("good"), "a good event was dead-lettered");

    // The partitions are not wedged: later events keep flowing.
    let later: Vec<String> = (0..20).map(|i| format!("later-{run}-{i}")).collect();
    for (i, id) in later.iter().enumerate() {
        let saga = format!("db-{run}-{}", i % 10);
        kafka
            .send(Some(&saga), &good_event(&saga, id, "LATER"), "good")
            .await;
    }
    tracker.wait_stored(&later).await;
    let total: i64 = sqlx::query_scalar("select count(*) from saga_events")
        .fetch_one(&tracker.pool)
        .await
        .expect("count");
    assert_eq!(
        total,
        (good_ids.len() + later.len()) as i64,
        "no offender stored"
    );
    let sagas: i64 = sqlx::query_scalar("select coalesce(sum(event_count), 0)::bigint from sagas")
        .fetch_one(&tracker.pool)
        .await
        .expect("sum");
    assert_eq!(sagas, total, "saga rows reflect exactly the stored events");
    let counts = dlq_counts(&tracker.metrics().await);
    assert!(
        counts.get("db_rejected").copied().unwrap_or(0.0) >= offenders.len() as f64,
        "db_rejected counted: {counts:?}"
    );
    // The database's words go to the DLQ, never to HTTP.
    let r = reqwest::get(format!("{}/readyz", tracker.base))
        .await
        .expect("readyz");
    assert_eq!(r.status().as_u16(), 200);

    common::drop_database(&tracker.stop().await).await;
}
