//! `fincorpctl incidents list|show`: tables for people, `--json` for scripts.

use fincorp_api::format_ms;
use fincorp_api::rest::{IncidentDetail, IncidentSummary, SilenceView};

/// One line per incident under a header.
pub fn table(incidents: &[IncidentSummary]) -> String {
    let mut out = format!(
        "{:<16} {:<12} {:<9} {:<20} {:<24} {:>6}  {}\n",
        "ID", "STATE", "SEVERITY", "HOST", "APP", "ALERTS", "OPENED"
    );
    for i in incidents {
        out.push_str(&format!(
            "{:<16} {:<12} {:<9} {:<20} {:<24} {:>6}  {}\n",
            i.id,
            i.state.as_str(),
            i.severity.as_str(),
            i.host,
            i.app.as_deref().unwrap_or("-"),
            i.alert_count,
            format_ms(i.opened_at_ms)
        ));
    }
    out
}

/// An incident with its alerts, runs, tickets and timeline.
pub fn detail(d: &IncidentDetail) -> String {
    let i = &d.incident;
    let mut out = format!(
        "{}  {}  {}  host {}  app {}\n{}\nopened {}{}\n",
        i.id,
        i.state.as_str(),
        i.severity.as_str(),
        i.host,
        i.app.as_deref().unwrap_or("-"),
        i.title,
        format_ms(i.opened_at_ms),
        i.resolved_at_ms
            .map(|r| format!(", resolved {}", format_ms(r)))
            .unwrap_or_default()
    );
    out.push_str(&format!("group key {}", i.group_key));
    if let Some(root) = &i.root_app {
        out.push_str(&format!(", root cause {root}"));
    }
    if let Some(by) = &i.acknowledged_by {
        out.push_str(&format!(", acknowledged by {by}"));
    }
    if i.reopened > 0 {
        out.push_str(&format!(", reopened {} time(s)", i.reopened));
    }
    out.push_str("\n\nalerts:\n");
    for a in &d.alerts {
        out.push_str(&format!(
            "  {:<9} {:<8} {}  {}\n",
            a.status.as_str(),
            a.severity.as_str(),
            a.name,
            a.summary
        ));
    }
    if !d.runs.is_empty() {
        out.push_str("\nplaybook runs:\n");
        for r in &d.runs {
            out.push_str(&format!("  {} {} {}\n", r.id, r.playbook, r.state.as_str()));
            for s in &r.steps {
                let tail = s.error.clone().unwrap_or_default();
                out.push_str(&format!(
                    "    {:<12} {:<18} {:<9} {tail}\n",
                    s.id,
                    s.action,
                    s.state.as_str()
                ));
            }
        }
    }
    if !d.tickets.is_empty() {
        out.push_str("\ntickets:\n");
        for t in &d.tickets {
            out.push_str(&format!(
                "  {} {} (sys_id {})\n",
                t.system, t.number, t.sys_id
            ));
        }
    }
    out.push_str("\ntimeline:\n");
    for t in &d.timeline {
        out.push_str(&format!(
            "  {}  {:<15} {}\n",
            format_ms(t.at_ms),
            t.kind,
            t.message
        ));
    }
    out
}

/// One line per silence under a header.
pub fn silences(list: &[SilenceView]) -> String {
    let mut out = format!(
        "{:<18} {:<7} {:<40} {:<30} {}\n",
        "ID", "ACTIVE", "MATCHERS", "WHEN", "COMMENT"
    );
    for s in list {
        let when = match (&s.schedule, s.starts_at_ms, s.ends_at_ms, s.expired_at_ms) {
            (_, _, _, Some(e)) => format!("expired {}", format_ms(e)),
            (Some(sched), ..) => format!("{sched} for {}s", s.duration_ms.unwrap_or(0) / 1000),
            (None, Some(a), Some(b), None) => format!("{} .. {}", format_ms(a), format_ms(b)),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<18} {:<7} {:<40} {:<30} {}\n",
            s.id,
            if s.active { "yes" } else { "no" },
            s.matchers.join(","),
            when,
            s.comment
        ));
    }
    out
}
