//! Router tests without sockets (`tower::ServiceExt::oneshot`): the Table API
//! shapes, the error bodies and the fault endpoints.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;

const USER: &str = "fincorp-operator";
const PASSWORD: &str = "s3cret-pass";

fn auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn call_as(
    state: &SimState,
    method: &str,
    uri: &str,
    body: Option<&str>,
    authorization: Option<String>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/json");
    if let Some(a) = authorization {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Body::from(body.unwrap_or("").to_owned()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn call(state: &SimState, method: &str, uri: &str, body: Option<&str>) -> Reply {
    call_as(state, method, uri, body, Some(auth(USER, PASSWORD))).await
}

fn state() -> SimState {
    SimState::new(USER, PASSWORD)
}

async fn create(state: &SimState, body: Value) -> Value {
    let reply = call(
        state,
        "POST",
        "/api/now/table/incident",
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()["result"].clone()
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_servicenows_401_body() {
    let state = state();
    for authorization in [
        None,
        Some(auth(USER, "wrong")),
        Some(auth("admin", PASSWORD)),
        Some("Bearer x".into()),
    ] {
        let reply = call_as(
            &state,
            "GET",
            "/api/now/table/incident",
            None,
            authorization,
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.json(),
            json!({"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"})
        );
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    assert!(state.requests().iter().all(|r| r.status == 401));
}

#[tokio::test]
async fn post_creates_a_record_with_servicenow_fields_all_strings() {
    let state = state();
    let result = create(
        &state,
        json!({"short_description": "CPU high", "correlation_id": "c-1", "impact": 1, "urgency": "2", "u_flag": true}),
    )
    .await;
    let sys_id = result["sys_id"].as_str().unwrap();
    assert_eq!(sys_id.len(), 32);
    assert!(
        sys_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(result["number"], "INC0010001");
    assert_eq!(result["state"], "1");
    assert_eq!(result["active"], "true");
    assert_eq!(result["impact"], "1");
    assert_eq!(result["urgency"], "2");
    assert_eq!(result["priority"], "2");
    assert_eq!(result["u_flag"], "true");
    assert_eq!(result["sys_created_by"], USER);
    assert_eq!(result["work_notes"], "");
    for field in ["sys_created_on", "sys_updated_on", "opened_at"] {
        let t = result[field].as_str().unwrap();
        assert_eq!(t.len(), 19, "{field}: {t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
        assert_eq!(&t[13..14], ":");
    }
    for (k, v) in result.as_object().unwrap() {
        assert!(v.is_string(), "{k} is {v}");
    }
    let second = create(&state, json!({"short_description": "b"})).await;
    assert_eq!(second["number"], "INC0010002");
}

#[tokio::test]
async fn post_sends_a_location_header_for_the_new_record() {
    let state = state();
    let reply = call(&state, "POST", "/api/now/table/incident", Some("{}")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let sys_id = reply.json()["result"]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let location = reply.headers[header::LOCATION].to_str().unwrap();
    assert!(
        location.ends_with(&format!("/api/now/table/incident/{sys_id}")),
        "{location}"
    );
}

#[tokio::test]
async fn get_by_sys_id_returns_the_record_or_servicenows_404_body() {
    let state = state();
    let created = create(&state, json!({"short_description": "x"})).await;
    let sys_id = created["sys_id"].as_str().unwrap();
    let reply = call(
        &state,
        "GET",
        &format!("/api/now/table/incident/{sys_id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["result"]["number"], created["number"]);

    let reply = call(
        &state,
        "GET",
        "/api/now/table/incident/0123456789abcdef0123456789abcdef",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json(),
        json!({"error":{"message":"No Record found","detail":"Record doesn't exist or ACL restricts the record retrieval"},"status":"failure"})
    );
    let reply = call(&state, "PATCH", "/api/now/table/incident/nope", Some("{}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_json_and_unknown_tables_are_400_with_an_error_body() {
    let state = state();
    let reply = call(
        &state,
        "POST",
        "/api/now/table/incident",
        Some("{\"short_description\": "),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body["status"], "failure");
    assert_eq!(body["error"]["message"], "Exception while reading request");
    assert!(
        body["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(state.incidents().is_empty());

    let reply = call(&state, "GET", "/api/now/table/cmdb_ci", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"error":{"message":"Invalid table cmdb_ci","detail":null},"status":"failure"})
    );
    let reply = call(&state, "POST", "/api/now/table/cmdb_ci", Some("{}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(
        &state,
        "POST",
        "/api/now/table/sys_journal_field",
        Some("{}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn resolving_without_close_fields_is_a_403_data_policy_exception() {
    let state = state();
    let created = create(&state, json!({"short_description": "x"})).await;
    let uri = format!(
        "/api/now/table/incident/{}",
        created["sys_id"].as_str().unwrap()
    );
    let reply = call(
        &state,
        "PATCH",
        &uri,
        Some(r#"{"state":"6","close_notes":"done"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let body = reply.json();
    assert_eq!(body["status"], "failure");
    assert_eq!(body["error"]["message"], "Operation Failed");
    let detail = body["error"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("Data Policy Exception") && detail.contains("Resolution code"),
        "{detail}"
    );
    assert_eq!(state.incidents()[0]["state"], "1");

    let reply = call(
        &state,
        "PUT",
        &uri,
        Some(r#"{"state":"6","close_code":"Solved (Permanently)","close_notes":"done"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let result = &reply.json()["result"];
    assert_eq!(result["state"], "6");
    assert_eq!(result["active"], "false");
    assert_eq!(result["resolved_at"].as_str().unwrap().len(), 19);
    assert_eq!(
        result["short_description"], "x",
        "PUT updates only the fields given"
    );
}

#[tokio::test]
async fn list_filters_orders_pages_and_projects() {
    let state = state();
    for (i, text) in ["disk full", "CPU high", "Disk slow", "memory"]
        .iter()
        .enumerate()
    {
        create(&state, json!({"short_description": text, "correlation_id": format!("c-{i}"), "impact": (i % 3) + 1})).await;
    }
    let get = |query: &str| {
        let state = state.clone();
        let uri = format!("/api/now/table/incident?{query}");
        async move { call(&state, "GET", &uri, None).await }
    };
    let numbers = |reply: &Reply| -> Vec<String> {
        reply.json()["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["number"].as_str().unwrap_or("").to_owned())
            .collect()
    };

    let reply = get("sysparm_query=short_descriptionLIKEdisk%5EORDERBYDESCnumber").await;
    assert_eq!(numbers(&reply), ["INC0010003", "INC0010001"]);
    assert_eq!(reply.headers["x-total-count"], "2");
    let reply = get("sysparm_query=correlation_id%3Dc-1%5Eactive%3Dtrue&sysparm_limit=1").await;
    assert_eq!(numbers(&reply), ["INC0010002"]);
    let reply =
        get("sysparm_query=impact!%3D1%5EORDERBYnumber&sysparm_offset=1&sysparm_limit=5").await;
    assert_eq!(numbers(&reply), ["INC0010003"]);
    let reply = get("sysparm_query=short_descriptionSTARTSWITHcpu").await;
    assert_eq!(numbers(&reply), ["INC0010002"]);
    let reply = get("sysparm_query=correlation_id%3Dnobody").await;
    assert_eq!(reply.json(), json!({"result": []}));

    let reply = get("sysparm_fields=number,state&sysparm_limit=1").await;
    let row = reply.json()["result"][0].clone();
    assert_eq!(row, json!({"number": "INC0010001", "state": "1"}));

    let reply = get("sysparm_query=a%3D1%5EORb%3D2").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("OR conditions")
    );
    let reply = get("sysparm_limit=ten").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn work_notes_append_to_the_journal_and_read_back_newest_first() {
    let state = state();
    let created = create(
        &state,
        json!({"short_description": "x", "work_notes": "first note"}),
    )
    .await;
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["work_notes"], "",
        "journal fields read as empty by default"
    );
    let uri = format!("/api/now/table/incident/{sys_id}");
    let reply = call(
        &state,
        "PATCH",
        &uri,
        Some(r#"{"work_notes":"second note"}"#),
    )
    .await;
    assert_eq!(reply.json()["result"]["work_notes"], "");
    call(
        &state,
        "PATCH",
        &uri,
        Some(r#"{"comments":"for the caller"}"#),
    )
    .await;

    let reply = call(
        &state,
        "GET",
        &format!("{uri}?sysparm_display_value=true"),
        None,
    )
    .await;
    let notes = reply.json()["result"]["work_notes"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = notes
        .find(&format!(" - {USER} (Work notes)\nsecond note\n\n"))
        .expect(&notes);
    let first = notes
        .find(&format!(" - {USER} (Work notes)\nfirst note\n\n"))
        .expect(&notes);
    assert!(second < first, "newest first: {notes:?}");
    assert!(notes.ends_with("first note\n\n"));
    assert_eq!(reply.json()["result"]["state"], "New");

    let reply = call(
        &state,
        "GET",
        &format!("/api/now/table/sys_journal_field?sysparm_query=element_id%3D{sys_id}%5Eelement%3Dwork_notes"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let rows = reply.json()["result"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["value"], "first note");
    assert_eq!(rows[1]["value"], "second note");
    for row in &rows {
        assert_eq!(row["element_id"], sys_id.as_str());
        assert_eq!(row["element"], "work_notes");
        assert_eq!(row["sys_created_by"], USER);
        assert_eq!(row["sys_created_on"].as_str().unwrap().len(), 19);
    }
}

#[tokio::test]
async fn faults_inject_429_5xx_and_hibernation_then_clear() {
    let state = state();
    let reply = call_as(
        &state,
        "POST",
        "/sim/faults",
        Some(r#"{"rate_limit_next":1,"retry_after_s":7,"fail_next_5xx":1,"fail_status":503}"#),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let reply = call(&state, "GET", "/api/now/table/incident", None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers[header::RETRY_AFTER], "7");
    assert_eq!(reply.json()["status"], "failure");
    let reply = call(&state, "GET", "/api/now/table/incident", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "7");
    let reply = call(&state, "GET", "/api/now/table/incident", None).await;
    assert_eq!(reply.status, StatusCode::OK);

    call_as(
        &state,
        "POST",
        "/sim/faults",
        Some(r#"{"hibernate":true}"#),
        None,
    )
    .await;
    let reply = call(&state, "POST", "/api/now/table/incident", Some("{}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(reply.text.contains("hibernating"));
    assert!(state.incidents().is_empty());

    let reply = call_as(&state, "POST", "/sim/faults", Some("{}"), None).await;
    assert_eq!(reply.json()["hibernate"], false);
    let reply = call_as(&state, "GET", "/sim/health", None, None).await;
    assert_eq!(reply.json(), json!({"status": "ok", "incidents": 0}));

    for bad in [r#"{"hibernat":true}"#, r#"{"fail_status":404}"#, "nope"] {
        let reply = call_as(&state, "POST", "/sim/faults", Some(bad), None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn the_request_log_keeps_bodies_as_sent_and_never_the_credentials() {
    let state = state();
    create(&state, json!({"impact": 2})).await;
    let log = state.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/api/now/table/incident");
    assert_eq!(log[0].body, Some(json!({"impact": 2})));
    assert_eq!(log[0].accept.as_deref(), Some("application/json"));
    assert!(log[0].has_authorization);
    assert_eq!(log[0].status, 201);
    assert!(!format!("{log:?}").contains(PASSWORD));
}

async fn token_request(state: &SimState, content_type: &str, body: &str) -> Reply {
    let request = Request::builder()
        .method("POST")
        .uri("/oauth_token.do")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

fn oauth_state(lifetime: std::time::Duration) -> SimState {
    let state = state();
    state.enable_oauth(OAuthApp {
        access_token_lifetime: lifetime,
        ..OAuthApp::new("client-1", "client-secret")
    });
    state
}

#[tokio::test]
async fn the_token_endpoint_issues_bearer_tokens_the_table_api_accepts() {
    let state = oauth_state(std::time::Duration::from_secs(1800));
    let reply = token_request(
        &state,
        FORM,
        &format!("grant_type=password&client_id=client-1&client_secret=client-secret&username={USER}&password={PASSWORD}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let grant = reply.json();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["scope"], "useraccount");
    assert_eq!(grant["expires_in"], 1800);
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(access, refresh);

    let reply = call_as(
        &state,
        "POST",
        "/api/now/table/incident",
        Some(r#"{"short_description":"via oauth"}"#),
        Some(format!("Bearer {access}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json()["result"]["sys_created_by"], USER);

    let reply = token_request(
        &state,
        FORM,
        &format!("grant_type=refresh_token&client_id=client-1&client_secret=client-secret&refresh_token={refresh}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["refresh_token"], refresh.as_str());
    assert_ne!(reply.json()["access_token"], access.as_str());

    let log = state.requests();
    assert_eq!(log[0].path, "/oauth_token.do");
    assert!(!format!("{log:?}").contains(PASSWORD));
    assert!(!format!("{log:?}").contains("client-secret"));
    assert!(!format!("{log:?}").contains(&refresh));
    assert_eq!(log[1].auth_scheme.as_deref(), Some("Bearer"));
}

#[tokio::test]
async fn refused_grants_are_401_access_denied_and_malformed_ones_400() {
    let state = oauth_state(std::time::Duration::from_secs(1800));
    let denied = json!({"error_description": "access_denied", "error": "server_error"});
    for body in [
        format!("grant_type=password&client_id=client-1&client_secret=wrong&username={USER}&password={PASSWORD}"),
        format!("grant_type=password&client_id=other&client_secret=client-secret&username={USER}&password={PASSWORD}"),
        format!("grant_type=password&client_id=client-1&client_secret=client-secret&username={USER}&password=wrong"),
        "grant_type=refresh_token&client_id=client-1&client_secret=client-secret&refresh_token=unknown".to_owned(),
        "grant_type=refresh_token&client_id=client-1&client_secret=client-secret".to_owned(),
    ] {
        let reply = token_request(&state, FORM, &body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(reply.json(), denied, "{body}");
    }
    for (content_type, body, error) in [
        (
            "application/json",
            r#"{"grant_type":"password"}"#,
            "invalid_request",
        ),
        (
            FORM,
            "client_id=client-1&client_secret=client-secret",
            "invalid_request",
        ),
        (
            FORM,
            "grant_type=client_credentials&client_id=client-1&client_secret=client-secret",
            "unsupported_grant_type",
        ),
    ] {
        let reply = token_request(&state, content_type, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.json()["error"], error, "{body}");
    }
    // Without a registered application every grant is refused.
    let plain = SimState::new(USER, PASSWORD);
    let reply = token_request(
        &plain,
        FORM,
        &format!("grant_type=password&client_id=client-1&client_secret=client-secret&username={USER}&password={PASSWORD}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_or_revoked_token_gets_the_401_body() {
    let state = oauth_state(std::time::Duration::from_millis(1));
    let reply = token_request(
        &state,
        FORM,
        &format!("grant_type=password&client_id=client-1&client_secret=client-secret&username={USER}&password={PASSWORD}"),
    )
    .await;
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let reply = call_as(
        &state,
        "GET",
        "/api/now/table/incident",
        None,
        Some(format!("Bearer {access}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"]["message"], "User Not Authenticated");
}

#[tokio::test]
async fn event_management_stores_records_as_text_and_answers_like_an_instance() {
    let state = state();
    let body = json!({"records": [
        {"source": "FINCORP", "node": "ny-01", "type": "CPU", "severity": "1", "additional_info": "{\"a\":1}", "time_of_event": "2026-11-22 10:00:00"},
        {"source": "FINCORP", "node": "ny-02", "severity": 5, "additional_info": {"b": 2}}
    ]});
    let reply = call(
        &state,
        "POST",
        "/api/global/em/jsonv2",
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"result": {"Default Bulk Endpoint": "2 events were inserted"}})
    );
    let events = state.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["additional_info"], "{\"a\":1}");
    assert_eq!(events[1]["severity"], "5");
    assert_eq!(events[1]["additional_info"], "{\"b\":2}");
    let reply = call(
        &state,
        "GET",
        "/api/now/table/em_event?sysparm_query=node%3Dny-02",
        None,
    )
    .await;
    assert_eq!(reply.json()["result"][0]["severity"], "5");
    let reply = call(&state, "POST", "/api/now/table/em_event", Some("{}")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = call_as(&state, "GET", "/sim/em/events", None, None).await;
    assert_eq!(reply.json()["result"].as_array().unwrap().len(), 2);

    for bad in [r#"{"record": []}"#, r#"{"records": [1]}"#, "not json"] {
        let reply = call(&state, "POST", "/api/global/em/jsonv2", Some(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["status"], "failure");
    }
    let reply = call_as(
        &state,
        "POST",
        "/api/global/em/jsonv2",
        Some(&body.to_string()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(state.events().len(), 2);
}
