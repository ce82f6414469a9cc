//! Dry runs: every step of a playbook rendered against a context, with the
//! exact requests its action would send, and nothing executed. Results of
//! earlier steps are not known yet, so templates reading them show
//! placeholders (`<steps.ID.result.FIELD>`) and conditions on them show as
//! undecided.

use std::fmt::Write as _;
use std::time::Duration;

use fincorp_integrations::servicenow::{ServiceNowClient, ServiceNowConfig};
use fincorp_integrations::vsphere::{VsphereClient, VsphereConfig};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::actions::{self, ActionError, BoxFuture, Decision, Env, Planned, StepContext};
use crate::model::{OnFailure, Playbook, Step, Trigger};
use crate::template::{self, Mode, RunContext};

/// The idempotency key of a step: the same for every attempt, retry and
/// restart of the step within its incident (or schedule slot).
pub fn idempotency_key(scope: &str, playbook: &str, step: &str) -> String {
    format!("{scope}:{playbook}:{step}")
}

/// How long a step may take: its `timeout`, else what its action needs.
pub fn step_timeout(step: &Step, params: &Map<String, Value>) -> Duration {
    let ms = step.timeout_ms.unwrap_or_else(|| {
        let param = |k: &str| actions::as_duration_ms(params.get(k));
        match step.action.as_str() {
            "wait_for" => param("within").unwrap_or(60_000) + 5_000,
            "approval" => param("timeout").unwrap_or(actions::approval::DEFAULT_TIMEOUT_MS) + 5_000,
            "exec" => param("timeout").unwrap_or(60_000) + 10_000,
            // A rollout: as long as a step may take.
            "rolling_patch" => crate::load::MAX_STEP_TIMEOUT_MS,
            "failover" => actions::failover::needed_ms(params),
            _ => 30_000,
        }
    });
    Duration::from_millis(ms.max(1) as u64)
}

/// The context of one step.
pub fn step_context(
    step: &Step,
    params: &Map<String, Value>,
    ctx: &RunContext,
    scope: &str,
) -> StepContext {
    StepContext {
        run_id: ctx.run.id.clone(),
        step_id: step.id.clone(),
        incident_id: ctx.incident.as_ref().map(|i| i.id.clone()),
        app: ctx.alert.as_ref().and_then(|a| a.app.clone()),
        idempotency_key: idempotency_key(scope, &ctx.playbook.name, &step.id),
        timeout: step_timeout(step, params),
    }
}

/// A plan of a whole playbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub playbook: String,
    pub trigger: String,
    pub guardrails: Vec<String>,
    pub steps: Vec<PlannedStep>,
    pub rollback: Vec<PlannedStep>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub action: String,
    pub mutating: bool,
    /// The condition and, when it can be decided now, its value.
    pub when: Option<(String, Option<bool>)>,
    /// `with`, rendered (secrets redacted, unknown results as placeholders).
    pub params: Value,
    /// The exact requests, or why they cannot be shown.
    pub requests: Result<Vec<Planned>, String>,
    pub retry: String,
    pub on_failure: String,
}

impl Plan {
    /// Steps that mutate but cannot say exactly what they would do: refused
    /// in dry-run mode.
    pub fn unplannable_mutations(&self) -> Vec<&PlannedStep> {
        self.steps
            .iter()
            .filter(|s| s.mutating && s.requests.is_err())
            .collect()
    }
}

/// Plans a playbook against a context. `scope` is the incident id (or the
/// schedule slot) the idempotency keys are derived from.
pub fn plan(playbook: &Playbook, ctx: &RunContext, env: &dyn Env, scope: &str) -> Plan {
    let tenv = template::environment();
    // Results not known yet: every main step that has not finished (a plan
    // of a run under way knows the finished ones).
    let pending: Vec<String> = playbook
        .steps
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| !ctx.steps.contains_key(id))
        .collect();
    // Step i may read the steps before it; those of them still pending.
    let pending_before = |i: usize| {
        let earlier = &playbook.steps[..i];
        pending
            .iter()
            .take_while(|p| earlier.iter().any(|s| &s.id == *p))
            .count()
    };
    let plan_step = |step: &Step, pending: &[String]| -> PlannedStep {
        let action = step.action();
        let when = step.when.as_ref().map(|w| {
            (
                w.clone(),
                template::condition(&tenv, w, ctx, Mode::Plan, pending)
                    .ok()
                    .flatten(),
            )
        });
        let rendered = template::render(&tenv, &step.with, ctx, Mode::Plan, pending);
        let (params, requests) = match rendered {
            Err(e) => (Value::Object(step.with.clone()), Err(e.to_string())),
            Ok(params) => {
                let sctx = step_context(step, &params, ctx, scope);
                let requests =
                    actions::plan(env, action, &params, &sctx).map_err(|e| e.to_string());
                (Value::Object(params), requests)
            }
        };
        PlannedStep {
            id: step.id.clone(),
            action: step.action.clone(),
            mutating: action.mutating(),
            when,
            params,
            requests,
            retry: if step.retry.attempts > 1 {
                format!(
                    "{} attempts, backoff {} doubling up to {}",
                    step.retry.attempts,
                    human_ms(step.retry.backoff_ms),
                    human_ms(step.retry.max_backoff_ms)
                )
            } else {
                "once".into()
            },
            on_failure: match &step.on_failure {
                OnFailure::Abort => "abort".into(),
                OnFailure::Continue => "continue".into(),
                OnFailure::Goto(t) => format!("goto:{t}"),
            },
        }
    };
    let steps = playbook
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| plan_step(s, &pending[..pending_before(i)]))
        .collect();
    let rollback = playbook
        .rollback
        .iter()
        .map(|s| plan_step(s, &pending))
        .collect();
    Plan {
        playbook: playbook.name.clone(),
        trigger: describe_trigger(&playbook.trigger),
        guardrails: describe_guardrails(&playbook.guardrails),
        steps,
        rollback,
    }
}

/// A trigger in words, for plans and listings.
pub fn describe_trigger(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Schedule { text, .. } => format!("schedule {text}"),
        Trigger::Incident(t) => {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "any".to_owned()
                } else {
                    l.join(", ")
                }
            };
            let on: Vec<_> = t.on.iter().map(|c| c.as_str()).collect();
            format!(
                "incident {}; alert {}; app {}; source {}; severity >= {}",
                on.join(" or "),
                list(&t.alerts),
                list(&t.apps),
                list(&t.sources),
                t.min_severity
            )
        }
    }
}

/// Guardrails in words, one phrase each, for plans and listings.
pub fn describe_guardrails(g: &crate::model::Guardrails) -> Vec<String> {
    let mut guardrails = Vec::new();
    let budget = |b: &crate::model::Budget| format!("{} runs per {}", b.max, human_ms(b.per_ms));
    match (&g.per_playbook, &g.per_target) {
        (None, None) => guardrails.push("no rate limit".into()),
        (p, t) => {
            if let Some(p) = p {
                guardrails.push(format!("at most {}", budget(p)));
            }
            if let Some(t) = t {
                guardrails.push(format!("at most {} per target", budget(t)));
            }
        }
    }
    guardrails.push(format!("lock: {:?}", g.lock).to_lowercase());
    guardrails.push(format!("max hosts: {}", g.max_hosts));
    guardrails.push(format!("max causal depth: {}", g.max_depth));
    if let Some(t) = g.approval_timeout_ms {
        guardrails.push(format!(
            "approval required (nothing done after {})",
            human_ms(t)
        ));
    }
    if g.dry_run {
        guardrails.push("dry run: nothing is executed".into());
    }
    guardrails
}

/// A duration in the largest whole unit: `1h`, `15m`, `90s`, `250ms`.
pub fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// A plan as text, for people and golden files.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "playbook {}", plan.playbook);
    let _ = writeln!(out, "trigger: {}", plan.trigger);
    let _ = writeln!(out, "guardrails: {}", plan.guardrails.join("; "));
    let section = |out: &mut String, title: &str, steps: &[PlannedStep]| {
        if steps.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title}:");
        for (i, s) in steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. {} ({}{}) retry: {}; on failure: {}",
                i + 1,
                s.id,
                s.action,
                if s.mutating { ", mutating" } else { "" },
                s.retry,
                s.on_failure
            );
            if let Some((w, v)) = &s.when {
                let decided = match v {
                    Some(true) => "true now",
                    Some(false) => "false now: skipped",
                    None => "decided when the step is reached",
                };
                let _ = writeln!(out, "   when: {w} ({decided})");
            }
            let params = serde_json::to_string_pretty(&s.params).unwrap_or_default();
            let _ = writeln!(out, "   with: {}", params.replace('\n', "\n   "));
            match &s.requests {
                Err(e) => {
                    let _ = writeln!(out, "   requests: NOT PLANNABLE: {e}");
                }
                Ok(reqs) => {
                    for r in reqs {
                        let text = match r {
                            Planned::Http { request } => {
                                let mut t = format!("{} {}", request.method, request.url);
                                for (k, v) in &request.headers {
                                    let _ = write!(t, "\n      {k}: {v}");
                                }
                                if let Some(b) = &request.body {
                                    let _ = write!(
                                        t,
                                        "\n      {}",
                                        serde_json::to_string(b).unwrap_or_default()
                                    );
                                }
                                t
                            }
                            Planned::AgentCommand { host, command } => {
                                format!(
                                    "signed command to the agent on {host}:\n      {}",
                                    serde_json::to_string(command).unwrap_or_default()
                                )
                            }
                            Planned::Wait { description } => description.clone(),
                            Planned::Approval { prompt, timeout_ms } => {
                                format!(
                                    "wait for an operator's approval (up to {}): {prompt}",
                                    human_ms(*timeout_ms)
                                )
                            }
                            Planned::Silence {
                                matchers,
                                duration_ms,
                                comment,
                            } => format!(
                                "silence {} for up to {}: {comment}",
                                matchers.join(", "),
                                human_ms(*duration_ms)
                            ),
                            Planned::Note { text } => format!("({text})"),
                        };
                        let _ = writeln!(out, "   -> {text}");
                    }
                }
            }
        }
    };
    section(&mut out, "steps", &plan.steps);
    section(
        &mut out,
        "rollback (if the run aborts after a mutating step)",
        &plan.rollback,
    );
    out
}

/// An [`Env`] that can plan but never execute: for `plan --sample` and
/// tests. Its ServiceNow and vCenter clients point at sample instances.
pub struct PlanOnlyEnv {
    servicenow: Option<ServiceNowClient>,
    vsphere: Option<VsphereClient>,
    http: reqwest::Client,
}

impl PlanOnlyEnv {
    pub fn new(servicenow: Option<ServiceNowClient>) -> Self {
        Self {
            servicenow,
            vsphere: None,
            http: fincorp_api::http::client(Duration::from_secs(10)),
        }
    }

    /// The same env with a vCenter client to plan vSphere calls with.
    pub fn with_vsphere(mut self, vsphere: Option<VsphereClient>) -> Self {
        self.vsphere = vsphere;
        self
    }

    /// ServiceNow at `https://fincorp.service-now.com`, user
    /// `fincorp-operator`; vCenter at `https://vcenter.fincorp.example`,
    /// user `fincorp-automation@vsphere.local`.
    pub fn sample() -> Self {
        let cfg = ServiceNowConfig {
            url: "https://fincorp.service-now.com".into(),
            username: "fincorp-operator".into(),
            password: fincorp_api::config::Secret::new("plan-only"),
            timeout: Duration::from_secs(10),
        };
        let vcenter = VsphereConfig {
            url: "https://vcenter.fincorp.example".into(),
            username: "fincorp-automation@vsphere.local".into(),
            password: fincorp_api::config::Secret::new("plan-only"),
            timeout: Duration::from_secs(30),
        };
        Self::new(ServiceNowClient::new(cfg).ok()).with_vsphere(VsphereClient::new(vcenter).ok())
    }
}

impl Env for PlanOnlyEnv {
    fn agent_command<'a>(
        &'a self,
        _host: &'a str,
        _command_id: &'a str,
        _action: fincorp_api::wire::CommandAction,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<fincorp_api::wire::CommandResult, String>> {
        Box::pin(async { Err("planning executes nothing".to_owned()) })
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

    fn metric(&self, _host: &str, _app: Option<&str>, _metric: &str) -> Option<f64> {
        None
    }

    fn await_approval<'a>(
        &'a self,
        _r: &'a str,
        _s: &'a str,
        _p: &'a str,
        _t: Duration,
    ) -> BoxFuture<'a, Result<Option<Decision>, String>> {
        Box::pin(async { Err("planning executes nothing".to_owned()) })
    }

    fn sampled_at(&self, _host: &str) -> Option<i64> {
        None
    }

    fn create_silence<'a>(
        &'a self,
        _matchers: Vec<String>,
        _duration: Duration,
        _created_by: &'a str,
        _comment: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err("planning executes nothing".to_owned()) })
    }

    fn expire_silence<'a>(
        &'a self,
        _id: &'a str,
        _by: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("planning executes nothing".to_owned()) })
    }

    fn progress<'a>(&'a self, _r: &'a str, _s: &'a str, _p: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn stop_requested(&self) -> bool {
        true
    }
}

/// Plans and refuses a dry run that would hide a mutation.
pub fn dry_run_refusal(plan: &Plan) -> Option<ActionError> {
    let bad = plan.unplannable_mutations();
    (!bad.is_empty()).then(|| {
        ActionError::NotPlannable(format!(
            "dry run refused: mutating step(s) {} cannot say exactly what they would do",
            bad.iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}
