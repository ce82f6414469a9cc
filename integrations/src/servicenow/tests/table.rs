//! The Table API: idempotent creation, concurrency, retries, faults,
//! journal fields and dry-run plans, with basic auth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fincorp_sim::servicenow::Faults;
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn ensure_creates_an_incident_with_a_201_and_an_inc_number() {
    let (sim, client) = start().await;
    let ensured = client.ensure_incident(&incident("inc-1")).await.unwrap();
    assert!(ensured.created);
    let t = &ensured.ticket;
    assert!(
        t.number.starts_with("INC") && t.number.len() == 10,
        "{}",
        t.number
    );
    assert_eq!(t.number, "INC0010001");
    assert_eq!(t.sys_id.len(), 32);
    assert_eq!(t.state, "1");
    assert!(t.active);
    assert_eq!(t.correlation_id, "inc-1");
    assert!(t.short_description.contains("CPU above 80%"));
    assert_eq!(statuses(&sim), pairs(&[("GET", 200), ("POST", 201)]));
    assert_eq!(sim.state.incidents().len(), 1);
    assert_eq!(client.get(&t.sys_id).await.unwrap(), *t);
}

#[tokio::test]
async fn ensuring_twice_opens_one_ticket_and_appends_the_second_work_note() {
    let (sim, client) = start().await;
    let first = client
        .ensure_incident(&NewIncident {
            work_notes: Some("detected by agent".into()),
            ..incident("inc-2")
        })
        .await
        .unwrap();
    let second = client
        .ensure_incident(&NewIncident {
            work_notes: Some("reallocated CPU +20%".into()),
            ..incident("inc-2")
        })
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.ticket.sys_id, first.ticket.sys_id);
    assert_eq!(second.ticket.number, first.ticket.number);
    assert_eq!(sim.state.incidents().len(), 1);
    let notes: Vec<String> = sim
        .state
        .journal()
        .into_iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(notes, ["detected by agent", "reallocated CPU +20%"]);
    // The second call looked up, then patched; it did not POST.
    assert_eq!(
        statuses(&sim),
        pairs(&[("GET", 200), ("POST", 201), ("GET", 200), ("PATCH", 200)])
    );

    // Without work notes, the existing ticket is returned untouched.
    let third = client.ensure_incident(&incident("inc-2")).await.unwrap();
    assert!(!third.created);
    assert_eq!(sim.state.journal().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_ensures_for_one_key_open_exactly_one_ticket() {
    let (sim, client) = start().await;
    // Slow every answer a little, so unserialised callers would all see
    // "no ticket yet" before any POST lands.
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
                ..incident("inc-race")
            };
            let ensured = client.ensure_incident(&new).await.unwrap();
            if ensured.created {
                created.fetch_add(1, Ordering::SeqCst);
            }
            ensured.ticket.sys_id
        }));
    }
    let mut sys_ids = Vec::new();
    for task in tasks {
        sys_ids.push(task.await.unwrap());
    }
    let with_key: Vec<_> = sim
        .state
        .incidents()
        .into_iter()
        .filter(|r| r["correlation_id"] == "inc-race")
        .collect();
    assert_eq!(with_key.len(), 1, "duplicate tickets: {with_key:#?}");
    assert_eq!(created.load(Ordering::SeqCst), 1);
    assert!(sys_ids.iter().all(|s| *s == with_key[0]["sys_id"]));
    assert_eq!(
        sim.state.journal().len(),
        20,
        "one note from the create, 19 appended"
    );
    let posts = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let (sim, client) = start().await;
    sim.state.set_faults(Faults {
        rate_limit_next: 2,
        retry_after_s: 1,
        ..Faults::default()
    });
    let started = Instant::now();
    let ensured = client.ensure_incident(&incident("inc-429")).await.unwrap();
    let waited = started.elapsed();
    assert!(ensured.created);
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 1 twice, but only waited {waited:?}"
    );
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    assert_eq!(
        statuses(&sim),
        pairs(&[("GET", 429), ("GET", 429), ("GET", 200), ("POST", 201)])
    );
}

#[tokio::test]
async fn a_503_or_500_is_retried_then_succeeds() {
    for status in [503u16, 500] {
        let (sim, client) = start().await;
        sim.state.set_faults(Faults {
            fail_next_5xx: 2,
            fail_status: status,
            retry_after_s: 0,
            ..Faults::default()
        });
        let ensured = client.ensure_incident(&incident("inc-5xx")).await.unwrap();
        assert!(ensured.created);
        assert_eq!(
            statuses(&sim),
            pairs(&[
                ("GET", status),
                ("GET", status),
                ("GET", 200),
                ("POST", 201)
            ]),
            "status {status}"
        );
    }
}

#[tokio::test]
async fn a_create_whose_response_was_lost_is_found_again_not_repeated() {
    let (sim, _) = start().await;
    // The POST is applied but its answer comes after the client's timeout.
    let slow = client_with(&sim.url(), PASSWORD, Duration::from_millis(500));
    sim.state.set_faults(Faults {
        delay_ms: 2_000,
        delay_next: Some(1),
        delay_method: Some("POST".into()),
        ..Faults::default()
    });
    let ensured = slow
        .ensure_incident(&incident("inc-lost-response"))
        .await
        .unwrap();
    assert!(ensured.created, "the ticket did not exist before this call");
    let with_key: Vec<_> = sim
        .state
        .incidents()
        .into_iter()
        .filter(|r| r["correlation_id"] == "inc-lost-response")
        .collect();
    assert_eq!(
        with_key.len(),
        1,
        "a timed-out POST was repeated: {with_key:#?}"
    );
    assert_eq!(ensured.ticket.sys_id, with_key[0]["sys_id"]);
    assert_eq!(
        statuses(&sim),
        pairs(&[("GET", 200), ("POST", 201), ("GET", 200)])
    );
}

#[tokio::test]
async fn retries_run_out_into_an_http_error_carrying_servicenows_message() {
    let (sim, client) = start().await;
    sim.state.set_faults(Faults {
        fail_next_5xx: 100,
        fail_status: 500,
        ..Faults::default()
    });
    let err = client.find_active("inc-down").await.unwrap_err();
    match &err {
        ServiceNowError::Http {
            status,
            message,
            method,
            url,
        } => {
            assert_eq!(*status, 500);
            assert_eq!(
                message,
                "Simulated server error: fault injected by fincorp-sim"
            );
            assert_eq!(method, "GET");
            assert!(
                url.contains("/api/now/table/incident?sysparm_query="),
                "{url}"
            );
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert_eq!(sim.state.requests().len(), 4, "max_attempts is 4");
    assert_eq!(err.status(), Some(500));
}

#[tokio::test]
async fn a_hibernating_instance_is_an_error_not_a_success() {
    let (sim, client) = start().await;
    sim.state.set_faults(Faults {
        hibernate: true,
        ..Faults::default()
    });
    let err = client
        .ensure_incident(&incident("inc-sleepy"))
        .await
        .unwrap_err();
    match &err {
        ServiceNowError::Hibernating {
            status,
            content_type,
            ..
        } => {
            assert_eq!(*status, 200);
            assert!(content_type.starts_with("text/html"), "{content_type}");
        }
        other => panic!("expected Hibernating, got {other:?}"),
    }
    assert!(err.to_string().contains("hibernating"));
    assert_eq!(sim.state.requests().len(), 1, "hibernation is not retried");
    assert!(sim.state.incidents().is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_and_is_not_retried() {
    let (sim, _) = start().await;
    let client = client_with(&sim.url(), "wrong-password", Duration::from_secs(10));
    let err = client
        .ensure_incident(&incident("inc-auth"))
        .await
        .unwrap_err();
    match &err {
        ServiceNowError::Auth { message, .. } => {
            assert_eq!(
                message,
                "User Not Authenticated: Required to provide Auth information"
            );
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!err.to_string().contains("wrong-password"));
    assert!(!err.to_string().contains(PASSWORD));
    assert_eq!(statuses(&sim), pairs(&[("GET", 401)]));
}

#[tokio::test]
async fn resolve_sets_state_6_and_inactive_and_a_later_ensure_opens_a_new_ticket() {
    let (sim, client) = start().await;
    let first = client
        .ensure_incident(&incident("inc-resolve"))
        .await
        .unwrap()
        .ticket;
    let resolved = client
        .resolve(
            &first.sys_id,
            "Solved (Permanently)",
            "CPU spike ended; allocation restored",
        )
        .await
        .unwrap();
    assert_eq!(resolved.state, "6");
    assert!(!resolved.active);
    let stored = sim.state.incidents().remove(0);
    assert_eq!(stored["close_code"], "Solved (Permanently)");
    assert_eq!(
        stored["close_notes"],
        "CPU spike ended; allocation restored"
    );
    assert_eq!(stored["resolved_at"].len(), 19);
    assert_eq!(stored["active"], "false");
    let patch = sim
        .state
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.body,
        Some(
            json!({"state": "6", "close_code": "Solved (Permanently)", "close_notes": "CPU spike ended; allocation restored"})
        )
    );

    assert_eq!(client.find_active("inc-resolve").await.unwrap(), None);
    let again = client
        .ensure_incident(&incident("inc-resolve"))
        .await
        .unwrap();
    assert!(again.created);
    assert_eq!(again.ticket.number, "INC0010002");

    let err = client
        .resolve(&first.sys_id, "", "notes")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceNowError::InvalidInput {
                field: "close_code",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn work_notes_read_back_via_sys_journal_field_and_display_value() {
    let (sim, client) = start().await;
    let ticket = client
        .ensure_incident(&NewIncident {
            work_notes: Some("step 1: detected".into()),
            ..incident("inc-notes")
        })
        .await
        .unwrap()
        .ticket;
    client
        .add_work_note(&ticket.sys_id, "step 2: reallocated")
        .await
        .unwrap();

    let rows = raw_get(
        &sim,
        &format!(
            "/api/now/table/sys_journal_field?sysparm_query=element_id={}%5Eelement=work_notes",
            ticket.sys_id
        ),
    )
    .await;
    let values: Vec<&str> = rows["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["step 1: detected", "step 2: reallocated"]);
    assert!(
        rows["result"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["sys_created_by"] == USER)
    );

    let plain = raw_get(&sim, &format!("/api/now/table/incident/{}", ticket.sys_id)).await;
    assert_eq!(plain["result"]["work_notes"], "");
    let shown = raw_get(
        &sim,
        &format!(
            "/api/now/table/incident/{}?sysparm_display_value=true",
            ticket.sys_id
        ),
    )
    .await;
    let text = shown["result"]["work_notes"].as_str().unwrap();
    let newer = text
        .find(&format!(" - {USER} (Work notes)\nstep 2: reallocated\n\n"))
        .expect(text);
    let older = text
        .find(&format!(" - {USER} (Work notes)\nstep 1: detected\n\n"))
        .expect(text);
    assert!(newer < older, "newest first: {text:?}");
}

#[tokio::test]
async fn every_value_is_sent_as_a_json_string() {
    let (sim, client) = start().await;
    let mut extra = BTreeMap::new();
    extra.insert("assignment_group".to_owned(), "FINCORP-SRE".to_owned());
    extra.insert("u_cpu_pct".to_owned(), "97".to_owned());
    let new = NewIncident {
        description: Some("detail".into()),
        urgency: Some("1".into()),
        impact: Some("2".into()),
        work_notes: Some("note".into()),
        extra,
        ..incident("inc-strings")
    };
    let ticket = client.ensure_incident(&new).await.unwrap().ticket;
    let mut fields = BTreeMap::new();
    fields.insert("impact".to_owned(), "1".to_owned());
    fields.insert("u_cpu_pct".to_owned(), "99".to_owned());
    client.update(&ticket.sys_id, &fields).await.unwrap();

    let writes: Vec<_> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert_eq!(writes.len(), 2);
    for write in &writes {
        assert_eq!(write.content_type.as_deref(), Some("application/json"));
        let body = write
            .body
            .as_ref()
            .and_then(Value::as_object)
            .expect("a JSON object body");
        for (k, v) in body {
            assert!(v.is_string(), "{} {}: {k} = {v}", write.method, write.path);
        }
    }
    let post = writes[0].body.as_ref().unwrap();
    assert_eq!(post["urgency"], "1");
    assert_eq!(post["impact"], "2");
    assert_eq!(post["u_cpu_pct"], "97");
    assert_eq!(post["assignment_group"], "FINCORP-SRE");
    assert!(
        sim.state
            .requests()
            .iter()
            .all(|r| r.accept.as_deref() == Some("application/json"))
    );
    let stored = sim.state.incidents().remove(0);
    assert_eq!(
        stored["priority"], "1",
        "impact 1 × urgency 1 after the update"
    );
    assert_eq!(stored["u_cpu_pct"], "99");
}

#[tokio::test]
async fn plan_ensure_is_exactly_what_ensure_sends_with_the_authorization_redacted() {
    let (sim, client) = start().await;
    let new = NewIncident {
        urgency: Some("2".into()),
        work_notes: Some("opened by FINCORP".into()),
        ..incident("inc-plan^x")
    };
    let plan = client.plan_ensure(&new);
    assert_eq!(plan.len(), 2);
    let (lookup, create) = (&plan[0], &plan[1]);
    assert_eq!(lookup.method, "GET");
    assert_eq!(
        lookup.url,
        format!(
            "{}/api/now/table/incident?sysparm_query=correlation_id%3Dinc-plan%5E%5Ex%5Eactive%3Dtrue&sysparm_limit=1",
            sim.url()
        )
    );
    assert_eq!(lookup.body, None);
    assert_eq!(create.method, "POST");
    assert_eq!(create.url, format!("{}/api/now/table/incident", sim.url()));
    assert_eq!(
        create.body,
        Some(json!({
            "correlation_id": "inc-plan^x",
            "short_description": new.short_description,
            "urgency": "2",
            "work_notes": "opened by FINCORP",
        }))
    );
    let header = |p: &PlannedRequest, name: &str| {
        p.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    for p in &plan {
        assert_eq!(
            header(p, "Authorization").as_deref(),
            Some("Basic <redacted>")
        );
        assert_eq!(header(p, "Accept").as_deref(), Some("application/json"));
    }
    assert_eq!(header(lookup, "Content-Type"), None);
    assert_eq!(
        header(create, "Content-Type").as_deref(),
        Some("application/json")
    );
    let serialised = serde_json::to_string(&plan).unwrap();
    assert!(!serialised.contains(PASSWORD));
    assert!(sim.state.requests().is_empty(), "planning sends nothing");

    // What ensure really sends matches the plan, request for request.
    client.ensure_incident(&new).await.unwrap();
    let sent = sim.state.requests();
    assert_eq!(sent.len(), plan.len());
    for (planned, sent) in plan.iter().zip(&sent) {
        let sent_url = match &sent.query {
            Some(q) => format!("{}{}?{q}", sim.url(), sent.path),
            None => format!("{}{}", sim.url(), sent.path),
        };
        assert_eq!(planned.method, sent.method);
        assert_eq!(planned.url, sent_url);
        assert_eq!(planned.body, sent.body);
        assert!(sent.has_authorization);
    }
    // The escaped caret kept the correlation_id whole.
    assert_eq!(sim.state.incidents()[0]["correlation_id"], "inc-plan^x");
}

#[tokio::test]
async fn get_update_and_bad_input_errors() {
    let (sim, client) = start().await;
    let err = client
        .get("0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    match &err {
        ServiceNowError::Http {
            status: 404,
            message,
            ..
        } => assert!(message.starts_with("No Record found"), "{message}"),
        other => panic!("expected 404, got {other:?}"),
    }
    assert_eq!(sim.state.requests().len(), 1, "404 is not retried");

    let ticket = client
        .ensure_incident(&incident("inc-update"))
        .await
        .unwrap()
        .ticket;
    let mut fields = BTreeMap::new();
    fields.insert(
        "short_description".to_owned(),
        "now with more detail".to_owned(),
    );
    fields.insert("state".to_owned(), "2".to_owned());
    let updated = client.update(&ticket.sys_id, &fields).await.unwrap();
    assert_eq!(updated.short_description, "now with more detail");
    assert_eq!(updated.state, "2");

    // A 403 from the data policy surfaces ServiceNow's message.
    let mut resolve_badly = BTreeMap::new();
    resolve_badly.insert("state".to_owned(), "6".to_owned());
    let err = client
        .update(&ticket.sys_id, &resolve_badly)
        .await
        .unwrap_err();
    match &err {
        ServiceNowError::Http {
            status: 403,
            message,
            ..
        } => assert!(message.contains("Data Policy Exception"), "{message}"),
        other => panic!("expected 403, got {other:?}"),
    }

    sim.state.clear_requests();
    for err in [
        client.ensure_incident(&incident("  ")).await.unwrap_err(),
        client.find_active("").await.unwrap_err(),
        client.get("").await.unwrap_err(),
        client.add_work_note(&ticket.sys_id, " ").await.unwrap_err(),
    ] {
        assert!(matches!(err, ServiceNowError::InvalidInput { .. }), "{err}");
    }
    assert!(
        sim.state.requests().is_empty(),
        "invalid input sends nothing"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_after_the_retries() {
    // Bind then drop a listener: nothing listens on that port any more.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let client = client_with(&format!("http://{addr}"), PASSWORD, Duration::from_secs(5));
    let err = client.find_active("inc-x").await.unwrap_err();
    assert!(matches!(err, ServiceNowError::Transport { .. }), "{err}");
    assert!(!err.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn a_lookup_answer_for_another_correlation_id_is_refused_not_adopted() {
    // What an instance that ignores an unusable query condition returns: some
    // other active incident.
    let body =
        json!({"result": [{"sys_id": "f00", "number": "INC0000001", "state": "2", "active": "true",
        "correlation_id": "someone-else", "short_description": "unrelated"}]})
        .to_string();
    let addr = canned_server(http_response("200 OK", "application/json", &body)).await;
    let client = client_with(&format!("http://{addr}"), PASSWORD, Duration::from_secs(5));
    let err = client
        .ensure_incident(&NewIncident {
            work_notes: Some("x".into()),
            ..incident("inc-mine")
        })
        .await
        .unwrap_err();
    match &err {
        ServiceNowError::Decode { message, .. } => {
            assert!(message.contains("does not match"), "{message}")
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_or_a_json_shape_error_is_not_success() {
    let addr = canned_server(
        "HTTP/1.1 302 Found\r\nLocation: https://signon.example/login\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_owned(),
    )
    .await;
    let client = client_with(&format!("http://{addr}"), PASSWORD, Duration::from_secs(5));
    let err = client.get("abc").await.unwrap_err();
    match &err {
        ServiceNowError::Http {
            status: 302,
            message,
            ..
        } => assert!(message.contains("signon.example"), "{message}"),
        other => panic!("expected Http 302, got {other:?}"),
    }

    let addr = canned_server(http_response(
        "201 Created",
        "application/json",
        r#"{"result": "nope"}"#,
    ))
    .await;
    let client = client_with(&format!("http://{addr}"), PASSWORD, Duration::from_secs(5));
    let err = client.get("abc").await.unwrap_err();
    assert!(matches!(err, ServiceNowError::Decode { .. }), "{err}");
    let addr = canned_server(http_response("200 OK", "application/json", "{not json")).await;
    let client = client_with(&format!("http://{addr}"), PASSWORD, Duration::from_secs(5));
    let err = client.get("abc").await.unwrap_err();
    assert!(matches!(err, ServiceNowError::Decode { .. }), "{err}");
}

#[tokio::test]
async fn plans_for_work_notes_state_changes_and_resolve_are_exactly_what_is_sent() {
    let (sim, client) = start().await;
    let ticket = client
        .ensure_incident(&incident("inc-plans"))
        .await
        .unwrap()
        .ticket;
    sim.state.clear_requests();

    let note = client
        .plan_add_work_note(&ticket.sys_id, "reallocated CPU +20% on vm-1001")
        .unwrap();
    let mut fields = BTreeMap::new();
    fields.insert("state".to_owned(), "2".to_owned());
    fields.insert("work_notes".to_owned(), "failover started".to_owned());
    let in_progress = client.plan_update(&ticket.sys_id, &fields).unwrap();
    let resolve = client
        .plan_resolve(
            &ticket.sys_id,
            "Solved (Permanently)",
            "failed over to London",
        )
        .unwrap();
    assert!(sim.state.requests().is_empty(), "planning sends nothing");
    assert_eq!(note.method, "PATCH");
    assert_eq!(
        note.url,
        format!("{}/api/now/table/incident/{}", sim.url(), ticket.sys_id)
    );
    assert_eq!(
        note.body,
        Some(json!({"work_notes": "reallocated CPU +20% on vm-1001"}))
    );
    assert_eq!(
        in_progress.body,
        Some(json!({"state": "2", "work_notes": "failover started"}))
    );
    assert_eq!(
        resolve.body,
        Some(
            json!({"state": "6", "close_code": "Solved (Permanently)", "close_notes": "failed over to London"})
        )
    );

    client
        .add_work_note(&ticket.sys_id, "reallocated CPU +20% on vm-1001")
        .await
        .unwrap();
    let updated = client.update(&ticket.sys_id, &fields).await.unwrap();
    assert_eq!(updated.state, "2");
    let resolved = client
        .resolve(
            &ticket.sys_id,
            "Solved (Permanently)",
            "failed over to London",
        )
        .await
        .unwrap();
    assert_eq!((resolved.state.as_str(), resolved.active), ("6", false));
    assert_sent_as_planned(&sim, &[note, in_progress, resolve], &sim.state.requests());
    let notes: Vec<String> = sim
        .state
        .journal()
        .into_iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(
        notes,
        ["reallocated CPU +20% on vm-1001", "failover started"]
    );
}

#[tokio::test]
async fn plans_refuse_what_the_calls_refuse_and_nothing_is_sent() {
    let (sim, client) = start().await;
    let sys_id = "0123456789abcdef0123456789abcdef";
    let mut bad_state = BTreeMap::new();
    bad_state.insert("state".to_owned(), "5".to_owned());
    let mut bad_name = BTreeMap::new();
    bad_name.insert("Assignment Group".to_owned(), "x".to_owned());
    for (plan, field) in [
        (client.plan_update(sys_id, &bad_state), "state"),
        (client.plan_update(sys_id, &bad_name), "field name"),
        (client.plan_update(sys_id, &BTreeMap::new()), "fields"),
        (client.plan_add_work_note(sys_id, "  "), "work note"),
        (client.plan_resolve(sys_id, "Solved", ""), "close_notes"),
        (client.plan_resolve("", "Solved", "notes"), "sys_id"),
    ] {
        match plan {
            Err(ServiceNowError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let err = client.update(sys_id, &bad_state).await.unwrap_err();
    assert!(
        matches!(err, ServiceNowError::InvalidInput { field: "state", .. }),
        "{err}"
    );
    let bad_urgency = NewIncident {
        urgency: Some("high".into()),
        ..incident("inc-bad")
    };
    let err = client.ensure_incident(&bad_urgency).await.unwrap_err();
    assert!(
        matches!(
            err,
            ServiceNowError::InvalidInput {
                field: "urgency",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        sim.state.requests().is_empty(),
        "invalid input sends nothing"
    );
}
