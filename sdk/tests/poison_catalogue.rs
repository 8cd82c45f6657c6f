//! Table test of the poison catalogue against `contract::decode`: every malformed value is
//! refused with the expected reason and field — the codes the tracker puts in `dlq.reason` /
//! `dlq.field` and in `saga_tracker_dlq_messages_total{reason}`.

#[path = "support/poison.rs"]
mod poison;

use chrono::{TimeZone, Utc};
use saga_tracker_sdk::contract::{self, ContractError};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 0, 0, 0)
        .single()
        .expect("a fixed, unambiguous UTC instant")
}

#[test]
fn the_unbroken_template_decodes() {
    let ok = serde_json::Value::Object(poison::valid_event("order-1", "e-1")).to_string();
    contract::decode(ok.as_bytes(), now()).expect("the template is a valid event");
}

#[test]
fn every_poison_in_the_catalogue_is_refused_with_its_reason_and_field() {
    let catalogue = poison::catalogue("order-8812");
    assert!(
        catalogue.len() >= 30,
        "the catalogue should cover at least 30 kinds, has {}",
        catalogue.len()
    );
    let mut failures = Vec::new();
    for p in &catalogue {
        let got: Result<(&str, Option<&str>), String> = match contract::decode(&p.payload, now()) {
            Err(e) => Ok((e.reason(), e.field())),
            Ok(event) => match &p.key {
                // The key rule lives in the consumer; decode accepts the value itself.
                Some(key) if key != &event.saga_id => {
                    let e = ContractError::key_mismatch(key, &event.saga_id);
                    Ok((e.reason(), e.field()))
                }
                _ => Err(format!("accepted as {event:?}")),
            },
        };
        match got {
            Ok((reason, field)) if reason == p.reason && field == p.field => {}
            Ok((reason, field)) => failures.push(format!(
                "{}: expected {}/{:?}, got {reason}/{field:?}",
                p.name, p.reason, p.field
            )),
            Err(why) => failures.push(format!("{}: {why}", p.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn poison_names_are_unique() {
    let catalogue = poison::catalogue("order-8812");
    let mut names: Vec<_> = catalogue.iter().map(|p| p.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate poison names");
}
