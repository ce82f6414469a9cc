//! Remediation commands from the correlator: long-poll, verify, check
//! against the local allowlist, execute at most once per id, report.
//!
//! The agent trusts nothing it is sent: the signature, expiry, target host,
//! allowlist and bounds are all checked here, and every refusal is logged and
//! reported. A command with a bad signature cannot be answered reliably (its
//! id is not trustworthy), so it is logged and nothing is reported.

pub mod reallocate;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use fincorp_api::UnixMs;
use fincorp_api::signing::{AuthError, SigningKey, verify_command};
use fincorp_api::wire::{
    COMMAND_POLL_PATH, COMMAND_RESULT_PATH, Command, CommandAction, CommandOutcome, CommandResult,
    PollRequest, PollResponse, Resource, SignedCommand,
};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::client::{Correlator, PostOutcome};
use crate::config::{Actions, AgentConfig};

/// How long the correlator may hold a poll open.
pub const POLL_WAIT_MS: u64 = 25_000;
/// HTTP timeout for a poll: the long-poll wait plus slack.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(35);
/// How many command results are remembered to answer repeats.
pub const RESULT_CACHE: usize = 1_000;

/// Remembers the last results by command id, oldest evicted first.
#[derive(Debug)]
struct ResultCache {
    by_id: HashMap<String, CommandResult>,
    order: VecDeque<String>,
    capacity: usize,
}

impl ResultCache {
    fn new(capacity: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, id: &str) -> Option<&CommandResult> {
        self.by_id.get(id)
    }

    fn insert(&mut self, result: CommandResult) {
        if self.by_id.contains_key(&result.command_id) {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(result.command_id.clone());
        self.by_id.insert(result.command_id.clone(), result);
    }
}

/// Checks and executes commands for this host.
#[derive(Debug)]
pub struct Executor {
    host: String,
    key: SigningKey,
    actions: Actions,
    /// App name → its cgroup (relative), if it has one.
    apps: HashMap<String, Option<PathBuf>>,
    cgroup_root: PathBuf,
    done: ResultCache,
}

impl Executor {
    pub fn new(config: &AgentConfig) -> Self {
        Self {
            host: config.host.clone(),
            key: config.correlator.key.clone(),
            actions: config.actions.clone(),
            apps: config
                .apps
                .iter()
                .map(|a| (a.name.clone(), a.cgroup.clone()))
                .collect(),
            cgroup_root: config.cgroup_root.clone(),
            done: ResultCache::new(RESULT_CACHE),
        }
    }

    /// Handles one signed command at time `now_ms`. Returns the result to
    /// report, or `None` for a command whose signature does not verify.
    pub async fn handle(
        &mut self,
        signed: &SignedCommand,
        now_ms: UnixMs,
    ) -> Option<CommandResult> {
        let command = match verify_command(&self.key, signed, now_ms) {
            Ok(c) => c,
            // The signature was checked before the expiry, so the payload is
            // authentic: answer it (a repeat of an executed command gets its
            // first result; anything else is refused as expired).
            Err(AuthError::Expired(at)) => match serde_json::from_str::<Command>(&signed.payload) {
                Ok(c) => {
                    if let Some(cached) = self.done.get(&c.id) {
                        return Some(self.resend(cached.clone()));
                    }
                    let reason = format!("expired at {}", fincorp_api::format_ms(at));
                    return Some(self.refuse(&c.id, reason, now_ms));
                }
                Err(_) => return None,
            },
            // Authentic but not understood (e.g. an action kind this agent
            // does not know): refuse it if it at least names an id.
            Err(AuthError::BadPayload(why)) => {
                let id = serde_json::from_str::<serde_json::Value>(&signed.payload)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
                match id {
                    Some(id) => {
                        if let Some(cached) = self.done.get(&id) {
                            return Some(self.resend(cached.clone()));
                        }
                        return Some(self.refuse(
                            &id,
                            format!("unsupported command: {why}"),
                            now_ms,
                        ));
                    }
                    None => {
                        tracing::warn!(reason = %why, "ignoring a signed command without an id");
                        return None;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    key_id = %signed.key_id,
                    reason = %e,
                    "ignoring a command that failed verification (forged or wrong key); nothing is reported"
                );
                return None;
            }
        };

        if let Some(cached) = self.done.get(&command.id) {
            return Some(self.resend(cached.clone()));
        }
        if command.host != self.host {
            let reason = format!(
                "addressed to host {:?}, this is {:?}",
                command.host, self.host
            );
            return Some(self.refuse(&command.id, reason, now_ms));
        }
        let result = match &command.action {
            CommandAction::Reallocate {
                app,
                resource: Resource::Cpu,
                increase_pct,
            } => {
                self.reallocate(&command.id, app, *increase_pct, now_ms)
                    .await
            }
        };
        Some(result)
    }

    async fn reallocate(
        &mut self,
        id: &str,
        app: &str,
        increase_pct: f64,
        now_ms: UnixMs,
    ) -> CommandResult {
        let Some(limits) = self.actions.reallocate else {
            return self.refuse(
                id,
                "action reallocate is not enabled in this agent's allowlist".into(),
                now_ms,
            );
        };
        if !increase_pct.is_finite()
            || increase_pct <= 0.0
            || increase_pct > limits.max_increase_pct
        {
            let reason = format!(
                "increase_pct {increase_pct} is outside the allowed range (0, {}]",
                limits.max_increase_pct
            );
            return self.refuse(id, reason, now_ms);
        }
        let cgroup = match self.apps.get(app) {
            None => return self.refuse(id, format!("unknown app {app:?}"), now_ms),
            Some(None) => {
                return self.refuse(id, format!("app {app:?} has no cgroup configured"), now_ms);
            }
            Some(Some(cgroup)) => cgroup.clone(),
        };
        let root = self.cgroup_root.clone();
        let app_name = app.to_owned();
        let outcome = tokio::task::spawn_blocking(move || {
            reallocate::reallocate_cpu(
                &app_name,
                &root,
                &cgroup,
                increase_pct,
                limits.max_cpu_cores,
            )
        })
        .await
        .unwrap_or_else(|e| {
            reallocate::Outcome::Failed(format!("the reallocation task failed: {e}"))
        });
        match outcome {
            reallocate::Outcome::Applied { message, detail } => {
                tracing::info!(command_id = %id, app, %message, "command applied");
                self.finish(
                    id,
                    CommandOutcome::Applied,
                    message,
                    Some(detail),
                    fincorp_api::now_ms(),
                )
            }
            reallocate::Outcome::Refused(reason) => self.refuse(id, reason, fincorp_api::now_ms()),
            reallocate::Outcome::Failed(reason) => {
                tracing::error!(command_id = %id, app, %reason, "command failed");
                self.finish(
                    id,
                    CommandOutcome::Failed,
                    reason,
                    None,
                    fincorp_api::now_ms(),
                )
            }
        }
    }

    fn refuse(&mut self, id: &str, reason: String, now_ms: UnixMs) -> CommandResult {
        tracing::warn!(command_id = %id, %reason, "command refused");
        self.finish(id, CommandOutcome::Refused, reason, None, now_ms)
    }

    fn finish(
        &mut self,
        id: &str,
        outcome: CommandOutcome,
        message: String,
        detail: Option<fincorp_api::wire::CommandDetail>,
        now_ms: UnixMs,
    ) -> CommandResult {
        let result = CommandResult {
            command_id: id.to_owned(),
            host: self.host.clone(),
            outcome,
            message,
            detail,
            finished_at_ms: now_ms,
        };
        self.done.insert(result.clone());
        result
    }

    fn resend(&self, cached: CommandResult) -> CommandResult {
        tracing::info!(command_id = %cached.command_id, "command already handled; re-sending its result");
        cached
    }
}

/// Long-polls for commands forever, executing each and queueing its result
/// for [`run_reporter`]. Cancel the task to stop it.
pub async fn run_poller(
    correlator: Correlator,
    host: String,
    mut executor: Executor,
    results: mpsc::Sender<CommandResult>,
) {
    let mut backoff = Backoff::default();
    let body = match serde_json::to_vec(&PollRequest {
        host,
        wait_ms: POLL_WAIT_MS,
    }) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the poll request; command polling is disabled");
            return;
        }
    };
    loop {
        let delay = match correlator.post_signed(COMMAND_POLL_PATH, &body).await {
            PostOutcome::Success(bytes) => match serde_json::from_slice::<PollResponse>(&bytes) {
                Ok(poll) => {
                    backoff.reset();
                    for signed in &poll.commands {
                        if let Some(result) = executor.handle(signed, fincorp_api::now_ms()).await {
                            if results.send(result).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "unreadable poll response");
                    delay
                }
            },
            PostOutcome::Retry { after, reason } => {
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "command poll failed; will retry");
                delay
            }
            PostOutcome::Unauthorized(reason) => {
                let delay = backoff.next_delay();
                tracing::error!(
                    %reason,
                    retry_in_ms = delay.as_millis() as u64,
                    "correlator rejected the poll's signature (401): check correlator.key_id and the secret, and that this host's clock is in sync"
                );
                delay
            }
            PostOutcome::Rejected { status, reason } => {
                let delay = backoff.next_delay();
                tracing::error!(status = status.as_u16(), %reason, retry_in_ms = delay.as_millis() as u64, "correlator refused the poll");
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// Reports results in order, retrying each until the correlator takes it
/// (or refuses it with a 4xx other than 401/408/429).
pub async fn run_reporter(correlator: Correlator, mut results: mpsc::Receiver<CommandResult>) {
    let mut backoff = Backoff::default();
    while let Some(result) = results.recv().await {
        let body = match serde_json::to_vec(&result) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(command_id = %result.command_id, error = %e, "cannot encode a command result");
                continue;
            }
        };
        loop {
            let delay = match correlator.post_signed(COMMAND_RESULT_PATH, &body).await {
                PostOutcome::Success(_) => {
                    tracing::debug!(command_id = %result.command_id, "command result reported");
                    backoff.reset();
                    break;
                }
                PostOutcome::Rejected { status, reason } => {
                    tracing::error!(
                        command_id = %result.command_id,
                        status = status.as_u16(),
                        %reason,
                        "correlator refused the command result; dropping it"
                    );
                    backoff.reset();
                    break;
                }
                PostOutcome::Retry { after, reason } => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    tracing::warn!(command_id = %result.command_id, %reason, retry_in_ms = delay.as_millis() as u64, "command result not delivered; will retry");
                    delay
                }
                PostOutcome::Unauthorized(reason) => {
                    let delay = backoff.next_delay();
                    tracing::error!(
                        command_id = %result.command_id,
                        %reason,
                        "correlator rejected the result's signature (401): check the key and this host's clock"
                    );
                    delay
                }
            };
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests;
