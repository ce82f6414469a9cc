//! Remediation commands from the correlator: long-poll, verify, check
//! against the local allowlist and rate limit, execute at most once per id
//! (across restarts: [`journal`]), report before/after.
//!
//! The agent trusts nothing it is sent: the signature, expiry, target host,
//! allowlist, bounds and rate are all checked here, and every refusal is
//! logged and reported. A command with a bad signature cannot be answered
//! reliably (its id is not trustworthy), so it is logged and counted and
//! nothing is reported.
//!
//! Actions: `reallocate` (CPU quota or memory limit up by a percentage),
//! `set_limits` (absolute CPU quota, weight, memory limit), `restart_unit`
//! and `run_script`, each in its own module.

pub mod journal;
pub mod limits;
pub mod reallocate;
pub mod script;
pub mod systemd;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fincorp_api::UnixMs;
use fincorp_api::signing::{AuthError, SigningKey, verify_command};
use fincorp_api::wire::{
    COMMAND_POLL_PATH, COMMAND_RESULT_PATH, Command, CommandAction, CommandDetail, CommandOutcome,
    CommandResult, CpuLimit, PollRequest, PollResponse, Resource, SignedCommand,
};
use tokio::sync::{Mutex, mpsc, watch};

use crate::backoff::Backoff;
use crate::client::PostOutcome;
use crate::config::{Actions, AgentConfig};
use journal::{Entry, Journal};
use limits::{Backend, Wanted};
use reallocate::Outcome;

/// How long the correlator may hold a poll open.
pub const POLL_WAIT_MS: u64 = 25_000;
/// HTTP timeout for a poll: the long-poll wait plus slack.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(35);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CommandCounters {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Commands whose signature did not verify (not answered).
    pub forged: AtomicU64,
    /// Repeats of an already handled id, answered from the journal.
    pub replayed: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// Where one app's resources are controlled.
#[derive(Debug, Clone)]
struct AppTarget {
    cgroup: Option<PathBuf>,
    unit: Option<String>,
}

/// Checks and executes commands for this host.
#[derive(Debug)]
pub struct Executor {
    host: String,
    key: SigningKey,
    actions: Actions,
    apps: HashMap<String, AppTarget>,
    cgroup_root: PathBuf,
    journal: Journal,
    /// When recent mutating commands started, for the local rate limit.
    recent: VecDeque<UnixMs>,
    pub counters: Arc<CommandCounters>,
}

impl Executor {
    /// An executor with an in-memory journal (tests).
    pub fn new(config: &AgentConfig) -> Self {
        Self::with_journal(config, Journal::in_memory(journal::JOURNAL_KEEP))
    }

    pub fn with_journal(config: &AgentConfig, journal: Journal) -> Self {
        let mut e = Self {
            host: String::new(),
            key: config.correlator.key.clone(),
            actions: Actions::default(),
            apps: HashMap::new(),
            cgroup_root: PathBuf::new(),
            journal,
            recent: VecDeque::new(),
            counters: Arc::default(),
        };
        e.reconfigure(config);
        e
    }

    /// Applies a reloaded config; the journal and rate window are kept.
    pub fn reconfigure(&mut self, config: &AgentConfig) {
        self.host = config.host.clone();
        self.key = config.correlator.key.clone();
        self.actions = config.actions.clone();
        self.cgroup_root = config.cgroup_root.clone();
        self.apps = config
            .apps
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    AppTarget {
                        cgroup: a.cgroup.clone(),
                        unit: a.systemd_unit().map(str::to_owned),
                    },
                )
            })
            .collect();
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
                    if let Some(known) = self.known(&c.id, now_ms) {
                        return Some(known);
                    }
                    let reason = format!("expired at {}", fincorp_api::format_ms(at));
                    return Some(self.refuse(&c.id, "unknown", reason, now_ms));
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
                        if let Some(known) = self.known(&id, now_ms) {
                            return Some(known);
                        }
                        return Some(self.refuse(
                            &id,
                            "unknown",
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
                self.counters.forged.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key_id = %signed.key_id,
                    reason = %e,
                    "ignoring a command that failed verification (forged or wrong key); nothing is reported"
                );
                return None;
            }
        };

        if let Some(known) = self.known(&command.id, now_ms) {
            return Some(known);
        }
        let kind = command.action.kind();
        if command.host != self.host {
            let reason = format!(
                "addressed to host {:?}, this is {:?}",
                command.host, self.host
            );
            return Some(self.refuse(&command.id, kind, reason, now_ms));
        }
        let plan = match self.plan(&command.action) {
            Ok(p) => p,
            Err(reason) => return Some(self.refuse(&command.id, kind, reason, now_ms)),
        };
        if let Err(reason) = self.rate_check(now_ms) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Some(self.refuse(&command.id, kind, reason, now_ms));
        }
        if let Err(e) = self.journal.begin(&command.id, now_ms) {
            let reason =
                format!("cannot write the command journal, so the command is not run: {e}");
            return Some(self.finish(
                &command.id,
                kind,
                CommandOutcome::Failed,
                reason,
                None,
                now_ms,
            ));
        }
        self.recent.push_back(now_ms);
        tracing::info!(command_id = %command.id, action = kind, "executing command");
        let outcome = plan.run().await;
        let done = fincorp_api::now_ms();
        Some(match outcome {
            Outcome::Applied { message, detail } => {
                tracing::info!(command_id = %command.id, action = kind, %message, "command applied");
                self.finish(
                    &command.id,
                    kind,
                    CommandOutcome::Applied,
                    message,
                    Some(detail),
                    done,
                )
            }
            Outcome::Refused(reason) => self.refuse(&command.id, kind, reason, done),
            Outcome::Failed(reason) => {
                tracing::error!(command_id = %command.id, action = kind, %reason, "command failed");
                self.finish(
                    &command.id,
                    kind,
                    CommandOutcome::Failed,
                    reason,
                    None,
                    done,
                )
            }
            Outcome::FailedWith { message, detail } => {
                tracing::error!(command_id = %command.id, action = kind, reason = %message, "command failed");
                self.finish(
                    &command.id,
                    kind,
                    CommandOutcome::Failed,
                    message,
                    Some(detail),
                    done,
                )
            }
        })
    }

    /// The answer for an id this agent has handled before: its first
    /// result, or a failure if it was interrupted by a restart. Never runs
    /// anything again.
    fn known(&mut self, id: &str, now_ms: UnixMs) -> Option<CommandResult> {
        match self.journal.get(id)?.clone() {
            Entry::Finished(result) => {
                self.counters.replayed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(command_id = %id, "command already handled; answering with its first result, not running it again");
                Some(*result)
            }
            Entry::Interrupted { started_at_ms } => {
                self.counters.replayed.fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "interrupted: the agent stopped while running it (started {}); it is never run twice, check the target by hand",
                    fincorp_api::format_ms(started_at_ms)
                );
                tracing::warn!(command_id = %id, %reason, "command was interrupted by a restart");
                Some(self.finish(id, "unknown", CommandOutcome::Failed, reason, None, now_ms))
            }
        }
    }

    fn rate_check(&mut self, now_ms: UnixMs) -> Result<(), String> {
        let limit = self.actions.rate_limit;
        let window_ms = i64::try_from(limit.per.as_millis()).unwrap_or(i64::MAX);
        while self
            .recent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= limit.max_commands as usize {
            return Err(format!(
                "local rate limit: {} commands already ran in the last {} (actions.rate_limit); refused as a last line of defence",
                self.recent.len(),
                fincorp_api::config::Duration(limit.per)
            ));
        }
        Ok(())
    }

    fn app(&self, app: &str) -> Result<&AppTarget, String> {
        self.apps
            .get(app)
            .ok_or_else(|| format!("unknown app {app:?}"))
    }

    fn backend(&self, app: &str) -> Result<Backend, String> {
        let target = self.app(app)?;
        if let Some(unit) = &target.unit {
            return Ok(Backend::Systemd {
                systemctl: self.actions.systemctl.clone(),
                unit: unit.clone(),
            });
        }
        match &target.cgroup {
            Some(rel) => Ok(Backend::Cgroup {
                root: self.cgroup_root.clone(),
                rel: rel.clone(),
            }),
            None => Err(format!("app {app:?} has no cgroup configured")),
        }
    }

    /// Checks a command against the allowlist and its bounds, and returns
    /// what to run. `Err` is the reason for refusing it.
    fn plan(&self, action: &CommandAction) -> Result<Plan, String> {
        match action {
            CommandAction::Reallocate {
                app,
                resource,
                increase_pct,
            } => {
                let Some(limits) = self.actions.reallocate else {
                    return Err("action reallocate is not enabled in this agent's allowlist".into());
                };
                if !increase_pct.is_finite()
                    || *increase_pct <= 0.0
                    || *increase_pct > limits.max_increase_pct
                {
                    return Err(format!(
                        "increase_pct {increase_pct} is outside the allowed range (0, {}]",
                        limits.max_increase_pct
                    ));
                }
                let backend = self.backend(app)?;
                match resource {
                    Resource::Cpu => Ok(Plan::RaiseCpu {
                        app: app.clone(),
                        backend,
                        pct: *increase_pct,
                        max_cores: limits.max_cpu_cores,
                    }),
                    Resource::Memory => {
                        let Some(max) = limits.max_memory_bytes else {
                            return Err("memory reallocation is not allowed: actions.reallocate.max_memory_mb is not set".into());
                        };
                        Ok(Plan::RaiseMemory {
                            app: app.clone(),
                            backend,
                            pct: *increase_pct,
                            max_bytes: max,
                        })
                    }
                }
            }
            CommandAction::SetLimits {
                app,
                cpu_cores,
                cpu_weight,
                memory_max_bytes,
            } => {
                let Some(bounds) = self.actions.set_limits else {
                    return Err("action set_limits is not enabled in this agent's allowlist".into());
                };
                if cpu_cores.is_none() && cpu_weight.is_none() && memory_max_bytes.is_none() {
                    return Err("set_limits names no limit to set".into());
                }
                if let Some(c) = cpu_cores {
                    if !c.is_finite() || *c < 0.01 || *c > bounds.max_cpu_cores {
                        return Err(format!(
                            "cpu_cores {c} is outside the allowed range [0.01, {}]",
                            bounds.max_cpu_cores
                        ));
                    }
                }
                if let Some(w) = cpu_weight {
                    if !(1..=10_000).contains(w) {
                        return Err(format!("cpu_weight {w} is outside 1..=10000"));
                    }
                }
                if let Some(m) = memory_max_bytes {
                    if *m < bounds.min_memory_bytes || *m > bounds.max_memory_bytes {
                        return Err(format!(
                            "memory_max_bytes {m} is outside the allowed range [{}, {}]",
                            bounds.min_memory_bytes, bounds.max_memory_bytes
                        ));
                    }
                }
                Ok(Plan::SetLimits {
                    app: app.clone(),
                    backend: self.backend(app)?,
                    wanted: Wanted {
                        cpu_cores: *cpu_cores,
                        cpu_weight: *cpu_weight,
                        memory_max_bytes: *memory_max_bytes,
                    },
                })
            }
            CommandAction::RestartUnit { app } => {
                if !self.actions.restart_unit {
                    return Err(
                        "action restart_unit is not enabled in this agent's allowlist".into(),
                    );
                }
                let Some(unit) = self.app(app)?.unit.clone() else {
                    return Err(format!(
                        "app {app:?} is not a systemd unit (select it with systemd_unit to restart it)"
                    ));
                };
                Ok(Plan::Restart {
                    app: app.clone(),
                    systemctl: self.actions.systemctl.clone(),
                    unit,
                })
            }
            CommandAction::RunScript {
                script,
                args,
                timeout_ms,
            } => {
                let Some(policy) = &self.actions.run_script else {
                    return Err("action run_script is not enabled in this agent's allowlist".into());
                };
                let path = script::resolve(&policy.dir, script, args)?;
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(policy.max_timeout)
                    .min(policy.max_timeout);
                Ok(Plan::Script {
                    path,
                    script: script.clone(),
                    args: args.clone(),
                    timeout,
                })
            }
        }
    }

    fn refuse(&mut self, id: &str, kind: &str, reason: String, now_ms: UnixMs) -> CommandResult {
        tracing::warn!(command_id = %id, action = kind, %reason, "command refused");
        self.finish(id, kind, CommandOutcome::Refused, reason, None, now_ms)
    }

    fn finish(
        &mut self,
        id: &str,
        _kind: &str,
        outcome: CommandOutcome,
        message: String,
        detail: Option<CommandDetail>,
        now_ms: UnixMs,
    ) -> CommandResult {
        let counter = match outcome {
            CommandOutcome::Applied => &self.counters.applied,
            CommandOutcome::Refused => &self.counters.refused,
            CommandOutcome::Failed => &self.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let result = CommandResult {
            command_id: id.to_owned(),
            host: self.host.clone(),
            outcome,
            message,
            detail,
            finished_at_ms: now_ms,
        };
        self.journal.finish(&result);
        result
    }
}

/// A checked command, ready to run.
#[derive(Debug)]
enum Plan {
    RaiseCpu {
        app: String,
        backend: Backend,
        pct: f64,
        max_cores: f64,
    },
    RaiseMemory {
        app: String,
        backend: Backend,
        pct: f64,
        max_bytes: u64,
    },
    SetLimits {
        app: String,
        backend: Backend,
        wanted: Wanted,
    },
    Restart {
        app: String,
        systemctl: PathBuf,
        unit: String,
    },
    Script {
        path: PathBuf,
        script: String,
        args: Vec<String>,
        timeout: Duration,
    },
}

impl Plan {
    async fn run(self) -> Outcome {
        let blocking = |f: Box<dyn FnOnce() -> Outcome + Send>| async move {
            tokio::task::spawn_blocking(f)
                .await
                .unwrap_or_else(|e| Outcome::Failed(format!("the command's task failed: {e}")))
        };
        match self {
            Plan::RaiseCpu {
                app,
                backend,
                pct,
                max_cores,
            } => {
                blocking(Box::new(move || match backend {
                    Backend::Cgroup { root, rel } => {
                        reallocate::reallocate_cpu(&app, &root, &rel, pct, max_cores)
                    }
                    Backend::Systemd { systemctl, unit } => raise_cpu_systemd(
                        &app,
                        &systemd::Systemctl::new(&systemctl),
                        &unit,
                        pct,
                        max_cores,
                    ),
                }))
                .await
            }
            Plan::RaiseMemory {
                app,
                backend,
                pct,
                max_bytes,
            } => {
                blocking(Box::new(move || {
                    limits::raise_memory(&app, &backend, pct, max_bytes)
                }))
                .await
            }
            Plan::SetLimits {
                app,
                backend,
                wanted,
            } => {
                blocking(Box::new(move || {
                    limits::set_limits(&app, &backend, &wanted)
                }))
                .await
            }
            Plan::Restart {
                app,
                systemctl,
                unit,
            } => {
                blocking(Box::new(move || {
                    restart(&app, &systemd::Systemctl::new(&systemctl), &unit)
                }))
                .await
            }
            Plan::Script {
                path,
                script,
                args,
                timeout,
            } => script::run(&path, &script, &args, timeout).await,
        }
    }
}

/// `reallocate` CPU for a systemd unit: `CPUQuota=` raised by `pct`,
/// within `max_cores`. Reported like a cgroup reallocation, with
/// `cgroup_version` 0 and the property as `file`.
fn raise_cpu_systemd(
    app: &str,
    systemctl: &systemd::Systemctl,
    unit: &str,
    pct: f64,
    max_cores: f64,
) -> Outcome {
    let before = match systemctl.limits(unit) {
        Ok(l) => l.cpu.unwrap_or(CpuLimit {
            quota_us: None,
            period_us: 100_000,
        }),
        Err(e) => return Outcome::Failed(e),
    };
    let Some(old) = before.cores() else {
        return Outcome::Failed(format!(
            "{unit} has no CPUQuota (unlimited); nothing to raise"
        ));
    };
    let new = (old * (1.0 + pct / 100.0)).min(max_cores);
    if new <= old + 0.005 {
        return Outcome::Refused(format!(
            "already at the ceiling: {unit} CPUQuota {before} cannot be raised above max_cpu_cores {max_cores}"
        ));
    }
    let prop = systemd::cpu_quota_property(new);
    if let Err(e) = systemctl.set_properties(unit, std::slice::from_ref(&prop)) {
        return Outcome::Failed(e);
    }
    let after = match systemctl.limits(unit) {
        Ok(l) => l.cpu.unwrap_or(before),
        Err(e) => return Outcome::Failed(format!("set {prop} but cannot read it back: {e}")),
    };
    if after.cores().is_none_or(|c| (c - new).abs() > 0.011) {
        return Outcome::Failed(format!("set {prop} on {unit} but systemd reports {after}"));
    }
    Outcome::Applied {
        message: format!("raised the cpu quota of {app} ({unit}) from {before} to {after}"),
        detail: CommandDetail::Reallocate {
            app: app.to_owned(),
            cgroup: unit.to_owned(),
            cgroup_version: 0,
            file: format!("systemctl set-property --runtime {unit} {prop}"),
            before,
            after,
        },
    }
}

fn restart(app: &str, systemctl: &systemd::Systemctl, unit: &str) -> Outcome {
    let before = match systemctl.state(unit) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e),
    };
    if let Err(e) = systemctl.restart(unit) {
        return Outcome::Failed(e);
    }
    let after = match systemctl.state(unit) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed(format!("restarted {unit} but cannot read its state: {e}"));
        }
    };
    let detail = CommandDetail::Restart {
        app: app.to_owned(),
        unit: unit.to_owned(),
        before: before.clone(),
        after: after.clone(),
    };
    if after.active_state != "active" {
        return Outcome::FailedWith {
            message: format!(
                "restarted {unit} but it is {} ({})",
                after.active_state, after.sub_state
            ),
            detail,
        };
    }
    Outcome::Applied {
        message: format!(
            "restarted {unit} for {app}: pid {} -> {}, {} ({})",
            before.main_pid, after.main_pid, after.active_state, after.sub_state
        ),
        detail,
    }
}

/// The executor shared by the poller and reloads.
pub type SharedExecutor = Arc<Mutex<Executor>>;

/// Long-polls for commands forever, executing each and queueing its result
/// for [`run_reporter`]. Cancel the task to stop it.
pub async fn run_poller(
    link: watch::Receiver<crate::Link>,
    executor: SharedExecutor,
    results: mpsc::Sender<CommandResult>,
) {
    let mut backoff = Backoff::default();
    loop {
        let (correlator, host) = {
            let l = link.borrow();
            (l.poll.clone(), l.host.clone())
        };
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
        let delay = match correlator.post_signed(COMMAND_POLL_PATH, &body).await {
            PostOutcome::Success(bytes) => match serde_json::from_slice::<PollResponse>(&bytes) {
                Ok(poll) => {
                    backoff.reset();
                    for signed in &poll.commands {
                        let handled = executor
                            .lock()
                            .await
                            .handle(signed, fincorp_api::now_ms())
                            .await;
                        if let Some(result) = handled {
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
pub async fn run_reporter(
    link: watch::Receiver<crate::Link>,
    mut results: mpsc::Receiver<CommandResult>,
) {
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
            let correlator = link.borrow().ingest.clone();
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
