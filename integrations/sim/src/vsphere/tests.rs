//! Router tests without sockets (`tower::ServiceExt::oneshot`): sessions,
//! the VM calls, vSphere's status codes and error bodies, and the fault
//! endpoint.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;

const USER: &str = "fincorp-automation@vsphere.local";
const PASSWORD: &str = "vc-s3cret";

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn error_type(&self) -> String {
        self.json()["error_type"].as_str().unwrap_or("").to_owned()
    }
}

fn state() -> SimState {
    SimState::new(USER, PASSWORD, Inventory::default())
}

async fn send(
    state: &SimState,
    method: &str,
    uri: &str,
    session: Option<&str>,
    basic: Option<(&str, &str)>,
    body: Option<Value>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/json");
    if let Some(id) = session {
        builder = builder.header("vmware-api-session-id", id);
    }
    if let Some((u, p)) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        builder = builder.header(header::AUTHORIZATION, format!("Basic {token}"));
    }
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let response = router(state.clone())
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn login(state: &SimState) -> String {
    let reply = send(
        state,
        "POST",
        "/api/session",
        None,
        Some((USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json().as_str().unwrap().to_owned()
}

async fn call(
    state: &SimState,
    session: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> Reply {
    send(state, method, uri, Some(session), None, body).await
}

#[tokio::test]
async fn login_returns_a_session_id_and_calls_need_it() {
    let state = state();
    let id = login(&state).await;
    assert_eq!(id.len(), 32);
    let reply = call(&state, &id, "GET", "/api/session", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["user"], USER);
    assert!(
        reply.json()["created_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let unauthenticated = json!({"error_type": "UNAUTHENTICATED", "messages": [{"args": [], "default_message": "Authentication required.", "id": "com.vmware.vapi.endpoint.method.authentication.required"}]});
    for reply in [
        send(
            &state,
            "POST",
            "/api/session",
            None,
            Some((USER, "wrong")),
            None,
        )
        .await,
        send(&state, "POST", "/api/session", None, None, None).await,
        send(&state, "GET", "/api/vcenter/vm", None, None, None).await,
        call(&state, "not-a-session", "GET", "/api/vcenter/vm", None).await,
        // Basic auth is for login only.
        send(
            &state,
            "GET",
            "/api/vcenter/vm",
            None,
            Some((USER, PASSWORD)),
            None,
        )
        .await,
    ] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json(), unauthenticated);
    }

    let reply = call(&state, &id, "DELETE", "/api/session", None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = call(&state, &id, "GET", "/api/vcenter/vm", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "logged out");
    let log = state.requests();
    assert!(
        !format!("{log:?}").contains(&id),
        "session ids are not logged"
    );
    assert!(!format!("{log:?}").contains(PASSWORD));
    assert_eq!(log[0].auth_scheme.as_deref(), Some("Basic"));
    assert!(log[1].has_session);
}

#[tokio::test]
async fn sessions_expire_after_the_idle_timeout() {
    let state = state();
    state.set_session_idle_timeout(Duration::from_millis(50));
    let id = login(&state).await;
    assert_eq!(
        call(&state, &id, "GET", "/api/vcenter/vm", None)
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let reply = call(&state, &id, "GET", "/api/vcenter/vm", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_type(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn the_vm_list_is_filtered_and_shaped_like_vsphere() {
    let state = state();
    let id = login(&state).await;
    let reply = call(
        &state,
        &id,
        "GET",
        "/api/vcenter/vm?names=core-standby-london",
        None,
    )
    .await;
    assert_eq!(
        reply.json(),
        json!([{"vm": "vm-2001", "name": "core-standby-london", "power_state": "POWERED_OFF", "cpu_count": 8, "memory_size_MiB": 32768}])
    );
    let reply = call(
        &state,
        &id,
        "GET",
        "/api/vcenter/vm?names=core-primary-ny&names=crm-web-ny-01",
        None,
    )
    .await;
    assert_eq!(reply.json().as_array().unwrap().len(), 2);
    let reply = call(
        &state,
        &id,
        "GET",
        "/api/vcenter/vm?power_states=POWERED_OFF",
        None,
    )
    .await;
    let names: Vec<String> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["core-standby-london", "insurance-claims-ny-01"]);
    let reply = call(&state, &id, "GET", "/api/vcenter/vm?names=nobody", None).await;
    assert_eq!(reply.json(), json!([]));
    let reply = call(&state, &id, "GET", "/api/vcenter/vm", None).await;
    assert_eq!(reply.json().as_array().unwrap().len(), 6);
    for bad in [
        "/api/vcenter/vm?power_states=ON",
        "/api/vcenter/vm?folders=group-v3",
    ] {
        let reply = call(&state, &id, "GET", bad, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error_type(), "INVALID_ARGUMENT");
    }
}

#[tokio::test]
async fn vm_details_show_memory_increments_only_while_running_with_hot_add() {
    let state = state();
    let id = login(&state).await;
    let on = call(&state, &id, "GET", "/api/vcenter/vm/vm-1001", None)
        .await
        .json();
    assert_eq!(on["name"], "core-primary-ny");
    assert_eq!(on["power_state"], "POWERED_ON");
    assert_eq!(
        on["cpu"],
        json!({"count": 8, "cores_per_socket": 4, "hot_add_enabled": true, "hot_remove_enabled": false})
    );
    assert_eq!(
        on["memory"],
        json!({"size_MiB": 32768, "hot_add_enabled": true, "hot_add_increment_size_MiB": 128, "hot_add_limit_MiB": 131072})
    );
    let off = call(&state, &id, "GET", "/api/vcenter/vm/vm-2001", None)
        .await
        .json();
    assert_eq!(
        off["memory"],
        json!({"size_MiB": 32768, "hot_add_enabled": true})
    );
    let reply = call(&state, &id, "GET", "/api/vcenter/vm/vm-404", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_type(), "NOT_FOUND");
    assert_eq!(
        reply.json()["messages"][0]["default_message"],
        "Virtual machine with identifier 'vm-404' does not exist."
    );
    let reply = call(&state, &id, "GET", "/api/vcenter/vm/vm-1001/power", None).await;
    assert_eq!(reply.json(), json!({"state": "POWERED_ON"}));
    let reply = call(&state, &id, "GET", "/api/vcenter/vm/vm-2001/power", None).await;
    assert_eq!(
        reply.json(),
        json!({"state": "POWERED_OFF", "clean_power_off": true})
    );
    let reply = call(
        &state,
        &id,
        "GET",
        "/api/vcenter/vm/vm-1001/hardware/memory",
        None,
    )
    .await;
    assert_eq!(reply.json()["size_MiB"], 32768);
    let reply = call(&state, &id, "GET", "/api/vcenter/nope", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_type(), "OPERATION_NOT_FOUND");
}

#[tokio::test]
async fn power_operations_follow_the_state_machine() {
    let state = state();
    let id = login(&state).await;
    let power = |vm: &str, action: &str| format!("/api/vcenter/vm/{vm}/power?action={action}");
    let reply = call(&state, &id, "POST", &power("vm-2001", "start"), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        state.vm("vm-2001").unwrap().power_state,
        PowerState::PoweredOn
    );
    let reply = call(&state, &id, "POST", &power("vm-2001", "start"), None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_type(), "ALREADY_IN_DESIRED_STATE");
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "suspend"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "reset"), None)
            .await
            .error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE"
    );
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "suspend"), None)
            .await
            .error_type(),
        "ALREADY_IN_DESIRED_STATE"
    );
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "stop"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "stop"), None)
            .await
            .error_type(),
        "ALREADY_IN_DESIRED_STATE"
    );
    assert_eq!(
        call(&state, &id, "POST", &power("vm-2001", "suspend"), None)
            .await
            .error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE"
    );
    let reply = call(&state, &id, "POST", &power("vm-2001", "explode"), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_type(), "OPERATION_NOT_FOUND");
    let reply = call(&state, &id, "POST", &power("vm-404", "start"), None).await;
    assert_eq!(reply.error_type(), "NOT_FOUND");
}

#[tokio::test]
async fn cpu_changes_follow_the_documented_hot_add_rules() {
    let state = state();
    let id = login(&state).await;
    let cpu = |vm: &str| format!("/api/vcenter/vm/{vm}/hardware/cpu");
    // transproc-app-ny-01: on, CPU hot-add disabled.
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1003"),
        Some(json!({"count": 6})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_type(), "NOT_ALLOWED_IN_CURRENT_STATE");
    assert!(
        reply.json()["messages"][0]["default_message"]
            .as_str()
            .unwrap()
            .contains("hot-add is not enabled")
    );
    // core-primary-ny: on, hot-add enabled, 4 cores per socket.
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1001"),
        Some(json!({"count": 10})),
    )
    .await;
    assert_eq!(reply.error_type(), "INVALID_ARGUMENT");
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1001"),
        Some(json!({"count": 4})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE",
        "hot-remove disabled"
    );
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1001"),
        Some(json!({"count": 12})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(state.vm("vm-1001").unwrap().cpu_count, 12);
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1001"),
        Some(json!({"hot_add_enabled": false})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE",
        "flags only when off"
    );
    // crm-web-ny-01: on, hot-remove enabled: vSphere allows the decrease.
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-1004"),
        Some(json!({"count": 1})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // core-standby-london: off, anything within limits.
    let reply = call(
        &state,
        &id,
        "PATCH",
        &cpu("vm-2001"),
        Some(json!({"count": 2, "cores_per_socket": 2, "hot_remove_enabled": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let standby = state.vm("vm-2001").unwrap();
    assert_eq!(
        (
            standby.cpu_count,
            standby.cores_per_socket,
            standby.cpu_hot_remove_enabled
        ),
        (2, 2, true)
    );
    for bad in [json!({"count": 0}), json!({"count": 1000})] {
        let reply = call(&state, &id, "PATCH", &cpu("vm-2001"), Some(bad.clone())).await;
        assert_eq!(reply.error_type(), "INVALID_ARGUMENT", "{bad}");
    }
    for bad in [json!({"count": "four"}), json!({"cpus": 4})] {
        let reply = call(&state, &id, "PATCH", &cpu("vm-2001"), Some(bad.clone())).await;
        assert_eq!(reply.error_type(), "INVALID_REQUEST", "{bad}");
    }
}

#[tokio::test]
async fn memory_changes_follow_the_documented_hot_add_rules() {
    let state = state();
    let id = login(&state).await;
    let mem = |vm: &str| format!("/api/vcenter/vm/{vm}/hardware/memory");
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1003"),
        Some(json!({"size_MiB": 16384})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE",
        "hot-add disabled"
    );
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1001"),
        Some(json!({"size_MiB": 16384})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "NOT_ALLOWED_IN_CURRENT_STATE",
        "no online decrease"
    );
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1001"),
        Some(json!({"size_MiB": 32768 + 64})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "INVALID_ARGUMENT",
        "below the increment"
    );
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1001"),
        Some(json!({"size_MiB": 262144})),
    )
    .await;
    assert_eq!(reply.error_type(), "INVALID_ARGUMENT", "over the limit");
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1001"),
        Some(json!({"size_MiB": 32770})),
    )
    .await;
    assert_eq!(
        reply.error_type(),
        "INVALID_ARGUMENT",
        "not a multiple of 4"
    );
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-1001"),
        Some(json!({"size_MiB": 65536})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(state.vm("vm-1001").unwrap().memory_mib, 65536);
    let reply = call(
        &state,
        &id,
        "PATCH",
        &mem("vm-2001"),
        Some(json!({"size_MiB": 8192, "hot_add_enabled": false})),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "off: decrease and flag change are fine"
    );
}

#[tokio::test]
async fn faults_inject_throttling_errors_busy_vms_and_failed_hosts() {
    let state = state();
    let id = login(&state).await;
    let reply = send(&state, "POST", "/sim/faults", None, None, Some(json!({"rate_limit_next": 1, "retry_after_s": 3, "fail_next_5xx": 1, "fail_status": 503}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = call(&state, &id, "GET", "/api/vcenter/vm", None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers[header::RETRY_AFTER], "3");
    let reply = call(&state, &id, "GET", "/api/vcenter/vm", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_type(), "SERVICE_UNAVAILABLE");
    assert_eq!(reply.headers[header::RETRY_AFTER], "3");
    assert_eq!(
        call(&state, &id, "GET", "/api/vcenter/vm", None)
            .await
            .status,
        StatusCode::OK
    );

    state.set_faults(Faults {
        busy_next: 1,
        failed_hosts: vec!["esx-ny-01".into()],
        fail_power_on: vec!["core-standby-london".into()],
        ..Faults::default()
    });
    let reply = call(
        &state,
        &id,
        "POST",
        "/api/vcenter/vm/vm-1002/power?action=stop",
        None,
    )
    .await;
    assert_eq!(reply.error_type(), "RESOURCE_BUSY");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(
        &state,
        &id,
        "POST",
        "/api/vcenter/vm/vm-1002/power?action=stop",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "busy only once");
    let reply = call(&state, &id, "GET", "/api/vcenter/vm/vm-1001", None).await;
    assert_eq!(reply.error_type(), "RESOURCE_INACCESSIBLE");
    assert!(
        reply.json()["messages"][0]["default_message"]
            .as_str()
            .unwrap()
            .contains("esx-ny-01")
    );
    let reply = call(
        &state,
        &id,
        "GET",
        "/api/vcenter/vm?names=core-primary-ny",
        None,
    )
    .await;
    assert_eq!(
        reply.json().as_array().unwrap().len(),
        1,
        "the list still shows it"
    );
    let reply = call(
        &state,
        &id,
        "POST",
        "/api/vcenter/vm/vm-2001/power?action=start",
        None,
    )
    .await;
    assert_eq!(reply.error_type(), "UNABLE_TO_ALLOCATE_RESOURCE");
    assert_eq!(
        state.vm("vm-2001").unwrap().power_state,
        PowerState::PoweredOff
    );

    for bad in [json!({"fail_status": 404}), json!({"failed_host": []})] {
        let reply = send(&state, "POST", "/sim/faults", None, None, Some(bad.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let reply = send(&state, "GET", "/sim/health", None, None, None).await;
    assert_eq!(
        reply.json(),
        json!({"status": "ok", "vms": 6, "sessions": 1})
    );
    let reply = send(&state, "GET", "/sim/vms", None, None, None).await;
    assert_eq!(reply.json()["vms"][0]["name"], "core-primary-ny");
}
