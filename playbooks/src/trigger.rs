//! Does a playbook's trigger match an alert that opened or joined an incident?

use fincorp_api::wire::Severity;

use crate::model::Trigger;

/// The facts about an alert a trigger looks at.
#[derive(Debug, Clone, Copy)]
pub struct AlertFacts<'a> {
    pub name: &'a str,
    pub app: Option<&'a str>,
    pub severity: Severity,
}

impl Trigger {
    /// Empty `apps` / `alerts` lists match anything; severity must reach
    /// `min_severity`. An app filter never matches an alert without an app.
    pub fn matches(&self, alert: &AlertFacts<'_>) -> bool {
        let app_ok =
            self.apps.is_empty() || alert.app.is_some_and(|a| self.apps.iter().any(|x| x == a));
        let name_ok = self.alerts.is_empty() || self.alerts.iter().any(|x| x == alert.name);
        app_ok && name_ok && alert.severity >= self.min_severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> Trigger {
        Trigger {
            apps: vec!["FINCORP-APP-HFT".into()],
            alerts: vec!["cpu_high".into()],
            min_severity: Severity::Warning,
        }
    }

    fn facts(
        name: &'static str,
        app: Option<&'static str>,
        severity: Severity,
    ) -> AlertFacts<'static> {
        AlertFacts {
            name,
            app,
            severity,
        }
    }

    #[test]
    fn matches_on_app_name_and_severity() {
        let t = trigger();
        assert!(t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical
        )));
        assert!(!t.matches(&facts(
            "cpu_high",
            Some("FINCORP-APP-CRM"),
            Severity::Critical
        )));
        assert!(!t.matches(&facts(
            "latency_high",
            Some("FINCORP-APP-HFT"),
            Severity::Critical
        )));
        assert!(!t.matches(&facts("cpu_high", Some("FINCORP-APP-HFT"), Severity::Info)));
        assert!(!t.matches(&facts("cpu_high", None, Severity::Critical)));
    }

    #[test]
    fn empty_lists_match_anything() {
        let t = Trigger {
            apps: vec![],
            alerts: vec![],
            min_severity: Severity::Info,
        };
        assert!(t.matches(&facts("anything", None, Severity::Info)));
    }
}
