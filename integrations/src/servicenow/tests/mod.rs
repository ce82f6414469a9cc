//! The ServiceNow client against the in-process simulator (`fincorp-sim`),
//! one module per area. Each test starts its own simulator on 127.0.0.1:0.

mod events;
mod mapping;
mod oauth;
mod table;

use std::time::Duration;

use fincorp_api::config::Secret;
use fincorp_sim::servicenow::{self as sim, OAuthApp, RecordedRequest, RunningSim, SimState};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

pub(super) const USER: &str = "fincorp-operator";
pub(super) const PASSWORD: &str = "correct-horse-battery";
pub(super) const CLIENT_ID: &str = "fincorp-ai-operator";
pub(super) const CLIENT_SECRET: &str = "oauth-client-secret-value";

pub(super) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

pub(super) fn client_with(url: &str, password: &str, timeout: Duration) -> ServiceNowClient {
    ServiceNowClient::new(ServiceNowConfig {
        url: url.to_owned(),
        username: USER.to_owned(),
        password: Secret::new(password),
        timeout,
    })
    .unwrap()
    .with_retry(fast_retry())
}

pub(super) async fn start() -> (RunningSim, ServiceNowClient) {
    let sim = sim::spawn(SimState::new(USER, PASSWORD)).await.unwrap();
    let client = client_with(&sim.url(), PASSWORD, Duration::from_secs(10));
    (sim, client)
}

/// A simulator with an OAuth application whose access tokens live
/// `lifetime`, and a client that uses it.
pub(super) async fn start_oauth(lifetime: Duration) -> (RunningSim, ServiceNowClient) {
    let state = SimState::new(USER, PASSWORD);
    state.enable_oauth(OAuthApp {
        access_token_lifetime: lifetime,
        ..OAuthApp::new(CLIENT_ID, CLIENT_SECRET)
    });
    let sim = sim::spawn(state).await.unwrap();
    let client = oauth_client(&sim.url(), CLIENT_SECRET);
    (sim, client)
}

pub(super) fn oauth_client(url: &str, client_secret: &str) -> ServiceNowClient {
    ServiceNowClient::with_options(
        ServiceNowConfig {
            url: url.to_owned(),
            username: USER.to_owned(),
            password: Secret::new(PASSWORD),
            timeout: Duration::from_secs(10),
        },
        ServiceNowOptions {
            oauth: Some(OAuthConfig {
                client_id: CLIENT_ID.to_owned(),
                client_secret: Secret::new(client_secret),
            }),
            retry: fast_retry(),
            ..ServiceNowOptions::default()
        },
    )
    .unwrap()
}

/// The full URL a recorded request was sent to.
pub(super) fn sent_url(sim: &RunningSim, r: &RecordedRequest) -> String {
    match &r.query {
        Some(q) => format!("{}{}?{q}", sim.url(), r.path),
        None => format!("{}{}", sim.url(), r.path),
    }
}

/// Asserts that a plan is, request for request, what the simulator saw:
/// method, URL, body, and the headers it can check (Accept, Content-Type,
/// the Authorization scheme; never the credential).
pub(super) fn assert_sent_as_planned(
    sim: &RunningSim,
    plan: &[PlannedRequest],
    sent: &[RecordedRequest],
) {
    assert_eq!(plan.len(), sent.len(), "plan {plan:#?}\nsent {sent:#?}");
    for (planned, sent) in plan.iter().zip(sent) {
        assert_eq!(planned.method, sent.method);
        assert_eq!(planned.url, sent_url(sim, sent));
        assert_eq!(planned.body, sent.body);
        assert_eq!(planned.header("Accept"), sent.accept.as_deref());
        assert_eq!(planned.header("Content-Type"), sent.content_type.as_deref());
        let scheme = planned
            .header("Authorization")
            .and_then(|v| v.split_whitespace().next());
        assert_eq!(scheme, sent.auth_scheme.as_deref());
        assert!(
            planned
                .header("Authorization")
                .is_some_and(|v| v.ends_with(" <redacted>")),
            "{planned:?}"
        );
    }
}

/// The `grant_type`s of the token requests the simulator saw, in order.
pub(super) fn grants(sim: &RunningSim) -> Vec<String> {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth_token.do")
        .map(|r| {
            r.body
                .as_ref()
                .and_then(|b| b["grant_type"].as_str())
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

pub(super) fn incident(correlation_id: &str) -> NewIncident {
    NewIncident {
        correlation_id: correlation_id.to_owned(),
        short_description: format!("FINCORP-APP-HFT-TEST CPU above 80% ({correlation_id})"),
        ..NewIncident::default()
    }
}

/// A GET straight to the simulator, as another ServiceNow user would read.
pub(super) async fn raw_get(sim: &RunningSim, path_and_query: &str) -> Value {
    let response = fincorp_api::http::client(Duration::from_secs(10))
        .get(format!("{}{path_and_query}", sim.url()))
        .basic_auth(USER, Some(PASSWORD))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

pub(super) fn statuses(sim: &RunningSim) -> Vec<(String, u16)> {
    sim.state
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect()
}

pub(super) fn pairs(list: &[(&str, u16)]) -> Vec<(String, u16)> {
    list.iter().map(|(m, s)| (m.to_string(), *s)).collect()
}

/// Serves one canned HTTP response to every connection.
pub(super) async fn canned_server(response: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

pub(super) fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
