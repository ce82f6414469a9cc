//! What every `/api/*` request passes through before its handler: body
//! size limit, the request log, injected 429/5xx, the session check
//! (`vmware-api-session-id`; login itself checks basic auth), and the
//! response delay.

use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::VapiError;
use super::state::{Injected, RecordedRequest, SimState};

/// The header that carries the session id.
pub(crate) const SESSION_HEADER: &str = "vmware-api-session-id";
/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The session a request carries, put there by the gate.
#[derive(Debug, Clone)]
pub(crate) struct SessionId(pub String);

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn injected_response(fault: Injected) -> Response {
    match fault {
        Injected::RateLimited { retry_after_s } => {
            VapiError::rate_limited(retry_after_s).into_response()
        }
        Injected::ServerError {
            status,
            retry_after_s,
        } => VapiError::injected(status, retry_after_s).into_response(),
    }
}

pub(crate) async fn gate(State(state): State<SimState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        accept: header_text(&parts.headers, header::ACCEPT.as_str()),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE.as_str()),
        has_session: parts.headers.contains_key(SESSION_HEADER),
        auth_scheme: header_text(&parts.headers, header::AUTHORIZATION.as_str())
            .and_then(|v| v.split_whitespace().next().map(str::to_owned)),
        body: None,
        status: 0,
    };
    let bytes: Bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let response = (
                StatusCode::PAYLOAD_TOO_LARGE,
                VapiError::invalid_request(format!(
                    "The request body is over {MAX_BODY_BYTES} bytes."
                ))
                .body()
                .to_string(),
            )
                .into_response();
            recorded.status = response.status().as_u16();
            state.record(recorded);
            return response;
        }
    };
    recorded.body = serde_json::from_slice(&bytes).ok();

    let login = parts.method == Method::POST && path == "/api/session";
    let response = if let Some(fault) = state.take_injected(&path) {
        injected_response(fault)
    } else if login {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    } else {
        let session = header_text(&parts.headers, SESSION_HEADER)
            .filter(|id| state.use_session(id).is_some());
        match session {
            Some(id) => {
                let mut request = Request::from_parts(parts, Body::from(bytes));
                request.extensions_mut().insert(SessionId(id));
                next.run(request).await
            }
            None => VapiError::unauthenticated().into_response(),
        }
    };
    recorded.status = response.status().as_u16();
    state.record(recorded);
    if let Some(delay) = state.take_delay() {
        tokio::time::sleep(delay.min(Duration::from_secs(600))).await;
    }
    response
}
