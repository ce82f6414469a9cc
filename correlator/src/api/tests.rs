//! HTTP tests without sockets: the router is driven with `oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fincorp_api::now_ms;
use fincorp_api::rest::{IncidentDetail, IncidentList};
use fincorp_api::signing::{RequestSignature, SigningKey, Verifier, sign_request};
use fincorp_api::wire::{
    AgentBatch, AgentInfo, AlertEvent, AlertStatus, INGEST_AGENT_PATH, Severity,
};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::core;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key() -> SigningKey {
    SigningKey::new("fleet", SECRET).unwrap()
}

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) state: AppState,
}

fn fixture() -> Fixture {
    fixture_with(vec![], crate::config::Automation::default())
}

/// A router over a fresh database with these playbooks and guardrails.
pub(crate) fn fixture_with(
    playbooks: Vec<fincorp_playbooks::Playbook>,
    settings: crate::config::Automation,
) -> Fixture {
    fixture_in(
        tempfile::tempdir().unwrap(),
        playbooks,
        settings,
        Default::default(),
    )
}

/// A router over the database in `dir` (fresh, or kept from an earlier
/// fixture to test a restart), with these playbooks, guardrails and secrets.
pub(crate) fn fixture_in(
    dir: tempfile::TempDir,
    playbooks: Vec<fincorp_playbooks::Playbook>,
    settings: crate::config::Automation,
    secrets: crate::config::Secrets,
) -> Fixture {
    let cfg = core::Config {
        resolve_after_ms: 1_000,
        ..core::Config::with_defaults()
    };
    let engine = Arc::new(
        Engine::open(
            &dir.path().join("c.db"),
            cfg,
            Arc::new(playbooks),
            3_600_000,
            1_000_000,
        )
        .unwrap(),
    );
    let bus = Arc::new(CommandBus::new([key()]));
    let samples = Arc::new(crate::samples::Samples::default());
    let automation = crate::automation::Automation::new(
        engine.clone(),
        crate::automation::Setup {
            bus: bus.clone(),
            servicenow: None,
            vsphere: None,
            samples: samples.clone(),
            settings,
            secrets,
            playbooks_dir: dir.path().join("playbooks"),
        },
    )
    .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let predict = crate::predict::Predict::new(Default::default(), engine.metrics.clone());
    let state = AppState::new(super::Shared {
        predict,
        engine,
        verifier: Arc::new(Verifier::new([key()], 30_000)),
        bus,
        automation,
        samples,
        tokens: Arc::new(vec![]),
        alertmanager: Arc::new(crate::ingest::alertmanager::Mapping::default()),
        shutdown: rx,
    });
    Fixture { _dir: dir, state }
}

fn event(id: &str, status: AlertStatus) -> AlertEvent {
    AlertEvent {
        id: id.into(),
        fingerprint: "fp-hft-cpu".into(),
        status,
        name: "cpu_high".into(),
        host: "web01".into(),
        app: Some("FINCORP-APP-HFT-TEST".into()),
        severity: Severity::Critical,
        metric: "cpu".into(),
        value: 91.0,
        threshold: 80.0,
        starts_at_ms: 1_000,
        at_ms: 2_000,
        summary: "FINCORP-APP-HFT-TEST cpu 91 > 80".into(),
        labels: Default::default(),
    }
}

fn batch(events: Vec<AlertEvent>) -> Vec<u8> {
    serde_json::to_vec(&AgentBatch {
        agent: AgentInfo {
            host: "web01".into(),
            version: "test".into(),
        },
        seq: 1,
        sent_at_ms: now_ms(),
        events,
        samples: vec![],
    })
    .unwrap()
}

fn signed(path: &str, body: Vec<u8>, sig: &RequestSignature) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (name, value) in sig.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body)).unwrap()
}

pub(crate) async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

async fn incident_count(state: &AppState) -> usize {
    let (status, body) = send(
        state,
        Request::get("/api/v1/incidents")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value::<IncidentList>(body)
        .unwrap()
        .incidents
        .len()
}

#[tokio::test]
async fn a_signed_batch_opens_an_incident_and_a_resend_is_a_duplicate() {
    let f = fixture();
    let body = batch(vec![event("e1", AlertStatus::Firing)]);
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, ack) = send(&f.state, signed(INGEST_AGENT_PATH, body.clone(), &sig)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack, serde_json::json!({"accepted": 1, "duplicates": 0}));

    // The agent resends the same events (its first response was lost), newly signed.
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (_, ack) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(ack, serde_json::json!({"accepted": 0, "duplicates": 1}));

    let (status, list) = send(
        &f.state,
        Request::get("/api/v1/incidents?app=FINCORP-APP-HFT-TEST")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: IncidentList = serde_json::from_value(list).unwrap();
    assert_eq!(list.incidents.len(), 1);
    let id = &list.incidents[0].id;
    let (status, detail) = send(
        &f.state,
        Request::get(format!("/api/v1/incidents/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let detail: IncidentDetail = serde_json::from_value(detail).unwrap();
    assert_eq!(detail.alerts.len(), 1);
    assert_eq!(detail.timeline[0].kind, "opened");
    assert_eq!(detail.timeline[0].data["rule"], "same-host");
}

#[tokio::test]
async fn a_forged_signature_gets_401_and_stores_nothing() {
    let f = fixture();
    let body = batch(vec![event("e1", AlertStatus::Firing)]);
    let forger = SigningKey::new("fleet", b"not-the-fleet-key-not-the-fleet-key").unwrap();
    let sig = sign_request(&forger, "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["message"], "bad signature");
    assert_eq!(incident_count(&f.state).await, 0);
}

#[tokio::test]
async fn a_stale_timestamp_gets_401_and_stores_nothing() {
    let f = fixture();
    let body = batch(vec![event("e1", AlertStatus::Firing)]);
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms() - 120_000);
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("timestamp outside the allowed skew"),
        "{err}"
    );
    assert_eq!(incident_count(&f.state).await, 0);
}

#[tokio::test]
async fn a_replayed_nonce_gets_401_and_stores_nothing_more() {
    let f = fixture();
    let first = batch(vec![event("e1", AlertStatus::Firing)]);
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &first, now_ms());
    let (status, _) = send(&f.state, signed(INGEST_AGENT_PATH, first.clone(), &sig)).await;
    assert_eq!(status, StatusCode::OK);
    // An eavesdropper replays the exact request: same body, headers, nonce.
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, first, &sig)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["message"], "nonce already used (replay)");
    // Nor can the captured signature carry a different body.
    let other = batch(vec![event("e2", AlertStatus::Resolved)]);
    let (status, _) = send(&f.state, signed(INGEST_AGENT_PATH, other, &sig)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = send(
        &f.state,
        Request::get("/api/v1/incidents")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let list: IncidentList = serde_json::from_value(list).unwrap();
    assert_eq!(list.incidents.len(), 1);
    assert_eq!(
        list.incidents[0].state,
        fincorp_api::rest::IncidentState::Open,
        "the resolve was not stored"
    );
}

#[tokio::test]
async fn missing_signature_headers_get_401() {
    let f = fixture();
    let req = Request::post(INGEST_AGENT_PATH)
        .body(Body::from(batch(vec![])))
        .unwrap();
    let (status, err) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("missing header"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_from_a_signed_agent_gets_400() {
    let f = fixture();
    let body = b"{\"agent\": 42".to_vec();
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "bad_request");
}

#[tokio::test]
async fn an_agent_cannot_report_alerts_for_another_host() {
    let f = fixture();
    let mut e = event("e1", AlertStatus::Firing);
    e.host = "someone-else".into();
    let body = batch(vec![e]);
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reports only its own host"),
        "{err}"
    );
    assert_eq!(incident_count(&f.state).await, 0);
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let f = fixture();
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, err) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_incidents_and_bad_filters_are_clear_4xx() {
    let f = fixture();
    let (status, err) = send(
        &f.state,
        Request::get("/api/v1/incidents/nope")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, err) = send(
        &f.state,
        Request::get("/api/v1/incidents?state=sleeping")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown incident state"),
        "{err}"
    );
    let (status, _) = send(
        &f.state,
        Request::get("/api/v1/incidents?limit=lots")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_resolved_alert_resolves_the_incident_after_the_quiet_period() {
    let f = fixture();
    for (id, status) in [("e1", AlertStatus::Firing), ("e2", AlertStatus::Resolved)] {
        let body = batch(vec![event(id, status)]);
        let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
        assert_eq!(
            send(&f.state, signed(INGEST_AGENT_PATH, body, &sig))
                .await
                .0,
            StatusCode::OK
        );
    }
    let resolved = f.state.engine.tick(now_ms() + 1_000).unwrap().resolved;
    assert_eq!(resolved.len(), 1);
    let detail = f.state.engine.incident(&resolved[0]).unwrap().unwrap();
    assert_eq!(
        detail.incident.state,
        fincorp_api::rest::IncidentState::Resolved
    );
    assert_eq!(detail.timeline.last().unwrap().kind, "resolved");
}

pub(crate) fn json_req(method: &str, path: &str, body: serde_json::Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn hardware(id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({"events": [{"id": id, "source": "hardware", "name": "dimm_ecc_error", "host": "web01",
        "severity": "critical", "status": status, "labels": {"slot": "A3"}, "starts_at": "2026-11-22T10:00:00Z"}]})
}

#[tokio::test]
async fn s2_an_agent_alert_and_a_hardware_event_on_one_host_make_one_incident() {
    let f = fixture();
    let body = batch(vec![event("e1", AlertStatus::Firing)]);
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    assert_eq!(
        send(&f.state, signed(INGEST_AGENT_PATH, body, &sig))
            .await
            .0,
        StatusCode::OK
    );
    let (status, ack) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/events", hardware("hw-1", "firing")),
    )
    .await;
    assert_eq!(
        (status, ack.clone()),
        (
            StatusCode::OK,
            serde_json::json!({"accepted": 1, "duplicates": 0})
        ),
        "{ack}"
    );
    let (_, list) = send(
        &f.state,
        Request::get("/api/v1/incidents")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let list: IncidentList = serde_json::from_value(list).unwrap();
    assert_eq!(list.incidents.len(), 1);
    let d = f
        .state
        .engine
        .incident(&list.incidents[0].id)
        .unwrap()
        .unwrap();
    let sources: Vec<&str> = d.alerts.iter().map(|a| a.source.as_str()).collect();
    assert_eq!(sources, ["agent", "hardware"]);
    let joined = d
        .timeline
        .iter()
        .find(|t| t.kind == "alert_joined" && t.data["source"] == "hardware")
        .unwrap();
    assert_eq!(joined.data["reason"]["rule"], "same-host");
    assert_eq!(joined.data["reason"]["key"], "host=web01");
}

#[tokio::test]
async fn alertmanager_webhooks_are_ingested_and_repeats_are_duplicates() {
    let f = fixture();
    let hook = serde_json::json!({"version": "4", "receiver": "fincorp", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "HighLatency", "instance": "core-db01:9100", "app": "FINCORP-APP-CORE"},
        "annotations": {"summary": "slow"}, "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "abc123"}]});
    let (status, ack) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/alertmanager", hook.clone()),
    )
    .await;
    assert_eq!(
        (status, ack),
        (
            StatusCode::OK,
            serde_json::json!({"accepted": 1, "duplicates": 0})
        )
    );
    let (_, ack) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/alertmanager", hook),
    )
    .await;
    assert_eq!(ack, serde_json::json!({"accepted": 0, "duplicates": 1}));
    let (_, list) = send(
        &f.state,
        Request::get("/api/v1/incidents?host=core-db01")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        serde_json::from_value::<IncidentList>(list)
            .unwrap()
            .incidents
            .len(),
        1
    );
    let (status, err) = send(
        &f.state,
        json_req(
            "POST",
            "/api/v1/ingest/alertmanager",
            serde_json::json!({"version": "3", "alerts": []}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("version:"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_events_are_clear_4xx() {
    let f = fixture();
    let (status, err) = send(
        &f.state,
        json_req(
            "POST",
            "/api/v1/ingest/events",
            serde_json::json!({"events": [{"source": "x"}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{err}"
    );
    let big = Request::post("/api/v1/ingest/events")
        .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
        .unwrap();
    assert_eq!(send(&f.state, big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(incident_count(&f.state).await, 0);
}

async fn open_one(f: &Fixture) -> String {
    let (status, _) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/events", hardware("hw-1", "firing")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = send(
        &f.state,
        Request::get("/api/v1/incidents")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    serde_json::from_value::<IncidentList>(list)
        .unwrap()
        .incidents[0]
        .id
        .clone()
}

#[tokio::test]
async fn ack_resolve_and_close_follow_the_lifecycle_and_are_audited() {
    let f = fixture();
    let id = open_one(&f).await;
    let act = |op: &str| {
        json_req(
            "POST",
            &format!("/api/v1/incidents/{id}/{op}"),
            serde_json::json!({"by": "alice", "reason": "on it"}),
        )
    };
    let (status, err) = send(&f.state, act("close")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only a resolved incident closes: {err}"
    );
    let (status, d) = send(&f.state, act("ack")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(
        (d["state"].as_str(), d["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("alice"))
    );
    let (status, d) = send(&f.state, act("resolve")).await;
    assert_eq!(
        (status, d["state"].as_str()),
        (StatusCode::OK, Some("resolved"))
    );
    let (status, _) = send(&f.state, act("resolve")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, d) = send(&f.state, act("close")).await;
    assert_eq!(
        (status, d["state"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    let kinds: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert!(
        kinds.ends_with(&["acknowledged", "resolved", "closed"]),
        "{kinds:?}"
    );

    let (status, audit) = send(
        &f.state,
        Request::get("/api/v1/audit").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let audit: fincorp_api::rest::AuditList = serde_json::from_value(audit).unwrap();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["incident.ack", "incident.resolve", "incident.close"]
    );
    assert_eq!(fincorp_api::audit::verify(&audit.entries), Ok(3));
    assert_eq!(audit.head.as_deref(), Some(audit.entries[2].hash.as_str()));

    let (status, err) = send(
        &f.state,
        json_req(
            "POST",
            "/api/v1/incidents/nope/ack",
            serde_json::json!({"by": "a", "reason": "r"}),
        ),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, err) = send(
        &f.state,
        json_req(
            "POST",
            &format!("/api/v1/incidents/{id}/ack"),
            serde_json::json!({"reason": "r"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn a_silenced_alert_is_recorded_but_opens_no_incident_until_the_silence_expires() {
    let f = fixture();
    let (status, s) = send(
        &f.state,
        json_req(
            "POST",
            "/api/v1/silences",
            serde_json::json!({"matchers": ["host=web01"], "duration": "1h",
            "created_by": "bob", "comment": "DIMM replacement"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(s["active"], true);
    let sid = s["id"].as_str().unwrap().to_owned();
    assert_eq!(open_count_after(&f, "hw-1").await, 0);
    let (status, s) = send(
        &f.state,
        Request::delete(format!("/api/v1/silences/{sid}?by=bob"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, s["active"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    // The silenced episode resolves; the next episode, after the silence, opens an incident.
    let (_, _) = send(
        &f.state,
        json_req(
            "POST",
            "/api/v1/ingest/events",
            hardware("hw-1-resolved", "resolved"),
        ),
    )
    .await;
    let mut fresh = hardware("hw-2", "firing");
    fresh["events"][0]["starts_at"] = serde_json::json!("2026-11-22T11:00:00Z");
    let (status, _) = send(&f.state, json_req("POST", "/api/v1/ingest/events", fresh)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(incident_count(&f.state).await, 1);
    let (_, list) = send(
        &f.state,
        Request::get("/api/v1/silences")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 1);
    let (status, err) = send(&f.state, json_req("POST", "/api/v1/silences", serde_json::json!({"matchers": [], "comment": "x", "created_by": "b", "duration": "1h"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, _) = send(
        &f.state,
        Request::delete("/api/v1/silences/sil-nope?by=bob")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn open_count_after(f: &Fixture, id: &str) -> usize {
    let (status, _) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/events", hardware(id, "firing")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    incident_count(&f.state).await
}

#[tokio::test]
async fn listing_pages_through_incidents_newest_first() {
    let f = fixture();
    for host in 0..5 {
        let body = serde_json::json!({"events": [{"source": "hardware", "name": "fan", "host": format!("h{host}"), "severity": "warning"}]});
        assert_eq!(
            send(&f.state, json_req("POST", "/api/v1/ingest/events", body))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (_, page1) = send(
        &f.state,
        Request::get("/api/v1/incidents?limit=2")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let page1: IncidentList = serde_json::from_value(page1).unwrap();
    assert_eq!(
        page1
            .incidents
            .iter()
            .map(|i| i.host.as_str())
            .collect::<Vec<_>>(),
        ["h4", "h3"]
    );
    let next = page1.next_before.unwrap();
    let (_, page2) = send(
        &f.state,
        Request::get(format!("/api/v1/incidents?limit=2&before={next}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let page2: IncidentList = serde_json::from_value(page2).unwrap();
    assert_eq!(
        page2
            .incidents
            .iter()
            .map(|i| i.host.as_str())
            .collect::<Vec<_>>(),
        ["h2", "h1"]
    );
    let (_, crit) = send(
        &f.state,
        Request::get("/api/v1/incidents?severity=critical")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        serde_json::from_value::<IncidentList>(crit)
            .unwrap()
            .incidents
            .len(),
        0
    );
}

#[tokio::test]
async fn metrics_expose_ingest_and_incident_counts() {
    let f = fixture();
    open_one(&f).await;
    let _ = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/events", hardware("hw-1", "firing")),
    )
    .await;
    let om = Request::get("/metrics")
        .header("accept", "application/openmetrics-text")
        .body(Body::empty())
        .unwrap();
    let resp = router(f.state.clone()).oneshot(om).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "fincorp_correlator_ingest_events_total{source=\"hardware\"} 1",
        "fincorp_correlator_ingest_duplicates_total{source=\"hardware\"} 1",
        "fincorp_correlator_open_incidents 1",
        "fincorp_correlator_active_alerts 1",
        "fincorp_correlator_ingest_queue_depth 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics when asked for");
    let resp = router(f.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        fincorp_api::exposition::TEXT_004
    );
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("# TYPE fincorp_correlator_ingest_events_total counter"),
        "{text}"
    );
}

fn with_token(mut req: Request<Body>, token: &str) -> Request<Body> {
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn token(name: &str, role: auth::Role, secret: &str) -> auth::Token {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    auth::Token {
        name: name.into(),
        role,
        sha256: d.as_ref().try_into().unwrap(),
    }
}

#[tokio::test]
async fn tokens_gate_the_api_by_role_and_name_the_actor() {
    let mut f = fixture();
    f.state.unshared_mut().tokens = Arc::new(vec![
        token("dashboard", auth::Role::Viewer, "viewer-secret"),
        token("oncall-sre", auth::Role::Operator, "operator-secret"),
        token("head-of-ops", auth::Role::Admin, "admin-secret"),
    ]);
    let ack = |id: &str| {
        json_req(
            "POST",
            &format!("/api/v1/incidents/{id}/ack"),
            serde_json::json!({"by": "someone-else", "reason": "looking"}),
        )
    };
    // No token, or an unknown one: 401 with a challenge; nothing stored.
    let (status, body) = send(
        &f.state,
        json_req("POST", "/api/v1/ingest/events", hardware("hw-1", "firing")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let resp = router(f.state.clone())
        .oneshot(
            Request::get("/api/v1/incidents")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (status, _) = send(
        &f.state,
        with_token(
            Request::get("/api/v1/incidents")
                .body(Body::empty())
                .unwrap(),
            "guess",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health and agent endpoints need no token (agents sign with HMAC).
    let (status, _) = send(
        &f.state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // An operator ingests; a viewer reads but cannot ack; the operator can.
    let (status, body) = send(
        &f.state,
        with_token(
            json_req("POST", "/api/v1/ingest/events", hardware("hw-1", "firing")),
            "operator-secret",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, list) = send(
        &f.state,
        with_token(
            Request::get("/api/v1/incidents")
                .body(Body::empty())
                .unwrap(),
            "viewer-secret",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = list["incidents"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = send(&f.state, with_token(ack(&id), "viewer-secret")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = send(&f.state, with_token(ack(&id), "operator-secret")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "acknowledged");

    // The kill switch is the admin's: an operator gets 403, the admin flips it.
    let flip = || {
        json_req(
            "POST",
            "/api/v1/automation/kill-switch",
            serde_json::json!({"on": true, "reason": "drill"}),
        )
    };
    let (status, _) = send(&f.state, with_token(flip(), "operator-secret")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&f.state, with_token(flip(), "admin-secret")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["on"], true);

    // The audit log names the tokens, not what the body claimed.
    let (_, audit) = send(
        &f.state,
        with_token(
            Request::get("/api/v1/audit").body(Body::empty()).unwrap(),
            "viewer-secret",
        ),
    )
    .await;
    let actors: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actors.contains(&("incident.ack".into(), "oncall-sre".into())),
        "{actors:?}"
    );
    assert!(
        actors.contains(&("automation.kill_switch.on".into(), "head-of-ops".into())),
        "{actors:?}"
    );
}

#[tokio::test]
async fn every_sample_of_an_agent_batch_reaches_the_predictor() {
    use fincorp_api::wire::{AppSample, HostSample};
    let f = fixture();
    let now = now_ms();
    let samples: Vec<HostSample> = (0..7)
        .map(|i| HostSample {
            at_ms: now - 7_000 + i * 1_000,
            cpu_pct: 20.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            apps: vec![AppSample {
                app: "FINCORP-APP-HFT-TEST".into(),
                processes: 1,
                cpu_pct: 40.0,
                rss_bytes: 1 << 28,
                probe: None,
                host_cpu_pct: None,
                throttling: None,
            }],
            cpu_per_core_pct: vec![],
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        })
        .collect();
    let body = serde_json::to_vec(&AgentBatch {
        agent: AgentInfo {
            host: "web01".into(),
            version: "test".into(),
        },
        seq: 1,
        sent_at_ms: now,
        events: vec![],
        samples,
    })
    .unwrap();
    let sig = sign_request(&key(), "POST", INGEST_AGENT_PATH, &body, now_ms());
    let (status, ack) = send(&f.state, signed(INGEST_AGENT_PATH, body, &sig)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let (_, text) = send(
        &f.state,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = text.as_str().unwrap_or_default();
    for line in [
        "fincorp_correlator_predict_samples_total 7",
        "fincorp_correlator_predict_units 1",
        "fincorp_correlator_predict_series 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
