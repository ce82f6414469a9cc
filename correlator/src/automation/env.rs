//! What playbook actions may touch, for real: the agent command bus,
//! ServiceNow, webhooks, the latest agent samples, and operators' approvals.

use std::sync::Arc;
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::rest::RunState;
use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_playbooks::actions::{BoxFuture, Decision, Env};
use tokio::sync::Notify;

use super::blocking;
use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::samples::Samples;
use crate::store::{StoreError, runs};

pub struct RunEnv {
    pub bus: Arc<CommandBus>,
    pub servicenow: Option<ServiceNowClient>,
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
            let woken = self.decided.notified();
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
