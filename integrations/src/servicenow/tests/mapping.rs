//! Field mapping: per-app fields merged into create requests, explicit
//! fields winning, values sent as strings, a bad mapping refused at start.

use std::time::Duration;

use serde_json::json;

use super::*;

fn mapped_client(url: &str) -> ServiceNowClient {
    let mapping: FieldMapping = serde_json::from_value(json!({
        "default": {"caller_id": "fincorp-operator", "category": "software"},
        "apps": {
            "FINCORP-APP-CORE": {
                "assignment_group": "Core Banking SRE",
                "cmdb_ci": "core-banking",
                "urgency": 1,
                "impact": 1,
                "u_pci_scope": true
            }
        }
    }))
    .unwrap();
    ServiceNowClient::with_options(
        ServiceNowConfig {
            url: url.to_owned(),
            username: USER.to_owned(),
            password: Secret::new(PASSWORD),
            timeout: Duration::from_secs(10),
        },
        ServiceNowOptions {
            field_mapping: mapping,
            retry: fast_retry(),
            ..ServiceNowOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn the_apps_mapping_is_applied_to_the_create_and_explicit_fields_win() {
    let (sim, _) = start().await;
    let client = mapped_client(&sim.url());
    let mapped = client.incident_for_app("FINCORP-APP-CORE", &incident("inc-core"));
    let plan = client.plan_ensure(&mapped);
    let ticket = client.ensure_incident(&mapped).await.unwrap().ticket;
    assert_sent_as_planned(&sim, &plan, &sim.state.requests());

    let post = &sim.state.requests()[1];
    assert_eq!(
        post.body,
        Some(json!({
            "correlation_id": "inc-core",
            "short_description": incident("inc-core").short_description,
            "assignment_group": "Core Banking SRE",
            "cmdb_ci": "core-banking",
            "caller_id": "fincorp-operator",
            "category": "software",
            "urgency": "1",
            "impact": "1",
            "u_pci_scope": "true",
        }))
    );
    let stored = sim
        .state
        .incidents()
        .into_iter()
        .find(|r| r["sys_id"] == ticket.sys_id)
        .unwrap();
    assert_eq!(stored["assignment_group"], "Core Banking SRE");
    assert_eq!(
        stored["priority"], "1",
        "impact 1 × urgency 1 from the mapping"
    );

    // What the request says wins over the mapping.
    let mut explicit = NewIncident {
        urgency: Some("3".into()),
        ..incident("inc-core-2")
    };
    explicit
        .extra
        .insert("assignment_group".into(), "Night shift".into());
    let mapped = client.incident_for_app("FINCORP-APP-CORE", &explicit);
    client.ensure_incident(&mapped).await.unwrap();
    let post = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .nth(1)
        .unwrap();
    let body = post.body.unwrap();
    assert_eq!(body["urgency"], "3");
    assert_eq!(body["assignment_group"], "Night shift");
    assert_eq!(body["cmdb_ci"], "core-banking");

    // Another app gets the defaults only.
    let hft = client.incident_for_app("FINCORP-APP-HFT", &incident("inc-hft"));
    assert_eq!(
        hft.extra.keys().map(String::as_str).collect::<Vec<_>>(),
        ["caller_id", "category"]
    );
}

#[test]
fn a_bad_mapping_is_refused_when_the_client_is_built() {
    let mapping: FieldMapping = serde_json::from_value(
        json!({"apps": {"FINCORP-APP-CORE": {"state": "6", "impact": "9"}}}),
    )
    .unwrap();
    let err = ServiceNowClient::with_options(
        ServiceNowConfig {
            url: "https://x.service-now.com".into(),
            username: USER.into(),
            password: Secret::new(PASSWORD),
            timeout: Duration::from_secs(1),
        },
        ServiceNowOptions {
            field_mapping: mapping,
            ..ServiceNowOptions::default()
        },
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("apps.FINCORP-APP-CORE.state"), "{text}");
    assert!(text.contains("apps.FINCORP-APP-CORE.impact"), "{text}");
}
