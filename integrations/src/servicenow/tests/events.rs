//! Event Management: events posted with string fields and read back from
//! the simulator, the plan matching what is sent, faults, and invalid
//! events refused before sending.

use std::time::{Duration, Instant};

use fincorp_sim::servicenow::Faults;
use serde_json::json;

use super::*;

const EM: &str = "/api/global/em/jsonv2";

fn event(node: &str, severity: EventSeverity) -> EmEvent {
    EmEvent {
        source: "FINCORP".into(),
        event_class: Some("fincorp-correlator".into()),
        node: node.into(),
        event_type: "CPU".into(),
        resource: "FINCORP-APP-HFT".into(),
        metric_name: "cpu_pct".into(),
        severity,
        description: "CPU above 95% for 10 s".into(),
        message_key: format!("inc-42:{node}:cpu"),
        additional_info: serde_json::from_value(json!({"incident_id": "inc-42", "cpu_pct": 97.5}))
            .unwrap(),
        time_of_event: 1_795_341_600_000, // 2026-11-22 10:00:00 UTC
    }
}

#[tokio::test]
async fn an_event_is_posted_with_string_fields_and_read_back_from_the_instance() {
    let (sim, client) = start().await;
    let accepted = client
        .send_events(&[event("ny-hft-01", EventSeverity::Critical)])
        .await
        .unwrap();
    assert_eq!(accepted.inserted, Some(1));
    assert_eq!(accepted.message, "1 events were inserted");

    let sent = sim.state.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].method.as_str(),
            sent[0].path.as_str(),
            sent[0].status
        ),
        ("POST", EM, 200)
    );
    let record = &sent[0].body.as_ref().unwrap()["records"][0];
    for (k, v) in record.as_object().unwrap() {
        assert!(v.is_string(), "{k} = {v} is not a string");
    }

    let stored = sim.state.events();
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(e["source"], "FINCORP");
    assert_eq!(e["event_class"], "fincorp-correlator");
    assert_eq!(e["node"], "ny-hft-01");
    assert_eq!(e["type"], "CPU");
    assert_eq!(e["resource"], "FINCORP-APP-HFT");
    assert_eq!(e["metric_name"], "cpu_pct");
    assert_eq!(e["severity"], "1");
    assert_eq!(e["message_key"], "inc-42:ny-hft-01:cpu");
    assert_eq!(e["time_of_event"], "2026-11-22 10:00:00");
    assert_eq!(e["sys_created_by"], USER);
    let info: Value = serde_json::from_str(&e["additional_info"]).unwrap();
    assert_eq!(info, json!({"incident_id": "inc-42", "cpu_pct": 97.5}));

    // Also readable as the em_event table and from the simulator's own view.
    let rows = raw_get(
        &sim,
        "/api/now/table/em_event?sysparm_query=node%3Dny-hft-01",
    )
    .await;
    assert_eq!(rows["result"][0]["message_key"], "inc-42:ny-hft-01:cpu");
    let seen = fincorp_api::http::client(Duration::from_secs(5))
        .get(format!("{}/sim/em/events", sim.url()))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(seen["result"][0]["severity"], "1");

    // A clear (severity 0) for the same key, two events in one request.
    let accepted = client
        .send_events(&[
            event("ny-hft-01", EventSeverity::Clear),
            event("ny-hft-02", EventSeverity::Warning),
        ])
        .await
        .unwrap();
    assert_eq!(accepted.inserted, Some(2));
    let severities: Vec<String> = sim
        .state
        .events()
        .iter()
        .map(|e| e["severity"].clone())
        .collect();
    assert_eq!(severities, ["1", "0", "4"]);
}

#[tokio::test]
async fn plan_events_is_exactly_what_send_events_sends() {
    let (sim, client) = start().await;
    let events = [event("ny-core-01", EventSeverity::Major)];
    let plan = client.plan_events(&events).unwrap();
    assert!(sim.state.requests().is_empty(), "planning sends nothing");
    assert_eq!(plan.method, "POST");
    assert_eq!(plan.url, format!("{}{EM}", sim.url()));
    assert_eq!(
        plan.body,
        Some(json!({"records": [{
            "source": "FINCORP",
            "event_class": "fincorp-correlator",
            "node": "ny-core-01",
            "type": "CPU",
            "resource": "FINCORP-APP-HFT",
            "metric_name": "cpu_pct",
            "severity": "2",
            "description": "CPU above 95% for 10 s",
            "message_key": "inc-42:ny-core-01:cpu",
            "additional_info": "{\"cpu_pct\":97.5,\"incident_id\":\"inc-42\"}",
            "time_of_event": "2026-11-22 10:00:00",
        }]}))
    );
    client.send_events(&events).await.unwrap();
    assert_sent_as_planned(&sim, &[plan], &sim.state.requests());

    // With OAuth the plan says Bearer, and that is what is sent.
    let (sim, client) = start_oauth(Duration::from_secs(1800)).await;
    let plan = client.plan_events(&events).unwrap();
    assert_eq!(plan.header("Authorization"), Some("Bearer <redacted>"));
    client.send_events(&events).await.unwrap();
    let sent: Vec<_> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.path == EM)
        .collect();
    assert_sent_as_planned(&sim, &[plan], &sent);
}

#[tokio::test]
async fn event_posts_get_retry_after_backoff_and_hibernation_handling() {
    let (sim, client) = start().await;
    sim.state.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_s: 1,
        fail_next_5xx: 1,
        fail_status: 500,
        path_prefix: Some(EM.into()),
        ..Faults::default()
    });
    let started = Instant::now();
    let accepted = client
        .send_events(&[event("n1", EventSeverity::Minor)])
        .await
        .unwrap();
    assert_eq!(accepted.inserted, Some(1));
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses(&sim),
        pairs(&[("POST", 429), ("POST", 500), ("POST", 200)])
    );
    assert_eq!(
        sim.state.events().len(),
        1,
        "faulted attempts stored nothing"
    );

    sim.state.set_faults(Faults {
        hibernate: true,
        ..Faults::default()
    });
    let err = client
        .send_events(&[event("n1", EventSeverity::Minor)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ServiceNowError::Hibernating { url, .. } if url.ends_with(EM)),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_events_are_refused_before_sending() {
    let (sim, client) = start().await;
    let no_source = EmEvent {
        source: String::new(),
        ..event("n1", EventSeverity::Ok)
    };
    let no_node = EmEvent {
        node: " ".into(),
        ..event("n1", EventSeverity::Ok)
    };
    for (events, field) in [
        (vec![], "events"),
        (vec![event("n1", EventSeverity::Ok), no_source], "source"),
        (vec![no_node], "node"),
    ] {
        match client.send_events(&events).await {
            Err(ServiceNowError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert!(client.plan_events(&events).is_err());
    }
    assert!(sim.state.requests().is_empty());
}
