//! An in-process mock correlator for tests (unit tests, and the binary's
//! tests in `agent/tests/`, which include this file): it verifies every request's
//! signature with the real [`Verifier`], records batches and command results,
//! serves queued commands to pollers and can answer ingest with scripted
//! failures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fincorp_api::signing::{RequestSignature, SigningKey, Verifier};
use fincorp_api::wire::{
    AgentBatch, COMMAND_POLL_PATH, COMMAND_RESULT_PATH, CommandResult, INGEST_AGENT_PATH,
    IngestAck, PollRequest, PollResponse, SignedCommand,
};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

pub fn key() -> SigningKey {
    SigningKey::new("fleet", SECRET.as_bytes()).expect("valid test key")
}

#[derive(Debug)]
pub struct MockState {
    verifier: Verifier,
    pub batches: Mutex<Vec<AgentBatch>>,
    /// Answers for the next ingest attempts (status, Retry-After seconds);
    /// once empty, batches are accepted.
    pub ingest_script: Mutex<VecDeque<(u16, Option<u64>)>>,
    pub ingest_attempts: AtomicUsize,
    /// Requests whose signature did not verify.
    pub unauthorized: AtomicUsize,
    pub commands: Mutex<VecDeque<SignedCommand>>,
    pub polls: AtomicUsize,
    pub results: Mutex<Vec<CommandResult>>,
}

pub struct MockCorrelator {
    pub url: String,
    pub state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockCorrelator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockCorrelator {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` (a fixed port lets a test stop and restart the
    /// correlator while the agent keeps its URL).
    pub async fn start_on(addr: &str) -> Self {
        let state = Arc::new(MockState {
            verifier: Verifier::new([key()], 30_000),
            batches: Mutex::default(),
            ingest_script: Mutex::default(),
            ingest_attempts: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            commands: Mutex::default(),
            polls: AtomicUsize::new(0),
            results: Mutex::default(),
        });
        let app = Router::new()
            .route(INGEST_AGENT_PATH, post(ingest))
            .route(COMMAND_POLL_PATH, post(poll))
            .route(COMMAND_RESULT_PATH, post(result))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    pub fn batches(&self) -> Vec<AgentBatch> {
        self.state.batches.lock().unwrap().clone()
    }

    pub fn results(&self) -> Vec<CommandResult> {
        self.state.results.lock().unwrap().clone()
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond(self)
    }
}

fn verify(
    state: &MockState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (StatusCode, String)> {
    let sig =
        RequestSignature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let checked = sig.and_then(|sig| {
        state
            .verifier
            .verify_request("POST", path, &sig, body, fincorp_api::now_ms())
    });
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json");
    match checked {
        Ok(_) if json => Ok(()),
        Ok(_) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/json".into(),
        )),
        Err(e) => {
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            Err((StatusCode::UNAUTHORIZED, e.to_string()))
        }
    }
}

async fn ingest(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verify(&state, INGEST_AGENT_PATH, &headers, &body) {
        return r.into_response();
    }
    state.ingest_attempts.fetch_add(1, Ordering::SeqCst);
    let scripted = state.ingest_script.lock().unwrap().pop_front();
    if let Some((status, retry_after)) = scripted {
        let status = StatusCode::from_u16(status).expect("valid scripted status");
        let mut headers = HeaderMap::new();
        if let Some(secs) = retry_after {
            headers.insert("retry-after", secs.into());
        }
        return (status, headers, "scripted failure").into_response();
    }
    match serde_json::from_slice::<AgentBatch>(&body) {
        Ok(batch) => {
            let accepted = batch.events.len() as u32;
            state.batches.lock().unwrap().push(batch);
            axum::Json(IngestAck {
                accepted,
                duplicates: 0,
            })
            .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn poll(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verify(&state, COMMAND_POLL_PATH, &headers, &body) {
        return r.into_response();
    }
    if let Err(e) = serde_json::from_slice::<PollRequest>(&body) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    state.polls.fetch_add(1, Ordering::SeqCst);
    // A short long-poll: hold the request until commands arrive or 300 ms pass.
    for _ in 0..15 {
        let commands: Vec<_> = state.commands.lock().unwrap().drain(..).collect();
        if !commands.is_empty() {
            return axum::Json(PollResponse { commands }).into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    axum::Json(PollResponse {
        commands: Vec::new(),
    })
    .into_response()
}

async fn result(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verify(&state, COMMAND_RESULT_PATH, &headers, &body) {
        return r.into_response();
    }
    match serde_json::from_slice::<CommandResult>(&body) {
        Ok(r) => {
            state.results.lock().unwrap().push(r);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// Parses an agent config from YAML text with the test secret.
pub fn config(text: &str) -> fincorp_agent::config::AgentConfig {
    let doc = fincorp_api::yaml::Document::from_text(std::path::Path::new("agent.yaml"), text);
    fincorp_agent::config::from_document(
        &doc,
        &|_: &fincorp_api::config::SecretSource, _: &std::path::Path| {
            Ok(fincorp_api::config::Secret::new(SECRET))
        },
    )
    .unwrap_or_else(|d| panic!("test config is invalid:\n{d}"))
}
