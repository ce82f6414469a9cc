//! Executes playbook runs: renders each step's `with`, performs the action
//! through [`fincorp_playbooks::actions`], and records every step's
//! parameters, result or error, and any ticket, as it goes.
//!
//! Runs on one target (host + app) are serialised by a lock shared by all
//! playbooks, so two playbooks never act on the same app at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::rest::RunState;
use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_playbooks::actions::{self, Env, StepContext};
use fincorp_playbooks::template::{self, PlaybookCtx, RunContext, RunCtx};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::store::RunStart;

/// How long one step may take before it fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What actions may touch: the agent command bus and ServiceNow.
pub struct RunEnv {
    pub bus: Arc<CommandBus>,
    pub servicenow: Option<ServiceNowClient>,
}

impl Env for RunEnv {
    async fn agent_command(
        &self,
        host: &str,
        command_id: &str,
        action: CommandAction,
        timeout: Duration,
    ) -> Result<CommandResult, String> {
        self.bus.send(host, command_id, action, timeout).await
    }

    fn servicenow(&self) -> Option<&ServiceNowClient> {
        self.servicenow.as_ref()
    }
}

/// Starts runs in the background. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    engine: Arc<Engine>,
    env: Arc<RunEnv>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking store task panicked")
}

impl Runner {
    pub fn new(engine: Arc<Engine>, env: RunEnv) -> Self {
        Self {
            engine,
            env: Arc::new(env),
            locks: Default::default(),
        }
    }

    /// Starts a committed run in the background.
    pub fn start(&self, run: RunStart) {
        let this = self.clone();
        let span = tracing::info_span!("run", run_id = %run.run_id, incident_id = %run.incident_id, playbook = %run.playbook);
        tokio::spawn(
            async move {
                if let Err(e) = this.execute(run).await {
                    tracing::error!(error = %e, "recording a playbook run failed");
                }
            }
            .instrument(span),
        );
    }

    fn target_lock(&self, run: &RunStart) -> Arc<tokio::sync::Mutex<()>> {
        let key = format!(
            "{}/{}",
            run.alert.host,
            run.alert.app.as_deref().unwrap_or("-")
        );
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key).or_default().clone()
    }

    async fn execute(self, run: RunStart) -> Result<(), crate::store::StoreError> {
        let lock = self.target_lock(&run);
        let _held = lock.lock().await;

        let engine = self.engine.clone();
        let Some(playbook) = engine
            .playbooks()
            .iter()
            .find(|p| p.name == run.playbook)
            .cloned()
        else {
            tracing::error!("playbook vanished before its run started");
            let (engine, run) = (engine.clone(), run.clone());
            return blocking(move || engine.run_finished(&run, RunState::Failed, now_ms())).await;
        };
        let inputs = {
            let (engine, id) = (engine.clone(), run.incident_id.clone());
            blocking(move || engine.run_inputs(&id)).await?
        };
        let Some((incident, alerts)) = inputs else {
            tracing::error!("incident of the run is missing");
            let (engine, run) = (engine.clone(), run.clone());
            return blocking(move || engine.run_finished(&run, RunState::Failed, now_ms())).await;
        };
        // The triggering alert was stored in the transaction that decided the run.
        let Some(alert) = alerts
            .iter()
            .find(|a| a.fingerprint == run.alert.fingerprint)
            .cloned()
        else {
            tracing::error!(fingerprint = %run.alert.fingerprint, "the run's triggering alert is not in its incident");
            let (engine, run) = (engine.clone(), run.clone());
            return blocking(move || engine.run_finished(&run, RunState::Failed, now_ms())).await;
        };
        let mut ctx = RunContext {
            incident,
            alert,
            alerts,
            steps: BTreeMap::new(),
            playbook: PlaybookCtx {
                name: playbook.name.clone(),
            },
            run: RunCtx {
                id: run.run_id.clone(),
            },
        };
        {
            let (engine, run) = (engine.clone(), run.clone());
            blocking(move || engine.run_started(&run, now_ms())).await?;
        }
        tracing::info!("playbook run started");

        let env = template::environment();
        let mut state = RunState::Succeeded;
        for (idx, step) in playbook.steps.iter().enumerate() {
            let action = step.action.name();
            let rendered = template::render(&env, &step.with, &ctx);
            let params = match &rendered {
                Ok(p) => Value::Object(p.clone()),
                Err(_) => Value::Object(step.with.clone()),
            };
            {
                let (engine, run_id, step_id, params) = (
                    engine.clone(),
                    run.run_id.clone(),
                    step.id.clone(),
                    params.clone(),
                );
                blocking(move || {
                    engine.step_started(&run_id, idx, &step_id, action, &params, now_ms())
                })
                .await?;
            }
            let outcome = match rendered {
                Err(e) => Err(e.to_string()),
                Ok(params) => {
                    let sctx = StepContext {
                        incident_id: run.incident_id.clone(),
                        app: run.alert.app.clone(),
                        idempotency_key: format!(
                            "{}:{}:{}",
                            run.incident_id, run.playbook, step.id
                        ),
                        timeout: STEP_TIMEOUT,
                    };
                    actions::execute(&*self.env, step.action, &params, &sctx)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            let finished = match &outcome {
                Ok(out) => {
                    tracing::info!(step = %step.id, action, "step succeeded");
                    ctx.steps.insert(
                        step.id.clone(),
                        json!({ "result": out.result, "state": "succeeded" }),
                    );
                    Ok((out.result.clone(), out.ticket.clone()))
                }
                Err(e) => {
                    tracing::warn!(step = %step.id, action, error = %e, "step failed");
                    Err(e.clone())
                }
            };
            {
                let (engine, run, step_id) = (engine.clone(), run.clone(), step.id.clone());
                blocking(move || {
                    let outcome = match &finished {
                        Ok((result, ticket)) => Ok((result, ticket.as_ref())),
                        Err(e) => Err(e.as_str()),
                    };
                    engine.step_finished(&run, idx, &step_id, action, outcome, now_ms())
                })
                .await?;
            }
            if outcome.is_err() {
                state = RunState::Failed;
                break;
            }
        }
        tracing::info!(state = state.as_str(), "playbook run finished");
        let (engine, run) = (engine.clone(), run.clone());
        blocking(move || engine.run_finished(&run, state, now_ms())).await
    }
}
