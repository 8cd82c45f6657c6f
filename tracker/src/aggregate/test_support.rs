//! Builders and proptest strategies shared by the aggregation tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use saga_tracker_sdk::contract::{SagaEvent, SagaStatus, StepError, StepStatus, SCHEMA_VERSION};
use serde_json::{Map, Value};

use super::EventRecord;

pub(super) const SAGA_ID: &str = "order-8812";

/// Cases for the two "a saga is a function of the set of its events" properties: 10 000 by
/// default (a few seconds each in a debug build), `PROPTEST_CASES` overrides it, e.g.
/// `PROPTEST_CASES=200000` for a soak run.
pub(super) fn permutation_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// `secs` seconds after a fixed instant, so tests read in small relative numbers.
pub(super) fn t(secs: i64) -> DateTime<Utc> {
    t_ms(secs * 1000)
}

/// `ms` milliseconds after the same fixed instant.
pub(super) fn t_ms(ms: i64) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .expect("a fixed, unambiguous UTC instant");
    base + Duration::milliseconds(ms)
}

/// An event of the test saga that happened at `t(secs)` and was received a second later.
pub(super) fn ev(id: &str, step: &str, status: StepStatus, secs: i64) -> Ev {
    Ev(EventRecord {
        event: SagaEvent {
            schema_version: SCHEMA_VERSION,
            event_id: id.to_owned(),
            saga_id: SAGA_ID.to_owned(),
            saga_type: "ORDER_CREATION".to_owned(),
            step: step.to_owned(),
            step_status: status,
            saga_status: None,
            occurred_at: t(secs),
            service: "orders".to_owned(),
            sequence: None,
            business_key: None,
            trace_id: None,
            span_id: None,
            error: None,
            metadata: None,
        },
        received_at: t(secs + 1),
    })
}

/// Builder for one [`EventRecord`].
#[derive(Debug, Clone)]
pub(super) struct Ev(pub(super) EventRecord);

impl Ev {
    pub(super) fn saga(mut self, status: SagaStatus) -> Self {
        self.0.event.saga_status = Some(status);
        self
    }

    pub(super) fn seq(mut self, sequence: i64) -> Self {
        self.0.event.sequence = Some(sequence);
        self
    }

    pub(super) fn service(mut self, service: &str) -> Self {
        self.0.event.service = service.to_owned();
        self
    }

    pub(super) fn error(mut self, code: &str, message: &str) -> Self {
        self.0.event.error = Some(StepError {
            code: code.to_owned(),
            message: message.to_owned(),
        });
        self
    }

    pub(super) fn metadata(mut self, value: Value) -> Self {
        if let Value::Object(map) = value {
            self.0.event.metadata = Some(map);
        }
        self
    }

    pub(super) fn business_key(mut self, key: &str) -> Self {
        self.0.event.business_key = Some(key.to_owned());
        self
    }

    pub(super) fn trace(mut self, trace_id: &str) -> Self {
        self.0.event.trace_id = Some(trace_id.to_owned());
        self
    }

    pub(super) fn received(mut self, at: DateTime<Utc>) -> Self {
        self.0.received_at = at;
        self
    }

    pub(super) fn at_ms(mut self, ms: i64) -> Self {
        self.0.event.occurred_at = t_ms(ms);
        self
    }

    pub(super) fn build(self) -> EventRecord {
        self.0
    }
}

/// Random content for one event of the saga; the id is assigned by [`arb_saga`]. Small pools
/// of steps, services, sequences and timestamps make ties and collisions common.
fn arb_content() -> impl Strategy<Value = (SagaEvent, DateTime<Utc>)> {
    let statuses = (
        prop::sample::select(StepStatus::ALL.to_vec()),
        prop::option::weighted(0.35, prop::sample::select(SagaStatus::ALL.to_vec())),
    );
    let order = (prop::option::of(0_i64..4), 0_i64..6, 0_i64..10);
    let who = (
        prop::sample::select(vec!["RESERVE_STOCK", "CHARGE_PAYMENT", "CONFIRM"]),
        prop::sample::select(vec!["orders", "stock", "payment"]),
        prop::option::weighted(0.3, prop::sample::select(vec!["8812", "8813"])),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "0af7651916cd43dd8448eb211c80319c",
            ]),
        ),
    );
    let extras = (
        prop::option::weighted(0.3, prop::sample::select(vec!["DECLINED", "TIMEOUT"])),
        prop::option::weighted(
            0.5,
            prop::collection::btree_map(
                prop::sample::select(vec!["region", "amount", "channel"]),
                0_i64..3,
                1..3,
            ),
        ),
    );
    (statuses, order, who, extras).prop_map(
        |(
            (step_status, saga_status),
            (sequence, occurred, received),
            (step, service, business_key, trace_id),
            (error, metadata),
        )| {
            let event = SagaEvent {
                schema_version: SCHEMA_VERSION,
                event_id: String::new(),
                saga_id: SAGA_ID.to_owned(),
                saga_type: "ORDER_CREATION".to_owned(),
                step: step.to_owned(),
                step_status,
                saga_status,
                occurred_at: t(occurred),
                service: service.to_owned(),
                sequence,
                business_key: business_key.map(str::to_owned),
                trace_id: trace_id.map(str::to_owned),
                span_id: None,
                error: error.map(|code| StepError {
                    code: code.to_owned(),
                    message: format!("{code} happened"),
                }),
                metadata: metadata.map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), Value::from(v)))
                        .collect::<Map<String, Value>>()
                }),
            };
            (event, t(received))
        },
    )
}

/// The stored events of one saga: 1–11 events with distinct ids, plus up to two records that
/// reuse an existing id with different content (an emitter bug the dedup rule must settle
/// deterministically).
pub(super) fn arb_saga() -> impl Strategy<Value = Vec<EventRecord>> {
    (
        prop::collection::vec(arb_content(), 1..12),
        prop::collection::vec((any::<Index>(), arb_content()), 0..3),
    )
        .prop_map(|(contents, clashes)| {
            let mut records: Vec<EventRecord> = contents
                .into_iter()
                .enumerate()
                .map(|(i, (mut event, received_at))| {
                    event.event_id = format!("evt-{i:02}");
                    EventRecord { event, received_at }
                })
                .collect();
            let n = records.len();
            for (index, (mut event, received_at)) in clashes {
                event.event_id = format!("evt-{:02}", index.index(n));
                records.push(EventRecord { event, received_at });
            }
            records
        })
}

/// A saga's events, and the same events as a consumer might see them: shuffled, with random
/// records delivered more than once.
pub(super) fn arb_saga_and_redelivery(
) -> impl Strategy<Value = (Vec<EventRecord>, Vec<EventRecord>)> {
    arb_saga().prop_flat_map(|records| {
        let n = records.len();
        (Just(records), prop::collection::vec(0..n, 0..=2 * n)).prop_flat_map(
            |(records, repeats)| {
                let mut delivered = records.clone();
                delivered.extend(repeats.into_iter().filter_map(|i| records.get(i).cloned()));
                (Just(records), Just(delivered).prop_shuffle())
            },
        )
    })
}
