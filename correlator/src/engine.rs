//! The engine: the correlation core plus the store, behind one writer lock.
//!
//! Each ingest request is one SQLite transaction: dedup by event id, run the
//! core, write its effects, decide which playbooks to start, commit. Only then
//! is the request acknowledged and are the runs handed to the runner, so a
//! crash never loses an acknowledged event nor starts a run twice. All methods
//! block; async callers use `spawn_blocking`.

use std::sync::{Arc, Mutex, MutexGuard};

use fincorp_api::rest::{IncidentDetail, IncidentState, IncidentSummary, RunState};
use fincorp_api::wire::IngestAck;
use fincorp_api::{UnixMs, format_ms};
use fincorp_playbooks::Playbook;
use fincorp_playbooks::actions::TicketRef;
use fincorp_playbooks::template::{AlertCtx, IncidentCtx};
use fincorp_playbooks::trigger::AlertFacts;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use crate::core::{self, Effect};
use crate::store::{self, IncidentFilter, RunStart, Store, StoreError};

struct Writer {
    store: Store,
    core: core::State,
}

/// Shared by the HTTP handlers, the ticker and the runner.
pub struct Engine {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    cfg: core::Config,
    playbooks: Arc<Vec<Playbook>>,
}

/// The outcome of one ingest request.
#[derive(Debug)]
pub struct Ingested {
    pub ack: IngestAck,
    /// Runs decided in this request, to start now that it is committed.
    pub runs: Vec<RunStart>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub fn open(
        path: &std::path::Path,
        cfg: core::Config,
        playbooks: Arc<Vec<Playbook>>,
    ) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let core = store.load_core(cfg)?;
        let reader = store::connect(path)?;
        Ok(Self {
            writer: Mutex::new(Writer { store, core }),
            reader: Mutex::new(reader),
            cfg,
            playbooks,
        })
    }

    pub fn playbooks(&self) -> &Arc<Vec<Playbook>> {
        &self.playbooks
    }

    /// Open incidents and firing alerts held in memory (for metrics and tests).
    pub fn core_counts(&self) -> (usize, usize) {
        let w = lock(&self.writer);
        (w.core.open_incidents().count(), w.core.active_alerts())
    }

    /// Stores and correlates alerts, each with its raw payload, at `now`.
    pub fn ingest(
        &self,
        alerts: Vec<(core::Alert, String)>,
        now: UnixMs,
    ) -> Result<Ingested, StoreError> {
        let mut guard = lock(&self.writer);
        let Writer { store, core } = &mut *guard;
        let result = Self::ingest_tx(store, core, &self.playbooks, alerts, now);
        if result.is_err() {
            // The transaction rolled back; the core may have moved on. Rebuild it.
            *core = store.load_core(self.cfg)?;
        }
        result
    }

    fn ingest_tx(
        store: &mut Store,
        core: &mut core::State,
        playbooks: &[Playbook],
        alerts: Vec<(core::Alert, String)>,
        now: UnixMs,
    ) -> Result<Ingested, StoreError> {
        let tx = store.conn.transaction()?;
        let (mut accepted, mut duplicates) = (0u32, 0u32);
        let mut runs = Vec::new();
        for (alert, payload) in alerts {
            if !store::insert_event(&tx, &alert, &payload, now)? {
                duplicates += 1;
                continue;
            }
            accepted += 1;
            for effect in core.ingest(alert, now) {
                store::apply(&tx, &effect, now)?;
                if let Effect::AlertAttached {
                    incident_id, alert, ..
                } = &effect
                {
                    let facts = AlertFacts {
                        name: &alert.name,
                        app: alert.app.as_deref(),
                        severity: alert.severity,
                    };
                    for pb in playbooks.iter().filter(|pb| pb.trigger.matches(&facts)) {
                        let run = RunStart {
                            run_id: format!("run-{}", fincorp_api::signing::random_hex(6)),
                            incident_id: incident_id.clone(),
                            playbook: pb.name.clone(),
                            alert: alert.clone(),
                        };
                        if store::insert_run(&tx, &run, now)? {
                            runs.push(run);
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(Ingested {
            ack: IngestAck {
                accepted,
                duplicates,
            },
            runs,
        })
    }

    /// Applies the passage of time (auto-resolution). Returns resolved ids.
    pub fn tick(&self, now: UnixMs) -> Result<Vec<String>, StoreError> {
        let mut guard = lock(&self.writer);
        let Writer { store, core } = &mut *guard;
        let effects = core.tick(now);
        if effects.is_empty() {
            return Ok(vec![]);
        }
        let result = (|| -> Result<(), StoreError> {
            let tx = store.conn.transaction()?;
            for e in &effects {
                store::apply(&tx, e, now)?;
            }
            Ok(tx.commit()?)
        })();
        if let Err(e) = result {
            *core = store.load_core(self.cfg)?;
            return Err(e);
        }
        Ok(effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::IncidentResolved { incident_id, .. } => Some(incident_id),
                _ => None,
            })
            .collect())
    }

    pub fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        store::list_incidents(&lock(&self.reader), filter)
    }

    pub fn incident(&self, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
        store::incident_detail(&lock(&self.reader), id)
    }

    /// The template view of an incident and its alerts, for a run.
    pub fn run_inputs(
        &self,
        incident_id: &str,
    ) -> Result<Option<(IncidentCtx, Vec<AlertCtx>)>, StoreError> {
        let Some(d) = self.incident(incident_id)? else {
            return Ok(None);
        };
        let i = &d.incident;
        let incident = IncidentCtx {
            id: i.id.clone(),
            host: i.host.clone(),
            app: i.app.clone(),
            severity: i.severity.to_string(),
            state: i.state.as_str().into(),
            title: i.title.clone(),
            opened_at: format_ms(i.opened_at_ms),
            opened_at_ms: i.opened_at_ms,
        };
        let alerts = d
            .alerts
            .iter()
            .map(|a| AlertCtx {
                name: a.name.clone(),
                source: a.source.clone(),
                host: a.host.clone(),
                app: a.app.clone(),
                severity: a.severity.to_string(),
                status: a.status.as_str().into(),
                metric: a.metric.clone(),
                value: a.value,
                threshold: a.threshold,
                summary: a.summary.clone(),
                fingerprint: a.fingerprint.clone(),
                starts_at: format_ms(a.starts_at_ms),
            })
            .collect();
        Ok(Some((incident, alerts)))
    }

    /// Marks a run running and its incident remediating.
    pub fn run_started(&self, run: &RunStart, now: UnixMs) -> Result<(), StoreError> {
        let w = lock(&self.writer);
        let tx = w.store.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE runs SET state = 'running', started_at_ms = ?2 WHERE id = ?1",
            params![run.run_id, now],
        )?;
        tx.execute(
            "UPDATE incidents SET state = 'remediating', updated_at_ms = ?2 WHERE id = ?1 AND state = 'open'",
            params![run.incident_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn step_started(
        &self,
        run_id: &str,
        idx: usize,
        step_id: &str,
        action: &str,
        params: &Value,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        lock(&self.writer).store.conn.execute(
            "INSERT INTO run_steps(run_id, idx, step_id, action, state, params, started_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
            params![run_id, idx as i64, step_id, action, params.to_string(), now],
        )?;
        Ok(())
    }

    /// Records a finished step, its ticket if any, and a timeline entry.
    #[allow(clippy::too_many_arguments)]
    pub fn step_finished(
        &self,
        run: &RunStart,
        idx: usize,
        step_id: &str,
        action: &str,
        outcome: Result<(&Value, Option<&TicketRef>), &str>,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let w = lock(&self.writer);
        let tx = w.store.conn.unchecked_transaction()?;
        match outcome {
            Ok((result, ticket)) => {
                tx.execute(
                    "UPDATE run_steps SET state = 'succeeded', result = ?3, finished_at_ms = ?4 WHERE run_id = ?1 AND idx = ?2",
                    params![run.run_id, idx as i64, result.to_string(), now],
                )?;
                let change = match (
                    result.get("before").and_then(Value::as_str),
                    result.get("after").and_then(Value::as_str),
                ) {
                    (Some(b), Some(a)) => format!(": {b} -> {a}"),
                    _ => String::new(),
                };
                store::timeline(
                    &tx,
                    &run.incident_id,
                    now,
                    "step_finished",
                    &format!(
                        "{}: step {step_id} ({action}) succeeded{change}",
                        run.playbook
                    ),
                    &json!({"run_id": run.run_id, "step": step_id, "action": action, "state": "succeeded", "result": result}),
                )?;
                if let Some(t) = ticket {
                    let n = tx.execute(
                        "INSERT OR IGNORE INTO tickets(incident_id, system, sys_id, number, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![run.incident_id, t.system, t.sys_id, t.number, now],
                    )?;
                    if n == 1 {
                        store::timeline(
                            &tx,
                            &run.incident_id,
                            now,
                            "ticket_created",
                            &format!(
                                "{} ticket {} linked (correlation_id {})",
                                t.system, t.number, run.incident_id
                            ),
                            &json!({"system": t.system, "number": t.number, "sys_id": t.sys_id}),
                        )?;
                    }
                }
            }
            Err(error) => {
                tx.execute(
                    "UPDATE run_steps SET state = 'failed', error = ?3, finished_at_ms = ?4 WHERE run_id = ?1 AND idx = ?2",
                    params![run.run_id, idx as i64, error, now],
                )?;
                store::timeline(
                    &tx,
                    &run.incident_id,
                    now,
                    "step_finished",
                    &format!(
                        "{}: step {step_id} ({action}) failed: {error}",
                        run.playbook
                    ),
                    &json!({"run_id": run.run_id, "step": step_id, "action": action, "state": "failed", "error": error}),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the end of a run; the incident leaves `remediating` when no
    /// other run of it is still going.
    pub fn run_finished(
        &self,
        run: &RunStart,
        state: RunState,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let w = lock(&self.writer);
        let tx = w.store.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE runs SET state = ?2, finished_at_ms = ?3 WHERE id = ?1",
            params![run.run_id, state.as_str(), now],
        )?;
        tx.execute(
            "UPDATE incidents SET state = 'open', updated_at_ms = ?2
             WHERE id = ?1 AND state = 'remediating'
               AND NOT EXISTS (SELECT 1 FROM runs WHERE incident_id = ?1 AND state IN ('pending', 'running'))",
            params![run.incident_id, now],
        )?;
        store::timeline(
            &tx,
            &run.incident_id,
            now,
            "run_finished",
            &format!("playbook {} {}", run.playbook, state.as_str()),
            &json!({"run_id": run.run_id, "state": state.as_str()}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// At start: runs left pending or running by a previous process are
    /// marked failed ("interrupted") rather than resumed, so no step ever runs
    /// twice. Their unfinished steps are marked failed too.
    pub fn interrupt_unfinished_runs(&self, now: UnixMs) -> Result<usize, StoreError> {
        let w = lock(&self.writer);
        let tx = w.store.conn.unchecked_transaction()?;
        let unfinished: Vec<(String, Option<String>, String)> = {
            let mut stmt = tx.prepare(
                "SELECT id, incident_id, playbook FROM runs WHERE state IN ('pending', 'running')",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        for (run_id, incident_id, playbook) in &unfinished {
            tx.execute(
                "UPDATE run_steps SET state = 'failed', error = 'interrupted by a correlator restart', finished_at_ms = ?2
                 WHERE run_id = ?1 AND state = 'running'",
                params![run_id, now],
            )?;
            tx.execute(
                "UPDATE runs SET state = 'failed', finished_at_ms = ?2 WHERE id = ?1",
                params![run_id, now],
            )?;
            if let Some(incident_id) = incident_id {
                tx.execute(
                    "UPDATE incidents SET state = 'open', updated_at_ms = ?2 WHERE id = ?1 AND state = 'remediating'",
                    params![incident_id, now],
                )?;
                store::timeline(
                    &tx,
                    incident_id,
                    now,
                    "run_finished",
                    &format!(
                        "playbook {playbook} interrupted by a correlator restart; not resumed"
                    ),
                    &json!({"run_id": run_id, "state": "failed"}),
                )?;
            }
        }
        tx.commit()?;
        Ok(unfinished.len())
    }

    /// The current state of an incident, if it exists.
    pub fn incident_state(&self, id: &str) -> Result<Option<IncidentState>, StoreError> {
        let state: Option<String> = lock(&self.reader)
            .query_row("SELECT state FROM incidents WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        state
            .map(|s| {
                s.parse().map_err(|_| StoreError::Corrupt {
                    table: "incidents",
                    column: "state",
                    value: s,
                })
            })
            .transpose()
    }
}

/// Turns an agent's alert event into the core's normalised alert.
pub fn from_agent(e: &fincorp_api::wire::AlertEvent) -> core::Alert {
    core::Alert {
        event_id: e.id.clone(),
        source: "agent".into(),
        fingerprint: e.fingerprint.clone(),
        status: e.status,
        name: e.name.clone(),
        host: e.host.clone(),
        app: e.app.clone(),
        severity: e.severity,
        metric: e.metric.clone(),
        value: e.value,
        threshold: e.threshold,
        summary: e.summary.clone(),
        starts_at_ms: e.starts_at_ms,
        at_ms: e.at_ms,
    }
}
