//! `POST /oauth_token.do`: the OAuth token endpoint, password and refresh
//! grants, as ServiceNow's "OAuth API request parameters" describe it.

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::SimState;

/// ServiceNow's answer to any refused grant: wrong client, wrong user
/// credentials, unknown or expired refresh token.
fn access_denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error_description": "access_denied", "error": "server_error"})),
    )
        .into_response()
}

/// A malformed request, in RFC 6749 §5.2's shape (ServiceNow does not
/// document its own).
fn bad_request(error: &str, description: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error_description": description.into(), "error": error})),
    )
        .into_response()
}

/// The token endpoint.
pub(crate) async fn token(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_encoded {
        return bad_request(
            "invalid_request",
            "the request must be application/x-www-form-urlencoded",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let Some(grant_type) = form.get("grant_type") else {
        return bad_request("invalid_request", "grant_type is missing");
    };
    if !state.oauth_client_ok(field("client_id"), field("client_secret")) {
        tracing::info!(client_id = field("client_id"), "oauth client refused");
        return access_denied();
    }
    let now = Instant::now();
    let grant = match grant_type.as_str() {
        "password" => {
            let user = field("username");
            if !state.authenticates(user, field("password")) {
                tracing::info!(user, "oauth password grant refused");
                return access_denied();
            }
            state.issue_tokens(user, None, now)
        }
        "refresh_token" => {
            let refresh = field("refresh_token");
            match state.refresh_user(refresh, now) {
                Some(user) if !refresh.is_empty() => state.issue_tokens(&user, Some(refresh), now),
                _ => {
                    tracing::info!("oauth refresh grant refused");
                    return access_denied();
                }
            }
        }
        other => {
            return bad_request(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported"),
            );
        }
    };
    let Some(grant) = grant else {
        return access_denied();
    };
    tracing::info!(grant_type = %grant_type, expires_in = grant.expires_in, "oauth token issued");
    Json(json!({
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": grant.expires_in,
    }))
    .into_response()
}
