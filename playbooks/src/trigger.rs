//! Does a playbook's incident trigger match an alert that opened, joined or
//! reopened an incident, or an alert of an incident that resolved?

use fincorp_api::wire::Severity;

use crate::model::{IncidentChange, IncidentTrigger};

/// The facts about an alert a trigger looks at.
#[derive(Debug, Clone, Copy)]
pub struct AlertFacts<'a> {
    pub name: &'a str,
    pub app: Option<&'a str>,
    pub source: &'a str,
    pub severity: Severity,
    /// What the alert did to its incident.
    pub change: IncidentChange,
}

impl IncidentTrigger {
    /// Empty lists match anything; severity must reach `min_severity`. An
    /// app filter never matches an alert without an app.
    pub fn matches(&self, a: &AlertFacts<'_>) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        (self.apps.is_empty() || a.app.is_some_and(|app| any(&self.apps, app)))
            && any(&self.alerts, a.name)
            && any(&self.sources, a.source)
            && a.severity >= self.min_severity
            && self.on.contains(&a.change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> IncidentTrigger {
        IncidentTrigger {
            apps: vec!["FINCORP-APP-HFT".into()],
            alerts: vec!["cpu_high".into()],
            sources: vec![],
            min_severity: Severity::Warning,
            on: vec![IncidentChange::Opened, IncidentChange::AlertJoined],
        }
    }

    fn facts(
        name: &'static str,
        app: Option<&'static str>,
        severity: Severity,
        change: IncidentChange,
    ) -> AlertFacts<'static> {
        AlertFacts {
            name,
            app,
            source: "agent",
            severity,
            change,
        }
    }

    #[test]
    fn matches_on_app_name_severity_and_change() {
        let t = trigger();
        let c = IncidentChange::Opened;
        assert!(t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            c
        )));
        assert!(!t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-CRM"),
            Severity::Critical,
            c
        )));
        assert!(!t.matches(&facts(
            "latency_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            c
        )));
        assert!(!t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Info,
            c
        )));
        assert!(!t.matches(&facts("cpu_high", None, Severity::Critical, c)));
        assert!(!t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            IncidentChange::Reopened
        )));
        assert!(!t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            IncidentChange::Resolved
        )));
        let on_resolved = IncidentTrigger {
            on: vec![IncidentChange::Resolved],
            ..trigger()
        };
        assert!(on_resolved.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            IncidentChange::Resolved
        )));
        assert!(!on_resolved.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            c
        )));
        assert_eq!(
            IncidentChange::parse("resolved"),
            Some(IncidentChange::Resolved)
        );
        assert_eq!(IncidentChange::Resolved.as_str(), "resolved");
    }

    #[test]
    fn sources_filter() {
        let t = IncidentTrigger {
            sources: vec!["hardware".into()],
            ..trigger()
        };
        let mut f = facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical,
            IncidentChange::Opened,
        );
        assert!(!t.matches(&f));
        f.source = "hardware";
        assert!(t.matches(&f));
    }
}
