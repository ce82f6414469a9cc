//! `rolling_patch`: patches an app's hosts in batches, keeping the app up.
//!
//! `hosts` (the app's instances) are split into batches of `serial` hosts
//! (a count, or a percentage of the hosts such as `"25%"`, rounded down, at
//! least 1). Batch by batch:
//!
//! 1. **precondition**: at least `min_healthy` of the hosts outside the
//!    batch must be healthy now (every health check holds on their latest
//!    fresh sample), else the rollout halts before touching the batch;
//!    the kill switch also halts it here;
//! 2. **silence**: a maintenance silence (`host=<host>`) per host, at most
//!    `silence_for` long, so the alerts the patch itself causes do not page;
//! 3. per host, all hosts of the batch at once: **drain** (optional hook),
//!    **patch**, **restart** (optional), then the **health gate**: every
//!    check of `health` (default `probe_up == 1`, the agent's own probe)
//!    must hold on `health.samples` consecutive samples the host's agent
//!    took after the restart, within `health.timeout`;
//! 4. hosts that failed a hook or the gate count as failed. When failures
//!    exceed `max_fail_percentage` of all hosts, the rollout will halt: with
//!    a `rollback` hook the *whole batch* is rolled back (rollback, restart,
//!    health gate); below the threshold only the failed hosts are;
//! 5. **undrain** (optional hook) of every drained host that is healthy;
//!    an unhealthy one stays out of service;
//! 6. the batch's silences are expired, so its hosts page again; then the
//!    rollout halts (the step fails with what happened) or goes on after
//!    `pause`.
//!
//! Hooks are `{script, args, host, timeout}` (a script from the agent's
//! allowlist, on the host being patched unless `host` says otherwise) or,
//! for drain and undrain, `{url, method, body, headers, timeout}` (a
//! webhook); `{host}`, `{app}` and `{batch}` are replaced in them. Patch,
//! restart and rollback must be scripts.
//!
//! Progress: after every phase the report (batches, each host's phases with
//! their outcome and detail, failures, why it halted) is published as the
//! running step's result in the run record, and stays there if the step
//! fails; on success it is the step's result.
//!
//! Mutating and not reversible (the validator asks for an approval before
//! it). Not idempotent: a rollout cut short by a restart of the correlator
//! is not resumed but marked interrupted, and its report shows how far it
//! got. A halt is not retryable.

use serde_json::{Map, Value};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
};

mod hook;
mod run;
mod spec;

#[cfg(test)]
mod tests;

use hook::Target;
use spec::Rollout;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "app",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "hosts",
        required: true,
        kind: ParamKind::Strings,
    },
    ParamSpec {
        name: "serial",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "max_fail_percentage",
        required: false,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "min_healthy",
        required: false,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "drain",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "patch",
        required: true,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "restart",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "rollback",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "undrain",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "health",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "silence_for",
        required: false,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "pause",
        required: false,
        kind: ParamKind::Duration,
    },
];

pub struct RollingPatch;

fn human(d: std::time::Duration) -> String {
    crate::plan::human_ms(d.as_millis() as i64)
}

/// Every request the rollout would make, batch by batch, assuming every
/// host passes (and, under notes, what a failed batch adds).
fn plan(r: &Rollout, ctx: &StepContext) -> Vec<Planned> {
    let batches = r.batches();
    let key = |host: &str, phase: &str| format!("{}:{host}:{phase}", ctx.idempotency_key);
    let note = |text: String| Planned::Note { text };
    let mut out = vec![note(format!(
        "{} on {} host(s) in {} batch(es) of at most {}; halts once more than {}% of the hosts fail; keeps at least {} healthy host(s) outside each batch; a host is healthy when {} holds on {} fresh sample(s) within {}",
        r.app,
        r.hosts.len(),
        batches.len(),
        r.batch_size,
        r.max_fail_percentage,
        r.min_healthy,
        r.health.describe(),
        r.health.samples,
        human(r.health.timeout)
    ))];
    for (i, batch) in batches.iter().enumerate() {
        let n = i + 1;
        out.push(note(format!(
            "batch {n} of {}: {}{}",
            batches.len(),
            batch.join(", "),
            if i > 0 && !r.pause.is_zero() {
                format!(", after a pause of {}", human(r.pause))
            } else {
                String::new()
            }
        )));
        for host in batch {
            out.push(Planned::Silence {
                matchers: vec![format!("host={host}")],
                duration_ms: r.silence_for.as_millis() as i64,
                comment: format!(
                    "rolling patch of {} (run {}, batch {n} of {}): alerts from the hosts being patched are expected",
                    r.app,
                    ctx.run_id,
                    batches.len()
                ),
            });
        }
        for host in batch {
            let t = Target {
                host,
                app: &r.app,
                batch: n,
            };
            if let Some(d) = &r.drain {
                out.push(d.plan(t, &key(host, "drain")));
            }
            out.push(r.patch.plan(t, &key(host, "patch")));
            if let Some(restart) = &r.restart {
                out.push(restart.plan(t, &key(host, "restart")));
            }
            out.push(Planned::Wait {
                description: format!(
                    "until {} of {} on {host} holds on {} sample(s) taken after the restart, within {}",
                    r.health.describe(),
                    r.app,
                    r.health.samples,
                    human(r.health.timeout)
                ),
            });
        }
        if let Some(rollback) = &r.rollback {
            out.push(note(format!(
                "only if hosts of batch {n} fail: the failed ones (or, over the threshold, the whole batch) are rolled back, restarted and health-gated again"
            )));
            for host in batch {
                let t = Target {
                    host,
                    app: &r.app,
                    batch: n,
                };
                out.push(rollback.plan(t, &key(host, "rollback")));
                if let Some(restart) = &r.restart {
                    out.push(restart.plan(t, &key(host, "rollback_restart")));
                }
            }
        }
        if let Some(u) = &r.undrain {
            for host in batch {
                let t = Target {
                    host,
                    app: &r.app,
                    batch: n,
                };
                out.push(u.plan(t, &key(host, "undrain")));
            }
        }
        out.push(note(format!(
            "the silences of batch {n} are expired; the rollout halts here if over the threshold"
        )));
    }
    out
}

impl Action for RollingPatch {
    fn name(&self) -> &'static str {
        "rolling_patch"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        true
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn reversible(&self) -> bool {
        false
    }

    fn plan(
        &self,
        _env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        Ok(plan(&Rollout::parse(params)?, ctx))
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let rollout = Rollout::parse(params)?;
            let result = run::run(env, ctx, &rollout).await?;
            Ok(ActionOutput {
                result,
                ticket: None,
            })
        })
    }
}
