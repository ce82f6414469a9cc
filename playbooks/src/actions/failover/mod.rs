//! `failover`: moves an app from its failed primary host to a standby VM in
//! the secondary site, in five recorded phases:
//!
//! 1. **confirm_down**: the primary must be down beyond doubt. The playbook
//!    passes `confirming_alerts`, how many firing alerts from outside the
//!    primary's own agent (hardware, BMC) its incident holds on the
//!    primary, rendered from `alerts`; none refuses the failover. Then the
//!    app's probe on the primary (`probe_up` from its agent's samples) must
//!    read 0, or be silent (no sample in 15 s: the agent or the host is
//!    gone), for all of `probe_down_for`. A single reading of 1 refuses the
//!    failover: a primary that answers is not failed over.
//! 2. **power_on**: the standby VM (`standby_vm`, its vCenter name) is
//!    looked up and started through vCenter. `ALREADY_IN_DESIRED_STATE`
//!    counts as done, and vCenter must then report it `POWERED_ON`.
//! 3. **wait_probe**: the app's probe on the standby host (`host`, as its
//!    agent reports it) must read 1 within `boot_timeout`.
//! 4. **switch_traffic**: a hook moves the traffic: a webhook
//!    (`switch_url`, JSON `switch_body`, `switch_headers`) to a DNS or
//!    load-balancer API, or a script from the agent's allowlist
//!    (`switch_script`, `switch_args`, on `switch_host`, default `host`).
//!    Either carries the key `<idempotency key>:switch` (the
//!    `Idempotency-Key` header, or the agent command id), and must *set*
//!    the traffic target rather than toggle it.
//! 5. **verify**: the probe on the standby must read 1 in a sample its
//!    agent took after the switch, within `verify_within`.
//!
//! Each phase is recorded with its start, end, outcome and detail in the
//! step result (`phases`, and `log` as text for tickets), and reported as
//! the step's progress as it completes, so the run record shows how far a
//! running (or failed) failover got. A failed phase ends the step with the
//! phases so far in its error, and nothing after it is attempted. The kill
//! switch stops it at the next safe point: during the confirmation and
//! boot waits, and before the power-on and the traffic switch.
//!
//! Mutating and not reversible (the validator asks for an approval before
//! it). Idempotent per key: a repeat re-confirms the outage, finds the VM
//! already on, and sends the switch with the same key.

use std::time::{Duration, Instant};

use fincorp_api::wire::{CommandAction, CommandDetail, CommandOutcome};
use fincorp_api::{format_ms, now_ms};
use fincorp_integrations::plan::PlannedRequest;
use fincorp_integrations::vsphere::{PowerAction, PowerOutcome, PowerState};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::reallocate::planned_command;
use super::vsphere::{action_error, client};
use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_duration_ms, as_f64, as_text, required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "app",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "primary_host",
        required: true,
        kind: ParamKind::String,
    },
    // The standby host (where the app comes up), as its agent reports it;
    // the guardrails (max_hosts, causal attribution) count it.
    ParamSpec {
        name: "host",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "standby_vm",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "confirming_alerts",
        required: true,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "probe_down_for",
        required: false,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "boot_timeout",
        required: false,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "verify_within",
        required: false,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "poll",
        required: false,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "switch_url",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "switch_method",
        required: false,
        kind: ParamKind::OneOf(&["POST", "PUT"]),
    },
    ParamSpec {
        name: "switch_body",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "switch_headers",
        required: false,
        kind: ParamKind::StringMap,
    },
    ParamSpec {
        name: "switch_script",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "switch_args",
        required: false,
        kind: ParamKind::Strings,
    },
    ParamSpec {
        name: "switch_host",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "switch_timeout",
        required: false,
        kind: ParamKind::Duration,
    },
];

const DEFAULT_PROBE_DOWN_FOR_MS: i64 = 10_000;
const DEFAULT_BOOT_TIMEOUT_MS: i64 = 300_000;
const DEFAULT_VERIFY_WITHIN_MS: i64 = 30_000;
const DEFAULT_POLL_MS: i64 = 1_000;
const DEFAULT_SWITCH_TIMEOUT_MS: i64 = 30_000;
/// Time for the vCenter calls (login, lookup, power on, read back).
const VCENTER_ALLOWANCE_MS: i64 = 60_000;

pub struct Failover;

/// How the traffic is moved.
#[derive(Debug, Clone, PartialEq)]
enum Switch {
    Webhook {
        url: String,
        method: String,
        body: Value,
        headers: Vec<(String, String)>,
    },
    Script {
        host: String,
        script: String,
        args: Vec<String>,
    },
}

/// The rendered parameters, checked.
#[derive(Debug, Clone)]
struct Spec {
    app: String,
    primary_host: String,
    host: String,
    standby_vm: String,
    confirming_alerts: u64,
    probe_down_for: Duration,
    boot_timeout: Duration,
    verify_within: Duration,
    poll: Duration,
    switch: Switch,
    switch_timeout: Duration,
}

fn ms(params: &Map<String, Value>, key: &str, default: i64) -> i64 {
    as_duration_ms(params.get(key)).unwrap_or(default)
}

fn duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// The time a failover step needs at most with these parameters: its
/// default step timeout.
pub fn needed_ms(params: &Map<String, Value>) -> i64 {
    ms(params, "probe_down_for", DEFAULT_PROBE_DOWN_FOR_MS)
        + ms(params, "boot_timeout", DEFAULT_BOOT_TIMEOUT_MS)
        + ms(params, "verify_within", DEFAULT_VERIFY_WITHIN_MS)
        + ms(params, "switch_timeout", DEFAULT_SWITCH_TIMEOUT_MS)
        + VCENTER_ALLOWANCE_MS
}

impl Spec {
    fn parse(params: &Map<String, Value>, ctx: &StepContext) -> Result<Self, ActionError> {
        let invalid = |m: String| ActionError::InvalidParams(m);
        let confirming = params
            .get("confirming_alerts")
            .and_then(as_f64)
            .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0)
            .ok_or_else(|| {
                invalid("`confirming_alerts` must be a whole number, 0 or more".into())
            })?;
        for key in ["boot_timeout", "verify_within", "poll", "switch_timeout"] {
            if params.contains_key(key) && ms(params, key, 0) <= 0 {
                return Err(invalid(format!("`{key}` must be above 0")));
            }
        }
        let host = required_text(params, "host")?;
        let primary_host = required_text(params, "primary_host")?;
        if host == primary_host {
            return Err(invalid(format!(
                "the standby `host` is the primary ({host}): a failover needs another host"
            )));
        }
        let text = |k: &str| params.get(k).and_then(as_text).filter(|s| !s.is_empty());
        let switch = match (text("switch_url"), text("switch_script")) {
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(invalid(format!(
                        "`switch_url` must be http(s), not {url:?}"
                    )));
                }
                if params.contains_key("switch_args") || params.contains_key("switch_host") {
                    return Err(invalid(
                        "`switch_args` and `switch_host` go with `switch_script`, not `switch_url`"
                            .into(),
                    ));
                }
                let body = params.get("switch_body").cloned().unwrap_or_else(|| {
                    json!({
                        "app": required_text(params, "app").unwrap_or_default(),
                        "from_host": primary_host,
                        "to_host": host,
                        "standby_vm": text("standby_vm").unwrap_or_default(),
                        "incident_id": ctx.incident_id,
                        "run_id": ctx.run_id,
                    })
                });
                Switch::Webhook {
                    url,
                    method: text("switch_method").unwrap_or_else(|| "POST".into()),
                    body,
                    headers: params
                        .get("switch_headers")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            (None, Some(script)) => {
                if script.contains('/') || script.starts_with('.') {
                    return Err(invalid(format!(
                        "`switch_script` is a file name in the agent's allowlist, not a path: {script:?}"
                    )));
                }
                for key in ["switch_method", "switch_body", "switch_headers"] {
                    if params.contains_key(key) {
                        return Err(invalid(format!(
                            "`{key}` goes with `switch_url`, not `switch_script`"
                        )));
                    }
                }
                Switch::Script {
                    host: text("switch_host").unwrap_or_else(|| host.clone()),
                    script,
                    args: params
                        .get("switch_args")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            _ => {
                return Err(invalid(
                    "give exactly one traffic switch: `switch_url` (a webhook) or `switch_script` (an allowlisted agent script)"
                        .into(),
                ));
            }
        };
        Ok(Spec {
            app: required_text(params, "app")?,
            primary_host,
            host,
            standby_vm: required_text(params, "standby_vm")?,
            confirming_alerts: confirming as u64,
            probe_down_for: duration(ms(params, "probe_down_for", DEFAULT_PROBE_DOWN_FOR_MS)),
            boot_timeout: duration(ms(params, "boot_timeout", DEFAULT_BOOT_TIMEOUT_MS)),
            verify_within: duration(ms(params, "verify_within", DEFAULT_VERIFY_WITHIN_MS)),
            poll: duration(ms(params, "poll", DEFAULT_POLL_MS).max(50)),
            switch,
            switch_timeout: duration(ms(params, "switch_timeout", DEFAULT_SWITCH_TIMEOUT_MS)),
        })
    }

    fn switch_key(ctx: &StepContext) -> String {
        format!("{}:switch", ctx.idempotency_key)
    }

    /// The webhook as it is sent.
    fn webhook_request(&self, ctx: &StepContext) -> Option<PlannedRequest> {
        let Switch::Webhook {
            url,
            method,
            body,
            headers,
        } = &self.switch
        else {
            return None;
        };
        let mut all = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Idempotency-Key".to_owned(), Self::switch_key(ctx)),
        ];
        all.extend(headers.iter().cloned());
        Some(PlannedRequest {
            method: method.clone(),
            url: url.clone(),
            headers: all,
            body: Some(body.clone()),
        })
    }

    /// The agent command a script switch sends: (host, action).
    fn script_command(&self) -> Option<(String, CommandAction)> {
        let Switch::Script { host, script, args } = &self.switch else {
            return None;
        };
        Some((
            host.clone(),
            CommandAction::RunScript {
                script: script.clone(),
                args: args.clone(),
                timeout_ms: Some(self.switch_timeout.as_millis() as u64),
            },
        ))
    }

    fn secs(d: Duration) -> String {
        fincorp_api::config::Duration(d).to_string()
    }

    fn describe_confirm(&self) -> String {
        format!(
            "confirm {} is down: at least 1 confirming alert on it (the incident has {}), and the probe of {} on it reading 0 or silent for {} (polled every {}; a reading of 1 refuses the failover)",
            self.primary_host,
            self.confirming_alerts,
            self.app,
            Self::secs(self.probe_down_for),
            Self::secs(self.poll)
        )
    }

    fn describe_wait(&self) -> String {
        format!(
            "wait until the probe of {} on {} reads 1, within {}",
            self.app,
            self.host,
            Self::secs(self.boot_timeout)
        )
    }

    fn describe_verify(&self) -> String {
        format!(
            "verify: the probe of {} on {} reads 1 after the switch, within {}",
            self.app,
            self.host,
            Self::secs(self.verify_within)
        )
    }
}

/// One phase as recorded in the step result.
#[derive(Debug, Clone, Serialize)]
struct PhaseRecord {
    phase: &'static str,
    started_at_ms: i64,
    finished_at_ms: i64,
    /// `ok`, `refused` or `failed`.
    outcome: &'static str,
    detail: String,
}

#[derive(Default)]
struct Log {
    phases: Vec<PhaseRecord>,
}

impl Log {
    fn record(
        &mut self,
        phase: &'static str,
        started_at_ms: i64,
        outcome: &'static str,
        detail: String,
    ) {
        self.phases.push(PhaseRecord {
            phase,
            started_at_ms,
            finished_at_ms: now_ms(),
            outcome,
            detail,
        });
    }

    /// One line per phase, for people and tickets.
    fn text(&self) -> String {
        self.phases
            .iter()
            .map(|p| {
                format!(
                    "{} {} {} ({:.1}s): {}",
                    format_ms(p.started_at_ms),
                    p.phase,
                    p.outcome,
                    (p.finished_at_ms - p.started_at_ms) as f64 / 1000.0,
                    p.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The text inside an action error.
fn message(e: &ActionError) -> &str {
    match e {
        ActionError::InvalidParams(m)
        | ActionError::Refused(m)
        | ActionError::Failed(m)
        | ActionError::Unavailable(m)
        | ActionError::NotPlannable(m) => m,
    }
}

/// The same kind of error, with the failover's phases so far appended.
fn with_log(e: &ActionError, log: &Log) -> ActionError {
    let text = format!(
        "failover stopped at {}: {}\nphases:\n{}",
        log.phases.last().map_or("start", |p| p.phase),
        message(e),
        log.text()
    );
    match e {
        ActionError::InvalidParams(_) => ActionError::InvalidParams(text),
        ActionError::Refused(_) => ActionError::Refused(text),
        ActionError::Failed(_) => ActionError::Failed(text),
        ActionError::Unavailable(_) => ActionError::Unavailable(text),
        ActionError::NotPlannable(_) => ActionError::NotPlannable(text),
    }
}

fn show(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v}"),
        None => "no sample".into(),
    }
}

/// Why a probe did not come up.
enum NotUp {
    /// `within` passed; the last reading.
    TimedOut(Option<f64>),
    /// The kill switch went on while waiting.
    Stopped,
}

/// Polls `probe_up` of the app on `host` until it reads 1 in a sample
/// taken after `after` (a sample time from [`Env::sampled_at`]; `None`:
/// any fresh sample), or `within` passes, or the kill switch goes on. How
/// long it took and the latency seen.
async fn probe_comes_up(
    env: &dyn Env,
    host: &str,
    app: &str,
    within: Duration,
    poll: Duration,
    after: Option<i64>,
) -> Result<(Duration, Option<f64>), NotUp> {
    let started = Instant::now();
    let mut last = None;
    loop {
        if env.stop_requested() {
            return Err(NotUp::Stopped);
        }
        let fresh = match after {
            None => true,
            Some(t) => env.sampled_at(host).is_some_and(|at| at > t),
        };
        let up = env.metric(host, Some(app), "probe_up");
        if up.is_some() {
            last = up;
        }
        if fresh && up.is_some_and(|v| v >= 1.0) {
            return Ok((started.elapsed(), env.metric(host, Some(app), "latency_ms")));
        }
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(NotUp::TimedOut(last));
        }
        tokio::time::sleep(poll.min(left)).await;
    }
}

const KILL_SWITCH: &str = "the automation kill switch is on";

/// The kill switch's refusal to start `phase`.
fn stopped(phase: &str) -> ActionError {
    ActionError::Refused(format!("{KILL_SWITCH}: stopped before {phase}"))
}

/// Refuses to start `phase` once the kill switch is on.
fn not_stopped(env: &dyn Env, phase: &str) -> Result<(), ActionError> {
    if env.stop_requested() {
        Err(stopped(phase))
    } else {
        Ok(())
    }
}

async fn confirm_down(env: &dyn Env, s: &Spec) -> Result<String, ActionError> {
    if s.confirming_alerts == 0 {
        return Err(ActionError::Refused(format!(
            "no confirming alert on {}: the incident holds no firing alert on it from outside its agent (e.g. hardware), and a probe alone does not fail {} over",
            s.primary_host, s.app
        )));
    }
    let started = Instant::now();
    let (mut down, mut silent) = (0u32, 0u32);
    loop {
        not_stopped(env, "power_on")?;
        match env.metric(&s.primary_host, Some(&s.app), "probe_up") {
            Some(v) if v >= 1.0 => {
                return Err(ActionError::Refused(format!(
                    "the probe of {} on {} reads 1 ({:.1}s into the {} confirmation): the primary answers, so it is not failed over",
                    s.app,
                    s.primary_host,
                    started.elapsed().as_secs_f64(),
                    Spec::secs(s.probe_down_for)
                )));
            }
            Some(_) => down += 1,
            None => silent += 1,
        }
        let left = s.probe_down_for.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(s.poll.min(left)).await;
    }
    Ok(format!(
        "{} confirming alert(s) on {}; the probe of {} on it read 0 {down} time(s) and was silent {silent} time(s) over {}",
        s.confirming_alerts,
        s.primary_host,
        s.app,
        Spec::secs(s.probe_down_for)
    ))
}

/// Starts the standby VM; the detail, the VM id and the power outcome.
async fn power_on(env: &dyn Env, s: &Spec) -> Result<(String, String, PowerOutcome), ActionError> {
    let vc = client(env)?;
    let vm = vc.find_vm(&s.standby_vm).await.map_err(action_error)?;
    let outcome = vc
        .power(&vm.vm, PowerAction::Start)
        .await
        .map_err(action_error)?;
    let now = vc.power_state(&vm.vm).await.map_err(action_error)?;
    if now != PowerState::PoweredOn {
        return Err(ActionError::Failed(format!(
            "vCenter reports {} ({}) {now} after the power-on",
            s.standby_vm, vm.vm
        )));
    }
    let done = match outcome {
        PowerOutcome::Done => "started",
        PowerOutcome::AlreadyInDesiredState => {
            "already on (ALREADY_IN_DESIRED_STATE: nothing to do)"
        }
    };
    Ok((
        format!(
            "{} ({}) was {}; {done}; vCenter reports {now}",
            s.standby_vm, vm.vm, vm.power_state
        ),
        vm.vm,
        outcome,
    ))
}

async fn switch_traffic(
    env: &dyn Env,
    s: &Spec,
    ctx: &StepContext,
) -> Result<(String, Value), ActionError> {
    if let Some(request) = s.webhook_request(ctx) {
        let mut req = match request.method.as_str() {
            "PUT" => env.http().put(&request.url),
            _ => env.http().post(&request.url),
        };
        req = req.timeout(s.switch_timeout).json(&request.body);
        for (k, v) in &request.headers {
            if !k.eq_ignore_ascii_case("content-type") {
                req = req.header(k, v);
            }
        }
        let what = format!("{} {}", request.method, request.url);
        let status = super::send_checked(req, &format!("traffic switch {what}")).await?;
        return Ok((
            format!("{what} answered {}", status.as_u16()),
            json!({"kind": "webhook", "url": request.url, "status": status.as_u16()}),
        ));
    }
    let (host, action) = s
        .script_command()
        .expect("a switch is a webhook or a script");
    let id = Spec::switch_key(ctx);
    let result = env
        .agent_command(
            &host,
            &id,
            action,
            s.switch_timeout + Duration::from_secs(10),
        )
        .await
        .map_err(|e| ActionError::Failed(format!("traffic switch on {host}: {e}")))?;
    match (result.outcome, result.detail) {
        (
            CommandOutcome::Applied,
            Some(CommandDetail::Script {
                script,
                exit_code: Some(0),
                duration_ms,
                stdout,
                ..
            }),
        ) => Ok((
            format!("{script} on {host} exited 0 after {duration_ms} ms"),
            json!({"kind": "script", "host": host, "script": script, "exit_code": 0, "stdout": stdout}),
        )),
        (
            CommandOutcome::Applied,
            Some(CommandDetail::Script {
                script,
                exit_code,
                timed_out,
                stderr,
                ..
            }),
        ) => Err(ActionError::Failed(format!(
            "traffic switch {script} on {host} exited with {exit_code:?} (timed out: {timed_out}): {}",
            stderr.trim()
        ))),
        (CommandOutcome::Refused, _) => Err(ActionError::Refused(format!(
            "traffic switch: agent on {host}: {}",
            result.message
        ))),
        _ => Err(ActionError::Failed(format!(
            "traffic switch: agent on {host}: {}",
            result.message
        ))),
    }
}

/// Runs one phase, recording it; a failure ends the failover with the log.
macro_rules! phase {
    ($env:ident, $ctx:ident, $log:ident, $name:literal, $started:ident, $body:expr) => {{
        match $body {
            Ok(v) => v,
            Err(e) => {
                $log.record($name, $started, outcome(&e), message(&e).to_owned());
                report($env, $ctx, &$log).await;
                return Err(with_log(&e, &$log));
            }
        }
    }};
}

/// How a failed phase is recorded: `stopped` (the kill switch), `refused`
/// (trying again cannot help) or `failed`.
fn outcome(e: &ActionError) -> &'static str {
    match e {
        ActionError::Refused(m) if m.starts_with(KILL_SWITCH) => "stopped",
        ActionError::Refused(_) | ActionError::InvalidParams(_) => "refused",
        _ => "failed",
    }
}

/// Shows the phases so far in the run record while the failover runs, and
/// keeps them there if it fails.
async fn report(env: &dyn Env, ctx: &StepContext, log: &Log) {
    let progress = json!({"phases": log.phases, "log": log.text()});
    env.progress(&ctx.run_id, &ctx.step_id, &progress).await;
}

async fn run(env: &dyn Env, s: &Spec, ctx: &StepContext) -> Result<ActionOutput, ActionError> {
    let started_at_ms = now_ms();
    let mut log = Log::default();

    let t = now_ms();
    let detail = phase!(env, ctx, log, "confirm_down", t, confirm_down(env, s).await);
    log.record("confirm_down", t, "ok", detail);
    report(env, ctx, &log).await;

    let t = now_ms();
    let (detail, vm_id, power) = phase!(env, ctx, log, "power_on", t, {
        match not_stopped(env, "power_on") {
            Ok(()) => power_on(env, s).await,
            Err(e) => Err(e),
        }
    });
    log.record("power_on", t, "ok", detail);
    report(env, ctx, &log).await;

    let t = now_ms();
    let waited = probe_comes_up(env, &s.host, &s.app, s.boot_timeout, s.poll, None).await;
    let (took, latency) = phase!(
        env,
        ctx,
        log,
        "wait_probe",
        t,
        waited.map_err(|why| match why {
            NotUp::Stopped => stopped("switch_traffic"),
            NotUp::TimedOut(last) => ActionError::Failed(format!(
                "the probe of {} on {} did not read 1 within {} (last: {})",
                s.app,
                s.host,
                Spec::secs(s.boot_timeout),
                show(last)
            )),
        })
    );
    log.record(
        "wait_probe",
        t,
        "ok",
        format!(
            "the probe of {} on {} read 1 after {:.1}s (latency {} ms)",
            s.app,
            s.host,
            took.as_secs_f64(),
            show(latency)
        ),
    );
    report(env, ctx, &log).await;

    let t = now_ms();
    let (detail, switch) = phase!(env, ctx, log, "switch_traffic", t, {
        match not_stopped(env, "switch_traffic") {
            Ok(()) => switch_traffic(env, s, ctx).await,
            Err(e) => Err(e),
        }
    });
    log.record("switch_traffic", t, "ok", detail);
    report(env, ctx, &log).await;

    // Only a sample the agent took after the switch counts.
    let t = now_ms();
    let switched = env.sampled_at(&s.host);
    let verified = probe_comes_up(
        env,
        &s.host,
        &s.app,
        s.verify_within,
        s.poll,
        Some(switched.unwrap_or(i64::MIN)),
    )
    .await;
    let (_, latency) = phase!(env, ctx, log,
        "verify",
        t,
        verified.map_err(|why| match why {
            NotUp::Stopped => stopped("verify"),
            NotUp::TimedOut(last) => ActionError::Failed(format!(
                "after the switch the probe of {} on {} did not read 1 in a new sample within {} (last: {})",
                s.app,
                s.host,
                Spec::secs(s.verify_within),
                show(last)
            )),
        })
    );
    log.record(
        "verify",
        t,
        "ok",
        format!(
            "the probe of {} on {} reads 1 in a sample taken after the switch (latency {} ms)",
            s.app,
            s.host,
            show(latency)
        ),
    );
    report(env, ctx, &log).await;

    let finished_at_ms = now_ms();
    Ok(ActionOutput {
        result: json!({
            "app": s.app,
            "primary_host": s.primary_host,
            "standby_host": s.host,
            "standby_vm": s.standby_vm,
            "vm_id": vm_id,
            "power": power,
            "switch": switch,
            "phases": log.phases,
            "log": log.text(),
            "started_at_ms": started_at_ms,
            "finished_at_ms": finished_at_ms,
            "duration_ms": finished_at_ms - started_at_ms,
        }),
        ticket: None,
    })
}

impl Action for Failover {
    fn name(&self) -> &'static str {
        "failover"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        true
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn reversible(&self) -> bool {
        false
    }

    fn plan(
        &self,
        env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let s = Spec::parse(params, ctx)?;
        let vc = client(env)?;
        let mut plan = vec![
            Planned::Wait {
                description: s.describe_confirm(),
            },
            Planned::Http {
                request: vc.plan_login(),
            },
        ];
        plan.extend(
            vc.plan_power_named(&s.standby_vm, PowerAction::Start)
                .map_err(action_error)?
                .into_iter()
                .map(|request| Planned::Http { request }),
        );
        plan.push(Planned::Wait {
            description: s.describe_wait(),
        });
        match (s.webhook_request(ctx), s.script_command()) {
            (Some(request), _) => plan.push(Planned::Http { request }),
            (None, Some((host, action))) => plan.push(planned_command(
                host,
                &Spec::switch_key(ctx),
                action,
                s.switch_timeout + Duration::from_secs(10),
            )),
            (None, None) => unreachable!("a switch is a webhook or a script"),
        }
        plan.push(Planned::Wait {
            description: s.describe_verify(),
        });
        Ok(plan)
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let s = Spec::parse(params, ctx)?;
            // Nothing is confirmed or sent without a vCenter to fail over to.
            client(env)?;
            run(env, &s, ctx).await
        })
    }
}

#[cfg(test)]
mod tests;
