//! A scripted [`Env`] for unit tests: agent commands answered by a closure
//! and recorded, metrics from a map that tests change while a step waits
//! (every read of a host's sample time sees a newer sample), approvals
//! decided up front, silences and progress recorded. No network except an
//! optional ServiceNow client (pointed at the simulator).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_integrations::vsphere::VsphereClient;

use super::{BoxFuture, Decision, Env};

/// (host, app, metric) -> value.
pub(crate) type Metrics = HashMap<(String, Option<String>, String), f64>;
type Responder =
    Box<dyn Fn(&str, &str, &CommandAction) -> Result<CommandResult, String> + Send + Sync>;

pub(crate) struct FakeEnv {
    responder: Responder,
    /// (host, command id, action) of every command sent, in order.
    pub sent: Mutex<Vec<(String, String, CommandAction)>>,
    /// Shared, so a responder can change metrics when a command arrives.
    pub metrics: Arc<Mutex<Metrics>>,
    /// The decision every approval gets (`None`: nobody answers).
    pub decision: Option<Decision>,
    /// (run, step, prompt, timeout) of every approval asked for.
    pub asked: Mutex<Vec<(String, String, String, Duration)>>,
    /// The vCenter client (`None`: vSphere not configured).
    pub vsphere: Option<VsphereClient>,
    /// The ServiceNow client (`None`: ServiceNow not configured).
    pub servicenow: Option<ServiceNowClient>,
    /// Every silence created, in order.
    pub silences: Mutex<Vec<FakeSilence>>,
    /// Every progress report, in order.
    pub progress: Mutex<Vec<serde_json::Value>>,
    /// What `stop_requested` answers (the kill switch).
    pub stop: AtomicBool,
    /// Sample times: each read answers a newer one.
    sample_clock: AtomicI64,
    http: reqwest::Client,
}

/// A silence created through [`FakeEnv`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FakeSilence {
    pub id: String,
    pub matchers: Vec<String>,
    pub duration: Duration,
    pub created_by: String,
    pub comment: String,
    pub expired: bool,
}

impl FakeEnv {
    pub(crate) fn new(
        responder: impl Fn(&str, &str, &CommandAction) -> Result<CommandResult, String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        FakeEnv {
            responder: Box::new(responder),
            sent: Mutex::default(),
            metrics: Arc::default(),
            decision: None,
            asked: Mutex::default(),
            vsphere: None,
            servicenow: None,
            silences: Mutex::default(),
            progress: Mutex::default(),
            stop: AtomicBool::new(false),
            sample_clock: AtomicI64::new(1_000),
            http: fincorp_api::http::client(Duration::from_secs(5)),
        }
    }

    pub(crate) fn set_metric(&self, host: &str, app: Option<&str>, metric: &str, value: f64) {
        self.metrics
            .lock()
            .unwrap()
            .insert((host.into(), app.map(Into::into), metric.into()), value);
    }
}

impl Env for FakeEnv {
    fn agent_command<'a>(
        &'a self,
        host: &'a str,
        command_id: &'a str,
        action: CommandAction,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<CommandResult, String>> {
        let answer = (self.responder)(host, command_id, &action);
        self.sent
            .lock()
            .unwrap()
            .push((host.into(), command_id.into(), action));
        Box::pin(async move { answer })
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
        self.metrics
            .lock()
            .unwrap()
            .get(&(host.into(), app.map(Into::into), metric.into()))
            .copied()
    }

    fn await_approval<'a>(
        &'a self,
        run_id: &'a str,
        step_id: &'a str,
        prompt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Decision>, String>> {
        self.asked
            .lock()
            .unwrap()
            .push((run_id.into(), step_id.into(), prompt.into(), timeout));
        let d = self.decision.clone();
        Box::pin(async move { Ok(d) })
    }

    fn sampled_at(&self, host: &str) -> Option<i64> {
        let known = self.metrics.lock().unwrap().keys().any(|(h, ..)| h == host);
        known.then(|| self.sample_clock.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn create_silence<'a>(
        &'a self,
        matchers: Vec<String>,
        duration: Duration,
        created_by: &'a str,
        comment: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        let mut silences = self.silences.lock().unwrap();
        let id = format!("sil-{}", silences.len() + 1);
        silences.push(FakeSilence {
            id: id.clone(),
            matchers,
            duration,
            created_by: created_by.into(),
            comment: comment.into(),
            expired: false,
        });
        Box::pin(async move { Ok(id) })
    }

    fn expire_silence<'a>(
        &'a self,
        id: &'a str,
        _by: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        let mut silences = self.silences.lock().unwrap();
        let found = silences.iter_mut().find(|s| s.id == id && !s.expired);
        let answer = match found {
            Some(s) => {
                s.expired = true;
                Ok(())
            }
            None => Err(format!("no active silence {id}")),
        };
        Box::pin(async move { answer })
    }

    fn progress<'a>(
        &'a self,
        _run_id: &'a str,
        _step_id: &'a str,
        progress: &'a serde_json::Value,
    ) -> BoxFuture<'a, ()> {
        self.progress.lock().unwrap().push(progress.clone());
        Box::pin(async {})
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fincorp_api::wire::{CommandDetail, CommandOutcome, CpuLimit, Resource};
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::actions::{ActionError, StepContext, approval, exec, execute, reallocate, wait_for};

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn ctx(timeout_ms: u64) -> StepContext {
        StepContext {
            run_id: "run-1".into(),
            step_id: "s".into(),
            incident_id: Some("fc-1".into()),
            app: Some("FINCORP-APP-HFT".into()),
            idempotency_key: "fc-1:p:s".into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn applied(host: &str, id: &str, detail: CommandDetail) -> CommandResult {
        CommandResult {
            command_id: id.into(),
            host: host.into(),
            outcome: CommandOutcome::Applied,
            message: "ok".into(),
            detail: Some(detail),
            finished_at_ms: 1_000,
        }
    }

    #[tokio::test]
    async fn reallocate_sends_one_command_keyed_by_the_step_and_reports_before_and_after() {
        let env = FakeEnv::new(|host, id, action| {
            let CommandAction::Reallocate { app, .. } = action else {
                panic!("{action:?}")
            };
            Ok(applied(
                host,
                id,
                CommandDetail::Reallocate {
                    app: app.clone(),
                    cgroup: "/sys/fs/cgroup/cpu/fincorp/hft".into(),
                    cgroup_version: 1,
                    file: "cpu.cfs_quota_us".into(),
                    before: CpuLimit {
                        quota_us: Some(100_000),
                        period_us: 100_000,
                    },
                    after: CpuLimit {
                        quota_us: Some(120_000),
                        period_us: 100_000,
                    },
                },
            ))
        });
        let p = params(
            json!({"host": "hft-1", "app": "FINCORP-APP-HFT", "resource": "cpu", "increase_pct": "20"}),
        );
        let out = execute(&env, &reallocate::Reallocate, &p, &ctx(5_000))
            .await
            .unwrap();
        assert_eq!(out.result["before_cores"], 1.0);
        assert_eq!(out.result["after_cores"], 1.2);
        assert_eq!(out.result["host"], "hft-1");
        let sent = env.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].1, "fc-1:p:s",
            "the command id is the idempotency key"
        );
        assert_eq!(
            sent[0].2,
            CommandAction::Reallocate {
                app: "FINCORP-APP-HFT".into(),
                resource: Resource::Cpu,
                increase_pct: 20.0
            }
        );
    }

    #[tokio::test]
    async fn an_agent_refusal_is_a_refusal_and_not_retryable() {
        let env = FakeEnv::new(|host, id, _| {
            Ok(CommandResult {
                command_id: id.into(),
                host: host.into(),
                outcome: CommandOutcome::Refused,
                message: "app not in allowlist".into(),
                detail: None,
                finished_at_ms: 1,
            })
        });
        let p = params(json!({"host": "h", "app": "X", "resource": "cpu", "increase_pct": 10}));
        let err = execute(&env, &reallocate::Reallocate, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Refused(m) if m.contains("allowlist")),
            "{err}"
        );
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn bad_rendered_values_never_reach_the_agent() {
        let env = FakeEnv::new(|_, _, _| panic!("nothing may be sent"));
        for bad in [json!("-5"), json!("lots"), json!(0)] {
            let p =
                params(json!({"host": "h", "app": "X", "resource": "cpu", "increase_pct": bad}));
            let err = execute(&env, &reallocate::Reallocate, &p, &ctx(1_000))
                .await
                .unwrap_err();
            assert!(matches!(err, ActionError::InvalidParams(_)), "{err}");
        }
        let p = params(json!({"host": "h", "script": "../../bin/sh"}));
        let err = execute(&env, &exec::Exec, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::InvalidParams(m) if m.contains("not a path")),
            "{err}"
        );
        assert!(env.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn exec_fails_on_a_non_zero_exit() {
        let env = FakeEnv::new(|host, id, _| {
            Ok(applied(
                host,
                id,
                CommandDetail::Script {
                    script: "drain.sh".into(),
                    exit_code: Some(3),
                    timed_out: false,
                    duration_ms: 12,
                    stdout: String::new(),
                    stderr: "pool busy\n".into(),
                },
            ))
        });
        let p = params(json!({"host": "h", "script": "drain.sh", "args": ["--pool", "a"]}));
        let err = execute(&env, &exec::Exec, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Failed(m) if m.contains("exited with Some(3)") && m.contains("pool busy")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wait_for_returns_once_the_metric_holds_and_fails_after_within() {
        let env = Arc::new(FakeEnv::new(|_, _, _| Err("unused".into())));
        env.set_metric("h", Some("A"), "cpu", 97.0);
        let p = params(
            json!({"host": "h", "app": "A", "metric": "cpu", "op": "<", "value": 80, "within": "5s", "poll": "50ms"}),
        );
        let setter = {
            let env = env.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                env.set_metric("h", Some("A"), "cpu", 42.0);
            })
        };
        let out = execute(env.as_ref(), &wait_for::WaitFor, &p, &ctx(10_000))
            .await
            .unwrap();
        setter.await.unwrap();
        assert_eq!(out.result["value"], 42.0);
        assert!(
            out.result["waited_ms"].as_u64().unwrap() >= 150,
            "{}",
            out.result
        );

        let p = params(
            json!({"host": "h", "app": "A", "metric": "cpu", "op": ">", "value": 99, "within": "200ms", "poll": "50ms"}),
        );
        let err = execute(env.as_ref(), &wait_for::WaitFor, &p, &ctx(10_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Failed(m) if m.contains("last value 42")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn approval_passes_on_yes_and_refuses_on_no_or_silence() {
        let p = params(json!({"prompt": "raise HFT CPU?", "timeout": "2m"}));
        let mut env = FakeEnv::new(|_, _, _| Err("unused".into()));
        env.decision = Some(Decision {
            approved: true,
            by: "alice".into(),
            reason: "ok".into(),
        });
        let out = execute(&env, &approval::ApprovalAction, &p, &ctx(1_000))
            .await
            .unwrap();
        assert_eq!(out.result["by"], "alice");
        assert_eq!(env.asked.lock().unwrap()[0].3, Duration::from_secs(120));

        env.decision = Some(Decision {
            approved: false,
            by: "bob".into(),
            reason: "market open".into(),
        });
        let err = execute(&env, &approval::ApprovalAction, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Refused(m) if m.contains("bob") && m.contains("market open")),
            "{err}"
        );

        env.decision = None;
        let err = execute(&env, &approval::ApprovalAction, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Refused(m) if m.contains("no decision")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn servicenow_without_configuration_is_unavailable_not_a_panic() {
        let env = FakeEnv::new(|_, _, _| Err("unused".into()));
        let p = params(json!({"short_description": "x"}));
        let err = execute(&env, &crate::actions::servicenow::Create, &p, &ctx(1_000))
            .await
            .unwrap_err();
        assert!(matches!(err, ActionError::Unavailable(_)), "{err}");
    }
}
