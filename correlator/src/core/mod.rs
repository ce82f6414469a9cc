//! The correlation core: a pure function of alerts and a clock.
//!
//! [`State::ingest`] takes one normalised alert and the current time and
//! returns the [`Effect`]s to persist; [`State::tick`] returns the effects of
//! time passing (incidents whose alerts have all resolved and stayed quiet).
//! No IO happens here: the engine stores the effects in one transaction and
//! the core can be replayed from a recorded stream in tests.
//!
//! Grouping rule (`same-host`): a firing alert joins the open incident of its
//! host when that incident still has firing alerts or its last alert arrived
//! less than `window` ago; otherwise it opens a new incident. Every decision
//! carries its [`Reason`].

use std::collections::{HashMap, HashSet};

use fincorp_api::UnixMs;
use fincorp_api::wire::{AlertStatus, Severity};
use serde::Serialize;

#[cfg(test)]
mod tests;

/// Correlation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long after its last new alert an incident still takes new ones.
    pub window_ms: i64,
    /// How long all of an incident's alerts must stay resolved before it is.
    pub resolve_after_ms: i64,
}

/// An alert from any source, normalised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub event_id: String,
    pub source: String,
    pub fingerprint: String,
    pub status: AlertStatus,
    pub name: String,
    pub host: String,
    pub app: Option<String>,
    pub severity: Severity,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub starts_at_ms: UnixMs,
    pub at_ms: UnixMs,
}

/// Why an alert opened or joined an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The grouping rule that decided.
    pub rule: String,
    /// The group key, e.g. `host=web01`.
    pub key: String,
    pub window_ms: i64,
    /// In words.
    pub detail: String,
}

/// What the engine must record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    IncidentOpened {
        incident_id: String,
        seq: u64,
        host: String,
        app: Option<String>,
        severity: Severity,
        title: String,
        at_ms: UnixMs,
        reason: Reason,
    },
    /// A new alert episode became part of an incident (also the opening one).
    AlertAttached {
        incident_id: String,
        alert: Alert,
        reason: Reason,
    },
    /// A repeat of a firing alert already in an incident: new value only.
    AlertRefreshed { incident_id: String, alert: Alert },
    AlertResolved {
        incident_id: String,
        fingerprint: String,
        starts_at_ms: UnixMs,
        at_ms: UnixMs,
        value: f64,
    },
    SeverityRaised {
        incident_id: String,
        severity: Severity,
        at_ms: UnixMs,
    },
    IncidentResolved {
        incident_id: String,
        at_ms: UnixMs,
        quiet_ms: i64,
    },
    /// An event that changes nothing (a resolve for an alert we don't hold).
    Ignored { event_id: String, why: String },
}

/// An incident that is still open, as the core tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIncident {
    pub id: String,
    pub host: String,
    pub severity: Severity,
    pub last_alert_at_ms: UnixMs,
    /// Fingerprints of its firing alerts.
    pub firing: HashSet<String>,
    /// When its last firing alert resolved; `None` while any fires.
    pub quiet_since_ms: Option<UnixMs>,
}

/// A firing alert episode and the incident that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert {
    pub incident_id: String,
    pub starts_at_ms: UnixMs,
}

/// The core's whole state; rebuilt from the store at start.
#[derive(Debug, Clone)]
pub struct State {
    cfg: Config,
    /// Prefix of incident ids, unique per database, e.g. `fc-3f9a`.
    id_prefix: String,
    next_seq: u64,
    open: HashMap<String, OpenIncident>,
    /// Group key (host) → open incident id.
    by_host: HashMap<String, String>,
    /// Fingerprint → its firing episode.
    active: HashMap<String, ActiveAlert>,
}

const SAME_HOST: &str = "same-host";

impl State {
    pub fn new(cfg: Config, id_prefix: impl Into<String>, next_seq: u64) -> Self {
        Self {
            cfg,
            id_prefix: id_prefix.into(),
            next_seq,
            open: HashMap::new(),
            by_host: HashMap::new(),
            active: HashMap::new(),
        }
    }

    /// Restores an open incident and its firing episodes
    /// (fingerprint, start time), as read from the store at start.
    pub fn restore(&mut self, mut incident: OpenIncident, firing: &[(String, UnixMs)]) {
        incident.firing = firing.iter().map(|(fp, _)| fp.clone()).collect();
        for (fp, starts_at_ms) in firing {
            self.active.insert(
                fp.clone(),
                ActiveAlert {
                    incident_id: incident.id.clone(),
                    starts_at_ms: *starts_at_ms,
                },
            );
        }
        self.by_host
            .insert(incident.host.clone(), incident.id.clone());
        self.open.insert(incident.id.clone(), incident);
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &OpenIncident> {
        self.open.values()
    }

    pub fn active_alerts(&self) -> usize {
        self.active.len()
    }

    /// Processes one alert at time `now`.
    pub fn ingest(&mut self, alert: Alert, now: UnixMs) -> Vec<Effect> {
        match alert.status {
            AlertStatus::Firing => self.firing(alert, now),
            AlertStatus::Resolved => self.resolved(alert, now),
        }
    }

    fn firing(&mut self, alert: Alert, now: UnixMs) -> Vec<Effect> {
        if let Some(active) = self.active.get(&alert.fingerprint) {
            let incident_id = active.incident_id.clone();
            let mut effects = self.raise_severity(&incident_id, alert.severity, now);
            effects.insert(0, Effect::AlertRefreshed { incident_id, alert });
            return effects;
        }

        let key = format!("host={}", alert.host);
        let joinable = self
            .by_host
            .get(&alert.host)
            .and_then(|id| self.open.get(id))
            .filter(|inc| {
                !inc.firing.is_empty() || now - inc.last_alert_at_ms <= self.cfg.window_ms
            });

        let mut effects = Vec::new();
        let (incident_id, reason) = match joinable {
            Some(inc) => {
                let detail = if inc.firing.is_empty() {
                    format!(
                        "joined {}: same host, its last alert arrived {} ms ago (window {} ms)",
                        inc.id,
                        now - inc.last_alert_at_ms,
                        self.cfg.window_ms
                    )
                } else {
                    format!(
                        "joined {}: same host, which still has {} firing alert(s)",
                        inc.id,
                        inc.firing.len()
                    )
                };
                let reason = Reason {
                    rule: SAME_HOST.into(),
                    key,
                    window_ms: self.cfg.window_ms,
                    detail,
                };
                (inc.id.clone(), reason)
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let id = format!("{}-{seq}", self.id_prefix);
                let reason = Reason {
                    rule: SAME_HOST.into(),
                    key,
                    window_ms: self.cfg.window_ms,
                    detail: format!(
                        "opened: no open incident on host {} took alerts within the last {} ms",
                        alert.host, self.cfg.window_ms
                    ),
                };
                let title = match &alert.app {
                    Some(app) => format!("{} on {app} ({})", alert.name, alert.host),
                    None => format!("{} on {}", alert.name, alert.host),
                };
                effects.push(Effect::IncidentOpened {
                    incident_id: id.clone(),
                    seq,
                    host: alert.host.clone(),
                    app: alert.app.clone(),
                    severity: alert.severity,
                    title,
                    at_ms: now,
                    reason: reason.clone(),
                });
                self.open.insert(
                    id.clone(),
                    OpenIncident {
                        id: id.clone(),
                        host: alert.host.clone(),
                        severity: alert.severity,
                        last_alert_at_ms: now,
                        firing: HashSet::new(),
                        quiet_since_ms: None,
                    },
                );
                self.by_host.insert(alert.host.clone(), id.clone());
                (id, reason)
            }
        };

        let inc = self
            .open
            .get_mut(&incident_id)
            .expect("joined or just opened");
        inc.firing.insert(alert.fingerprint.clone());
        inc.last_alert_at_ms = now;
        inc.quiet_since_ms = None;
        self.active.insert(
            alert.fingerprint.clone(),
            ActiveAlert {
                incident_id: incident_id.clone(),
                starts_at_ms: alert.starts_at_ms,
            },
        );
        let severity = alert.severity;
        effects.push(Effect::AlertAttached {
            incident_id: incident_id.clone(),
            alert,
            reason,
        });
        effects.extend(self.raise_severity(&incident_id, severity, now));
        effects
    }

    fn raise_severity(
        &mut self,
        incident_id: &str,
        severity: Severity,
        now: UnixMs,
    ) -> Vec<Effect> {
        match self.open.get_mut(incident_id) {
            Some(inc) if severity > inc.severity => {
                inc.severity = severity;
                vec![Effect::SeverityRaised {
                    incident_id: incident_id.to_owned(),
                    severity,
                    at_ms: now,
                }]
            }
            _ => vec![],
        }
    }

    fn resolved(&mut self, alert: Alert, now: UnixMs) -> Vec<Effect> {
        let Some(active) = self.active.remove(&alert.fingerprint) else {
            return vec![Effect::Ignored {
                event_id: alert.event_id,
                why: format!(
                    "resolve for {} ({}), which is not firing here",
                    alert.name, alert.fingerprint
                ),
            }];
        };
        if let Some(inc) = self.open.get_mut(&active.incident_id) {
            inc.firing.remove(&alert.fingerprint);
            if inc.firing.is_empty() {
                inc.quiet_since_ms = Some(now);
            }
        }
        vec![Effect::AlertResolved {
            incident_id: active.incident_id,
            fingerprint: alert.fingerprint,
            starts_at_ms: active.starts_at_ms,
            at_ms: alert.at_ms,
            value: alert.value,
        }]
    }

    /// Resolves incidents that have been quiet for `resolve_after`.
    pub fn tick(&mut self, now: UnixMs) -> Vec<Effect> {
        let mut due: Vec<String> = self
            .open
            .values()
            .filter(|inc| {
                inc.quiet_since_ms
                    .is_some_and(|q| now - q >= self.cfg.resolve_after_ms)
            })
            .map(|inc| inc.id.clone())
            .collect();
        due.sort();
        let mut effects = Vec::new();
        for id in due {
            let inc = self.open.remove(&id).expect("listed above");
            if self.by_host.get(&inc.host) == Some(&id) {
                self.by_host.remove(&inc.host);
            }
            effects.push(Effect::IncidentResolved {
                incident_id: id,
                at_ms: now,
                quiet_ms: now - inc.quiet_since_ms.unwrap_or(now),
            });
        }
        effects
    }
}
