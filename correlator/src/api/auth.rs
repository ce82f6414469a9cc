//! Bearer tokens with roles for the REST API. Agent endpoints are signed
//! with HMAC instead; `/healthz` and the dashboard's static files are open.
//!
//! Tokens are never stored: the configuration holds the SHA-256 of each
//! (`api.tokens[].sha256`). A request's token is hashed and looked up; the
//! token's name becomes the actor of everything the request does (audit log,
//! timelines), whatever the body claims.
//!
//! Without any token configured the API is open, which the correlator only
//! allows on a loopback address (checked in `config`).

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Act on incidents, silences, approvals; ingest events; plan.
    Operator,
    /// Automation controls: the kill switch, breaker resets, reloads.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// The authenticated caller, for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// The role a request needs, or `None` when it needs no token.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    use fincorp_api::wire::{COMMAND_POLL_PATH, COMMAND_RESULT_PATH, INGEST_AGENT_PATH};
    if path == "/healthz"
        || [INGEST_AGENT_PATH, COMMAND_POLL_PATH, COMMAND_RESULT_PATH].contains(&path)
    {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        // The dashboard's page, script and style hold no data; what they
        // fetch from the API needs a token like any other request.
        if crate::dashboard::is_asset(path) {
            return None;
        }
        return Some(Role::Viewer);
    }
    if path.starts_with("/api/v1/automation/") || path == "/api/v1/playbooks/reload" {
        return Some(Role::Admin);
    }
    Some(Role::Operator)
}

fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Finds the token; comparing digests leaks nothing useful about a token.
pub fn authenticate(tokens: &[Token], presented: &str) -> Option<Identity> {
    let digest = sha256(presented);
    tokens
        .iter()
        .find(|t| t.sha256 == digest)
        .map(|t| Identity {
            name: t.name.clone(),
            role: t.role,
        })
}

/// The middleware: 401 without a valid token, 403 when its role is too low.
pub async fn require(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if state.tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("send `Authorization: Bearer <token>`");
    };
    let Some(identity) = authenticate(&state.tokens, presented) else {
        tracing::warn!(path = %req.uri().path(), "rejected an unknown API token");
        return unauthorized("unknown token");
    };
    if identity.role < needed {
        return ApiError::Forbidden(format!(
            "token {:?} is a {}; {} {} needs {}",
            identity.name,
            identity.role.as_str(),
            req.method(),
            req.uri().path(),
            needed.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

fn unauthorized(msg: &str) -> Response {
    let mut resp = ApiError::Unauthorized(msg.into()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Who is acting: the token's name when the request carried one, else what
/// the caller says (`by`), which must be 1 to 128 characters.
pub fn actor(
    identity: Option<&Identity>,
    claimed: Option<&str>,
    field: &str,
) -> Result<String, ApiError> {
    if let Some(i) = identity {
        return Ok(i.name.clone());
    }
    match claimed.map(str::trim) {
        Some(by) if !by.is_empty() && by.len() <= 128 => Ok(by.to_owned()),
        _ => Err(ApiError::BadRequest(format!(
            "{field}: say who you are (1 to 128 characters)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_route() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_role(&get, "/healthz"), None);
        assert_eq!(
            required_role(&post, fincorp_api::wire::INGEST_AGENT_PATH),
            None
        );
        assert_eq!(required_role(&get, "/api/v1/incidents"), Some(Role::Viewer));
        assert_eq!(required_role(&get, "/metrics"), Some(Role::Viewer));
        assert_eq!(
            required_role(&post, "/api/v1/incidents/fc-1/ack"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&post, "/api/v1/ingest/events"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/silences/s"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&post, "/api/v1/runs/r/approve"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&post, "/api/v1/automation/kill-switch"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role(&post, "/api/v1/playbooks/reload"),
            Some(Role::Admin)
        );
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn dashboard_assets_need_no_token_but_its_data_does() {
        for asset in ["/", "/ui/app.js", "/ui/style.css"] {
            assert_eq!(required_role(&Method::GET, asset), None, "{asset}");
            assert_eq!(required_role(&Method::HEAD, asset), None, "{asset}");
            // Writing to an asset path is not reading a static file.
            assert_eq!(
                required_role(&Method::POST, asset),
                Some(Role::Operator),
                "{asset}"
            );
        }
        for data in [
            "/api/v1/hosts",
            "/api/v1/incidents",
            "/api/v1/automation/kill-switch",
            "/ui/",
            "/ui/other.js",
            "/ui/../api/v1/incidents",
            "/index.html",
        ] {
            assert_eq!(
                required_role(&Method::GET, data),
                Some(Role::Viewer),
                "{data}"
            );
        }
    }

    #[test]
    fn tokens_match_by_digest_only() {
        let tokens = vec![Token {
            name: "ops".into(),
            role: Role::Operator,
            sha256: sha256("s3cret-token"),
        }];
        assert_eq!(
            authenticate(&tokens, "s3cret-token").map(|i| i.name),
            Some("ops".into())
        );
        assert_eq!(authenticate(&tokens, "s3cret-token "), None);
        assert_eq!(authenticate(&tokens, ""), None);
    }
}
