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
use crate::runner::RunEnv;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key() -> SigningKey {
    SigningKey::new("fleet", SECRET).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = core::Config {
        window_ms: 300_000,
        resolve_after_ms: 1_000,
    };
    let engine = Arc::new(Engine::open(&dir.path().join("c.db"), cfg, Arc::new(vec![])).unwrap());
    let bus = Arc::new(CommandBus::new([key()]));
    let runner = Runner::new(
        engine.clone(),
        RunEnv {
            bus: bus.clone(),
            servicenow: None,
        },
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        engine,
        verifier: Arc::new(Verifier::new([key()], 30_000)),
        bus,
        runner,
        shutdown: rx,
    };
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

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
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
    let resolved = f.state.engine.tick(now_ms() + 1_000).unwrap();
    assert_eq!(resolved.len(), 1);
    let detail = f.state.engine.incident(&resolved[0]).unwrap().unwrap();
    assert_eq!(
        detail.incident.state,
        fincorp_api::rest::IncidentState::Resolved
    );
    assert_eq!(detail.timeline.last().unwrap().kind, "resolved");
}
