//! `fincorpctl automation status|kill-switch|breaker`: the kill switch, the
//! tripped circuit breakers with their reasons and escalation, the active
//! runs and the loaded playbooks.

use std::fmt::Write as _;

use fincorp_api::format_ms;
use fincorp_api::rest::{AutomationStatus, KillSwitchView};

/// The kill switch in one line: `ON` or `off`, when, by whom and why.
pub fn kill_switch(k: &KillSwitchView) -> String {
    let mut out = format!(
        "kill switch: {}",
        if k.on {
            "ON (no run starts; running runs stop before their next step)"
        } else {
            "off"
        }
    );
    if let Some(at) = k.changed_at_ms {
        let _ = write!(
            out,
            "; set {} by {}",
            format_ms(at),
            k.changed_by.as_deref().unwrap_or("?")
        );
        if let Some(reason) = k.reason.as_deref().filter(|r| !r.is_empty()) {
            let _ = write!(out, ": {reason}");
        }
    }
    out.push('\n');
    out
}

/// The whole automation status.
pub fn status(s: &AutomationStatus) -> String {
    let mut out = kill_switch(&s.kill_switch);
    let _ = writeln!(out, "active runs: {}", s.active_runs);
    if s.breakers.is_empty() {
        out.push_str("breakers: none tripped\n");
    } else {
        let _ = writeln!(out, "breakers tripped: {}", s.breakers.len());
        for b in &s.breakers {
            let _ = writeln!(
                out,
                "  {}  tripped {}{}",
                b.key,
                format_ms(b.tripped_at_ms),
                b.run_id
                    .as_deref()
                    .map(|r| format!(" by run {r}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "    reason: {}", b.reason);
            let none =
                b.escalation.is_null() || b.escalation.as_object().is_some_and(|o| o.is_empty());
            if none {
                out.push_str("    escalation: none (no webhook or ServiceNow configured)\n");
            } else {
                let _ = writeln!(out, "    escalation: {}", b.escalation);
            }
            let _ = writeln!(
                out,
                "    reset: fincorpctl automation breaker reset '{}' --reason ...",
                b.key
            );
        }
    }
    let _ = writeln!(out, "playbooks: {}", s.playbooks.len());
    for p in &s.playbooks {
        let _ = writeln!(
            out,
            "  {}{}: {}",
            p.name,
            if p.mutating { " [mutating]" } else { "" },
            p.guardrails.join("; ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use fincorp_api::rest::BreakerView;

    use super::*;

    #[test]
    fn a_tripped_breaker_shows_its_reason_escalation_and_how_to_reset_it() {
        let s = AutomationStatus {
            kill_switch: KillSwitchView {
                on: true,
                changed_at_ms: Some(0),
                changed_by: Some("alice".into()),
                reason: Some("incident review".into()),
            },
            breakers: vec![BreakerView {
                key: "playbook:p@h/A".into(),
                reason: "budget of 2 runs per 1h exceeded".into(),
                tripped_at_ms: 0,
                run_id: Some("run-9".into()),
                escalation: serde_json::json!({"ticket": "INC0010001"}),
            }],
            active_runs: 3,
            playbooks: vec![],
        };
        let text = status(&s);
        for want in [
            "kill switch: ON",
            "by alice: incident review",
            "active runs: 3",
            "  playbook:p@h/A  tripped 1970-01-01T00:00:00.000Z by run run-9",
            "    reason: budget of 2 runs per 1h exceeded",
            "INC0010001",
            "breaker reset 'playbook:p@h/A'",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
