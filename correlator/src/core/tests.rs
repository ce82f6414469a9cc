//! Tests of the correlation core, driven by recorded alert streams and a
//! fake clock.

use super::*;

fn cfg() -> Config {
    Config::with_defaults()
}

fn alert(fp: &str, host: &str, status: AlertStatus, severity: Severity, at_ms: UnixMs) -> Alert {
    Alert {
        event_id: format!("{fp}-{at_ms}-{}", status.as_str()),
        source: "agent".into(),
        fingerprint: fp.into(),
        status,
        name: format!("rule-{fp}"),
        host: host.into(),
        app: Some("FINCORP-APP-HFT".into()),
        severity,
        metric: "cpu".into(),
        value: 90.0,
        threshold: 80.0,
        summary: "s".into(),
        labels: Default::default(),
        starts_at_ms: at_ms,
        at_ms,
    }
}

fn fire(fp: &str, host: &str, at: UnixMs) -> Alert {
    alert(fp, host, AlertStatus::Firing, Severity::Warning, at)
}

fn resolve(fp: &str, host: &str, at: UnixMs) -> Alert {
    alert(fp, host, AlertStatus::Resolved, Severity::Warning, at)
}

fn opened(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::IncidentOpened { incident_id, .. } => Some(incident_id.clone()),
            _ => None,
        })
        .collect()
}

fn attached_to(effects: &[Effect]) -> Option<(String, Reason)> {
    effects.iter().find_map(|e| match e {
        Effect::AlertAttached {
            incident_id,
            reason,
            ..
        } => Some((incident_id.clone(), reason.clone())),
        _ => None,
    })
}

#[test]
fn alerts_of_one_host_within_the_window_make_one_incident() {
    let mut s = State::new(cfg(), "fc-test", 1);
    let e1 = s.ingest(fire("a", "h1", 1_000), 1_000);
    assert_eq!(opened(&e1), vec!["fc-test-1"]);
    let (id, reason) = attached_to(&e1).unwrap();
    assert_eq!(
        (id.as_str(), reason.rule.as_str(), reason.key.as_str()),
        ("fc-test-1", "same-host", "host=h1")
    );
    assert!(reason.detail.starts_with("opened:"), "{}", reason.detail);
    assert!(matches!(&e1[0], Effect::IncidentOpened { key, .. } if key == "host=h1"));

    let e2 = s.ingest(fire("b", "h1", 61_000), 61_000);
    assert!(opened(&e2).is_empty());
    let (id, reason) = attached_to(&e2).unwrap();
    assert_eq!(id, "fc-test-1");
    assert!(
        reason.detail.contains("still has 1 firing alert"),
        "{}",
        reason.detail
    );
}

#[test]
fn other_hosts_get_their_own_incident() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    let e = s.ingest(fire("b", "h2", 10), 10);
    assert_eq!(opened(&e), vec!["fc-2"]);
}

#[test]
fn a_quiet_incident_takes_alerts_within_the_window_only() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    s.ingest(resolve("a", "h1", 1_000), 1_000);
    // Quiet but not yet resolved (resolve_after 5 s) and within the window.
    let e = s.ingest(fire("b", "h1", 2_000), 2_000);
    let (id, reason) = attached_to(&e).unwrap();
    assert_eq!(id, "fc-1");
    assert!(
        reason.detail.contains("last alert arrived 2000 ms ago"),
        "{}",
        reason.detail
    );
}

#[test]
fn an_incident_resolves_after_its_alerts_stay_quiet() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    s.ingest(fire("b", "h1", 100), 100);
    assert!(matches!(
        s.ingest(resolve("a", "h1", 200), 200)[..],
        [Effect::AlertResolved { .. }]
    ));
    assert!(s.tick(10_000).is_empty(), "b still fires");
    s.ingest(resolve("b", "h1", 300), 300);
    assert!(s.tick(5_299).is_empty(), "quiet for 4999 ms only");
    let e = s.tick(5_300);
    assert_eq!(
        e,
        vec![Effect::IncidentResolved {
            incident_id: "fc-1".into(),
            at_ms: 5_300,
            quiet_ms: Some(5_000)
        }]
    );
    assert_eq!(s.open_incidents().count(), 0);
    // The host fires again after the reopen window: a new incident.
    let later = 5_300 + cfg().reopen_window_ms + 1;
    assert_eq!(
        opened(&s.ingest(fire("a", "h1", later), later)),
        vec!["fc-2"]
    );
}

#[test]
fn a_repeat_of_a_firing_alert_only_refreshes_it() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    let e = s.ingest(fire("a", "h1", 500), 500);
    assert!(matches!(e[..], [Effect::AlertRefreshed { .. }]), "{e:?}");
}

#[test]
fn severity_is_the_max_of_the_alerts() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    let e = s.ingest(
        alert("b", "h1", AlertStatus::Firing, Severity::Critical, 10),
        10,
    );
    assert!(e.contains(&Effect::SeverityRaised {
        incident_id: "fc-1".into(),
        severity: Severity::Critical,
        at_ms: 10
    }));
    let e = s.ingest(
        alert("c", "h1", AlertStatus::Firing, Severity::Info, 20),
        20,
    );
    assert!(!e.iter().any(|e| matches!(e, Effect::SeverityRaised { .. })));
}

#[test]
fn a_resolve_for_an_unknown_alert_is_ignored() {
    let mut s = State::new(cfg(), "fc", 1);
    assert!(matches!(
        s.ingest(resolve("zz", "h1", 0), 0)[..],
        [Effect::Ignored { .. }]
    ));
}

#[test]
fn restored_state_continues_where_it_left_off() {
    let mut live = State::new(cfg(), "fc", 1);
    live.ingest(fire("a", "h1", 0), 0);
    let inc = live.open_incidents().next().unwrap().clone();

    let mut restored = State::new(cfg(), "fc", 2);
    restored.restore(inc, &[("a".into(), 0)]);
    let e = restored.ingest(resolve("a", "h1", 50), 50);
    assert!(
        matches!(&e[0], Effect::AlertResolved { incident_id: Some(id), starts_at_ms: 0, .. } if id == "fc-1")
    );
    assert_eq!(restored.tick(5_050).len(), 1);
}

#[test]
fn an_operator_resolve_lets_the_alerts_go_and_a_return_reopens() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    assert_eq!(
        s.resolve("fc-1", 100).unwrap(),
        vec![Effect::IncidentResolved {
            incident_id: "fc-1".into(),
            at_ms: 100,
            quiet_ms: None
        }]
    );
    assert_eq!(
        s.resolve("fc-1", 100),
        Err(CoreError::NotOpen("fc-1".into()))
    );
    assert!(s.active("a").is_none());
    let e = s.ingest(fire("a", "h1", 200), 200);
    assert!(
        matches!(&e[0], Effect::IncidentReopened { incident_id, .. } if incident_id == "fc-1"),
        "{e:?}"
    );
}

#[test]
fn closing_needs_a_resolved_incident_and_ends_reopening() {
    let mut s = State::new(cfg(), "fc", 1);
    s.ingest(fire("a", "h1", 0), 0);
    assert_eq!(
        s.close("fc-1", 10),
        Err(CoreError::NotResolved("fc-1".into()))
    );
    s.resolve("fc-1", 20).unwrap();
    assert_eq!(s.close("fc-1", 30).unwrap().len(), 1);
    assert_eq!(
        opened(&s.ingest(fire("a", "h1", 40), 40)),
        vec!["fc-2"],
        "a closed incident never reopens"
    );
}

#[test]
fn replaying_the_same_stream_gives_the_same_effects() {
    let stream = [
        fire("a", "h1", 0),
        fire("b", "h2", 5),
        fire("c", "h1", 9),
        resolve("a", "h1", 20),
    ];
    let run = || {
        let mut s = State::new(cfg(), "fc", 1);
        let mut all: Vec<Effect> = stream
            .iter()
            .flat_map(|a| s.ingest(a.clone(), a.at_ms))
            .collect();
        all.extend(s.tick(100_000));
        all
    };
    assert_eq!(run(), run());
}
