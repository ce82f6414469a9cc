//! `fincorpctl runs list|show`: playbook runs as a table, and one run with
//! its steps and the approval it waits for.

use std::fmt::Write as _;

use fincorp_api::format_ms;
use fincorp_api::rest::{RunState, RunView};

/// One line per run under a header; STEPS counts the steps run so far
/// (retries and rollback steps included).
pub fn table(runs: &[RunView]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:<18} {:<16} {:<32} {:>5}  {}\n",
        "ID", "PLAYBOOK", "STATE", "INCIDENT", "TARGET", "STEPS", "STARTED"
    );
    for r in runs {
        let steps = r.steps.len();
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<18} {:<16} {:<32} {:>5}  {}",
            r.id,
            r.playbook,
            r.state.as_str(),
            r.incident_id.as_deref().unwrap_or("-"),
            target(r),
            steps,
            format_ms(r.started_at_ms)
        );
    }
    out
}

fn target(r: &RunView) -> String {
    match (&r.target_host, &r.target_app) {
        (Some(h), Some(a)) => format!("{h}/{a}"),
        (Some(h), None) => h.clone(),
        (None, Some(a)) => a.clone(),
        (None, None) => "-".into(),
    }
}

/// A run: what started it, where it stands, the approval it waits for, and
/// every step with its phase, state, attempts and error.
pub fn detail(r: &RunView) -> String {
    let mut out = format!(
        "{}  {}  {}{}\n",
        r.id,
        r.playbook,
        r.state.as_str(),
        if r.dry_run { " (dry run)" } else { "" }
    );
    let _ = writeln!(
        out,
        "incident {}  target {}  trigger {}",
        r.incident_id.as_deref().unwrap_or("-"),
        target(r),
        if r.trigger.is_empty() {
            "-"
        } else {
            &r.trigger
        }
    );
    if r.ordinal > 1 || r.depth > 0 {
        let _ = write!(out, "run #{} for this incident", r.ordinal.max(1));
        if r.depth > 0 {
            let _ = write!(
                out,
                ", causal depth {} (caused by run {})",
                r.depth,
                r.caused_by_run.as_deref().unwrap_or("?")
            );
        }
        out.push('\n');
    }
    let _ = write!(out, "started {}", format_ms(r.started_at_ms));
    if let Some(f) = r.finished_at_ms {
        let _ = write!(out, ", finished {}", format_ms(f));
    }
    if r.mutated {
        out.push_str(", changed something");
    }
    out.push('\n');
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "reason: {reason}");
    }
    if let Some(a) = &r.approval {
        let _ = writeln!(
            out,
            "\nAWAITING APPROVAL (step {}), requested {}, nothing is done after {}:\n  {}",
            a.step_id,
            format_ms(a.requested_at_ms),
            format_ms(a.expires_at_ms),
            a.prompt
        );
        let _ = writeln!(
            out,
            "  fincorpctl runs approve {id} --reason ...  |  fincorpctl runs reject {id} --reason ...",
            id = r.id
        );
    } else if r.state == RunState::AwaitingApproval {
        out.push_str("\nAWAITING APPROVAL\n");
    }
    if r.steps.is_empty() {
        out.push_str("\nsteps: none run yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "\nsteps:\n  {:<20} {:<18} {:<9} {:<18} {:>8}  ERROR",
        "ID", "ACTION", "PHASE", "STATE", "ATTEMPTS"
    );
    for s in &r.steps {
        let _ = writeln!(
            out,
            "  {:<20} {:<18} {:<9} {:<18} {:>8}  {}",
            s.id,
            s.action,
            if s.phase.is_empty() { "main" } else { &s.phase },
            s.state.as_str(),
            s.attempts,
            s.error.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use fincorp_api::rest::{ApprovalView, StepView};

    use super::*;

    fn run() -> RunView {
        RunView {
            id: "run-1".into(),
            playbook: "pb".into(),
            incident_id: Some("fc-1".into()),
            state: RunState::AwaitingApproval,
            trigger: "incident:opened".into(),
            ordinal: 1,
            depth: 0,
            caused_by_run: None,
            target_host: Some("h".into()),
            target_app: Some("A".into()),
            reason: None,
            dry_run: false,
            mutated: false,
            created_at_ms: 0,
            started_at_ms: 0,
            finished_at_ms: None,
            approval: Some(ApprovalView {
                step_id: "guardrail:approval".into(),
                prompt: "run run-1 wants to run x".into(),
                requested_at_ms: 0,
                expires_at_ms: 60_000,
            }),
            steps: vec![StepView {
                id: "tell".into(),
                action: "notify".into(),
                state: RunState::Failed,
                phase: "main".into(),
                params: serde_json::json!({}),
                result: None,
                error: Some("connection refused".into()),
                attempts: 2,
                started_at_ms: None,
                finished_at_ms: None,
            }],
        }
    }

    #[test]
    fn a_run_shows_its_approval_and_each_step() {
        let text = detail(&run());
        assert!(text.contains("AWAITING APPROVAL (step guardrail:approval)"));
        assert!(text.contains("run run-1 wants to run x"));
        assert!(
            text.contains(
                "  tell                 notify             main      failed                    2  connection refused"
            ),
            "{text}"
        );
        let table = table(&[run()]);
        assert!(table.contains("h/A"), "{table}");
        assert!(table.contains("awaiting_approval  fc-1"), "{table}");
    }
}
