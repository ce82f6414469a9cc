//! Driving one run: admission through the guardrails, then its steps, each
//! recorded before it starts and after it ends, with the run's cursor moved
//! in the same transaction as the step's end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::rest::{BreakerView, RunState};
use fincorp_playbooks::Playbook;
use fincorp_playbooks::actions::{self, Action, ActionError, ActionOutput, TicketRef};
use fincorp_playbooks::model::{Budget, LockScope, OnFailure, Step};
use fincorp_playbooks::plan::{self, idempotency_key, step_context};
use fincorp_playbooks::template::{self, Mode, PlaybookCtx, RunContext, RunCtx};
use rusqlite::params;
use serde_json::{Map, Value, json};

use super::{Automation, LockKey, blocking, breaker_keys, human, target_breaker};
use crate::store::runs::{self, Mutation, Phase, RunRow, StepEnd, StepRow, StepStart};
use crate::store::{StoreError, audit, timeline};

/// A run never executes more steps than this (a `goto` loop ends here).
const MAX_STEP_EXECUTIONS: u32 = 200;
/// The step id of the approval `guardrails.approval` asks for.
const GUARDRAIL_APPROVAL: &str = "guardrail:approval";

pub(super) async fn drive(a: &Arc<Automation>, run_id: &str) -> Result<(), StoreError> {
    let Some(run) = load(a, run_id).await? else {
        return Ok(());
    };
    if !run.state.is_active() {
        return Ok(());
    }
    let Some(pb) = a.playbook(&run.playbook) else {
        return finish(
            a,
            &run,
            RunState::Failed,
            Some("its playbook is no longer loaded"),
        )
        .await;
    };
    let keys = lock_keys(&pb, &run);
    let _locks = a.lock(&keys).await;
    tracing::debug!(?keys, "locks held");
    let run = if run.state == RunState::Pending {
        if run.dry_run {
            return dry_run(a, &pb, run).await;
        }
        match admit(a, &pb, &run).await? {
            Some(run) => run,
            None => return Ok(()),
        }
    } else {
        run
    };
    steps(a, &pb, run).await
}

async fn load(a: &Automation, run_id: &str) -> Result<Option<RunRow>, StoreError> {
    let (engine, id) = (a.engine.clone(), run_id.to_owned());
    blocking(move || engine.read(|c| runs::get(c, &id))).await
}

async fn finish(
    a: &Automation,
    run: &RunRow,
    state: RunState,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    match state {
        RunState::Succeeded | RunState::Planned => {
            tracing::info!(state = state.as_str(), "run finished")
        }
        _ => tracing::warn!(state = state.as_str(), reason, "run finished"),
    }
    let (engine, run, reason) = (a.engine.clone(), run.clone(), reason.map(str::to_owned));
    blocking(move || {
        engine.write(|tx| {
            runs::set_state(tx, &run, state, reason.as_deref(), now_ms())?;
            if matches!(
                state,
                RunState::Blocked | RunState::Stopped | RunState::Interrupted
            ) {
                audit::append(
                    tx,
                    &format!("playbook:{}", run.playbook),
                    &format!("run.{}", state.as_str()),
                    &run.id,
                    &json!({"reason": reason, "incident_id": run.incident_id}),
                    now_ms(),
                )?;
            }
            Ok(())
        })
    })
    .await
}

/// The locks a run holds for its whole life.
fn lock_keys(pb: &Playbook, run: &RunRow) -> Vec<LockKey> {
    match (&run.target_host, pb.guardrails.lock) {
        (_, LockScope::None) => vec![],
        (Some(h), LockScope::Host) => vec![LockKey::HostExclusive(h.clone())],
        (Some(h), LockScope::App) => match &run.target_app {
            Some(app) => vec![
                LockKey::HostShared(h.clone()),
                LockKey::App(h.clone(), app.clone()),
            ],
            None => vec![LockKey::HostExclusive(h.clone())],
        },
        (None, _) => vec![LockKey::Playbook(pb.name.clone())],
    }
}

/// A budget to check: (budget, breaker key, playbook filter, target
/// filter, what is counted).
type BudgetCheck<'a> = (
    Option<Budget>,
    String,
    Option<&'a str>,
    Option<(&'a str, Option<&'a str>)>,
    String,
);

/// What a successful step did beyond its result: the ticket it made, the
/// target it changed, and when it started.
type Effects<'a> = (Option<&'a TicketRef>, Option<(String, Option<String>)>, i64);

enum Gate {
    Admitted(Box<RunRow>),
    Blocked(Option<BreakerView>),
}

/// Admission: kill switch, breakers, causal depth, budgets. Blocked runs
/// that trip a breaker escalate.
async fn admit(
    a: &Arc<Automation>,
    pb: &Playbook,
    run: &RunRow,
) -> Result<Option<RunRow>, StoreError> {
    let gate = a.gate().lock().await;
    if a.kill_switch_on() {
        drop(gate);
        finish(
            a,
            run,
            RunState::Blocked,
            Some("the automation kill switch is on"),
        )
        .await?;
        return Ok(None);
    }
    let (engine, settings, pb_c, run_c) = (
        a.engine.clone(),
        a.settings().clone(),
        pb.clone(),
        run.clone(),
    );
    let decision = blocking(move || {
        engine.write(|tx| {
            let (pb, run) = (&pb_c, &run_c);
            let now = now_ms();
            let host = run.target_host.as_deref();
            let app = run.target_app.as_deref();
            let block = |reason: String, trip: Option<String>| -> Result<Gate, StoreError> {
                let tripped = match &trip {
                    Some(key) if runs::trip(tx, key, &reason, &run.id, now)? => {
                        audit::append(
                            tx,
                            "automation",
                            "automation.breaker.trip",
                            key,
                            &json!({"reason": reason, "run_id": run.id, "playbook": run.playbook}),
                            now,
                        )?;
                        Some(BreakerView {
                            key: key.clone(),
                            reason: reason.clone(),
                            tripped_at_ms: now,
                            run_id: Some(run.id.clone()),
                            escalation: Value::Null,
                        })
                    }
                    _ => None,
                };
                runs::set_state(tx, run, RunState::Blocked, Some(&reason), now)?;
                audit::append(
                    tx,
                    &format!("playbook:{}", run.playbook),
                    "run.blocked",
                    &run.id,
                    &json!({"reason": reason, "incident_id": run.incident_id}),
                    now,
                )?;
                Ok(Gate::Blocked(tripped))
            };

            // Causal attribution: did one of our runs change this target
            // while the alert started, or shortly before?
            let cause = match (&run.alert, host) {
                (Some(alert), Some(h)) => runs::cause(tx, h, app, alert.starts_at_ms, settings.causal_window_ms, &run.id)?,
                _ => None,
            };
            let (depth, caused_by) = match &cause {
                Some((cause_run, _, cause_depth)) => (cause_depth + 1, Some(cause_run.clone())),
                None => (0, None),
            };
            if let (Some(c), Some(incident)) = (&caused_by, &run.incident_id) {
                runs::mark_incident_caused(tx, incident, c)?;
            }
            // Recorded whatever the outcome, so a blocked run shows its chain.
            tx.execute(
                "UPDATE runs SET depth = ?2, caused_by_run = ?3 WHERE id = ?1",
                rusqlite::params![run.id, depth, caused_by],
            )?;
            let open = runs::open_breakers(tx, &breaker_keys(&pb.name, host, app))?;
            if let Some(b) = open.first() {
                return block(format!("breaker {} is tripped ({}); an operator must reset it", b.key, b.reason), None);
            }

            let target_key = host.map(|h| target_breaker(&pb.name, h, app)).unwrap_or_else(|| format!("playbook:{}", pb.name));
            if depth > pb.guardrails.max_depth {
                let (cause_run, cause_pb, _) = cause.as_ref().expect("depth > 0 has a cause");
                return block(
                    format!(
                        "causal chain depth {depth} exceeds max_depth {}: the alert started right after run {cause_run} ({cause_pb}) changed {}/{}",
                        pb.guardrails.max_depth,
                        host.unwrap_or("-"),
                        app.unwrap_or("-")
                    ),
                    Some(target_key),
                );
            }

            let budgets: [BudgetCheck<'_>; 3] = [
                (
                    pb.guardrails.per_target,
                    target_key.clone(),
                    Some(&pb.name),
                    host.map(|h| (h, app)),
                    format!("runs of {} on {}/{}", pb.name, host.unwrap_or("-"), app.unwrap_or("-")),
                ),
                (pb.guardrails.per_playbook, format!("playbook:{}", pb.name), Some(&pb.name), None, format!("runs of {}", pb.name)),
                (settings.fleet_budget, "fleet".to_owned(), None, None, "runs of all playbooks".to_owned()),
            ];
            for (budget, key, playbook, target, what) in budgets {
                let Some(b) = budget else { continue };
                // An operator's reset of this budget's breaker starts it afresh.
                let since = (now - b.per_ms).max(runs::last_reset(tx, &key)?.unwrap_or(i64::MIN));
                let used = runs::admitted_since(tx, since, playbook, target)?;
                if used >= b.max {
                    let window = if since > now - b.per_ms {
                        format!("since its breaker was reset at {}", fincorp_api::format_ms(since))
                    } else {
                        format!("in the last {}", human(b.per_ms))
                    };
                    return block(format!("budget exhausted: {used} {what} {window} (max {})", b.max), Some(key));
                }
            }
            runs::admit(tx, run, depth, caused_by.as_deref(), now)?;
            Ok(Gate::Admitted(Box::new(runs::get(tx, &run.id)?.expect("just admitted"))))
        })
    })
    .await?;
    drop(gate);
    match decision {
        Gate::Admitted(run) => {
            tracing::info!(depth = run.depth, caused_by = ?run.caused_by_run, "run admitted");
            Ok(Some(*run))
        }
        Gate::Blocked(tripped) => {
            let run = load(a, &run.id).await?.unwrap_or_else(|| run.clone());
            tracing::warn!(reason = ?run.reason, "run blocked by a guardrail");
            if let Some(b) = tripped {
                a.escalate(&b, &run).await;
            }
            Ok(None)
        }
    }
}

/// The run's template context, with the results of its finished steps.
async fn context(
    a: &Automation,
    pb: &Playbook,
    run: &RunRow,
    done: &[StepRow],
) -> Result<RunContext, String> {
    let (incident, alerts) = match &run.incident_id {
        Some(id) => {
            let (engine, id) = (a.engine.clone(), id.clone());
            let inputs = blocking(move || engine.run_inputs(&id))
                .await
                .map_err(|e| e.to_string())?;
            let (i, alerts) = inputs.ok_or("the run's incident is missing")?;
            (Some(i), alerts)
        }
        None => (None, vec![]),
    };
    let alert = run.alert.as_ref().and_then(|t| {
        alerts
            .iter()
            .rev()
            .find(|a| a.fingerprint == t.fingerprint)
            .cloned()
    });
    if run.alert.is_some() && alert.is_none() {
        return Err("the run's triggering alert is not in its incident".into());
    }
    let mut steps = BTreeMap::new();
    for s in done.iter().filter(|s| s.phase == Phase::Main) {
        match s.state {
            RunState::Succeeded => {
                steps.insert(
                    s.step_id.clone(),
                    json!({"result": s.result, "state": "succeeded"}),
                );
            }
            RunState::Failed | RunState::Skipped => {
                steps.insert(
                    s.step_id.clone(),
                    json!({"state": s.state.as_str(), "error": s.error}),
                );
            }
            _ => {}
        }
    }
    Ok(RunContext {
        incident,
        alert,
        alerts,
        steps,
        vars: pb.vars.clone(),
        secrets: a.secrets().clone(),
        playbook: PlaybookCtx {
            name: pb.name.clone(),
        },
        run: RunCtx { id: run.id.clone() },
    })
}

/// A dry run: every step planned and stored, nothing executed.
async fn dry_run(a: &Arc<Automation>, pb: &Playbook, run: RunRow) -> Result<(), StoreError> {
    if a.kill_switch_on() {
        return finish(
            a,
            &run,
            RunState::Blocked,
            Some("the automation kill switch is on"),
        )
        .await;
    }
    let ctx = match context(a, pb, &run, &[]).await {
        Ok(c) => c,
        Err(e) => return finish(a, &run, RunState::Failed, Some(&e)).await,
    };
    let plan = plan::plan(pb, &ctx, &*a.env, &run.scope);
    let refusal = plan::dry_run_refusal(&plan);
    let (engine, run_c) = (a.engine.clone(), run.clone());
    blocking(move || {
        engine.write(|tx| {
            let now = now_ms();
            tx.execute(
                "UPDATE runs SET state = 'running', started_at_ms = ?2 WHERE id = ?1",
                params![run_c.id, now],
            )?;
            for (i, s) in plan.steps.iter().enumerate() {
                let seq = i as u32;
                runs::step_started(
                    tx,
                    &run_c.id,
                    &StepStart {
                        seq,
                        phase: Phase::Main,
                        step_index: i,
                        step_id: &s.id,
                        action: &s.action,
                        mutating: s.mutating,
                        params: &s.params,
                    },
                    now,
                )?;
                let (state, result, error) = match &s.requests {
                    Ok(r) => (
                        RunState::Planned,
                        Some(serde_json::to_value(r).unwrap_or(Value::Null)),
                        None,
                    ),
                    Err(e) => (
                        RunState::Failed,
                        None,
                        Some(format!("cannot be planned: {e}")),
                    ),
                };
                runs::step_finished(
                    tx,
                    &run_c,
                    &StepEnd {
                        seq,
                        step_id: &s.id,
                        action: &s.action,
                        state,
                        result: result.as_ref(),
                        error: error.as_deref(),
                        next: (Phase::Main, i + 1),
                        mutated: false,
                    },
                    now,
                )?;
            }
            Ok(())
        })
    })
    .await?;
    match refusal {
        Some(e) => finish(a, &run, RunState::Failed, Some(&e.to_string())).await,
        None => {
            finish(
                a,
                &run,
                RunState::Planned,
                Some("dry run: every step planned, none executed"),
            )
            .await
        }
    }
}

/// How one execution of a step ended.
enum Outcome {
    Done(Result<ActionOutput, ActionError>),
    /// The kill switch stopped a step that changes nothing.
    Killed,
}

/// Executes the run's steps from its cursor.
async fn steps(a: &Arc<Automation>, pb: &Playbook, mut run: RunRow) -> Result<(), StoreError> {
    let done = {
        let (engine, id) = (a.engine.clone(), run.id.clone());
        blocking(move || engine.read(|c| runs::steps(c, &id))).await?
    };
    let mut ctx = match context(a, pb, &run, &done).await {
        Ok(c) => c,
        Err(e) => return finish(a, &run, RunState::Failed, Some(&e)).await,
    };
    let mut next_seq = done.iter().map(|s| s.seq + 1).max().unwrap_or(0);
    // Visits per (phase, step): a step reached again (goto) gets a new key.
    let mut visits: BTreeMap<(Phase, String), u32> = BTreeMap::new();
    for s in &done {
        *visits.entry((s.phase, s.step_id.clone())).or_default() += 1;
    }
    // A step in flight when the previous process died: repeat it only when
    // its action is idempotent (same key, so the target sees it once).
    let mut in_doubt: Option<StepRow> = None;
    if let Some(last) = done.last().filter(|s| s.state == RunState::Running) {
        let idempotent = actions::lookup(&last.action).is_some_and(|x| x.idempotent());
        if !idempotent {
            let (engine, run_c, last_c) = (a.engine.clone(), run.clone(), last.clone());
            blocking(move || {
                engine.write(|tx| {
                    runs::step_finished(
                        tx,
                        &run_c,
                        &StepEnd {
                            seq: last_c.seq,
                            step_id: &last_c.step_id,
                            action: &last_c.action,
                            state: RunState::Interrupted,
                            result: None,
                            error: Some("in flight when the correlator stopped; its outcome is unknown and the action is not idempotent, so it is not repeated"),
                            next: (last_c.phase, last_c.step_index),
                            mutated: false,
                        },
                        now_ms(),
                    )
                })
            })
            .await?;
            let reason = format!(
                "step {} ({}) was in flight when the correlator stopped and cannot safely be repeated; check its target",
                last.step_id, last.action
            );
            return finish(a, &run, RunState::Interrupted, Some(&reason)).await;
        }
        tracing::warn!(step = %last.step_id, action = %last.action, "repeating a step that was in flight at the restart (idempotent: same key)");
        *visits
            .entry((last.phase, last.step_id.clone()))
            .or_default() -= 1;
        in_doubt = Some(last.clone());
    }
    let tenv = template::environment();
    // Why the run failed, for its final state (a run resumed in its
    // rollback phase had aborted before the restart).
    let mut failure: Option<String> =
        (run.phase == Phase::Rollback).then(|| "aborted before a restart".to_owned());
    let mut rollback_failed = false;
    let mut approved = {
        let (engine, id) = (a.engine.clone(), run.id.clone());
        blocking(move || engine.read(|c| runs::approval(c, &id, GUARDRAIL_APPROVAL)))
            .await?
            .is_some_and(|r| r.decided.is_some_and(|d| d.0))
    };

    loop {
        let list = match run.phase {
            Phase::Main => &pb.steps,
            Phase::Rollback => &pb.rollback,
        };
        if run.cursor >= list.len() {
            break;
        }
        let step = &list[run.cursor];
        let action = step.action();
        if a.kill_switch_on() {
            let reason = format!("stopped by the kill switch before step {}", step.id);
            return finish(a, &run, RunState::Stopped, Some(&reason)).await;
        }
        if next_seq >= MAX_STEP_EXECUTIONS {
            return finish(
                a,
                &run,
                RunState::Failed,
                Some(&format!(
                    "more than {MAX_STEP_EXECUTIONS} step executions: a goto loop?"
                )),
            )
            .await;
        }
        // Approval before the first mutating step.
        if run.phase == Phase::Main && action.mutating() && !approved {
            if let Some(timeout_ms) = pb.guardrails.approval_timeout_ms {
                let prompt = format!(
                    "run {} of playbook {} wants to run {} ({}){}",
                    run.id,
                    pb.name,
                    step.id,
                    step.action,
                    run.incident_id
                        .as_deref()
                        .map(|i| format!(" for incident {i}"))
                        .unwrap_or_default()
                );
                let wait = a.env.approvals.wait(
                    &run.id,
                    GUARDRAIL_APPROVAL,
                    &prompt,
                    Duration::from_millis(timeout_ms.max(1) as u64),
                );
                let decision = tokio::select! {
                    d = wait => d?,
                    _ = a.killed() => {
                        return finish(a, &run, RunState::Stopped, Some("stopped by the kill switch while awaiting approval")).await;
                    }
                };
                match decision {
                    Some(d) if d.approved => approved = true,
                    Some(d) => {
                        return finish(
                            a,
                            &run,
                            RunState::Rejected,
                            Some(&format!("rejected by {}: {}", d.by, d.reason)),
                        )
                        .await;
                    }
                    None => {
                        return finish(
                            a,
                            &run,
                            RunState::Expired,
                            Some(&format!(
                                "nobody approved within {}; nothing was done",
                                human(timeout_ms)
                            )),
                        )
                        .await;
                    }
                }
                run = load(a, &run.id).await?.unwrap_or(run);
            }
        }

        let (seq, resumed) = match in_doubt.take() {
            Some(s) if s.phase == run.phase && s.step_index == run.cursor => (s.seq, Some(s)),
            _ => {
                next_seq += 1;
                (next_seq - 1, None)
            }
        };
        let visit = {
            let v = visits.entry((run.phase, step.id.clone())).or_default();
            *v += 1;
            *v
        };
        let key_step = match run.phase {
            Phase::Main => step.id.clone(),
            Phase::Rollback => format!("rollback.{}", step.id),
        };
        let key_step = if visit > 1 {
            format!("{key_step}#{visit}")
        } else {
            key_step
        };
        let here = (run.phase, run.cursor);
        let after = (run.phase, run.cursor + 1);

        // `when`: skipped steps are recorded too.
        let pending: Vec<String> = vec![];
        let skip = match &step.when {
            None => Ok(false),
            Some(w) => template::condition(&tenv, w, &ctx, Mode::Execute, &pending)
                .map(|v| v == Some(false))
                .map_err(|e| e.to_string()),
        };
        let rendered = skip.map(|skip| {
            let shown = template::render(&tenv, &step.with, &ctx, Mode::Record, &pending)
                .map_err(|e| e.to_string());
            let real = template::render(&tenv, &step.with, &ctx, Mode::Execute, &pending)
                .map_err(|e| e.to_string());
            (skip, shown, real)
        });
        let (skip, shown, real) = match rendered {
            Ok((skip, shown, real)) => (
                skip,
                shown
                    .map(Value::Object)
                    .unwrap_or_else(|_| Value::Object(step.with.clone())),
                real,
            ),
            Err(e) => (false, Value::Object(step.with.clone()), Err(e)),
        };
        {
            let (engine, run_id, start_params) = (a.engine.clone(), run.id.clone(), shown.clone());
            let (phase, index, step_id, action_name, mutating) = (
                run.phase,
                run.cursor,
                step.id.clone(),
                step.action.clone(),
                action.mutating(),
            );
            blocking(move || {
                engine.write(|tx| {
                    runs::step_started(
                        tx,
                        &run_id,
                        &StepStart {
                            seq,
                            phase,
                            step_index: index,
                            step_id: &step_id,
                            action: &action_name,
                            mutating,
                            params: &start_params,
                        },
                        now_ms(),
                    )
                })
            })
            .await?;
        }
        if resumed.is_some() {
            tracing::info!(step = %step.id, "resumed step");
        }
        if skip {
            record_end(
                a,
                &mut run,
                step,
                seq,
                RunState::Skipped,
                None,
                None,
                after,
                false,
                None,
            )
            .await?;
            ctx.steps
                .insert(step.id.clone(), json!({"state": "skipped"}));
            continue;
        }
        let started_ms = now_ms();
        let outcome = match real {
            Err(e) => Outcome::Done(Err(ActionError::InvalidParams(e))),
            Ok(params) => {
                let mut sctx = step_context(step, &params, &ctx, &run.scope);
                sctx.idempotency_key = idempotency_key(&run.scope, &pb.name, &key_step);
                match check_hosts(a, pb, &run, action, &params).await? {
                    Err(e) => Outcome::Done(Err(e)),
                    Ok(()) => {
                        execute_with_retry(
                            a,
                            &run,
                            seq,
                            step,
                            action,
                            &params,
                            &sctx,
                            resumed.map_or(0, |s| s.attempts),
                        )
                        .await?
                    }
                }
            }
        };
        match outcome {
            Outcome::Killed => {
                record_end(
                    a,
                    &mut run,
                    step,
                    seq,
                    RunState::Stopped,
                    None,
                    Some("stopped by the kill switch"),
                    here,
                    false,
                    None,
                )
                .await?;
                let reason = format!(
                    "stopped by the kill switch during step {} (which changes nothing)",
                    step.id
                );
                return finish(a, &run, RunState::Stopped, Some(&reason)).await;
            }
            Outcome::Done(Ok(mut out)) => {
                redact_value(&mut out.result, a.secrets());
                let mutation = action.mutating().then(|| target_of(&run, &shown));
                record_end(
                    a,
                    &mut run,
                    step,
                    seq,
                    RunState::Succeeded,
                    Some(&out.result),
                    None,
                    after,
                    action.mutating(),
                    Some((out.ticket.as_ref(), mutation.flatten(), started_ms)),
                )
                .await?;
                if run.phase == Phase::Main {
                    ctx.steps.insert(
                        step.id.clone(),
                        json!({"result": out.result, "state": "succeeded"}),
                    );
                }
            }
            Outcome::Done(Err(e)) => {
                let error = redact(&e.to_string(), a.secrets());
                tracing::warn!(step = %step.id, action = %step.action, error = %error, "step failed");
                if run.phase == Phase::Rollback {
                    rollback_failed = true;
                    record_end(
                        a,
                        &mut run,
                        step,
                        seq,
                        RunState::Failed,
                        None,
                        Some(&error),
                        after,
                        false,
                        None,
                    )
                    .await?;
                    continue;
                }
                ctx.steps
                    .insert(step.id.clone(), json!({"state": "failed", "error": error}));
                // An approval step that was rejected or expired ends the run so.
                if step.action == "approval" {
                    let (engine, id, sid) = (a.engine.clone(), run.id.clone(), step.id.clone());
                    let row =
                        blocking(move || engine.read(|c| runs::approval(c, &id, &sid))).await?;
                    if let Some(row) = row {
                        record_end(
                            a,
                            &mut run,
                            step,
                            seq,
                            RunState::Failed,
                            None,
                            Some(&error),
                            here,
                            false,
                            None,
                        )
                        .await?;
                        let state = match row.decided {
                            Some((false, ..)) => RunState::Rejected,
                            _ => RunState::Expired,
                        };
                        return finish(a, &run, state, Some(&error)).await;
                    }
                }
                let next = match &step.on_failure {
                    OnFailure::Continue => after,
                    OnFailure::Goto(target) => (
                        Phase::Main,
                        pb.steps
                            .iter()
                            .position(|s| &s.id == target)
                            .unwrap_or(pb.steps.len()),
                    ),
                    OnFailure::Abort => {
                        failure = Some(format!("step {} failed: {error}", step.id));
                        if run.mutated && !pb.rollback.is_empty() {
                            (Phase::Rollback, 0)
                        } else {
                            (Phase::Main, pb.steps.len())
                        }
                    }
                };
                record_end(
                    a,
                    &mut run,
                    step,
                    seq,
                    RunState::Failed,
                    None,
                    Some(&error),
                    next,
                    false,
                    None,
                )
                .await?;
            }
        }
    }
    let (state, reason) = match (run.phase, failure, rollback_failed) {
        (Phase::Rollback, f, false) => {
            (RunState::RolledBack, f.map(|f| format!("{f}; rolled back")))
        }
        (Phase::Rollback, f, true) => (
            RunState::Failed,
            f.map(|f| format!("{f}; a rollback step failed too")),
        ),
        (Phase::Main, Some(f), _) => (RunState::Failed, Some(f)),
        (Phase::Main, None, _) => (RunState::Succeeded, None),
    };
    finish(a, &run, state, reason.as_deref()).await
}

/// The host and app a mutating step acted on: its `host`/`app` parameters,
/// else the run's target. `None` for actions without a host (a ticket).
fn target_of(run: &RunRow, params: &Value) -> Option<(String, Option<String>)> {
    let host = params.get("host").and_then(Value::as_str)?;
    let app = params
        .get("app")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| run.target_app.clone());
    Some((host.to_owned(), app))
}

/// Refuses a mutating step that would take the run over `max_hosts`.
async fn check_hosts(
    a: &Automation,
    pb: &Playbook,
    run: &RunRow,
    action: &dyn Action,
    params: &Map<String, Value>,
) -> Result<Result<(), ActionError>, StoreError> {
    if !action.mutating() {
        return Ok(Ok(()));
    }
    let mut hosts: Vec<String> = params
        .get("host")
        .and_then(Value::as_str)
        .map(|h| vec![h.to_owned()])
        .unwrap_or_default();
    if let Some(list) = params.get("hosts").and_then(Value::as_array) {
        hosts.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if hosts.is_empty() {
        return Ok(Ok(()));
    }
    let (engine, id) = (a.engine.clone(), run.id.clone());
    let before: Vec<String> = blocking(move || {
        engine.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT DISTINCT host FROM mutations WHERE run_id = ?1")?;
            Ok(stmt
                .query_map([&id], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        })
    })
    .await?;
    hosts.extend(before);
    hosts.sort();
    hosts.dedup();
    let max = pb.guardrails.max_hosts as usize;
    Ok(if hosts.len() > max {
        Err(ActionError::Refused(format!(
            "the run would act on {} hosts ({}); guardrails.max_hosts is {max}",
            hosts.len(),
            hosts.join(", ")
        )))
    } else {
        Ok(())
    })
}

/// Runs one step with its timeout and retries. A step that changes nothing
/// is cut short by the kill switch; a mutating one is let finish.
#[allow(clippy::too_many_arguments)]
async fn execute_with_retry(
    a: &Automation,
    run: &RunRow,
    seq: u32,
    step: &Step,
    action: &'static dyn Action,
    params: &Map<String, Value>,
    sctx: &actions::StepContext,
    attempts_before: u32,
) -> Result<Outcome, StoreError> {
    let mut attempt = attempts_before;
    loop {
        attempt += 1;
        {
            let (engine, id) = (a.engine.clone(), run.id.clone());
            blocking(move || engine.write(|tx| runs::step_attempt(tx, &id, seq, attempt))).await?;
        }
        let call = async {
            match tokio::time::timeout(
                sctx.timeout,
                actions::execute(&*a.env, action, params, sctx),
            )
            .await
            {
                Ok(r) => (r, false),
                Err(_) => (
                    Err(ActionError::Failed(format!(
                        "timed out after {}",
                        human(sctx.timeout.as_millis() as i64)
                    ))),
                    true,
                ),
            }
        };
        let (result, timed_out) = if action.mutating() {
            call.await
        } else {
            tokio::select! {
                r = call => r,
                _ = a.killed() => return Ok(Outcome::Killed),
            }
        };
        let err = match result {
            Ok(out) => return Ok(Outcome::Done(Ok(out))),
            Err(e) => e,
        };
        // A timed-out step that is not idempotent may have acted: never again.
        let again =
            err.retryable() && attempt < step.retry.attempts && (!timed_out || action.idempotent());
        if !again {
            return Ok(Outcome::Done(Err(err)));
        }
        let backoff = backoff_ms(
            step.retry.backoff_ms,
            step.retry.max_backoff_ms,
            attempt - attempts_before,
        );
        let error = redact(&err.to_string(), a.secrets());
        tracing::info!(step = %step.id, attempt, error = %error, backoff_ms = backoff, "step failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
            _ = a.killed() => return Ok(Outcome::Done(Err(err))),
        }
    }
}

/// `text` with every secret value in it shown as `<secret:NAME>`: an action
/// may echo what it was given (a webhook URL with its token in the path, an
/// error quoting that URL), and that must not be stored or logged in clear.
fn redact(text: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut secrets: Vec<_> = secrets.iter().filter(|(_, v)| !v.is_empty()).collect();
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for (name, value) in secrets {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("<secret:{name}>"));
        }
    }
    out
}

/// [`redact`] over every string (and key) of a step's result.
fn redact_value(v: &mut Value, secrets: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => *s = redact(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|i| redact_value(i, secrets)),
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    redact_value(&mut v, secrets);
                    (redact(&k, secrets), v)
                })
                .collect();
        }
        _ => {}
    }
}

/// Exponential backoff with full jitter between half and all of the step.
fn backoff_ms(base: i64, max: i64, attempt: u32) -> u64 {
    let exp = base
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(20))
        .min(max)
        .max(1) as u64;
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let jitter = u64::from_le_bytes(b) % (exp / 2 + 1);
    exp / 2 + jitter
}

/// Records a step's end, moves the cursor, and for a success records the
/// mutation (for causal attribution), the ticket and an audit entry.
#[allow(clippy::too_many_arguments)]
async fn record_end(
    a: &Automation,
    run: &mut RunRow,
    step: &Step,
    seq: u32,
    state: RunState,
    result: Option<&Value>,
    error: Option<&str>,
    next: (Phase, usize),
    mutated: bool,
    effects: Option<Effects<'_>>,
) -> Result<(), StoreError> {
    let (engine, run_c, step_id, action) = (
        a.engine.clone(),
        run.clone(),
        step.id.clone(),
        step.action.clone(),
    );
    let (result, error) = (result.cloned(), error.map(str::to_owned));
    let (ticket, mutation, started_ms) = match effects {
        Some((t, m, s)) => (t.cloned(), m, s),
        None => (None, None, 0),
    };
    blocking(move || {
        engine.write(|tx| {
            let now = now_ms();
            runs::step_finished(
                tx,
                &run_c,
                &StepEnd { seq, step_id: &step_id, action: &action, state, result: result.as_ref(), error: error.as_deref(), next, mutated },
                now,
            )?;
            if mutated {
                if let Some((host, app)) = &mutation {
                    runs::record_mutation(
                        tx,
                        &Mutation {
                            run_id: &run_c.id,
                            playbook: &run_c.playbook,
                            step_id: &step_id,
                            host,
                            app: app.as_deref(),
                            depth: run_c.depth,
                            started_at_ms: started_ms,
                            finished_at_ms: now,
                        },
                    )?;
                }
                audit::append(
                    tx,
                    &format!("playbook:{}", run_c.playbook),
                    &format!("action.{action}"),
                    mutation.as_ref().map(|(h, a)| format!("{h}/{}", a.as_deref().unwrap_or("-"))).as_deref().unwrap_or(&run_c.id),
                    &json!({"run_id": run_c.id, "step": step_id, "incident_id": run_c.incident_id, "result": result}),
                    now,
                )?;
            }
            if let (Some(t), Some(incident)) = (&ticket, &run_c.incident_id) {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO tickets(incident_id, system, sys_id, number, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![incident, t.system, t.sys_id, t.number, now],
                )?;
                if n == 1 {
                    timeline(
                        tx,
                        incident,
                        now,
                        "ticket_created",
                        &format!("{} ticket {} linked to {incident}", t.system, t.number),
                        &json!({"system": t.system, "number": t.number, "sys_id": t.sys_id, "run_id": run_c.id}),
                    )?;
                }
            }
            Ok(())
        })
    })
    .await?;
    run.phase = next.0;
    run.cursor = next.1;
    run.mutated |= mutated;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        for _ in 0..50 {
            let b1 = backoff_ms(1_000, 30_000, 1);
            assert!((500..=1_000).contains(&b1), "{b1}");
            let b3 = backoff_ms(1_000, 30_000, 3);
            assert!((2_000..=4_000).contains(&b3), "{b3}");
            let b10 = backoff_ms(1_000, 30_000, 10);
            assert!((15_000..=30_000).contains(&b10), "{b10}");
        }
    }
}
