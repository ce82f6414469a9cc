//! Playbook runs, their steps, and the guardrails' durable state: the
//! mutations our runs made (for causal attribution), tripped breakers,
//! approvals and the kill switch.
//!
//! A run's `cursor` (with its `phase`) is the index of the next step to
//! execute; it moves in the same transaction that records a step's end, so
//! after a crash the run resumes exactly where it stood. A step recorded as
//! `running` with no end is in doubt: the executor re-runs it only when its
//! action is idempotent.

use fincorp_api::UnixMs;
use fincorp_api::rest::{ApprovalView, BreakerView, KillSwitchView, RunState, RunView, StepView};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::{StoreError, parse_col, timeline};
use crate::core;

/// Columns of `runs` read into a [`RunRow`].
const RUN_COLUMNS: &str = "id, incident_id, playbook, ordinal, scope, state, trigger, trigger_alert, depth, caused_by_run, \
     target_host, target_app, phase, cursor, mutated, dry_run, reason, created_at_ms, admitted_at_ms, started_at_ms, finished_at_ms";

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub incident_id: Option<String>,
    pub playbook: String,
    pub ordinal: u32,
    /// The idempotency scope: the incident id (`#n` for the n-th run of the
    /// same playbook), `sched:SLOT`, or `manual:ID`.
    pub scope: String,
    pub state: RunState,
    pub trigger: String,
    /// The alert that triggered it.
    pub alert: Option<core::Alert>,
    pub depth: u32,
    pub caused_by_run: Option<String>,
    pub target_host: Option<String>,
    pub target_app: Option<String>,
    pub phase: Phase,
    pub cursor: usize,
    pub mutated: bool,
    pub dry_run: bool,
    pub reason: Option<String>,
    pub created_at_ms: UnixMs,
    pub admitted_at_ms: Option<UnixMs>,
    pub started_at_ms: Option<UnixMs>,
    pub finished_at_ms: Option<UnixMs>,
}

/// Main steps, or rollback steps after an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Main,
    Rollback,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Main => "main",
            Phase::Rollback => "rollback",
        }
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, String, String)> {
    let alert: Option<String> = r.get(7)?;
    let phase: String = r.get(12)?;
    Ok((
        RunRow {
            id: r.get(0)?,
            incident_id: r.get(1)?,
            playbook: r.get(2)?,
            ordinal: r.get(3)?,
            scope: r.get(4)?,
            state: RunState::Pending,
            trigger: r.get(6)?,
            alert: alert.and_then(|a| serde_json::from_str(&a).ok()),
            depth: r.get(8)?,
            caused_by_run: r.get(9)?,
            target_host: r.get(10)?,
            target_app: r.get(11)?,
            phase: if phase == "rollback" {
                Phase::Rollback
            } else {
                Phase::Main
            },
            cursor: r.get::<_, i64>(13)? as usize,
            mutated: r.get(14)?,
            dry_run: r.get(15)?,
            reason: r.get(16)?,
            created_at_ms: r.get(17)?,
            admitted_at_ms: r.get(18)?,
            started_at_ms: r.get(19)?,
            finished_at_ms: r.get(20)?,
        },
        r.get(5)?,
        phase,
    ))
}

fn finish_row(raw: (RunRow, String, String)) -> Result<RunRow, StoreError> {
    let (mut row, state, _) = raw;
    row.state = parse_col(&state, "runs", "state")?;
    Ok(row)
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<RunRow>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
        .query_row([id], run_row)
        .optional()?;
    raw.map(finish_row).transpose()
}

/// Runs still under way (pending, running, awaiting approval), oldest first.
pub fn active(conn: &Connection) -> Result<Vec<RunRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE state IN ('pending', 'running', 'awaiting_approval') ORDER BY created_at_ms, id"
    ))?;
    let raw: Vec<_> = stmt.query_map([], run_row)?.collect::<Result<_, _>>()?;
    raw.into_iter().map(finish_row).collect()
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub id: String,
    pub playbook: &'a str,
    pub incident_id: Option<&'a str>,
    /// Scope base: the incident id, `sched:SLOT` or `manual:ID`.
    pub scope: String,
    pub trigger: String,
    pub alert: Option<&'a core::Alert>,
    pub target_host: Option<&'a str>,
    pub target_app: Option<&'a str>,
    pub dry_run: bool,
}

/// Records a run decision. An incident-triggered run is coalesced (`None`)
/// into a run of the same playbook for the same incident that has not
/// started yet; otherwise it becomes that incident's next run of the
/// playbook, with its own idempotency scope. So an alert that joins while a
/// run is acting queues (at most) one follow-up run, which waits for the
/// target's lock and then meets the guardrails: this is how a remediation
/// that re-triggers its own incident is seen, attributed and bounded. A
/// scheduled run is recorded once per slot.
pub fn insert(
    tx: &Transaction<'_>,
    new: &NewRun<'_>,
    now: UnixMs,
) -> Result<Option<String>, StoreError> {
    let ordinal: u32 = match new.incident_id {
        Some(incident) => {
            let waiting: bool = tx
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM runs WHERE incident_id = ?1 AND playbook = ?2 AND state = 'pending')",
                )?
                .query_row(params![incident, new.playbook], |r| r.get(0))?;
            if waiting {
                return Ok(None);
            }
            let last: Option<u32> = tx
                .prepare_cached(
                    "SELECT MAX(ordinal) FROM runs WHERE incident_id = ?1 AND playbook = ?2",
                )?
                .query_row(params![incident, new.playbook], |r| r.get(0))?;
            last.unwrap_or(0) + 1
        }
        None => 1,
    };
    let scope = if ordinal > 1 {
        format!("{}#{ordinal}", new.scope)
    } else {
        new.scope.clone()
    };
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO runs(id, incident_id, playbook, ordinal, scope, state, trigger, trigger_alert,
                 target_host, target_app, dry_run, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            new.id,
            new.incident_id,
            new.playbook,
            ordinal,
            scope,
            new.trigger,
            new.alert.map(|a| serde_json::to_string(a).expect("alerts serialise")),
            new.target_host,
            new.target_app,
            new.dry_run,
            now
        ])?;
    if n == 0 {
        return Ok(None);
    }
    if let Some(incident) = new.incident_id {
        let what = new.alert.map(|a| a.name.as_str()).unwrap_or("an operator");
        timeline(
            tx,
            incident,
            now,
            "run_decided",
            &format!(
                "playbook {}{} triggered by {what}{}",
                new.playbook,
                if ordinal > 1 {
                    format!(" (run {ordinal})")
                } else {
                    String::new()
                },
                if new.dry_run { " (dry run)" } else { "" }
            ),
            &json!({"run_id": new.id, "playbook": new.playbook, "ordinal": ordinal, "trigger": new.trigger}),
        )?;
    }
    Ok(Some(new.id.clone()))
}

/// The incident of a run leaves `remediating` when no other run of it is
/// still under way.
fn settle_incident(tx: &Connection, incident_id: &str, now: UnixMs) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE incidents SET state = CASE WHEN acknowledged_at_ms IS NULL THEN 'open' ELSE 'acknowledged' END, updated_at_ms = ?2
         WHERE id = ?1 AND state = 'remediating'
           AND NOT EXISTS (SELECT 1 FROM runs WHERE incident_id = ?1 AND state IN ('pending', 'running', 'awaiting_approval'))",
        params![incident_id, now],
    )?;
    Ok(())
}

/// Admits a run past its guardrails: it counts against budgets from now.
pub fn admit(
    tx: &Transaction<'_>,
    run: &RunRow,
    depth: u32,
    caused_by: Option<&str>,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE runs SET state = 'running', depth = ?2, caused_by_run = ?3, admitted_at_ms = ?4, started_at_ms = ?4 WHERE id = ?1",
        params![run.id, depth, caused_by, now],
    )?;
    if let Some(incident) = &run.incident_id {
        tx.execute(
            "UPDATE incidents SET state = 'remediating', updated_at_ms = ?2 WHERE id = ?1 AND state IN ('open', 'acknowledged')",
            params![incident, now],
        )?;
        let cause = caused_by
            .map(|c| format!(" (caused by our run {c}: depth {depth})"))
            .unwrap_or_default();
        timeline(
            tx,
            incident,
            now,
            "run_started",
            &format!("playbook {} started{cause}", run.playbook),
            &json!({"run_id": run.id, "playbook": run.playbook, "depth": depth, "caused_by_run": caused_by}),
        )?;
    }
    Ok(())
}

/// Moves a run to a new state (`reason` explains blocked, stopped, ...).
/// A final state settles its incident.
pub fn set_state(
    tx: &Connection,
    run: &RunRow,
    state: RunState,
    reason: Option<&str>,
    now: UnixMs,
) -> Result<(), StoreError> {
    let finished = !state.is_active();
    tx.execute(
        "UPDATE runs SET state = ?2, reason = COALESCE(?3, reason), finished_at_ms = CASE WHEN ?4 THEN ?5 ELSE finished_at_ms END WHERE id = ?1",
        params![run.id, state.as_str(), reason, finished, now],
    )?;
    if let Some(incident) = &run.incident_id {
        if finished {
            settle_incident(tx, incident, now)?;
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            timeline(
                tx,
                incident,
                now,
                "run_finished",
                &format!("playbook {} {}{why}", run.playbook, state.as_str()),
                &json!({"run_id": run.id, "state": state.as_str(), "reason": reason}),
            )?;
        } else if state == RunState::AwaitingApproval {
            timeline(
                tx,
                incident,
                now,
                "run_awaiting_approval",
                &format!("playbook {} waits for an operator's approval", run.playbook),
                &json!({"run_id": run.id}),
            )?;
        }
    }
    Ok(())
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub seq: u32,
    pub phase: Phase,
    pub step_index: usize,
    pub step_id: String,
    pub action: String,
    pub mutating: bool,
    pub state: RunState,
    pub params: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub attempts: u32,
    pub started_at_ms: Option<UnixMs>,
    pub finished_at_ms: Option<UnixMs>,
}

pub fn steps(conn: &Connection, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, phase, step_index, step_id, action, mutating, state, params, result, error, attempts, started_at_ms, finished_at_ms
         FROM run_steps WHERE run_id = ?1 ORDER BY seq",
    )?;
    let raw: Vec<(StepRow, String)> = stmt
        .query_map([run_id], |r| {
            let phase: String = r.get(1)?;
            let params: Option<String> = r.get(7)?;
            let result: Option<String> = r.get(8)?;
            Ok((
                StepRow {
                    seq: r.get(0)?,
                    phase: if phase == "rollback" {
                        Phase::Rollback
                    } else {
                        Phase::Main
                    },
                    step_index: r.get::<_, i64>(2)? as usize,
                    step_id: r.get(3)?,
                    action: r.get(4)?,
                    mutating: r.get(5)?,
                    state: RunState::Pending,
                    params: params
                        .and_then(|p| serde_json::from_str(&p).ok())
                        .unwrap_or(Value::Null),
                    result: result.and_then(|p| serde_json::from_str(&p).ok()),
                    error: r.get(9)?,
                    attempts: r.get(10)?,
                    started_at_ms: r.get(11)?,
                    finished_at_ms: r.get(12)?,
                },
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    raw.into_iter()
        .map(|(mut s, state)| {
            s.state = parse_col(&state, "run_steps", "state")?;
            Ok(s)
        })
        .collect()
}

/// A step about to run, recorded before it does anything.
#[derive(Debug, Clone)]
pub struct StepStart<'a> {
    pub seq: u32,
    pub phase: Phase,
    pub step_index: usize,
    pub step_id: &'a str,
    pub action: &'a str,
    pub mutating: bool,
    /// Rendered with secrets redacted.
    pub params: &'a Value,
}

pub fn step_started(
    tx: &Connection,
    run_id: &str,
    s: &StepStart<'_>,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO run_steps(run_id, seq, phase, step_index, step_id, action, mutating, state, params, attempts, started_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, 0, ?9)
         ON CONFLICT(run_id, seq) DO UPDATE SET state = 'running', params = excluded.params",
        params![run_id, s.seq, s.phase.as_str(), s.step_index as i64, s.step_id, s.action, s.mutating, s.params.to_string(), now],
    )?;
    Ok(())
}

/// Counts an attempt of a running step (retries).
pub fn step_attempt(
    tx: &Connection,
    run_id: &str,
    seq: u32,
    attempts: u32,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE run_steps SET attempts = ?3 WHERE run_id = ?1 AND seq = ?2",
        params![run_id, seq, attempts],
    )?;
    Ok(())
}

/// Records the progress of a running step (a rollout's batches so far) as
/// its result, until it ends. A step that then fails keeps it.
pub fn step_progress(
    tx: &Connection,
    run_id: &str,
    step_id: &str,
    progress: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE run_steps SET result = ?3 WHERE run_id = ?1 AND step_id = ?2 AND state = 'running'",
        params![run_id, step_id, progress.to_string()],
    )?;
    Ok(())
}

/// How a step ended.
#[derive(Debug, Clone)]
pub struct StepEnd<'a> {
    pub seq: u32,
    pub step_id: &'a str,
    pub action: &'a str,
    pub state: RunState,
    pub result: Option<&'a Value>,
    pub error: Option<&'a str>,
    /// Where the run goes on: (phase, next step index).
    pub next: (Phase, usize),
    /// A mutating step succeeded: the run has changed something.
    pub mutated: bool,
}

/// Records a step's end and moves the run's cursor, in one transaction. A
/// step that ends without a result keeps the progress it recorded.
pub fn step_finished(
    tx: &Transaction<'_>,
    run: &RunRow,
    end: &StepEnd<'_>,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE run_steps SET state = ?3, result = COALESCE(?4, result), error = ?5, finished_at_ms = ?6 WHERE run_id = ?1 AND seq = ?2",
        params![run.id, end.seq, end.state.as_str(), end.result.map(Value::to_string), end.error, now],
    )?;
    tx.execute(
        "UPDATE runs SET phase = ?2, cursor = ?3, mutated = mutated OR ?4 WHERE id = ?1",
        params![run.id, end.next.0.as_str(), end.next.1 as i64, end.mutated],
    )?;
    if let Some(incident) = &run.incident_id {
        let outcome = match (end.state, end.error) {
            (_, Some(e)) => format!("{}: {e}", end.state.as_str()),
            (state, None) => state.as_str().to_owned(),
        };
        timeline(
            tx,
            incident,
            now,
            "step_finished",
            &format!(
                "{} {} ({}) of playbook {}",
                end.step_id, outcome, end.action, run.playbook
            ),
            &json!({"run_id": run.id, "step": end.step_id, "action": end.action, "state": end.state.as_str(),
                    "result": end.result, "error": end.error}),
        )?;
    }
    Ok(())
}

/// A change one of our runs made to a target.
#[derive(Debug, Clone)]
pub struct Mutation<'a> {
    pub run_id: &'a str,
    pub playbook: &'a str,
    pub step_id: &'a str,
    pub host: &'a str,
    pub app: Option<&'a str>,
    pub depth: u32,
    pub started_at_ms: UnixMs,
    pub finished_at_ms: UnixMs,
}

pub fn record_mutation(tx: &Connection, m: &Mutation<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO mutations(run_id, playbook, step_id, host, app, depth, started_at_ms, finished_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![m.run_id, m.playbook, m.step_id, m.host, m.app, m.depth, m.started_at_ms, m.finished_at_ms],
    )?;
    Ok(())
}

/// The most recent of our runs that changed `host` (and `app`, or the whole
/// host) while the alert started, or within `window_ms` before it:
/// (run id, playbook, depth).
pub fn cause(
    conn: &Connection,
    host: &str,
    app: Option<&str>,
    alert_started_ms: UnixMs,
    window_ms: i64,
    exclude_run: &str,
) -> Result<Option<(String, String, u32)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT run_id, playbook, depth FROM mutations
             WHERE host = ?1 AND (app IS NULL OR ?2 IS NULL OR app = ?2)
               AND started_at_ms <= ?3 AND finished_at_ms + ?4 >= ?3 AND run_id != ?5
             ORDER BY finished_at_ms DESC LIMIT 1",
        )?
        .query_row(
            params![host, app, alert_started_ms, window_ms, exclude_run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Runs admitted since `since_ms` (dry runs excluded): of `playbook` when
/// given, on `target` (host, app) when given.
pub fn admitted_since(
    conn: &Connection,
    since_ms: UnixMs,
    playbook: Option<&str>,
    target: Option<(&str, Option<&str>)>,
) -> Result<u32, StoreError> {
    let (host, app) = target.map_or((None, None), |(h, a)| (Some(h), a));
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM runs WHERE admitted_at_ms >= ?1 AND dry_run = 0
               AND (?2 IS NULL OR playbook = ?2)
               AND (?3 IS NULL OR target_host = ?3)
               AND (?3 IS NULL OR target_app IS ?4)",
        )?
        .query_row(params![since_ms, playbook, host, app], |r| r.get(0))?)
}

/// Marks an incident as caused by one of our runs.
pub fn mark_incident_caused(
    tx: &Connection,
    incident_id: &str,
    run_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE incidents SET caused_by_run = ?2 WHERE id = ?1 AND caused_by_run IS NULL",
        params![incident_id, run_id],
    )?;
    Ok(())
}

// ----- breakers -----

/// The tripped breakers among `keys`.
pub fn open_breakers(conn: &Connection, keys: &[String]) -> Result<Vec<BreakerView>, StoreError> {
    Ok(breakers(conn)?
        .into_iter()
        .filter(|b| keys.contains(&b.key))
        .collect())
}

pub fn breakers(conn: &Connection) -> Result<Vec<BreakerView>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT key, reason, tripped_at_ms, run_id, escalation FROM breakers ORDER BY tripped_at_ms")?;
    Ok(stmt
        .query_map([], |r| {
            let escalation: String = r.get(4)?;
            Ok(BreakerView {
                key: r.get(0)?,
                reason: r.get(1)?,
                tripped_at_ms: r.get(2)?,
                run_id: r.get(3)?,
                escalation: serde_json::from_str(&escalation).unwrap_or(Value::Null),
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// Trips a breaker; false when it was already tripped.
pub fn trip(
    tx: &Connection,
    key: &str,
    reason: &str,
    run_id: &str,
    now: UnixMs,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "INSERT OR IGNORE INTO breakers(key, reason, tripped_at_ms, run_id) VALUES (?1, ?2, ?3, ?4)",
        params![key, reason, now, run_id],
    )? == 1)
}

pub fn set_escalation(tx: &Connection, key: &str, escalation: &Value) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE breakers SET escalation = ?2 WHERE key = ?1",
        params![key, escalation.to_string()],
    )?;
    Ok(())
}

/// Resets a breaker and records when, so that its budget counts only runs
/// admitted from now on; false when it was not tripped.
pub fn reset(tx: &Connection, key: &str, by: &str, now: UnixMs) -> Result<bool, StoreError> {
    if tx.execute("DELETE FROM breakers WHERE key = ?1", [key])? != 1 {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO breaker_resets(key, reset_at_ms, reset_by) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET reset_at_ms = excluded.reset_at_ms, reset_by = excluded.reset_by",
        params![key, now, by],
    )?;
    Ok(true)
}

/// When the breaker `key` was last reset, if ever.
pub fn last_reset(conn: &Connection, key: &str) -> Result<Option<UnixMs>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT reset_at_ms FROM breaker_resets WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

// ----- approvals -----

/// An approval as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRow {
    pub view: ApprovalView,
    /// `Some(approved)` once decided.
    pub decided: Option<(bool, String, String)>,
}

pub fn approval(
    conn: &Connection,
    run_id: &str,
    step_id: &str,
) -> Result<Option<ApprovalRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT step_id, prompt, requested_at_ms, expires_at_ms, approved, decided_by, reason FROM approvals
             WHERE run_id = ?1 AND step_id = ?2",
        )?
        .query_row(params![run_id, step_id], approval_row)
        .optional()?)
}

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    let approved: Option<bool> = r.get(4)?;
    Ok(ApprovalRow {
        view: ApprovalView {
            step_id: r.get(0)?,
            prompt: r.get(1)?,
            requested_at_ms: r.get(2)?,
            expires_at_ms: r.get(3)?,
        },
        decided: match approved {
            Some(a) => Some((
                a,
                r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            )),
            None => None,
        },
    })
}

/// The undecided approval a run waits for, if any.
pub fn pending_approval(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<ApprovalRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT step_id, prompt, requested_at_ms, expires_at_ms, approved, decided_by, reason FROM approvals
             WHERE run_id = ?1 AND decided_at_ms IS NULL ORDER BY requested_at_ms DESC LIMIT 1",
        )?
        .query_row([run_id], approval_row)
        .optional()?)
}

/// Records a request for approval, once: a resumed run keeps its deadline.
pub fn request_approval(
    tx: &Connection,
    run_id: &str,
    step_id: &str,
    prompt: &str,
    expires_at_ms: UnixMs,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO approvals(run_id, step_id, prompt, requested_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![run_id, step_id, prompt, now, expires_at_ms],
    )?;
    Ok(())
}

/// Decides an undecided approval; false when there was none to decide.
pub fn decide(
    tx: &Connection,
    run_id: &str,
    step_id: &str,
    approved: bool,
    by: &str,
    reason: &str,
    now: UnixMs,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE approvals SET decided_at_ms = ?3, approved = ?4, decided_by = ?5, reason = ?6
         WHERE run_id = ?1 AND step_id = ?2 AND decided_at_ms IS NULL",
        params![run_id, step_id, now, approved, by, reason],
    )? == 1)
}

// ----- the kill switch -----

const KILL_SWITCH: &str = "kill_switch";

pub fn kill_switch(conn: &Connection) -> Result<KillSwitchView, StoreError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT value, updated_at_ms FROM automation_state WHERE key = ?1")?
        .query_row([KILL_SWITCH], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => KillSwitchView {
            on: false,
            changed_at_ms: None,
            changed_by: None,
            reason: None,
        },
        Some((value, at)) => {
            let v: Value = serde_json::from_str(&value).unwrap_or(Value::Null);
            KillSwitchView {
                // Unreadable state fails safe: on.
                on: v["on"].as_bool().unwrap_or(true),
                changed_at_ms: Some(at),
                changed_by: v["by"].as_str().map(str::to_owned),
                reason: v["reason"].as_str().map(str::to_owned),
            }
        }
    })
}

pub fn set_kill_switch(
    tx: &Connection,
    on: bool,
    by: &str,
    reason: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO automation_state(key, value, updated_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        params![KILL_SWITCH, json!({"on": on, "by": by, "reason": reason}).to_string(), now],
    )?;
    Ok(())
}

// ----- views -----

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub incident_id: Option<String>,
    pub playbook: Option<String>,
    pub state: Option<RunState>,
    pub limit: u32,
}

pub fn list(conn: &Connection, f: &RunFilter) -> Result<Vec<RunView>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR playbook = ?2) AND (?3 IS NULL OR state = ?3)
         ORDER BY created_at_ms DESC, id DESC LIMIT ?4"
    ))?;
    let raw: Vec<_> = stmt
        .query_map(
            params![
                f.incident_id,
                f.playbook,
                f.state.map(RunState::as_str),
                f.limit.max(1)
            ],
            run_row,
        )?
        .collect::<Result<_, _>>()?;
    raw.into_iter()
        .map(|r| view_of(conn, finish_row(r)?))
        .collect()
}

/// The runs of an incident, oldest first.
pub fn of_incident(conn: &Connection, incident_id: &str) -> Result<Vec<RunView>, StoreError> {
    let mut runs = list(
        conn,
        &RunFilter {
            incident_id: Some(incident_id.into()),
            limit: 1_000,
            ..RunFilter::default()
        },
    )?;
    runs.reverse();
    Ok(runs)
}

pub fn view(conn: &Connection, id: &str) -> Result<Option<RunView>, StoreError> {
    get(conn, id)?.map(|r| view_of(conn, r)).transpose()
}

fn view_of(conn: &Connection, r: RunRow) -> Result<RunView, StoreError> {
    let steps = steps(conn, &r.id)?
        .into_iter()
        .map(|s| StepView {
            id: s.step_id,
            action: s.action,
            state: s.state,
            phase: s.phase.as_str().into(),
            params: s.params,
            result: s.result,
            error: s.error,
            attempts: s.attempts,
            started_at_ms: s.started_at_ms,
            finished_at_ms: s.finished_at_ms,
        })
        .collect();
    let approval = if r.state == RunState::AwaitingApproval {
        pending_approval(conn, &r.id)?.map(|a| a.view)
    } else {
        None
    };
    Ok(RunView {
        id: r.id,
        playbook: r.playbook,
        incident_id: r.incident_id,
        state: r.state,
        trigger: r.trigger,
        ordinal: r.ordinal,
        depth: r.depth,
        caused_by_run: r.caused_by_run,
        target_host: r.target_host,
        target_app: r.target_app,
        reason: r.reason,
        dry_run: r.dry_run,
        mutated: r.mutated,
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms.unwrap_or(r.created_at_ms),
        finished_at_ms: r.finished_at_ms,
        approval,
        steps,
    })
}
