//! Property tests of the three ingest parsers: arbitrary bytes and valid
//! payloads with fields replaced by arbitrary JSON values never panic, and
//! whatever parses yields alerts with non-empty identities.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{agent, alertmanager, events};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn agent_batch() -> Value {
    json!({"agent": {"host": "web01", "version": "1"}, "seq": 1, "sent_at_ms": 1, "samples": [],
        "events": [{"id": "e1", "fingerprint": "f1", "status": "firing", "name": "cpu_high", "host": "web01",
        "app": "A", "severity": "critical", "metric": "cpu", "value": 91.0, "threshold": 80.0,
        "starts_at_ms": 1, "at_ms": 2, "summary": "s"}]})
}

fn events_body() -> Value {
    json!({"events": [{"source": "hardware", "name": "psu_failed", "host": "web01", "severity": "critical",
        "status": "firing", "labels": {"psu": "2"}, "starts_at": "2026-11-22T10:00:00Z", "value": 1.0}]})
}

fn webhook() -> Value {
    json!({"version": "4", "receiver": "fincorp", "status": "firing", "alerts": [{"status": "firing",
        "labels": {"alertname": "Down", "instance": "db:9100"}, "annotations": {"summary": "down"},
        "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "abc"}]})
}

/// Replaces the value at a pseudo-random path of `v` with `with`.
fn mutate(v: &mut Value, choice: usize, with: Value) {
    if choice % 3 == 0 {
        *v = with;
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            let n = m.len();
            let key = m.keys().nth(choice % n).cloned().expect("non-empty");
            mutate(
                m.get_mut(&key).expect("just listed"),
                choice / n.max(2),
                with,
            );
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            mutate(&mut a[choice % n], choice / n.max(2), with);
        }
        _ => *v = with,
    }
}

fn check(body: &[u8]) {
    if let Ok((_, alerts)) = agent::parse(body) {
        assert!(
            alerts
                .iter()
                .all(|a| !a.event_id.is_empty() && !a.fingerprint.is_empty())
        );
    }
    if let Ok(alerts) = events::parse(body, 0) {
        assert!(
            alerts
                .iter()
                .all(|a| !a.event_id.is_empty() && !a.fingerprint.is_empty() && !a.host.is_empty())
        );
    }
    if let Ok(alerts) = alertmanager::parse(body, &alertmanager::Mapping::default(), 0) {
        assert!(
            alerts
                .iter()
                .all(|a| !a.event_id.is_empty() && !a.fingerprint.is_empty() && !a.host.is_empty())
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(v in any_json()) {
        check(v.to_string().as_bytes());
    }

    #[test]
    fn valid_payloads_with_a_field_replaced_never_panic(which in 0usize..3, choice in any::<usize>(), with in any_json()) {
        let mut v = [agent_batch(), events_body(), webhook()][which].clone();
        mutate(&mut v, choice, with);
        check(v.to_string().as_bytes());
    }
}

#[test]
fn the_unmutated_payloads_parse() {
    assert_eq!(
        agent::parse(agent_batch().to_string().as_bytes())
            .unwrap()
            .1
            .len(),
        1
    );
    assert_eq!(
        events::parse(events_body().to_string().as_bytes(), 0)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        alertmanager::parse(
            webhook().to_string().as_bytes(),
            &alertmanager::Mapping::default(),
            0
        )
        .unwrap()
        .len(),
        1
    );
}
