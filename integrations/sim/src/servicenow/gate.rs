//! What every vendor request (`/api/*`, `/oauth_token.do`) passes through
//! before reaching its handler: body size limit, the request log, injected
//! faults (hibernation, 429, 5xx, delay) and, on `/api/*`, authentication
//! (basic, or an OAuth bearer token).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::ApiError;
use super::state::{Injected, RecordedRequest, SimState};
use super::table::AuthUser;

/// The largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The page a hibernating personal developer instance answers with: 200,
/// HTML, whatever the request.
const HIBERNATING_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Instance Hibernating page</title></head>\
<body><h1>Your instance is hibernating</h1>\
<p>Sign in to the developer portal to wake up your instance.</p></body></html>\n";

/// The path of the OAuth token endpoint, which authenticates by its form.
pub(crate) const TOKEN_PATH: &str = "/oauth_token.do";

/// The form fields whose values are never logged.
const SECRET_FORM_FIELDS: &[&str] = &["password", "client_secret", "refresh_token"];

/// The scheme of the Authorization header (`Basic`, `Bearer`, ...).
fn auth_scheme(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.split_whitespace().next().map(str::to_owned)
}

/// The token of a `Bearer` Authorization header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A form body as a JSON object for the log, secrets redacted.
fn logged_form(bytes: &[u8]) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(bytes)
        .map(|(k, v)| {
            let v = if SECRET_FORM_FIELDS.contains(&k.as_ref()) {
                "<redacted>".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), serde_json::Value::String(v))
        })
        .collect();
    serde_json::Value::Object(fields)
}

/// The `user:password` pair of a `Basic` Authorization header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn injected_response(fault: Injected) -> Response {
    match fault {
        Injected::RateLimited { retry_after_s } => {
            let error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                Some("Too many requests for this user; retry after the Retry-After delay".into()),
            );
            with_retry_after(error.into_response(), retry_after_s)
        }
        Injected::ServerError {
            status,
            retry_after_s,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = ApiError::new(
                status,
                "Simulated server error",
                Some("fault injected by fincorp-sim".into()),
            );
            let response = error.into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                with_retry_after(response, retry_after_s)
            } else {
                response
            }
        }
    }
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Who a request authenticated as: basic credentials, or a live bearer
/// token.
fn authenticated_user(state: &SimState, headers: &HeaderMap) -> Option<String> {
    if let Some((user, password)) = basic_credentials(headers) {
        return state.authenticates(&user, &password).then_some(user);
    }
    let token = bearer_token(headers)?;
    state.bearer_user(&token, Instant::now())
}

/// The middleware in front of the Table API, Event Management and the OAuth
/// token endpoint.
pub(crate) async fn gate(State(state): State<SimState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        accept: header_text(&parts.headers, header::ACCEPT),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        has_authorization: parts.headers.contains_key(header::AUTHORIZATION),
        auth_scheme: auth_scheme(&parts.headers),
        body: None,
        status: 0,
    };
    let bytes: Bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let response = ApiError::too_large(MAX_BODY_BYTES).into_response();
            recorded.status = response.status().as_u16();
            state.record(recorded);
            return response;
        }
    };
    recorded.body = if path == TOKEN_PATH {
        Some(logged_form(&bytes))
    } else {
        serde_json::from_slice(&bytes).ok()
    };

    let response = if state.hibernating() {
        Html(HIBERNATING_PAGE).into_response()
    } else if path == TOKEN_PATH {
        match state.take_injected(&path) {
            Some(fault) => injected_response(fault),
            None => {
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
        }
    } else {
        match authenticated_user(&state, &parts.headers) {
            Some(user) => match state.take_injected(&path) {
                Some(fault) => injected_response(fault),
                None => {
                    let mut request = Request::from_parts(parts, Body::from(bytes));
                    request.extensions_mut().insert(AuthUser(user));
                    next.run(request).await
                }
            },
            None => ApiError::unauthenticated().into_response(),
        }
    };
    recorded.status = response.status().as_u16();
    state.record(recorded);
    // The request is applied and logged; only the answer is late.
    if let Some(delay) = state.take_delay(method.as_str()) {
        tokio::time::sleep(delay.min(Duration::from_secs(600))).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded_and_other_schemes_ignored() {
        let mut headers = HeaderMap::new();
        let token = STANDARD.encode("fincorp-operator:pa:ss");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("fincorp-operator".into(), "pa:ss".into()))
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&headers), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn bearer_tokens_and_schemes_are_read_and_forms_logged_without_secrets() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc123"),
        );
        assert_eq!(bearer_token(&headers).as_deref(), Some("abc123"));
        assert_eq!(auth_scheme(&headers).as_deref(), Some("Bearer"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
        let logged = logged_form(
            b"grant_type=password&client_id=c&client_secret=s3&username=u&password=p%40ss",
        );
        assert_eq!(
            logged,
            serde_json::json!({"grant_type": "password", "client_id": "c", "client_secret": "<redacted>", "username": "u", "password": "<redacted>"})
        );
    }
}
