//! Playbook automation with guardrails: runs decided at ingest (or by the
//! cron scheduler) are admitted, locked, executed step by step, recorded,
//! and resumed after a restart.
//!
//! The guardrails, in the order a run meets them:
//! 1. the kill switch (persisted; when on, no run starts and running runs
//!    stop before their next step);
//! 2. per-target locks shared by all playbooks (a run holds its host/app for
//!    its whole life, so two playbooks never act on one app at once);
//! 3. tripped circuit breakers (fleet, playbook, playbook on one target);
//! 4. causal depth: an alert that starts on a host/app while (or within the
//!    causal window after) one of our runs changed it is attributed to that
//!    run; a run deeper than the playbook's `max_depth` is blocked and trips
//!    the breaker of its playbook on that target;
//! 5. budgets of admitted runs per playbook, per target and fleet-wide in
//!    sliding windows; exceeding one blocks the run and trips its breaker.
//!    A window starts no earlier than its breaker's last reset: resetting a
//!    breaker gives its budget a fresh start.
//!
//! A tripped breaker escalates: a webhook notification and a ServiceNow
//! ticket, both recorded on the breaker and in the audit log. Breakers stay
//! tripped until an operator resets them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::rest::{
    AutomationStatus, BreakerView, KillSwitchView, PlanView, PlaybookView, ReloadView,
};
use fincorp_api::{UnixMs, now_ms};
use fincorp_integrations::servicenow::{NewIncident, ServiceNowClient};
use fincorp_integrations::vsphere::VsphereClient;
use fincorp_playbooks::Playbook;
use fincorp_playbooks::plan;
use fincorp_playbooks::template::{PlaybookCtx, RunContext, RunCtx};
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, watch};
use tracing::Instrument;

use crate::commands::CommandBus;
use crate::config;
use crate::engine::{Engine, OpError};
use crate::samples::Samples;
use crate::store::{StoreError, audit, runs};

mod env;
mod exec;
mod schedule;
#[cfg(test)]
mod tests;

pub use env::{Approvals, RunEnv};

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking store task panicked")
}

/// Everything automation needs, shared by the API, the ingest path, the
/// scheduler and the runs.
pub struct Automation {
    pub(crate) engine: Arc<Engine>,
    pub(crate) env: Arc<RunEnv>,
    settings: config::Automation,
    /// For templates (`secrets.NAME`).
    secrets: BTreeMap<String, String>,
    /// For reload: which secrets exist.
    secret_refs: config::Secrets,
    playbooks_dir: PathBuf,
    kill: watch::Sender<bool>,
    locks: Locks,
    /// Admission decisions are taken one at a time, so two runs never both
    /// pass a budget that has room for one.
    gate: tokio::sync::Mutex<()>,
    /// Runs being driven by this process.
    driving: Mutex<HashSet<String>>,
}

/// What the correlator gives automation at start.
pub struct Setup {
    pub bus: Arc<CommandBus>,
    pub servicenow: Option<ServiceNowClient>,
    /// vCenter, for `vsphere.reallocate` and `failover`.
    pub vsphere: Option<VsphereClient>,
    pub samples: Arc<Samples>,
    pub settings: config::Automation,
    pub secrets: config::Secrets,
    pub playbooks_dir: PathBuf,
}

impl Automation {
    pub fn new(engine: Arc<Engine>, setup: Setup) -> Result<Arc<Self>, StoreError> {
        let kill = engine.read(runs::kill_switch)?;
        if kill.on {
            tracing::warn!(by = ?kill.changed_by, reason = ?kill.reason, "the automation kill switch is ON: no playbook runs until it is turned off");
        }
        let approvals = Arc::new(Approvals {
            engine: engine.clone(),
            decided: Notify::new(),
        });
        let kill_switch = watch::Sender::new(kill.on);
        let env = Arc::new(RunEnv {
            engine: engine.clone(),
            kill: kill_switch.subscribe(),
            bus: setup.bus,
            servicenow: setup.servicenow,
            vsphere: setup.vsphere,
            http: fincorp_api::http::client(Duration::from_secs(10)),
            samples: setup.samples,
            approvals,
        });
        Ok(Arc::new(Automation {
            engine,
            env,
            settings: setup.settings,
            secrets: setup
                .secrets
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        String::from_utf8_lossy(v.expose()).trim().to_owned(),
                    )
                })
                .collect(),
            secret_refs: setup.secrets,
            playbooks_dir: setup.playbooks_dir,
            kill: kill_switch,
            locks: Locks::default(),
            gate: tokio::sync::Mutex::new(()),
            driving: Mutex::new(HashSet::new()),
        }))
    }

    /// Drives a recorded run in the background (once per process).
    pub fn start(self: &Arc<Self>, run_id: String) {
        {
            let mut driving = self.driving.lock().unwrap_or_else(|e| e.into_inner());
            if !driving.insert(run_id.clone()) {
                return;
            }
        }
        let this = self.clone();
        let span = tracing::info_span!("run", run_id = %run_id);
        tokio::spawn(
            async move {
                if let Err(e) = exec::drive(&this, &run_id).await {
                    tracing::error!(error = %e, "recording a playbook run failed; it will be resumed at the next start");
                }
                this.driving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&run_id);
            }
            .instrument(span),
        );
    }

    /// At start: drives every run a previous process left under way. Each
    /// resumes at its first step not yet completed; a step in flight at the
    /// crash is repeated only if its action is idempotent (same key), else
    /// the run is marked interrupted.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, StoreError> {
        let engine = self.engine.clone();
        let active = blocking(move || engine.read(runs::active)).await?;
        for run in &active {
            tracing::info!(run_id = %run.id, playbook = %run.playbook, state = run.state.as_str(), "resuming a run left under way by the previous process");
            self.start(run.id.clone());
        }
        Ok(active.len())
    }

    pub fn kill_switch_on(&self) -> bool {
        *self.kill.borrow()
    }

    /// Resolves when the kill switch is (or turns) on.
    pub(crate) async fn killed(&self) {
        let mut rx = self.kill.subscribe();
        let _ = rx.wait_for(|on| *on).await;
    }

    /// Turns the kill switch on or off (audited).
    pub async fn set_kill_switch(
        &self,
        on: bool,
        by: &str,
        reason: &str,
    ) -> Result<KillSwitchView, OpError> {
        if by.trim().is_empty() {
            return Err(OpError::Invalid(
                "`by` must name who flips the kill switch".into(),
            ));
        }
        let (engine, by_s, reason_s) = (self.engine.clone(), by.to_owned(), reason.to_owned());
        let view = blocking(move || {
            engine.write(|tx| {
                let now = now_ms();
                runs::set_kill_switch(tx, on, &by_s, &reason_s, now)?;
                audit::append(
                    tx,
                    &by_s,
                    if on {
                        "automation.kill_switch.on"
                    } else {
                        "automation.kill_switch.off"
                    },
                    "automation",
                    &json!({"reason": reason_s}),
                    now,
                )?;
                runs::kill_switch(tx)
            })
        })
        .await?;
        // Flip after the commit: what runs see is what the database says.
        self.kill.send_replace(on);
        if on {
            tracing::warn!(
                by,
                reason,
                "automation kill switch ON: runs stop before their next step"
            );
        } else {
            tracing::warn!(by, reason, "automation kill switch off");
        }
        Ok(view)
    }

    /// An operator approves or rejects the approval a run waits for.
    pub async fn decide(
        &self,
        run_id: &str,
        approve: bool,
        by: &str,
        reason: &str,
    ) -> Result<(), OpError> {
        if by.trim().is_empty() {
            return Err(OpError::Invalid("`by` must name who decides".into()));
        }
        let (engine, run_id_s, by_s, reason_s) = (
            self.engine.clone(),
            run_id.to_owned(),
            by.to_owned(),
            reason.to_owned(),
        );
        blocking(move || {
            engine.write(|tx| {
                let Some(run) = runs::get(tx, &run_id_s)? else {
                    return Ok(Err(OpError::NotFound(format!("no run {run_id_s:?}"))));
                };
                let Some(pending) = runs::pending_approval(tx, &run_id_s)? else {
                    return Ok(Err(OpError::Conflict(format!(
                        "run {run_id_s} is {} and waits for no approval",
                        run.state.as_str()
                    ))));
                };
                let now = now_ms();
                if now >= pending.view.expires_at_ms {
                    return Ok(Err(OpError::Conflict(format!("the approval of run {run_id_s} has expired"))));
                }
                runs::decide(tx, &run_id_s, &pending.view.step_id, approve, &by_s, &reason_s, now)?;
                audit::append(
                    tx,
                    &by_s,
                    if approve { "run.approve" } else { "run.reject" },
                    &run_id_s,
                    &json!({"step": pending.view.step_id, "reason": reason_s, "playbook": run.playbook}),
                    now,
                )?;
                Ok(Ok(()))
            })
        })
        .await??;
        self.env.approvals.decided.notify_waiters();
        Ok(())
    }

    /// An operator resets a tripped breaker (audited).
    pub async fn reset_breaker(&self, key: &str, by: &str, reason: &str) -> Result<(), OpError> {
        if by.trim().is_empty() {
            return Err(OpError::Invalid(
                "`by` must name who resets the breaker".into(),
            ));
        }
        let (engine, key_s, by_s, reason_s) = (
            self.engine.clone(),
            key.to_owned(),
            by.to_owned(),
            reason.to_owned(),
        );
        let found = blocking(move || {
            engine.write(|tx| {
                let now = now_ms();
                let found = runs::reset(tx, &key_s, &by_s, now)?;
                if found {
                    audit::append(
                        tx,
                        &by_s,
                        "automation.breaker.reset",
                        &key_s,
                        &json!({"reason": reason_s}),
                        now,
                    )?;
                }
                Ok(found)
            })
        })
        .await?;
        if found {
            Ok(())
        } else {
            Err(OpError::NotFound(format!("no tripped breaker {key:?}")))
        }
    }

    pub async fn status(&self) -> Result<AutomationStatus, StoreError> {
        let engine = self.engine.clone();
        let (kill_switch, breakers, active) = blocking(move || {
            engine.read(|c| {
                Ok((
                    runs::kill_switch(c)?,
                    runs::breakers(c)?,
                    runs::active(c)?.len(),
                ))
            })
        })
        .await?;
        Ok(AutomationStatus {
            kill_switch,
            breakers,
            active_runs: active as u32,
            playbooks: self.playbook_views(),
        })
    }

    pub fn playbook_views(&self) -> Vec<PlaybookView> {
        self.engine
            .playbooks()
            .iter()
            .map(|p| PlaybookView {
                name: p.name.clone(),
                description: p.description.trim().to_owned(),
                file: p.file.display().to_string(),
                trigger: plan::describe_trigger(&p.trigger),
                guardrails: plan::describe_guardrails(&p.guardrails),
                steps: p
                    .steps
                    .iter()
                    .map(|s| format!("{} ({})", s.id, s.action))
                    .collect(),
                mutating: p.mutates(),
            })
            .collect()
    }

    /// A dry-run plan of a playbook against a stored incident.
    pub async fn plan(&self, playbook: &str, incident_id: &str) -> Result<PlanView, OpError> {
        let pb = self
            .engine
            .playbooks()
            .iter()
            .find(|p| p.name == playbook)
            .cloned()
            .ok_or_else(|| OpError::NotFound(format!("no playbook {playbook:?}")))?;
        let (engine, id) = (self.engine.clone(), incident_id.to_owned());
        let (incident, alerts) = blocking(move || engine.run_inputs(&id))
            .await?
            .ok_or_else(|| OpError::NoIncident(incident_id.into()))?;
        // The newest firing alert the trigger would match, else the newest.
        let alert = alerts
            .iter()
            .rev()
            .find(|a| {
                pb.trigger
                    .incident()
                    .is_some_and(|t| t.alerts.is_empty() || t.alerts.contains(&a.name))
            })
            .or(alerts.last())
            .cloned();
        let ctx = RunContext {
            incident: Some(incident),
            alert,
            alerts,
            steps: BTreeMap::new(),
            vars: pb.vars.clone(),
            secrets: self.secrets.clone(),
            playbook: PlaybookCtx {
                name: pb.name.clone(),
            },
            run: RunCtx {
                id: "run-plan".into(),
            },
        };
        let plan = plan::plan(&pb, &ctx, &*self.env, incident_id);
        Ok(PlanView {
            text: plan::render_text(&plan),
            plan: serde_json::to_value(&plan).unwrap_or(Value::Null),
            refusal: plan::dry_run_refusal(&plan).map(|e| e.to_string()),
        })
    }

    /// An operator runs a playbook for an incident now (audited). The run has
    /// its own idempotency scope and meets every guardrail like any other;
    /// its alert is the incident's newest one the trigger would match, else
    /// its newest.
    pub async fn run_manually(
        self: &Arc<Self>,
        playbook: &str,
        incident_id: &str,
        dry_run: bool,
        by: &str,
        reason: &str,
    ) -> Result<String, OpError> {
        let pb = self
            .playbook(playbook)
            .ok_or_else(|| OpError::NotFound(format!("no playbook {playbook:?}")))?;
        if pb.trigger.incident().is_none() {
            return Err(OpError::Invalid(format!(
                "playbook {playbook} is scheduled; it has no incident to run for"
            )));
        }
        let (engine, incident, by_s, reason_s, name) = (
            self.engine.clone(),
            incident_id.to_owned(),
            by.to_owned(),
            reason.to_owned(),
            pb.name.clone(),
        );
        let wanted = pb
            .trigger
            .incident()
            .map(|t| t.alerts.clone())
            .unwrap_or_default();
        let dry = dry_run || pb.guardrails.dry_run;
        let id = blocking(move || {
            engine.write(|tx| {
                let alerts = crate::store::incident_alerts(tx, &incident)?;
                let Some(alert) = alerts
                    .iter()
                    .find(|a| wanted.is_empty() || wanted.contains(&a.name))
                    .or(alerts.first())
                else {
                    return Ok(Err(OpError::NoIncident(incident.clone())));
                };
                let run_id = format!("run-{}", fincorp_api::signing::random_hex(6));
                let now = now_ms();
                let new = runs::NewRun {
                    id: run_id.clone(),
                    playbook: &name,
                    incident_id: Some(&incident),
                    scope: format!("{incident}#manual-{run_id}"),
                    trigger: format!("manual:{by_s}"),
                    alert: Some(alert),
                    target_host: Some(&alert.host),
                    target_app: alert.app.as_deref(),
                    dry_run: dry,
                };
                match runs::insert(tx, &new, now)? {
                    Some(id) => {
                        audit::append(
                            tx,
                            &by_s,
                            "run.manual",
                            &id,
                            &json!({"playbook": name, "incident_id": incident, "dry_run": dry, "reason": reason_s}),
                            now,
                        )?;
                        Ok(Ok(id))
                    }
                    None => Ok(Err(OpError::Conflict(format!(
                        "a run of {name} for {incident} is already waiting to start"
                    )))),
                }
            })
        })
        .await??;
        self.start(id.clone());
        Ok(id)
    }

    /// Reloads the playbooks directory. On any error the running set stays.
    pub fn reload(&self) -> Result<ReloadView, fincorp_api::yaml::Diagnostics> {
        let (playbooks, warnings) = config::load_playbooks(&self.playbooks_dir, &self.secret_refs)?;
        let names = playbooks.iter().map(|p| p.name.clone()).collect();
        self.engine.set_playbooks(Arc::new(playbooks));
        Ok(ReloadView {
            playbooks: names,
            warnings: warnings.iter().map(ToString::to_string).collect(),
        })
    }

    /// Starts the cron scheduler for scheduled playbooks.
    pub fn start_scheduler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(schedule::run(self.clone()))
    }

    pub(crate) fn playbook(&self, name: &str) -> Option<Playbook> {
        self.engine
            .playbooks()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    pub(crate) fn secrets(&self) -> &BTreeMap<String, String> {
        &self.secrets
    }

    pub(crate) fn settings(&self) -> &config::Automation {
        &self.settings
    }

    pub(crate) async fn lock(&self, keys: &[LockKey]) -> Vec<LockGuard> {
        self.locks.acquire(keys).await
    }

    pub(crate) fn gate(&self) -> &tokio::sync::Mutex<()> {
        &self.gate
    }

    /// Escalates a tripped breaker: a webhook notification and a ServiceNow
    /// ticket, each best effort, recorded on the breaker and audited.
    pub(crate) async fn escalate(&self, breaker: &BreakerView, run: &runs::RunRow) {
        let mut record = serde_json::Map::new();
        let body = json!({
            "event": "fincorp.automation.breaker_tripped",
            "breaker": breaker.key,
            "reason": breaker.reason,
            "tripped_at_ms": breaker.tripped_at_ms,
            "run_id": run.id,
            "playbook": run.playbook,
            "incident_id": run.incident_id,
            "target": {"host": run.target_host, "app": run.target_app},
            "action_needed": "automation for this scope is stopped until an operator resets the breaker (fincorpctl automation breaker reset)",
        });
        if let Some(url) = &self.settings.escalation_webhook {
            let outcome = match self.env.http.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    json!({"url": url, "status": r.status().as_u16()})
                }
                Ok(r) => {
                    json!({"url": url, "status": r.status().as_u16(), "error": "non-success status"})
                }
                Err(e) => json!({"url": url, "error": e.to_string()}),
            };
            record.insert("webhook".into(), outcome);
        }
        if self.settings.escalation_servicenow {
            if let Some(sn) = &self.env.servicenow {
                let new = NewIncident {
                    correlation_id: format!(
                        "fincorp-breaker-{}-{}",
                        breaker.key, breaker.tripped_at_ms
                    ),
                    short_description: format!(
                        "FINCORP automation stopped: breaker {} tripped",
                        breaker.key
                    ),
                    description: Some(format!(
                        "{}\nRun {} of playbook {} was blocked{}. Automation in this scope stays stopped until an operator resets the breaker.",
                        breaker.reason,
                        run.id,
                        run.playbook,
                        run.incident_id
                            .as_deref()
                            .map(|i| format!(" (incident {i})"))
                            .unwrap_or_default()
                    )),
                    urgency: Some("1".into()),
                    impact: Some("2".into()),
                    work_notes: None,
                    extra: BTreeMap::new(),
                };
                let outcome = match sn.ensure_incident(&new).await {
                    Ok(e) => {
                        json!({"number": e.ticket.number, "sys_id": e.ticket.sys_id, "created": e.created})
                    }
                    Err(e) => json!({"error": e.to_string()}),
                };
                record.insert("servicenow".into(), outcome);
            }
        }
        if record.is_empty() {
            record.insert(
                "none".into(),
                json!("no escalation webhook or ServiceNow configured: only the log and the audit log record this"),
            );
        }
        let record = Value::Object(record);
        tracing::warn!(breaker = %breaker.key, escalation = %record, "breaker tripped and escalated");
        let (engine, key, run_id) = (self.engine.clone(), breaker.key.clone(), run.id.clone());
        let result = blocking(move || {
            engine.write(|tx| {
                runs::set_escalation(tx, &key, &record)?;
                audit::append(
                    tx,
                    "automation",
                    "automation.breaker.escalated",
                    &key,
                    &json!({"run_id": run_id, "escalation": record}),
                    now_ms(),
                )
            })
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "recording the escalation failed");
        }
    }
}

// ----- locks -----

/// A lock a run holds: a host (shared by app-scoped runs, exclusive for
/// host-scoped ones), an app on a host, or a playbook (scheduled runs
/// without a target).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockKey {
    HostShared(String),
    HostExclusive(String),
    App(String, String),
    Playbook(String),
}

pub enum LockGuard {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

#[derive(Default)]
struct Locks {
    map: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl Locks {
    fn get(&self, name: &str) -> Arc<RwLock<()>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Takes the locks in a fixed order (hosts before apps), so two runs can
    /// never wait on each other.
    async fn acquire(&self, keys: &[LockKey]) -> Vec<LockGuard> {
        let mut keys = keys.to_vec();
        keys.sort();
        let mut guards = Vec::with_capacity(keys.len());
        for k in keys {
            guards.push(match k {
                LockKey::HostShared(h) => {
                    LockGuard::Read(self.get(&format!("host:{h}")).read_owned().await)
                }
                LockKey::HostExclusive(h) => {
                    LockGuard::Write(self.get(&format!("host:{h}")).write_owned().await)
                }
                LockKey::App(h, a) => {
                    LockGuard::Write(self.get(&format!("app:{h}/{a}")).write_owned().await)
                }
                LockKey::Playbook(p) => {
                    LockGuard::Write(self.get(&format!("playbook:{p}")).write_owned().await)
                }
            });
        }
        guards
    }
}

/// Breaker keys that cover a run.
pub(crate) fn breaker_keys(playbook: &str, host: Option<&str>, app: Option<&str>) -> Vec<String> {
    let mut keys = vec!["fleet".to_owned(), format!("playbook:{playbook}")];
    if let Some(h) = host {
        keys.push(target_breaker(playbook, h, app));
    }
    keys
}

pub(crate) fn target_breaker(playbook: &str, host: &str, app: Option<&str>) -> String {
    format!("playbook:{playbook}@{host}/{}", app.unwrap_or("-"))
}

/// Milliseconds as a human duration, for messages.
pub(crate) fn human(ms: UnixMs) -> String {
    plan::human_ms(ms)
}
