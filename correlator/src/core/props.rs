//! Property tests of the correlation core over random streams: no alert is
//! ever in two incidents, the core's indexes agree with each other, and the
//! same stream always gives the same effects.

use std::collections::HashMap;

use fincorp_api::wire::{AlertStatus, Severity};
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Alert {
        host: u8,
        app: u8,
        name: u8,
        firing: bool,
        critical: bool,
    },
    Tick,
    Resolve(u8),
}

fn op() -> impl Strategy<Value = (u32, Op)> {
    let alert = (0u8..3, 0u8..4, 0u8..3, any::<bool>(), any::<bool>()).prop_map(
        |(host, app, name, firing, critical)| Op::Alert {
            host,
            app,
            name,
            firing,
            critical,
        },
    );
    // Time steps from 0 to 400 s, so windows (5 min), quiet periods (5 s)
    // and reopen windows (10 min) all come into play.
    (
        0u32..400_000,
        prop_oneof![6 => alert, 2 => Just(Op::Tick), 1 => (1u8..6).prop_map(Op::Resolve)],
    )
}

const APPS: [&str; 4] = [
    "FINCORP-APP-CORE",
    "FINCORP-APP-TRANSPROC",
    "FINCORP-APP-HFT",
    "",
];

fn config() -> Config {
    let mut cfg = Config::with_defaults();
    cfg.flap_transitions = 4;
    cfg.flap_window_ms = 120_000;
    cfg.topology.apps.insert(
        "FINCORP-APP-TRANSPROC".into(),
        AppInfo {
            hosts: vec![],
            depends_on: vec!["FINCORP-APP-CORE".into()],
        },
    );
    cfg.topology
        .apps
        .insert("FINCORP-APP-CORE".into(), AppInfo::default());
    cfg
}

fn to_alert(op: &Op, at: i64, n: usize) -> Option<Alert> {
    let Op::Alert {
        host,
        app,
        name,
        firing,
        critical,
    } = op
    else {
        return None;
    };
    let app = Some(APPS[*app as usize].to_string()).filter(|a| !a.is_empty());
    let name = format!("rule{name}");
    let host = format!("h{host}");
    Some(Alert {
        event_id: format!("e{n}"),
        source: "agent".into(),
        fingerprint: format!("{host}/{}/{name}", app.as_deref().unwrap_or("-")),
        status: if *firing {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        },
        name,
        host,
        app,
        severity: if *critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        metric: String::new(),
        value: 0.0,
        threshold: 0.0,
        summary: String::new(),
        labels: Default::default(),
        starts_at_ms: at,
        at_ms: at,
    })
}

/// Runs a stream (times are cumulative steps) and checks the invariants
/// after every step. Returns every effect.
fn run(ops: &[(u32, Op)]) -> Vec<Effect> {
    let mut state = State::new(config(), "fc", 1);
    let mut now = 0i64;
    let mut all = Vec::new();
    // An episode (fingerprint, start) belongs to the first incident it joined.
    let mut home: HashMap<(String, i64), String> = HashMap::new();
    for (n, (step, op)) in ops.iter().enumerate() {
        now += i64::from(*step);
        let effects = match op {
            Op::Tick => state.tick(now),
            Op::Resolve(seq) => state.resolve(&format!("fc-{seq}"), now).unwrap_or_default(),
            alert => state.ingest(to_alert(alert, now, n).expect("an alert op"), now),
        };
        for e in &effects {
            if let Effect::AlertAttached {
                incident_id, alert, ..
            } = e
            {
                let key = (alert.fingerprint.clone(), alert.starts_at_ms);
                let first = home
                    .entry(key.clone())
                    .or_insert_with(|| incident_id.clone());
                assert_eq!(first, incident_id, "episode {key:?} joined two incidents");
            }
        }
        check_indexes(&state);
        all.extend(effects);
    }
    all
}

/// Every firing fingerprint is in exactly one open incident, and the active
/// index points at that incident.
fn check_indexes(state: &State) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for inc in state.incidents.values() {
        for fp in &inc.firing {
            if let Some(other) = seen.insert(fp, &inc.id) {
                panic!("{fp} fires in both {other} and {}", inc.id);
            }
            assert_eq!(
                inc.status,
                Status::Open,
                "{} holds firing alert {fp} but is not open",
                inc.id
            );
            let active = state
                .active(fp)
                .unwrap_or_else(|| panic!("{fp} fires in {} but is not active", inc.id));
            assert_eq!(active.incident_id.as_deref(), Some(inc.id.as_str()));
        }
    }
    for (fp, a) in &state.active {
        if let Some(id) = &a.incident_id {
            assert!(
                state
                    .incidents
                    .get(id)
                    .is_some_and(|i| i.firing.contains(fp)),
                "{fp} is active in {id}, which does not list it"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_alert_is_ever_in_two_incidents(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }

    #[test]
    fn the_same_stream_always_gives_the_same_effects(ops in prop::collection::vec(op(), 1..80)) {
        prop_assert_eq!(run(&ops), run(&ops));
    }
}
