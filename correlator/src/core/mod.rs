//! The correlation core: a pure function of alerts and a clock.
//!
//! [`State::ingest`] takes one normalised alert and the current time and
//! returns the [`Effect`]s to persist; [`State::tick`] returns the effects of
//! time passing (quiet incidents resolve, flapping alerts settle, old
//! incidents close). Operators' decisions come in through
//! [`State::resolve`], [`State::close`] and the silence calls. No IO happens
//! here: the engine stores the effects in one transaction, and a recorded
//! stream can be replayed through the core in tests.
//!
//! How a new firing alert finds its incident, in order:
//! 1. a matching active **silence** keeps it out of incidents altogether;
//! 2. a **flapping** alert goes back to the incident that holds it;
//! 3. **topology**: an open incident of an app it depends on takes it (the
//!    root cause), or an open incident of an app that depends on it does (it
//!    becomes the root cause);
//! 4. the first **grouping rule** that applies gives a group key, and the
//!    key's incident takes it while the incident's window is open (it slides
//!    with every new alert, up to `max_window`), or reopens it when it
//!    resolved less than `reopen_window` ago;
//! 5. otherwise it opens a new incident.
//!
//! Every decision carries its [`Reason`].

use std::collections::{BTreeMap, VecDeque};

// foldhash: a fast keyed hash, seeded at random per process like std's.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use fincorp_api::UnixMs;
use fincorp_api::wire::{AlertStatus, Severity};
use serde::Serialize;

pub mod rules;
pub mod silence;
pub mod topology;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use rules::{AlertFilter, GroupRule, KeyPart};
pub use silence::{MatchOp, Matcher, Silence, SilenceWindow};
pub use topology::{AppInfo, HostInfo, Topology};

/// Correlation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// An incident takes new alerts while its last one arrived less than
    /// this long ago (or while any of its alerts still fires)...
    pub window_ms: i64,
    /// ...and while it opened less than this long ago.
    pub max_window_ms: i64,
    /// How long all of an incident's alerts must stay resolved before it is.
    pub resolve_after_ms: i64,
    /// A resolved incident reopens when its group key fires again within this.
    pub reopen_window_ms: i64,
    /// A resolved incident closes (and can no longer reopen) after this.
    pub close_after_ms: i64,
    /// An alert that changes state this many times...
    pub flap_transitions: usize,
    /// ...within this window is flapping.
    pub flap_window_ms: i64,
    /// Grouping rules, first match wins.
    pub rules: Vec<GroupRule>,
    pub topology: Topology,
}

impl Config {
    /// Defaults: same-host grouping, 5 min sliding window up to 1 h, resolve
    /// after 5 s of quiet, reopen within 10 min, close after 24 h, flapping at
    /// 6 changes in 10 min.
    pub fn with_defaults() -> Self {
        Config {
            window_ms: 300_000,
            max_window_ms: 3_600_000,
            resolve_after_ms: 5_000,
            reopen_window_ms: 600_000,
            close_after_ms: 86_400_000,
            flap_transitions: 6,
            flap_window_ms: 600_000,
            rules: vec![GroupRule::same_host()],
            topology: Topology::default(),
        }
    }
}

/// An alert from any source, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Alert {
    pub event_id: String,
    /// `agent`, `hardware`, `alertmanager`, ...
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
    pub labels: BTreeMap<String, String>,
    pub starts_at_ms: UnixMs,
    pub at_ms: UnixMs,
}

impl Alert {
    /// The labels silences match on: the alert's own plus `alertname`,
    /// `host`, `app`, `source` and `severity`.
    pub fn match_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert("alertname".into(), self.name.clone());
        l.insert("host".into(), self.host.clone());
        if let Some(app) = &self.app {
            l.insert("app".into(), app.clone());
        }
        l.insert("source".into(), self.source.clone());
        l.insert("severity".into(), self.severity.to_string());
        l
    }
}

/// Why an alert opened, joined or reopened an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The rule that decided: a grouping rule's name, `topology`, `flapping`.
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
        key: String,
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
    /// A repeat of a firing alert: new value only. `incident_id` is `None`
    /// for a silenced alert.
    AlertRefreshed {
        incident_id: Option<String>,
        alert: Alert,
    },
    AlertResolved {
        incident_id: Option<String>,
        fingerprint: String,
        starts_at_ms: UnixMs,
        at_ms: UnixMs,
        value: f64,
    },
    /// A firing alert that a silence keeps out of incidents.
    AlertSilenced { alert: Alert, silence_id: String },
    SeverityRaised {
        incident_id: String,
        severity: Severity,
        at_ms: UnixMs,
    },
    /// The incident's root cause is now this app (topology).
    RootCause {
        incident_id: String,
        app: String,
        at_ms: UnixMs,
        reason: Reason,
    },
    /// `quiet_ms` is how long all alerts had been resolved; `None` when an
    /// operator resolved it.
    IncidentResolved {
        incident_id: String,
        at_ms: UnixMs,
        quiet_ms: Option<i64>,
    },
    IncidentReopened {
        incident_id: String,
        at_ms: UnixMs,
        reason: Reason,
    },
    /// `auto` when it closed because it stayed resolved for `close_after`.
    IncidentClosed {
        incident_id: String,
        at_ms: UnixMs,
        auto: bool,
    },
    /// The alert changed state `transitions` times within the flapping
    /// window: its incident stays open until it settles.
    AlertFlapping {
        incident_id: Option<String>,
        fingerprint: String,
        name: String,
        transitions: usize,
        at_ms: UnixMs,
    },
    AlertSettled {
        incident_id: Option<String>,
        fingerprint: String,
        at_ms: UnixMs,
    },
    /// An event that changes nothing (a resolve for an alert we don't hold).
    Ignored { event_id: String, why: String },
}

/// Whether an incident still takes alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Resolved { at_ms: UnixMs },
}

/// An incident the core still tracks: open, or resolved but reopenable.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub key: String,
    pub status: Status,
    pub severity: Severity,
    /// When the incident opened or last reopened: `max_window` counts from here.
    pub window_start_ms: UnixMs,
    pub last_alert_at_ms: UnixMs,
    /// Fingerprints of its firing alerts.
    pub firing: HashSet<String>,
    /// Resolved alerts that are flapping: they keep the incident open.
    pub held: HashSet<String>,
    /// When its last firing alert resolved; `None` while any fires.
    pub quiet_since_ms: Option<UnixMs>,
    /// Apps of its alerts (for topology joins).
    pub apps: HashSet<String>,
}

/// A firing alert episode and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// `None` when silenced.
    pub incident_id: Option<String>,
    pub starts_at_ms: UnixMs,
}

#[derive(Debug, Clone, Default)]
struct Flap {
    transitions: VecDeque<UnixMs>,
    flapping: bool,
    /// The incident holding the alert while it flaps.
    incident_id: Option<String>,
}

/// Why an operator's request could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("incident {0} is not open")]
    NotOpen(String),
    #[error("incident {0} is not resolved")]
    NotResolved(String),
}

/// The core's whole state; rebuilt from the store at start.
#[derive(Debug, Clone)]
pub struct State {
    cfg: Config,
    /// Prefix of incident ids, unique per database, e.g. `fc-3f9a`.
    id_prefix: String,
    next_seq: u64,
    incidents: HashMap<String, Incident>,
    /// Group key → the latest incident for it.
    by_key: HashMap<String, String>,
    /// App → the latest incident with an alert of that app.
    by_app: HashMap<String, String>,
    active: HashMap<String, Active>,
    flaps: HashMap<String, Flap>,
    silences: Vec<Silence>,
}

impl State {
    pub fn new(cfg: Config, id_prefix: impl Into<String>, next_seq: u64) -> Self {
        Self {
            cfg,
            id_prefix: id_prefix.into(),
            next_seq,
            incidents: HashMap::new(),
            by_key: HashMap::new(),
            by_app: HashMap::new(),
            active: HashMap::new(),
            flaps: HashMap::new(),
            silences: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Restores an incident (open, or resolved and not closed) and its firing
    /// episodes (fingerprint, start time), as read from the store at start.
    pub fn restore(&mut self, mut incident: Incident, firing: &[(String, UnixMs)]) {
        incident.firing = firing.iter().map(|(fp, _)| fp.clone()).collect();
        if incident.status == Status::Open {
            for (fp, starts_at_ms) in firing {
                self.active.insert(
                    fp.clone(),
                    Active {
                        incident_id: Some(incident.id.clone()),
                        starts_at_ms: *starts_at_ms,
                    },
                );
            }
        } else {
            incident.firing.clear();
        }
        self.by_key
            .insert(incident.key.clone(), incident.id.clone());
        for app in &incident.apps {
            self.by_app.insert(app.clone(), incident.id.clone());
        }
        self.incidents.insert(incident.id.clone(), incident);
    }

    /// Restores a firing alert that a silence kept out of incidents.
    pub fn restore_silenced(&mut self, fingerprint: String, starts_at_ms: UnixMs) {
        self.active.insert(
            fingerprint,
            Active {
                incident_id: None,
                starts_at_ms,
            },
        );
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().filter(|i| i.status == Status::Open)
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn active_alerts(&self) -> usize {
        self.active.len()
    }

    /// Which incident holds a firing alert.
    pub fn active(&self, fingerprint: &str) -> Option<&Active> {
        self.active.get(fingerprint)
    }

    // ----- silences -----

    /// Adds or replaces a silence.
    pub fn add_silence(&mut self, s: Silence) {
        self.silences.retain(|x| x.id != s.id);
        self.silences.push(s);
    }

    /// Ends a silence at `now`. Returns false if unknown.
    pub fn expire_silence(&mut self, id: &str, now: UnixMs) -> bool {
        match self.silences.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.expired_at_ms = Some(now);
                true
            }
            None => false,
        }
    }

    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    fn silenced_by(&self, alert: &Alert, now: UnixMs) -> Option<String> {
        let labels = alert.match_labels();
        self.silences
            .iter()
            .find(|s| s.active_at(now) && s.matches(&labels))
            .map(|s| s.id.clone())
    }

    // ----- alerts -----

    /// Processes one alert at time `now`.
    pub fn ingest(&mut self, alert: Alert, now: UnixMs) -> Vec<Effect> {
        match alert.status {
            AlertStatus::Firing => self.firing(alert, now),
            AlertStatus::Resolved => self.resolved(alert, now),
        }
    }

    /// Records a state change of `fp`; returns the flapping effect when the
    /// alert starts flapping.
    fn transition(
        &mut self,
        fp: &str,
        name: &str,
        incident_id: Option<&str>,
        now: UnixMs,
    ) -> Option<Effect> {
        let window = self.cfg.flap_window_ms;
        let threshold = self.cfg.flap_transitions;
        let flap = self.flaps.entry(fp.to_owned()).or_default();
        flap.transitions.push_back(now);
        while flap.transitions.front().is_some_and(|t| now - t > window) {
            flap.transitions.pop_front();
        }
        if let Some(id) = incident_id {
            flap.incident_id = Some(id.to_owned());
        }
        if threshold > 0 && !flap.flapping && flap.transitions.len() >= threshold {
            flap.flapping = true;
            return Some(Effect::AlertFlapping {
                incident_id: flap.incident_id.clone(),
                fingerprint: fp.to_owned(),
                name: name.to_owned(),
                transitions: flap.transitions.len(),
                at_ms: now,
            });
        }
        None
    }

    fn joinable(&self, inc: &Incident, now: UnixMs) -> bool {
        inc.status == Status::Open
            && (now - inc.last_alert_at_ms <= self.cfg.window_ms || !inc.firing.is_empty())
            && now - inc.window_start_ms <= self.cfg.max_window_ms
    }

    fn firing(&mut self, alert: Alert, now: UnixMs) -> Vec<Effect> {
        if let Some(active) = self.active.get(&alert.fingerprint) {
            let incident_id = active.incident_id.clone();
            let raised = match &incident_id {
                Some(id) => self.raise_severity(id, alert.severity, now),
                None => vec![],
            };
            let mut effects = Vec::with_capacity(1 + raised.len());
            effects.push(Effect::AlertRefreshed { incident_id, alert });
            effects.extend(raised);
            return effects;
        }

        if let Some(silence_id) = self.silenced_by(&alert, now) {
            self.active.insert(
                alert.fingerprint.clone(),
                Active {
                    incident_id: None,
                    starts_at_ms: alert.starts_at_ms,
                },
            );
            let mut effects = vec![Effect::AlertSilenced {
                alert: alert.clone(),
                silence_id,
            }];
            effects.extend(self.transition(&alert.fingerprint, &alert.name, None, now));
            return effects;
        }

        let mut effects = Vec::new();
        let (incident_id, reason) = match self.decide(&alert, now) {
            Decision::Join(id, reason) => (id, reason),
            Decision::JoinAsRootCause(id, reason) => {
                let app = alert.app.clone().expect("root causes come from app alerts");
                effects.push(Effect::RootCause {
                    incident_id: id.clone(),
                    app,
                    at_ms: now,
                    reason: reason.clone(),
                });
                (id, reason)
            }
            Decision::Reopen(id, reason) => {
                let inc = self
                    .incidents
                    .get_mut(&id)
                    .expect("decided on an existing incident");
                inc.status = Status::Open;
                inc.window_start_ms = now;
                effects.push(Effect::IncidentReopened {
                    incident_id: id.clone(),
                    at_ms: now,
                    reason: reason.clone(),
                });
                (id, reason)
            }
            Decision::Open(key, reason) => {
                let id = self.open_incident(&alert, key, now, &reason, &mut effects);
                (id, reason)
            }
        };

        let inc = self
            .incidents
            .get_mut(&incident_id)
            .expect("joined, reopened or just opened");
        inc.firing.insert(alert.fingerprint.clone());
        inc.held.remove(&alert.fingerprint);
        inc.last_alert_at_ms = now;
        inc.quiet_since_ms = None;
        if let Some(app) = &alert.app {
            inc.apps.insert(app.clone());
            self.by_app.insert(app.clone(), incident_id.clone());
        }
        self.active.insert(
            alert.fingerprint.clone(),
            Active {
                incident_id: Some(incident_id.clone()),
                starts_at_ms: alert.starts_at_ms,
            },
        );
        let (severity, fp, name) = (
            alert.severity,
            alert.fingerprint.clone(),
            alert.name.clone(),
        );
        effects.push(Effect::AlertAttached {
            incident_id: incident_id.clone(),
            alert,
            reason,
        });
        effects.extend(self.raise_severity(&incident_id, severity, now));
        effects.extend(self.transition(&fp, &name, Some(&incident_id), now));
        effects
    }

    fn open_incident(
        &mut self,
        alert: &Alert,
        key: String,
        now: UnixMs,
        reason: &Reason,
        effects: &mut Vec<Effect>,
    ) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("{}-{seq}", self.id_prefix);
        let title = match &alert.app {
            Some(app) => format!("{} on {app} ({})", alert.name, alert.host),
            None => format!("{} on {}", alert.name, alert.host),
        };
        effects.push(Effect::IncidentOpened {
            incident_id: id.clone(),
            seq,
            key: key.clone(),
            host: alert.host.clone(),
            app: alert.app.clone(),
            severity: alert.severity,
            title,
            at_ms: now,
            reason: reason.clone(),
        });
        self.incidents.insert(
            id.clone(),
            Incident {
                id: id.clone(),
                key: key.clone(),
                status: Status::Open,
                severity: alert.severity,
                window_start_ms: now,
                last_alert_at_ms: now,
                firing: HashSet::new(),
                held: HashSet::new(),
                quiet_since_ms: None,
                apps: HashSet::new(),
            },
        );
        self.by_key.insert(key, id.clone());
        id
    }

    fn decide(&self, alert: &Alert, now: UnixMs) -> Decision {
        let w = self.cfg.window_ms;
        // A flapping alert goes back to the incident that holds it.
        if let Some(id) = self
            .flaps
            .get(&alert.fingerprint)
            .filter(|f| f.flapping)
            .and_then(|f| f.incident_id.as_ref())
        {
            if self
                .incidents
                .get(id)
                .is_some_and(|inc| inc.status == Status::Open)
            {
                return Decision::Join(
                    id.clone(),
                    Reason {
                        rule: "flapping".into(),
                        key: format!("fingerprint={}", alert.fingerprint),
                        window_ms: self.cfg.flap_window_ms,
                        detail: format!(
                            "{} is flapping and returns to {id}, which holds it",
                            alert.name
                        ),
                    },
                );
            }
        }
        // Topology: dependencies first (we are a symptom), then dependents
        // (we are the root cause).
        if let Some(app) = &alert.app {
            let topo = &self.cfg.topology;
            for dep in topo.dependencies(app) {
                if let Some(inc) = self
                    .by_app
                    .get(&dep)
                    .and_then(|id| self.incidents.get(id))
                    .filter(|i| self.joinable(i, now))
                {
                    return Decision::Join(
                        inc.id.clone(),
                        Reason {
                            rule: "topology".into(),
                            key: format!("app={app}"),
                            window_ms: w,
                            detail: format!(
                                "joined {}: {app} depends on {dep}, whose incident is open (root cause {dep})",
                                inc.id
                            ),
                        },
                    );
                }
            }
            for dependent in topo.dependents(app) {
                if let Some(inc) = self
                    .by_app
                    .get(&dependent)
                    .and_then(|id| self.incidents.get(id))
                    .filter(|i| self.joinable(i, now))
                {
                    return Decision::JoinAsRootCause(
                        inc.id.clone(),
                        Reason {
                            rule: "topology".into(),
                            key: format!("app={app}"),
                            window_ms: w,
                            detail: format!(
                                "joined {}: {dependent} depends on {app}, so {app} is the likely root cause",
                                inc.id
                            ),
                        },
                    );
                }
            }
        }
        // Grouping rules: the first that applies gives the key.
        let (rule, key) = self
            .cfg
            .rules
            .iter()
            .find_map(|r| {
                r.key(alert, &self.cfg.topology)
                    .map(|k| (r.name.clone(), k))
            })
            .unwrap_or_else(|| {
                (
                    "ungrouped".into(),
                    format!("fingerprint={}", alert.fingerprint),
                )
            });
        if let Some(inc) = self.by_key.get(&key).and_then(|id| self.incidents.get(id)) {
            if self.joinable(inc, now) {
                let detail = if inc.firing.is_empty() {
                    format!(
                        "joined {}: same {key}, its last alert arrived {} ms ago (window {w} ms)",
                        inc.id,
                        now - inc.last_alert_at_ms
                    )
                } else {
                    format!(
                        "joined {}: same {key}, which still has {} firing alert(s)",
                        inc.id,
                        inc.firing.len()
                    )
                };
                return Decision::Join(
                    inc.id.clone(),
                    Reason {
                        rule,
                        key,
                        window_ms: w,
                        detail,
                    },
                );
            }
            if let Status::Resolved { at_ms } = inc.status {
                if now - at_ms <= self.cfg.reopen_window_ms {
                    let detail = format!(
                        "reopened {}: same {key} fired again {} ms after it resolved (reopen window {} ms)",
                        inc.id,
                        now - at_ms,
                        self.cfg.reopen_window_ms
                    );
                    return Decision::Reopen(
                        inc.id.clone(),
                        Reason {
                            rule,
                            key,
                            window_ms: self.cfg.reopen_window_ms,
                            detail,
                        },
                    );
                }
            }
        }
        let detail = format!("opened: no incident for {key} took alerts within the last {w} ms");
        Decision::Open(
            key.clone(),
            Reason {
                rule,
                key,
                window_ms: w,
                detail,
            },
        )
    }

    fn raise_severity(
        &mut self,
        incident_id: &str,
        severity: Severity,
        now: UnixMs,
    ) -> Vec<Effect> {
        match self.incidents.get_mut(incident_id) {
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
        let mut effects = vec![Effect::AlertResolved {
            incident_id: active.incident_id.clone(),
            fingerprint: alert.fingerprint.clone(),
            starts_at_ms: active.starts_at_ms,
            at_ms: alert.at_ms,
            value: alert.value,
        }];
        let flapping_now = self.transition(
            &alert.fingerprint,
            &alert.name,
            active.incident_id.as_deref(),
            now,
        );
        let flapping = self
            .flaps
            .get(&alert.fingerprint)
            .is_some_and(|f| f.flapping);
        effects.extend(flapping_now);
        if let Some(inc) = active
            .incident_id
            .as_ref()
            .and_then(|id| self.incidents.get_mut(id))
        {
            inc.firing.remove(&alert.fingerprint);
            if flapping {
                inc.held.insert(alert.fingerprint.clone());
            }
            if inc.firing.is_empty() && inc.held.is_empty() {
                inc.quiet_since_ms = Some(now);
            }
        }
        effects
    }

    // ----- time -----

    /// Resolves incidents that have been quiet for `resolve_after`, settles
    /// alerts that stopped flapping, and closes old resolved incidents.
    pub fn tick(&mut self, now: UnixMs) -> Vec<Effect> {
        let mut effects = Vec::new();

        // Flapping alerts with no change for a whole window have settled.
        let mut settled: Vec<String> = self
            .flaps
            .iter()
            .filter(|(_, f)| {
                f.transitions
                    .back()
                    .is_none_or(|t| now - t > self.cfg.flap_window_ms)
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        settled.sort();
        for fp in settled {
            let flap = self.flaps.remove(&fp).expect("listed above");
            if !flap.flapping {
                continue;
            }
            effects.push(Effect::AlertSettled {
                incident_id: flap.incident_id.clone(),
                fingerprint: fp.clone(),
                at_ms: now,
            });
            if let Some(inc) = flap
                .incident_id
                .as_ref()
                .and_then(|id| self.incidents.get_mut(id))
            {
                if inc.held.remove(&fp)
                    && inc.firing.is_empty()
                    && inc.held.is_empty()
                    && inc.status == Status::Open
                {
                    inc.quiet_since_ms = Some(now);
                }
            }
        }

        let mut ids: Vec<String> = self.incidents.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let inc = self.incidents.get_mut(&id).expect("listed above");
            match inc.status {
                Status::Open => {
                    if let Some(q) = inc
                        .quiet_since_ms
                        .filter(|q| now - q >= self.cfg.resolve_after_ms)
                    {
                        inc.status = Status::Resolved { at_ms: now };
                        effects.push(Effect::IncidentResolved {
                            incident_id: id,
                            at_ms: now,
                            quiet_ms: Some(now - q),
                        });
                    }
                }
                Status::Resolved { at_ms } if now - at_ms >= self.cfg.close_after_ms => {
                    self.forget(&id);
                    effects.push(Effect::IncidentClosed {
                        incident_id: id,
                        at_ms: now,
                        auto: true,
                    });
                }
                Status::Resolved { .. } => {}
            }
        }
        self.silences.retain(|s| !s.over_at(now));
        effects
    }

    fn forget(&mut self, id: &str) {
        if let Some(inc) = self.incidents.remove(id) {
            if self.by_key.get(&inc.key).is_some_and(|x| x == id) {
                self.by_key.remove(&inc.key);
            }
            for app in &inc.apps {
                if self.by_app.get(app).is_some_and(|x| x == id) {
                    self.by_app.remove(app);
                }
            }
        }
    }

    // ----- operators -----

    /// An operator resolves an open incident. Its firing alerts are let go:
    /// if they fire again they reopen it (within the reopen window) or open
    /// a new one.
    pub fn resolve(&mut self, id: &str, now: UnixMs) -> Result<Vec<Effect>, CoreError> {
        let inc = self
            .incidents
            .get_mut(id)
            .filter(|i| i.status == Status::Open)
            .ok_or_else(|| CoreError::NotOpen(id.to_owned()))?;
        inc.status = Status::Resolved { at_ms: now };
        for fp in inc.firing.drain().chain(inc.held.drain()) {
            self.active.remove(&fp);
            self.flaps.remove(&fp);
        }
        inc.quiet_since_ms = None;
        Ok(vec![Effect::IncidentResolved {
            incident_id: id.to_owned(),
            at_ms: now,
            quiet_ms: None,
        }])
    }

    /// An operator closes a resolved incident: it can no longer reopen.
    pub fn close(&mut self, id: &str, now: UnixMs) -> Result<Vec<Effect>, CoreError> {
        match self.incidents.get(id).map(|i| i.status) {
            Some(Status::Resolved { .. }) => {
                self.forget(id);
                Ok(vec![Effect::IncidentClosed {
                    incident_id: id.to_owned(),
                    at_ms: now,
                    auto: false,
                }])
            }
            _ => Err(CoreError::NotResolved(id.to_owned())),
        }
    }
}

enum Decision {
    Join(String, Reason),
    JoinAsRootCause(String, Reason),
    Reopen(String, Reason),
    Open(String, Reason),
}
