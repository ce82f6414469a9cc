//! OAuth: the password grant, bearer tokens on the Table API, renewal
//! before expiry and after a 401, the fall-back from a refused refresh to
//! the password grant, refused grants, faults on the token endpoint, and
//! one grant shared by concurrent callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fincorp_sim::servicenow::Faults;

use super::*;

const LONG: Duration = Duration::from_secs(1800);

fn schemes(
    sim: &fincorp_sim::servicenow::RunningSim,
) -> Vec<(String, String, Option<String>, u16)> {
    sim.state
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.auth_scheme, r.status))
        .collect()
}

fn row(
    method: &str,
    path: &str,
    scheme: Option<&str>,
    status: u16,
) -> (String, String, Option<String>, u16) {
    (
        method.into(),
        path.into(),
        scheme.map(str::to_owned),
        status,
    )
}

const TOKEN: &str = "/oauth_token.do";
const TABLE: &str = "/api/now/table/incident";

#[tokio::test]
async fn the_password_grant_gets_a_bearer_token_used_on_the_table_api() {
    let (sim, client) = start_oauth(LONG).await;
    assert!(client.uses_oauth());
    let first = client
        .ensure_incident(&incident("inc-oauth"))
        .await
        .unwrap();
    assert!(first.created);
    let again = client
        .ensure_incident(&incident("inc-oauth"))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        schemes(&sim),
        [
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
            row("POST", TABLE, Some("Bearer"), 201),
            row("GET", TABLE, Some("Bearer"), 200),
        ],
        "one grant, then the token is reused; no basic auth on the API"
    );
    let token_request = &sim.state.requests()[0];
    assert_eq!(
        token_request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        token_request.body,
        Some(serde_json::json!({
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "client_secret": "<redacted>",
            "username": USER,
            "password": "<redacted>",
        })),
        "the simulator logs the form with secrets redacted; the client sent them"
    );
    let plan = client.plan_ensure(&incident("inc-oauth-2"));
    assert!(
        plan.iter()
            .all(|p| p.header("Authorization") == Some("Bearer <redacted>"))
    );
    assert!(!format!("{client:?}").contains(CLIENT_SECRET));
    assert!(!format!("{client:?}").contains(PASSWORD));
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires_without_a_401() {
    // A 3 s token is renewed 0.3 s early: at 2.8 s the instance still
    // accepts it, yet the client asks for a new one first.
    let (sim, client) = start_oauth(Duration::from_secs(3)).await;
    client.find_active("inc-fresh").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2800)).await;
    client.find_active("inc-fresh").await.unwrap();
    assert_eq!(grants(&sim), ["password", "refresh_token"]);
    assert_eq!(
        schemes(&sim),
        [
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
        ]
    );
    let refresh = &sim.state.requests()[2];
    let body = refresh.body.as_ref().unwrap();
    assert_eq!(body["refresh_token"], "<redacted>");
    assert!(
        body.get("password").is_none(),
        "a refresh grant sends no password"
    );
}

#[tokio::test]
async fn a_token_that_expired_while_idle_is_renewed_before_the_next_call() {
    // A 1 s token, then 1.5 s of quiet: the instance would refuse it now.
    let (sim, client) = start_oauth(Duration::from_secs(1)).await;
    client.find_active("inc-idle").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sim.state.live_access_tokens(),
        0,
        "the instance has expired it"
    );
    client.ensure_incident(&incident("inc-idle")).await.unwrap();
    assert_eq!(grants(&sim), ["password", "refresh_token"]);
    assert_eq!(
        schemes(&sim),
        [
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
            row("POST", TABLE, Some("Bearer"), 201),
        ],
        "renewed first: no request went out with the expired token"
    );
}

#[tokio::test]
async fn a_401_with_a_stale_token_renews_it_once_and_resends() {
    let (sim, client) = start_oauth(LONG).await;
    client.find_active("inc-stale").await.unwrap();
    sim.state.revoke_access_tokens();
    sim.state.clear_requests();
    assert_eq!(client.find_active("inc-stale").await.unwrap(), None);
    assert_eq!(
        schemes(&sim),
        [
            row("GET", TABLE, Some("Bearer"), 401),
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
        ]
    );
    assert_eq!(grants(&sim), ["refresh_token"]);
}

#[tokio::test]
async fn a_refused_refresh_token_falls_back_to_the_password_grant() {
    let (sim, client) = start_oauth(LONG).await;
    client.find_active("inc-refresh").await.unwrap();
    sim.state.revoke_access_tokens();
    sim.state.revoke_refresh_tokens();
    sim.state.clear_requests();
    client.find_active("inc-refresh").await.unwrap();
    assert_eq!(
        schemes(&sim),
        [
            row("GET", TABLE, Some("Bearer"), 401),
            row("POST", TOKEN, None, 401),
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
        ]
    );
    assert_eq!(grants(&sim), ["refresh_token", "password"]);
}

#[tokio::test]
async fn refresh_and_password_both_refused_is_a_clear_oauth_error() {
    let (sim, client) = start_oauth(LONG).await;
    client.find_active("inc-locked-out").await.unwrap();
    sim.state.revoke_access_tokens();
    sim.state.revoke_refresh_tokens();
    sim.state.set_password("rotated-by-the-security-team");
    let err = client.find_active("inc-locked-out").await.unwrap_err();
    match &err {
        ServiceNowError::OAuth {
            grant,
            status,
            message,
            url,
        } => {
            assert_eq!(*grant, "password");
            assert_eq!(*status, 401);
            assert!(url.ends_with("/oauth_token.do"), "{url}");
            assert!(
                message.starts_with("access_denied (server_error)"),
                "{message}"
            );
            assert!(
                message.contains("the refresh_token grant before it was refused too (HTTP 401"),
                "{message}"
            );
        }
        other => panic!("expected OAuth, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("servicenow oauth password grant at "),
        "{text}"
    );
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(err.status(), Some(401));
    // The refused grants are not retried.
    assert_eq!(grants(&sim), ["password", "refresh_token", "password"]);
}

#[tokio::test]
async fn a_wrong_client_secret_is_an_oauth_error_sent_once() {
    let (sim, _) = start_oauth(LONG).await;
    let client = oauth_client(&sim.url(), "not-the-secret");
    let err = client
        .ensure_incident(&incident("inc-x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ServiceNowError::OAuth {
                grant: "password",
                status: 401,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(schemes(&sim), [row("POST", TOKEN, None, 401)]);
    assert!(sim.state.incidents().is_empty());
}

#[tokio::test]
async fn the_token_endpoint_gets_retry_after_backoff_and_hibernation_handling() {
    let (sim, client) = start_oauth(LONG).await;
    sim.state.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_s: 1,
        fail_next_5xx: 2,
        fail_status: 500,
        path_prefix: Some(TOKEN.into()),
        ..Faults::default()
    });
    let started = Instant::now();
    client.find_active("inc-busy").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        schemes(&sim),
        [
            row("POST", TOKEN, None, 429),
            row("POST", TOKEN, None, 500),
            row("POST", TOKEN, None, 500),
            row("POST", TOKEN, None, 200),
            row("GET", TABLE, Some("Bearer"), 200),
        ]
    );

    let (sim, client) = start_oauth(LONG).await;
    sim.state.set_faults(Faults {
        hibernate: true,
        ..Faults::default()
    });
    let err = client.find_active("inc-asleep").await.unwrap_err();
    match &err {
        ServiceNowError::Hibernating {
            method,
            url,
            status,
            ..
        } => {
            assert_eq!((method.as_str(), *status), ("POST", 200));
            assert!(url.ends_with("/oauth_token.do"), "{url}");
        }
        other => panic!("expected Hibernating, got {other:?}"),
    }
    assert_eq!(sim.state.requests().len(), 1, "hibernation is not retried");

    let (sim, client) = start_oauth(LONG).await;
    sim.state.set_faults(Faults {
        fail_next_5xx: 100,
        fail_status: 503,
        retry_after_s: 0,
        path_prefix: Some(TOKEN.into()),
        ..Faults::default()
    });
    let err = client.find_active("inc-down").await.unwrap_err();
    assert!(
        matches!(&err, ServiceNowError::Http { status: 503, method, .. } if method == "POST"),
        "{err}"
    );
    assert_eq!(sim.state.requests().len(), 4, "max_attempts is 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_grant_and_open_exactly_one_ticket() {
    let (sim, client) = start_oauth(LONG).await;
    sim.state.set_faults(Faults {
        delay_ms: 20,
        ..Faults::default()
    });
    let created = std::sync::Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            let new = NewIncident {
                work_notes: Some(format!("caller {i}")),
                ..incident("inc-oauth-race")
            };
            let ensured = client.ensure_incident(&new).await.unwrap();
            if ensured.created {
                created.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for i in 0..10 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.find_active(&format!("other-{i}")).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let with_key = sim
        .state
        .incidents()
        .into_iter()
        .filter(|r| r["correlation_id"] == "inc-oauth-race")
        .count();
    assert_eq!(with_key, 1, "duplicate tickets");
    assert_eq!(created.load(Ordering::SeqCst), 1);
    assert_eq!(
        grants(&sim),
        ["password"],
        "one grant for 30 concurrent callers"
    );
    assert_eq!(sim.state.live_access_tokens(), 1);
}
