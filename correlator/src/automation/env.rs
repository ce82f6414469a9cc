//! What playbook actions may touch, for real: the agent command bus,
//! ServiceNow, vCenter, webhooks, the latest agent samples, operators'
//! approvals, maintenance silences (through the engine, audited), the
//! progress of long steps, and the kill switch.

use std::sync::Arc;
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::rest::{NewSilence, RunState};
use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_integrations::vsphere::VsphereClient;
use fincorp_playbooks::actions::{BoxFuture, Decision, Env};
use serde_json::Value;
use tokio::sync::Notify;

use super::blocking;
use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::samples::Samples;
use crate::store::{StoreError, runs};

pub struct RunEnv {
    /// For maintenance silences and step progress.
    pub engine: Arc<Engine>,
    /// The kill switch, as long actions see it between their phases.
    pub kill: tokio::sync::watch::Receiver<bool>,
    pub bus: Arc<CommandBus>,
    pub servicenow: Option<ServiceNowClient>,
    pub vsphere: Option<VsphereClient>,
    pub http: reqwest::Client,
    pub samples: Arc<Samples>,
    pub approvals: Arc<Approvals>,
}

impl Env for RunEnv {
    fn agent_command<'a>(
        &'a self,
        host: &'a str,
        command_id: &'a str,
        action: CommandAction,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CommandResult, String>> {
        Box::pin(self.bus.send(host, command_id, action, timeout))
    }

    fn servicenow(&self) -> Option<&ServiceNowClient> {
        self.servicenow.as_ref()
    }

    fn vsphere(&self) -> Option<&VsphereClient> {
        self.vsphere.as_ref()
    }

    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn metric(&self, host: &str, app: Option<&str>, metric: &str) -> Option<f64> {
        self.samples.metric(host, app, metric, now_ms())
    }

    fn await_approval<'a>(
        &'a self,
        run_id: &'a str,
        step_id: &'a str,
        prompt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Decision>, String>> {
        Box::pin(async move {
            self.approvals
                .wait(run_id, step_id, prompt, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn sampled_at(&self, host: &str) -> Option<i64> {
        self.samples.sampled_at(host, now_ms())
    }

    fn create_silence<'a>(
        &'a self,
        matchers: Vec<String>,
        duration: Duration,
        created_by: &'a str,
        comment: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        let new = NewSilence {
            matchers,
            starts_at: None,
            ends_at: None,
            duration: Some(format!("{}ms", duration.as_millis().max(1))),
            schedule: None,
            until: None,
            created_by: Some(created_by.to_owned()),
            comment: comment.to_owned(),
        };
        let (engine, by) = (self.engine.clone(), created_by.to_owned());
        Box::pin(async move {
            blocking(move || engine.add_silence(&new, &by, now_ms()))
                .await
                .map(|view| view.id)
                .map_err(|e| e.to_string())
        })
    }

    fn expire_silence<'a>(&'a self, id: &'a str, by: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let (engine, id, by) = (self.engine.clone(), id.to_owned(), by.to_owned());
        Box::pin(async move {
            blocking(move || engine.expire_silence(&id, &by, now_ms()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn progress<'a>(
        &'a self,
        run_id: &'a str,
        step_id: &'a str,
        progress: &'a Value,
    ) -> BoxFuture<'a, ()> {
        let (engine, run_id, step_id, progress) = (
            self.engine.clone(),
            run_id.to_owned(),
            step_id.to_owned(),
            progress.clone(),
        );
        Box::pin(async move {
            let result = blocking(move || {
                engine.write(|tx| runs::step_progress(tx, &run_id, &step_id, &progress))
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "recording a step's progress failed");
            }
        })
    }

    fn stop_requested(&self) -> bool {
        *self.kill.borrow()
    }
}

/// Approvals: requested and decided in the database (so a restart keeps
/// both the request and its deadline), with a wake-up for waiters.
pub struct Approvals {
    pub(super) engine: Arc<Engine>,
    pub(super) decided: Notify,
}

impl Approvals {
    /// Asks for an approval (once: a resumed run keeps its deadline) and
    /// waits for a decision or the deadline. The run shows as
    /// `awaiting_approval` meanwhile.
    pub async fn wait(
        &self,
        run_id: &str,
        step_id: &str,
        prompt: &str,
        timeout: Duration,
    ) -> Result<Option<Decision>, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        {
            let (engine, run_id, step_id, prompt) = (
                self.engine.clone(),
                run_id.to_owned(),
                step_id.to_owned(),
                prompt.to_owned(),
            );
            blocking(move || {
                engine.write(|tx| {
                    runs::request_approval(tx, &run_id, &step_id, &prompt, expires, now)?;
                    if let Some(run) = runs::get(tx, &run_id)? {
                        if run.state == RunState::Running {
                            runs::set_state(tx, &run, RunState::AwaitingApproval, None, now)?;
                        }
                    }
                    Ok(())
                })
            })
            .await?;
        }
        loop {
            // Registered before the row is read, so a decision committed in
            // between still wakes this waiter.
            let woken = self.decided.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let row = {
                let (engine, run_id, step_id) =
                    (self.engine.clone(), run_id.to_owned(), step_id.to_owned());
                blocking(move || engine.read(|c| runs::approval(c, &run_id, &step_id))).await?
            };
            let Some(row) = row else {
                return Ok(None);
            };
            let now = now_ms();
            let outcome = match row.decided {
                Some((approved, by, reason)) => Some(Some(Decision {
                    approved,
                    by,
                    reason,
                })),
                None if now >= row.view.expires_at_ms => Some(None),
                None => None,
            };
            if let Some(outcome) = outcome {
                let (engine, run_id) = (self.engine.clone(), run_id.to_owned());
                blocking(move || {
                    engine.write(|tx| {
                        if let Some(run) = runs::get(tx, &run_id)? {
                            if run.state == RunState::AwaitingApproval {
                                tx.execute(
                                    "UPDATE runs SET state = 'running' WHERE id = ?1",
                                    [&run_id],
                                )?;
                            }
                        }
                        Ok(())
                    })
                })
                .await?;
                return Ok(outcome);
            }
            let left = Duration::from_millis((row.view.expires_at_ms - now).max(1) as u64);
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
            }
        }
    }
}
