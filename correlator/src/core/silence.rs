//! Silences and maintenance windows: label matchers over a time window,
//! one-off or recurring by cron. A silenced alert is recorded and resolves
//! like any other, but it opens no incident and raises no severity.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use fincorp_api::UnixMs;
use regex::Regex;

/// How a matcher compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// `name=value`, `name!=value`, `name=~regex`, `name!~regex` (Alertmanager's
/// syntax). Regexes are anchored. A missing label has the value "".
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        (self.name.as_str(), self.op, self.value.as_str())
            == (o.name.as_str(), o.op, o.value.as_str())
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "matcher label name {name:?} must be letters, digits and _"
            ));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Parses `name=value`, `name!=value`, `name=~re`, `name!~re`.
    pub fn parse(text: &str) -> Result<Self, String> {
        for (sym, op) in [
            ("!~", MatchOp::NotRe),
            ("=~", MatchOp::Re),
            ("!=", MatchOp::Ne),
            ("=", MatchOp::Eq),
        ] {
            if let Some((name, value)) = text.split_once(sym) {
                let value = value.trim().trim_matches('"');
                return Self::new(name.trim(), op, value);
            }
        }
        Err(format!(
            "matcher {text:?} must look like name=value, name!=value, name=~regex or name!~regex"
        ))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    pub fn text(&self) -> String {
        let sym = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        format!("{}{sym}{}", self.name, self.value)
    }
}

/// When a silence is in force.
#[derive(Debug, Clone, PartialEq)]
pub enum SilenceWindow {
    /// From `starts_at_ms` until `ends_at_ms`.
    Once {
        starts_at_ms: UnixMs,
        ends_at_ms: UnixMs,
    },
    /// For `duration_ms` after every occurrence of a cron schedule (six or
    /// seven fields, seconds first, UTC), until `until_ms` if set.
    Recurring {
        schedule: Box<cron::Schedule>,
        duration_ms: i64,
        until_ms: Option<UnixMs>,
    },
}

/// A silence or maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub window: SilenceWindow,
    /// Set when someone expired it early.
    pub expired_at_ms: Option<UnixMs>,
}

impl Silence {
    /// Whether the silence is in force at `now`.
    pub fn active_at(&self, now: UnixMs) -> bool {
        if self.expired_at_ms.is_some_and(|e| e <= now) {
            return false;
        }
        match &self.window {
            SilenceWindow::Once {
                starts_at_ms,
                ends_at_ms,
            } => *starts_at_ms <= now && now < *ends_at_ms,
            SilenceWindow::Recurring {
                schedule,
                duration_ms,
                until_ms,
            } => {
                if until_ms.is_some_and(|u| now >= u) {
                    return false;
                }
                // The first occurrence after (now - duration): if it has
                // started by now, we are inside its window.
                let Some(from) = Utc.timestamp_millis_opt(now - duration_ms).single() else {
                    return false;
                };
                schedule
                    .after(&from)
                    .next()
                    .is_some_and(|occurrence| occurrence.timestamp_millis() <= now)
            }
        }
    }

    /// Whether the silence covers alerts with these labels (all matchers hold).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Whether the silence can never be in force again after `now`.
    pub fn over_at(&self, now: UnixMs) -> bool {
        self.expired_at_ms.is_some_and(|e| e <= now)
            || match &self.window {
                SilenceWindow::Once { ends_at_ms, .. } => now >= *ends_at_ms,
                SilenceWindow::Recurring { until_ms, .. } => until_ms.is_some_and(|u| now >= u),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_follow_alertmanager_syntax() {
        let l = labels(&[("host", "web01"), ("app", "FINCORP-APP-HFT")]);
        assert!(Matcher::parse("host=web01").unwrap().matches(&l));
        assert!(Matcher::parse("host!=web02").unwrap().matches(&l));
        assert!(Matcher::parse("app=~FINCORP-APP-.*").unwrap().matches(&l));
        assert!(
            !Matcher::parse("app=~HFT").unwrap().matches(&l),
            "regexes are anchored"
        );
        assert!(
            Matcher::parse("rack!~.+").unwrap().matches(&l),
            "a missing label is empty"
        );
        assert!(Matcher::parse("app=~(").is_err());
        assert!(Matcher::parse("nonsense").is_err());
    }

    #[test]
    fn a_one_off_silence_is_active_inside_its_window() {
        let s = Silence {
            id: "s".into(),
            matchers: vec![Matcher::parse("host=web01").unwrap()],
            window: SilenceWindow::Once {
                starts_at_ms: 1_000,
                ends_at_ms: 2_000,
            },
            expired_at_ms: None,
        };
        assert!(
            !s.active_at(999) && s.active_at(1_000) && s.active_at(1_999) && !s.active_at(2_000)
        );
        let expired = Silence {
            expired_at_ms: Some(1_500),
            ..s
        };
        assert!(expired.active_at(1_400) && !expired.active_at(1_500));
    }

    #[test]
    fn a_recurring_window_follows_its_cron_schedule() {
        // Sundays 02:00 UTC for two hours.
        let schedule = cron::Schedule::from_str("0 0 2 * * Sun").unwrap();
        let s = Silence {
            id: "patch".into(),
            matchers: vec![Matcher::parse("app=FINCORP-APP-CORE").unwrap()],
            window: SilenceWindow::Recurring {
                schedule: Box::new(schedule),
                duration_ms: 2 * 3_600_000,
                until_ms: None,
            },
            expired_at_ms: None,
        };
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert!(
            s.active_at(at("2026-11-22T02:00:00Z")),
            "2026-11-22 is a Sunday"
        );
        assert!(s.active_at(at("2026-11-22T03:59:59Z")));
        assert!(!s.active_at(at("2026-11-22T04:00:00Z")));
        assert!(!s.active_at(at("2026-11-23T02:30:00Z")), "Monday");
        assert!(!s.active_at(at("2026-11-22T01:59:59Z")));
    }
}
