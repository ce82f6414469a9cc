//! Commands to agents: queued per host, delivered on the agent's long poll,
//! signed at delivery with the key the agent authenticated with, and answered
//! by the agent's result report.
//!
//! Queues are bounded per host; a full queue refuses the command rather than
//! growing. A command not picked up or not answered within its timeout fails
//! the step with a message that says which.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::signing::{SigningKey, sign_command};
use fincorp_api::wire::{Command, CommandAction, CommandResult, SignedCommand};
use tokio::sync::{Notify, oneshot};

/// Commands waiting per host before new ones are refused.
const MAX_QUEUED_PER_HOST: usize = 64;

#[derive(Default)]
struct Inner {
    queues: HashMap<String, VecDeque<Command>>,
    notify: HashMap<String, Arc<Notify>>,
    waiters: HashMap<String, Waiter>,
}

struct Waiter {
    host: String,
    picked_up: bool,
    tx: oneshot::Sender<CommandResult>,
}

/// The correlator's side of the agent command channel.
pub struct CommandBus {
    keys: HashMap<String, SigningKey>,
    inner: Mutex<Inner>,
}

impl CommandBus {
    pub fn new(keys: impl IntoIterator<Item = SigningKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.id().to_owned(), k)).collect(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notifier(inner: &mut Inner, host: &str) -> Arc<Notify> {
        inner.notify.entry(host.to_owned()).or_default().clone()
    }

    /// Queues a command for `host` and waits up to `timeout` for its result.
    pub async fn send(
        &self,
        host: &str,
        id: &str,
        action: CommandAction,
        timeout: Duration,
    ) -> Result<CommandResult, String> {
        let now = now_ms();
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let command = Command {
            id: id.to_owned(),
            host: host.to_owned(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(timeout_ms),
            action,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            if inner.waiters.contains_key(id) {
                return Err(format!("command {id} is already in flight"));
            }
            let queue = inner.queues.entry(host.to_owned()).or_default();
            if queue.len() >= MAX_QUEUED_PER_HOST {
                return Err(format!(
                    "{MAX_QUEUED_PER_HOST} commands already wait for host {host}; refusing more"
                ));
            }
            queue.push_back(command);
            inner.waiters.insert(
                id.to_owned(),
                Waiter {
                    host: host.to_owned(),
                    picked_up: false,
                    tx,
                },
            );
            Self::notifier(&mut inner, host).notify_one();
        }
        tracing::info!(host, command_id = id, "command queued for agent");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(format!("command {id} was dropped")),
            Err(_) => {
                let mut inner = self.lock();
                let picked_up = inner.waiters.remove(id).is_some_and(|w| w.picked_up);
                if let Some(q) = inner.queues.get_mut(host) {
                    q.retain(|c| c.id != id);
                }
                Err(if picked_up {
                    format!(
                        "the agent on {host} took command {id} but reported no result within {timeout:?}"
                    )
                } else {
                    format!(
                        "no agent on {host} picked up command {id} within {timeout:?} (is it running and polling?)"
                    )
                })
            }
        }
    }

    /// The agent's long poll: returns queued commands for `host` at once, or
    /// waits up to `wait` for one. Commands are signed with `key_id`, the key
    /// the agent authenticated with.
    pub async fn poll(&self, host: &str, key_id: &str, wait: Duration) -> Vec<SignedCommand> {
        let notify = {
            let mut inner = self.lock();
            Self::notifier(&mut inner, host)
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before checking, so a command queued between
            // the check and the wait still wakes us.
            let notified = notify.notified();
            let commands = self.take(host);
            if !commands.is_empty() {
                return self.sign_all(key_id, commands);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return vec![];
            }
        }
    }

    fn take(&self, host: &str) -> Vec<Command> {
        let mut inner = self.lock();
        let commands: Vec<Command> = inner
            .queues
            .get_mut(host)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for c in &commands {
            if let Some(w) = inner.waiters.get_mut(&c.id) {
                w.picked_up = true;
            }
        }
        commands
    }

    fn sign_all(&self, key_id: &str, commands: Vec<Command>) -> Vec<SignedCommand> {
        let Some(key) = self.keys.get(key_id) else {
            tracing::error!(
                key_id,
                "poll authenticated with a key the command bus does not hold"
            );
            return vec![];
        };
        commands.iter().map(|c| sign_command(key, c)).collect()
    }

    /// Commands queued and not yet picked up, over all hosts.
    pub fn waiting(&self) -> usize {
        self.lock().queues.values().map(|q| q.len()).sum()
    }

    /// Delivers an agent's result to the step waiting for it. Returns false
    /// for a result nobody waits for (late, or from the wrong host).
    pub fn complete(&self, result: CommandResult) -> bool {
        let mut inner = self.lock();
        match inner.waiters.get(&result.command_id) {
            Some(w) if w.host == result.host => {
                let w = inner
                    .waiters
                    .remove(&result.command_id)
                    .expect("checked above");
                w.tx.send(result).is_ok()
            }
            Some(w) => {
                tracing::warn!(command_id = %result.command_id, expected = %w.host, reported = %result.host,
                    "command result from the wrong host ignored");
                false
            }
            None => {
                tracing::warn!(command_id = %result.command_id, host = %result.host, "result for no waiting command ignored");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fincorp_api::signing::verify_command;
    use fincorp_api::wire::{CommandOutcome, Resource};

    fn key() -> SigningKey {
        SigningKey::new("fleet", b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn action() -> CommandAction {
        CommandAction::Reallocate {
            app: "A".into(),
            resource: Resource::Cpu,
            increase_pct: 20.0,
        }
    }

    fn result(id: &str, host: &str) -> CommandResult {
        CommandResult {
            command_id: id.into(),
            host: host.into(),
            outcome: CommandOutcome::Applied,
            message: "ok".into(),
            detail: None,
            finished_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_waiting_poll_receives_a_signed_command_and_the_result_returns_to_the_sender() {
        let bus = Arc::new(CommandBus::new([key()]));
        let poller = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.poll("h1", "fleet", Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sender = {
            let bus = bus.clone();
            tokio::spawn(async move {
                bus.send("h1", "c1", action(), Duration::from_secs(10))
                    .await
            })
        };
        let commands = poller.await.unwrap();
        assert_eq!(commands.len(), 1);
        let cmd = verify_command(&key(), &commands[0], now_ms()).unwrap();
        assert_eq!((cmd.id.as_str(), cmd.host.as_str()), ("c1", "h1"));
        assert!(
            !bus.complete(result("c1", "intruder")),
            "wrong host must not complete it"
        );
        assert!(bus.complete(result("c1", "h1")));
        assert_eq!(sender.await.unwrap().unwrap().command_id, "c1");
    }

    #[tokio::test]
    async fn an_unpolled_command_times_out_saying_no_agent_took_it() {
        let bus = CommandBus::new([key()]);
        let err = bus
            .send("h9", "c2", action(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.contains("no agent on h9 picked up"), "{err}");
        // Nothing is left queued for a later poll.
        assert!(
            bus.poll("h9", "fleet", Duration::from_millis(10))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_poll_without_commands_returns_empty_after_its_wait() {
        let bus = CommandBus::new([key()]);
        let started = std::time::Instant::now();
        assert!(
            bus.poll("h1", "fleet", Duration::from_millis(50))
                .await
                .is_empty()
        );
        assert!(started.elapsed() >= Duration::from_millis(45));
    }
}
