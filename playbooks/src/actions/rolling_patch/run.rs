//! Executing a rollout, batch by batch, with its progress published to the
//! run record after every phase (see the module doc of `rolling_patch`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::super::{ActionError, Env, StepContext};
use super::hook::{Hook, Target};
use super::spec::Rollout;

/// What happened to one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Its batch has not started (and, if the rollout halted, never will).
    NotStarted,
    InProgress,
    /// Patched and healthy.
    Patched,
    /// A hook failed or the health gate did not pass.
    Failed,
    /// Failed or in a failed batch, rolled back, and healthy again.
    RolledBack,
    /// The rollback (or the health gate after it) failed too.
    RollbackFailed,
}

#[derive(Debug, Clone, Serialize)]
struct Phase {
    phase: &'static str,
    ok: bool,
    detail: String,
    at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
struct HostRecord {
    host: String,
    batch: usize,
    outcome: Outcome,
    /// Out of service (drained) and not put back.
    drained: bool,
    phases: Vec<Phase>,
}

#[derive(Debug, Clone, Serialize)]
struct BatchRecord {
    batch: usize,
    hosts: Vec<String>,
    /// pending, running, succeeded, succeeded_with_failures, failed,
    /// rolled_back, not_started.
    state: &'static str,
    /// The maintenance silences of its hosts.
    silences: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    app: String,
    /// running, succeeded, halted.
    state: &'static str,
    hosts_total: usize,
    batch_size: usize,
    max_fail_percentage: f64,
    min_healthy: usize,
    failed: usize,
    batches: Vec<BatchRecord>,
    hosts: Vec<HostRecord>,
    halted: Option<String>,
    /// Anything else worth knowing (a silence that could not be expired).
    notes: Vec<String>,
}

/// The report, shared by the hosts of a batch, which are worked on
/// concurrently.
struct Shared<'a> {
    env: &'a dyn Env,
    ctx: &'a StepContext,
    rollout: &'a Rollout,
    report: Mutex<Report>,
}

impl Shared<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Report) -> T) -> T {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn host<T>(&self, host: &str, f: impl FnOnce(&mut HostRecord) -> T) -> T {
        self.with(|r| {
            let h = r
                .hosts
                .iter_mut()
                .find(|h| h.host == host)
                .expect("hosts are the rollout's");
            f(h)
        })
    }

    fn phase(&self, host: &str, phase: &'static str, ok: bool, detail: String) {
        self.host(host, |h| {
            h.phases.push(Phase {
                phase,
                ok,
                detail,
                at_ms: fincorp_api::now_ms(),
            })
        });
    }

    fn snapshot(&self) -> Value {
        self.with(|r| serde_json::to_value(&*r).unwrap_or(Value::Null))
    }

    async fn publish(&self) {
        let v = self.snapshot();
        self.env
            .progress(&self.ctx.run_id, &self.ctx.step_id, &v)
            .await;
    }

    fn key(&self, host: &str, phase: &str) -> String {
        format!("{}:{host}:{phase}", self.ctx.idempotency_key)
    }

    fn target<'b>(&'b self, host: &'b str, batch: usize) -> Target<'b> {
        Target {
            host,
            app: &self.rollout.app,
            batch,
        }
    }

    /// Runs a hook for a host and records it as a phase.
    async fn hook(&self, hook: &Hook, host: &str, batch: usize, phase: &'static str) -> bool {
        let result = hook
            .run(self.env, self.target(host, batch), &self.key(host, phase))
            .await;
        let (ok, detail) = match result {
            Ok(v) => (true, summary(&v)),
            Err(e) => (false, e.to_string()),
        };
        self.phase(host, phase, ok, detail);
        self.publish().await;
        ok
    }

    /// Whether every health check holds on the latest fresh sample.
    fn healthy_now(&self, host: &str) -> Result<(), String> {
        let mut seen = Vec::new();
        let mut ok = true;
        for c in &self.rollout.health.checks {
            let (app, metric) = c.source(&self.rollout.app);
            match self.env.metric(host, app, metric) {
                Some(v) => {
                    ok &= c.holds(v);
                    seen.push(format!("{} {v}", c.metric));
                }
                None => {
                    ok = false;
                    seen.push(format!("no fresh {}", c.metric));
                }
            }
        }
        if ok { Ok(()) } else { Err(seen.join(", ")) }
    }

    /// The health gate: every check must hold on `samples` consecutive
    /// samples taken after `baseline` (the sample time when the host's
    /// last change finished), within the timeout.
    async fn gate(&self, host: &str, baseline: Option<i64>, phase: &'static str) -> bool {
        let h = &self.rollout.health;
        let started = Instant::now();
        let mut seen = baseline;
        let mut good = 0u32;
        let mut last = "no sample taken since the change".to_owned();
        let (ok, detail) = loop {
            if let Some(at) = self.env.sampled_at(host) {
                if seen.is_none_or(|s| at > s) {
                    seen = Some(at);
                    match self.healthy_now(host) {
                        Ok(()) => good += 1,
                        Err(why) => {
                            good = 0;
                            last = why;
                        }
                    }
                    if good >= h.samples {
                        break (
                            true,
                            format!(
                                "{} on {} fresh sample(s) after {:.1}s",
                                h.describe(),
                                h.samples,
                                started.elapsed().as_secs_f64()
                            ),
                        );
                    }
                }
            }
            if started.elapsed() >= h.timeout {
                break (
                    false,
                    format!(
                        "{} did not hold on {} fresh sample(s) within {}s (last: {last})",
                        h.describe(),
                        h.samples,
                        h.timeout.as_secs_f64()
                    ),
                );
            }
            tokio::time::sleep(
                h.poll
                    .min(h.timeout.saturating_sub(started.elapsed()))
                    .max(Duration::from_millis(10)),
            )
            .await;
        };
        self.phase(host, phase, ok, detail);
        self.publish().await;
        ok
    }
}

/// A hook's result in a few words.
fn summary(v: &Value) -> String {
    if let Some(code) = v.get("exit_code") {
        let out = v["stdout"].as_str().unwrap_or_default().trim();
        let last = out.lines().last().unwrap_or_default();
        let mut s = format!(
            "{} exited {code} in {}ms",
            v["script"].as_str().unwrap_or("script"),
            v["duration_ms"]
        );
        if !last.is_empty() {
            s.push_str(&format!(": {}", last.chars().take(200).collect::<String>()));
        }
        s
    } else {
        format!(
            "{} answered {}",
            v["url"].as_str().unwrap_or("webhook"),
            v["status"]
        )
    }
}

/// Polls every future until all are done: the hosts of a batch are worked
/// on at once.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// How far one host got.
#[derive(Debug, Clone, Copy)]
struct Patched {
    /// The patch script was sent (so a rollback applies).
    patch_sent: bool,
    drained: bool,
    healthy: bool,
}

/// Drain, patch, restart, then the health gate.
async fn patch_host(s: &Shared<'_>, host: &str, batch: usize) -> Patched {
    let r = s.rollout;
    s.host(host, |h| h.outcome = Outcome::InProgress);
    let mut state = Patched {
        patch_sent: false,
        drained: false,
        healthy: false,
    };
    let done = |state: Patched| {
        s.host(host, |h| {
            h.drained = state.drained;
            h.outcome = if state.healthy {
                Outcome::Patched
            } else {
                Outcome::Failed
            };
        });
        state
    };
    if let Some(drain) = &r.drain {
        if !s.hook(drain, host, batch, "drain").await {
            return done(state);
        }
        state.drained = true;
        s.host(host, |h| h.drained = true);
    }
    state.patch_sent = true;
    if !s.hook(&r.patch, host, batch, "patch").await {
        return done(state);
    }
    if let Some(restart) = &r.restart {
        if !s.hook(restart, host, batch, "restart").await {
            return done(state);
        }
    }
    let baseline = s.env.sampled_at(host);
    state.healthy = s.gate(host, baseline, "health").await;
    done(state)
}

/// Rollback, restart, then the health gate again. True when healthy.
async fn roll_back(s: &Shared<'_>, rollback: &Hook, host: &str, batch: usize) -> bool {
    let r = s.rollout;
    let mut ok = s.hook(rollback, host, batch, "rollback").await;
    if ok {
        if let Some(restart) = &r.restart {
            ok = s.hook(restart, host, batch, "rollback_restart").await;
        }
    }
    if ok {
        let baseline = s.env.sampled_at(host);
        ok = s.gate(host, baseline, "rollback_health").await;
    }
    s.host(host, |h| {
        h.outcome = if ok {
            Outcome::RolledBack
        } else {
            Outcome::RollbackFailed
        }
    });
    ok
}

/// Runs the rollout. The result (and, step by step, the progress) is the
/// report: batches, hosts with each phase, and why it halted.
pub(crate) async fn run(
    env: &dyn Env,
    ctx: &StepContext,
    r: &Rollout,
) -> Result<Value, ActionError> {
    let batches = r.batches();
    let s = Shared {
        env,
        ctx,
        rollout: r,
        report: Mutex::new(Report {
            app: r.app.clone(),
            state: "running",
            hosts_total: r.hosts.len(),
            batch_size: r.batch_size,
            max_fail_percentage: r.max_fail_percentage,
            min_healthy: r.min_healthy,
            failed: 0,
            batches: batches
                .iter()
                .enumerate()
                .map(|(i, b)| BatchRecord {
                    batch: i + 1,
                    hosts: b.clone(),
                    state: "pending",
                    silences: vec![],
                })
                .collect(),
            hosts: batches
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    b.iter().map(move |h| HostRecord {
                        host: h.clone(),
                        batch: i + 1,
                        outcome: Outcome::NotStarted,
                        drained: false,
                        phases: vec![],
                    })
                })
                .collect(),
            halted: None,
            notes: vec![],
        }),
    };
    let by = format!("automation:{}", ctx.run_id);
    let total = batches.len();
    s.publish().await;

    let shared = &s;
    let halt = |why: String| async move {
        let why_c = why.clone();
        shared.with(|rep| {
            rep.state = "halted";
            rep.halted = Some(why_c);
            for b in rep.batches.iter_mut().filter(|b| b.state == "pending") {
                b.state = "not_started";
            }
        });
        shared.publish().await;
        why
    };

    let mut failed_total = 0usize;
    for (i, batch) in batches.iter().enumerate() {
        let n = i + 1;
        if i > 0 && !r.pause.is_zero() {
            tokio::time::sleep(r.pause).await;
        }
        if env.stop_requested() {
            let why = halt(format!(
                "rollout of {} stopped by the kill switch before batch {n} of {total}",
                r.app
            ))
            .await;
            return Err(ActionError::Refused(why));
        }
        // Enough healthy instances in service must stay outside the batch
        // (a host left drained does not serve, however healthy).
        let outside: Vec<&String> = r.hosts.iter().filter(|h| !batch.contains(h)).collect();
        let mut unhealthy = Vec::new();
        let mut healthy = 0usize;
        for h in &outside {
            if s.host(h, |rec| rec.drained) {
                unhealthy.push(format!("{h} (still drained)"));
                continue;
            }
            match s.healthy_now(h) {
                Ok(()) => healthy += 1,
                Err(why) => unhealthy.push(format!("{h} ({why})")),
            }
        }
        if healthy < r.min_healthy {
            let why = halt(format!(
                "rollout of {} halted before batch {n} of {total} ({}): only {healthy} of the other {} hosts are healthy ({}), min_healthy is {}; unhealthy: {}",
                r.app,
                batch.join(", "),
                outside.len(),
                r.health.describe(),
                r.min_healthy,
                unhealthy.join("; ")
            ))
            .await;
            return Err(ActionError::Refused(why));
        }

        // The maintenance silences, before anything is touched.
        s.with(|rep| rep.batches[i].state = "running");
        let comment = format!(
            "rolling patch of {} (run {}, batch {n} of {total}): alerts from the hosts being patched are expected",
            r.app, ctx.run_id
        );
        let mut silences = Vec::new();
        for host in batch {
            match env
                .create_silence(vec![format!("host={host}")], r.silence_for, &by, &comment)
                .await
            {
                Ok(id) => silences.push(id),
                Err(e) => {
                    for id in &silences {
                        let _ = env.expire_silence(id, &by).await;
                    }
                    let why = halt(format!(
                        "rollout of {} halted before batch {n} of {total}: cannot create the maintenance silence for {host}: {e}",
                        r.app
                    ))
                    .await;
                    return Err(ActionError::Failed(why));
                }
            }
        }
        s.with(|rep| rep.batches[i].silences = silences.clone());
        s.publish().await;

        // Drain, patch, restart and health-gate the batch's hosts at once.
        let results = join_all(batch.iter().map(|h| patch_host(&s, h, n)).collect()).await;
        let failed_now: Vec<&String> = batch
            .iter()
            .zip(&results)
            .filter(|(_, p)| !p.healthy)
            .map(|(h, _)| h)
            .collect();
        failed_total += failed_now.len();
        s.with(|rep| rep.failed = failed_total);
        let exceeded = r.exceeded(failed_total);

        // Roll back: the whole batch when over the threshold, else the
        // hosts that failed.
        let mut healthy_after: Vec<bool> = results.iter().map(|p| p.healthy).collect();
        if let Some(rollback) = &r.rollback {
            let targets: Vec<usize> = (0..batch.len())
                .filter(|&j| results[j].patch_sent && (exceeded || !results[j].healthy))
                .collect();
            let rolled = join_all(
                targets
                    .iter()
                    .map(|&j| roll_back(&s, rollback, &batch[j], n))
                    .collect(),
            )
            .await;
            for (&j, ok) in targets.iter().zip(rolled) {
                healthy_after[j] = ok;
            }
        }

        // Healthy hosts go back into service; unhealthy ones stay out.
        if let Some(undrain) = &r.undrain {
            let back: Vec<usize> = (0..batch.len())
                .filter(|&j| results[j].drained && healthy_after[j])
                .collect();
            let undrained = join_all(
                back.iter()
                    .map(|&j| s.hook(undrain, &batch[j], n, "undrain"))
                    .collect(),
            )
            .await;
            for (&j, ok) in back.iter().zip(undrained) {
                if ok {
                    s.host(&batch[j], |h| h.drained = false);
                }
            }
        }

        // The batch is done: its alerts page again.
        for id in &silences {
            if let Err(e) = env.expire_silence(id, &by).await {
                s.with(|rep| {
                    rep.notes.push(format!(
                        "cannot expire silence {id} of batch {n}: {e}; it ends on its own after {}s",
                        r.silence_for.as_secs()
                    ))
                });
            }
        }
        s.with(|rep| {
            rep.batches[i].state = match (exceeded, failed_now.is_empty(), r.rollback.is_some()) {
                (true, _, true) => "rolled_back",
                (true, _, false) => "failed",
                (false, true, _) => "succeeded",
                (false, false, _) => "succeeded_with_failures",
            }
        });
        s.publish().await;

        if exceeded {
            let detail: Vec<String> = s.with(|rep| {
                failed_now
                    .iter()
                    .map(|h| {
                        let rec = rep
                            .hosts
                            .iter()
                            .find(|r| &&r.host == h)
                            .expect("known host");
                        let why = rec
                            .phases
                            .iter()
                            .find(|p| !p.ok)
                            .map(|p| format!("{}: {}", p.phase, p.detail))
                            .unwrap_or_default();
                        format!("{h} ({why})")
                    })
                    .collect()
            });
            let rolled = match &r.rollback {
                Some(_) => {
                    let outcomes: Vec<String> = s.with(|rep| {
                        rep.hosts
                            .iter()
                            .filter(|h| {
                                h.batch == n
                                    && matches!(
                                        h.outcome,
                                        Outcome::RolledBack | Outcome::RollbackFailed
                                    )
                            })
                            .map(|h| {
                                format!(
                                    "{} {}",
                                    h.host,
                                    if h.outcome == Outcome::RolledBack {
                                        "healthy"
                                    } else {
                                        "STILL UNHEALTHY"
                                    }
                                )
                            })
                            .collect()
                    });
                    format!("; batch {n} rolled back: {}", outcomes.join(", "))
                }
                None => "; no rollback configured".into(),
            };
            let not_started: Vec<String> = batches[n..].iter().flatten().cloned().collect();
            let why = halt(format!(
                "rollout of {} halted after batch {n} of {total}: {failed_total} of {} hosts failed ({:.1}% > max_fail_percentage {}%): {}{rolled}; not started: {}",
                r.app,
                r.hosts.len(),
                failed_total as f64 * 100.0 / r.hosts.len() as f64,
                r.max_fail_percentage,
                detail.join("; "),
                if not_started.is_empty() { "none".into() } else { not_started.join(", ") }
            ))
            .await;
            return Err(ActionError::Refused(why));
        }
    }
    s.with(|rep| rep.state = "succeeded");
    s.publish().await;
    Ok(s.snapshot())
}
