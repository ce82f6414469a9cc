//! The engine: the correlation core plus the store, behind one writer lock.
//!
//! Ingest goes through a bounded queue to a dedicated writer thread that
//! commits in groups: it takes every request waiting in the queue, runs them
//! through dedup, the core and the playbook triggers in ONE transaction, and
//! answers each request only after the commit. One fsync serves many
//! requests, so durability does not cost throughput, and a crash never loses
//! an acknowledged event nor starts a run twice. Operators' actions (ack,
//! resolve, close, silences) take the same lock and write their audit entry in
//! the same transaction. All methods except [`Engine::submit`] block; async
//! callers use `spawn_blocking`.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use fincorp_api::rest::{
    AuditEntry, IncidentDetail, IncidentState, IncidentSummary, NewSilence, SilenceView,
};
use fincorp_api::wire::IngestAck;
use fincorp_api::{UnixMs, format_ms};
use fincorp_playbooks::template::{AlertCtx, IncidentCtx};
use fincorp_playbooks::trigger::AlertFacts;
use fincorp_playbooks::{IncidentChange, Playbook};
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::core::Alert;
use crate::core::{self, Effect};
use crate::metrics::Metrics;
use crate::store::dedup::Dedup;
use crate::store::{self, IncidentFilter, Store, StoreError, audit, runs, silences};

/// Requests waiting for the writer before new ones wait (backpressure).
pub const QUEUE_CAPACITY: usize = 4_096;
/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;

struct Writer {
    store: Store,
    core: core::State,
    dedup: Dedup,
    /// When the event log was last pruned to the dedup window.
    pruned_at_ms: UnixMs,
    /// Dedup evictions already counted in the metrics.
    evictions_reported: u64,
    wal: WalGuard,
}

/// The WAL is checkpointed in the background; under sustained load it can
/// still grow, because it only restarts once fully copied. When it passes
/// `WAL_LIMIT`, the writer truncates it itself between two groups (cheap:
/// the background thread has copied most of it already).
struct WalGuard {
    path: std::path::PathBuf,
    checked: Instant,
}

/// Largest WAL file tolerated before the writer truncates it.
const WAL_LIMIT: u64 = 64 << 20;

impl WalGuard {
    fn check(&mut self, conn: &Connection) {
        if self.checked.elapsed() < std::time::Duration::from_millis(500) {
            return;
        }
        self.checked = Instant::now();
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > WAL_LIMIT {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, wal_bytes = size, "truncating the WAL failed; will retry");
            }
        }
    }
}

impl Writer {
    /// After a failed transaction: the database is the truth; rebuild the
    /// core and the dedup set from it.
    fn rebuild(&mut self, cfg: &core::Config) -> Result<(), StoreError> {
        self.core = self.store.load_core(cfg.clone())?;
        self.dedup = Dedup::load(
            &self.store.conn,
            self.dedup.window_ms(),
            self.dedup.max_ids(),
            fincorp_api::now_ms(),
        )?;
        Ok(())
    }
}

struct Job {
    alerts: Vec<Alert>,
    /// The alerts as the event log keeps them, prepared off the writer.
    log: store::LoggedRequest,
    now: UnixMs,
    reply: oneshot::Sender<Result<Ingested, String>>,
}

/// Shared by the HTTP handlers, the ticker and the runner.
pub struct Engine {
    writer: Arc<Mutex<Writer>>,
    reader: Mutex<Connection>,
    cfg: core::Config,
    playbooks: Arc<RwLock<Arc<Vec<Playbook>>>>,
    jobs: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    /// Tells the checkpoint thread to stop.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Checkpoints the WAL into the database every half second (PASSIVE: never
/// blocks the writer), until the engine is dropped. Under continuous ingest
/// a passive checkpoint never catches up with the writer, so the WAL would
/// only grow, and appending to new file space costs more than overwriting.
/// Once the WAL passes `WAL_RESTART`, a RESTART checkpoint holds the writer
/// off just long enough to copy the frames since the passive one, and the
/// next commit starts the WAL over from its beginning.
fn checkpoint_loop(conn: &Connection, wal: &std::path::Path, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            continue;
        }
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if size > WAL_RESTART {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::warn!(error = %e, wal_bytes = size, "restarting the WAL failed; will retry");
            }
        }
    }
    // A final full checkpoint keeps the WAL small across restarts.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// WAL size past which the checkpoint thread restarts it.
const WAL_RESTART: u64 = 8 << 20;

/// The outcome of one ingest request.
#[derive(Debug)]
pub struct Ingested {
    pub ack: IngestAck,
    /// Runs decided in this request, to start now that it is committed.
    pub runs: Vec<String>,
}

/// What one tick did.
#[derive(Debug, Default)]
pub struct Ticked {
    /// Incidents that auto-resolved.
    pub resolved: Vec<String>,
    /// Runs their resolution decided, to start now that they are committed.
    pub runs: Vec<String>,
}

/// Why an ingest request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue stayed full: the client should retry later (503).
    #[error("the correlator is busy; retry later")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// Why an operator's action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no incident {0:?}")]
    NoIncident(String),
    #[error("{0}")]
    NotFound(String),
    #[error("no silence {0:?}")]
    NoSilence(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Opens the database, rebuilds the core and starts the writer thread.
    pub fn open(
        path: &std::path::Path,
        cfg: core::Config,
        playbooks: Arc<Vec<Playbook>>,
        dedup_window_ms: i64,
        dedup_max_ids: usize,
    ) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        // Commits only append to the WAL; a background thread checkpoints it,
        // so a commit never also pays for writing the main database file.
        store.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        store.conn.pragma_update(None, "cache_size", -16_384)?;
        let core = store.load_core(cfg.clone())?;
        let now = fincorp_api::now_ms();
        let dedup = Dedup::load(&store.conn, dedup_window_ms, dedup_max_ids, now)?;
        let reader = store::connect(path)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The WAL file: checkpointed, flushed and watched by three threads.
        let wal_path = path.with_extension("db-wal");
        {
            let (checkpointer, stop) = (store::connect(path)?, stop.clone());
            let wal = wal_path.clone();
            std::thread::Builder::new()
                .name("wal-checkpoint".into())
                .spawn(move || checkpoint_loop(&checkpointer, &wal, &stop))
                .expect("spawning the checkpoint thread");
        }
        let metrics = Arc::new(Metrics::new());
        metrics.set_core_counts(core.open_incidents().count(), core.active_alerts());
        let wal = WalGuard {
            path: wal_path.clone(),
            checked: Instant::now(),
        };
        let writer = Arc::new(Mutex::new(Writer {
            store,
            core,
            dedup,
            pruned_at_ms: now,
            evictions_reported: 0,
            wal,
        }));
        let (jobs, rx) = mpsc::channel(QUEUE_CAPACITY);
        let playbooks = Arc::new(RwLock::new(playbooks));
        let (committed, to_sync) = std::sync::mpsc::channel();
        {
            let (wal, metrics) = (wal_path, metrics.clone());
            std::thread::Builder::new()
                .name("ingest-sync".into())
                .spawn(move || sync_loop(&to_sync, &wal, &metrics))
                .expect("spawning the ingest sync thread");
        }
        {
            let (writer, pb, metrics, cfg) = (
                writer.clone(),
                playbooks.clone(),
                metrics.clone(),
                cfg.clone(),
            );
            std::thread::Builder::new()
                .name("ingest-writer".into())
                .spawn(move || write_loop(rx, &committed, &writer, &pb, &metrics, &cfg))
                .expect("spawning the ingest writer thread");
        }
        Ok(Self {
            writer,
            reader: Mutex::new(reader),
            cfg,
            playbooks,
            jobs,
            metrics,
            stop,
        })
    }

    /// The playbooks in force.
    pub fn playbooks(&self) -> Arc<Vec<Playbook>> {
        self.playbooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the playbooks (a reload): alerts committed from now on are
    /// matched against the new set; runs under way keep theirs.
    pub fn set_playbooks(&self, playbooks: Arc<Vec<Playbook>>) {
        *self.playbooks.write().unwrap_or_else(|e| e.into_inner()) = playbooks;
    }

    /// Open incidents and firing alerts held in memory.
    pub fn core_counts(&self) -> (usize, usize) {
        let w = lock(&self.writer);
        (w.core.open_incidents().count(), w.core.active_alerts())
    }

    /// Requests waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Queues alerts for the writer and waits until they are committed.
    /// Waits for room when the queue is full, up to `wait`.
    pub async fn submit(
        &self,
        alerts: Vec<Alert>,
        now: UnixMs,
        wait: std::time::Duration,
    ) -> Result<Ingested, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let log = store::LoggedRequest::of(&alerts);
        let job = Job {
            alerts,
            log,
            now,
            reply,
        };
        let stopped = || SubmitError::Failed("the ingest writer has stopped".into());
        // With room in the queue (the usual case) no timer is armed.
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
            Err(mpsc::error::TrySendError::Full(job)) => {
                match tokio::time::timeout(wait, self.jobs.send(job)).await {
                    Err(_) => return Err(SubmitError::Busy),
                    Ok(Err(_)) => return Err(stopped()),
                    Ok(Ok(())) => {}
                }
            }
        }
        match rx.await {
            Ok(Ok(ingested)) => Ok(ingested),
            Ok(Err(e)) => Err(SubmitError::Failed(e)),
            Err(_) => Err(SubmitError::Failed(
                "the ingest writer dropped the request".into(),
            )),
        }
    }

    /// Applies the passage of time (auto-resolution, flapping, closing).
    /// Returns the incidents it resolved and the runs their resolution
    /// decided (to start now that they are committed).
    pub fn tick(&self, now: UnixMs) -> Result<Ticked, StoreError> {
        let playbooks = self.playbooks();
        let mut guard = lock(&self.writer);
        let effects = guard.core.tick(now);
        let result = (|| -> Result<Vec<String>, StoreError> {
            let w = &mut *guard;
            w.dedup.expire(now);
            let evicted = w.dedup.evicted() - w.evictions_reported;
            if evicted > 0 {
                w.evictions_reported = w.dedup.evicted();
                self.metrics.dedup_evicted(evicted);
                tracing::warn!(
                    evicted,
                    max_ids = w.dedup.max_ids(),
                    remembered_since = %w.dedup.oldest_ms().map(format_ms).unwrap_or_default(),
                    "the dedup set is at its cap (dedup_max_ids): event ids were forgotten before the end of dedup_window"
                );
            }
            let prune = now - w.pruned_at_ms >= 60_000;
            if effects.is_empty() && !prune {
                return Ok(vec![]);
            }
            let tx = w.store.conn.transaction()?;
            for e in &effects {
                store::apply(&tx, e, now)?;
            }
            let runs = resolution_runs(&tx, &playbooks, &effects, now)?;
            if prune {
                store::prune_events(&tx, now - w.dedup.window_ms())?;
            }
            tx.commit()?;
            if prune {
                w.pruned_at_ms = now;
            }
            Ok(runs)
        })();
        let runs = match result {
            Ok(runs) => runs,
            Err(e) => {
                guard.rebuild(&self.cfg)?;
                return Err(e);
            }
        };
        self.metrics.set_core_counts(
            guard.core.open_incidents().count(),
            guard.core.active_alerts(),
        );
        self.metrics.set_dedup_ids(guard.dedup.len());
        Ok(Ticked {
            resolved: effects
                .into_iter()
                .filter_map(|e| match e {
                    Effect::IncidentResolved { incident_id, .. } => Some(incident_id),
                    _ => None,
                })
                .collect(),
            runs,
        })
    }

    fn incident_state_in(conn: &Connection, id: &str) -> Result<Option<IncidentState>, StoreError> {
        let state: Option<String> = conn
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

    /// The current state of an incident, if it exists.
    pub fn incident_state(&self, id: &str) -> Result<Option<IncidentState>, StoreError> {
        Self::incident_state_in(&lock(&self.reader), id)
    }

    /// An operator acknowledges an open incident.
    pub fn acknowledge(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: UnixMs,
    ) -> Result<(), OpError> {
        let mut guard = lock(&self.writer);
        let tx = guard.store.conn.transaction().map_err(StoreError::from)?;
        match Self::incident_state_in(&tx, id)? {
            None => return Err(OpError::NoIncident(id.into())),
            Some(s) if !s.is_active() => {
                return Err(OpError::Conflict(format!(
                    "incident {id} is {}, not open",
                    s.as_str()
                )));
            }
            Some(_) => {}
        }
        store::acknowledge(&tx, id, by, reason, now)?;
        audit::append(&tx, by, "incident.ack", id, &json!({"reason": reason}), now)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// An operator resolves an open incident, or closes a resolved one.
    /// Returns the runs the resolution decided, to start.
    pub fn resolve_or_close(
        &self,
        id: &str,
        close: bool,
        by: &str,
        reason: &str,
        now: UnixMs,
    ) -> Result<Vec<String>, OpError> {
        let playbooks = self.playbooks();
        let mut guard = lock(&self.writer);
        let Writer { store, core, .. } = &mut *guard;
        let state = Self::incident_state_in(&store.conn, id)?
            .ok_or_else(|| OpError::NoIncident(id.into()))?;
        let effects = if close {
            core.close(id, now)
        } else {
            core.resolve(id, now)
        }
        .map_err(|e| OpError::Conflict(format!("{e} (it is {})", state.as_str())))?;
        let (action, kind) = if close {
            ("incident.close", "closed")
        } else {
            ("incident.resolve", "resolved")
        };
        let result = (|| -> Result<Vec<String>, StoreError> {
            let tx = store.conn.transaction()?;
            for e in &effects {
                store::apply(&tx, e, now)?;
            }
            store::timeline(
                &tx,
                id,
                now,
                kind,
                &format!("{kind} by {by}: {reason}"),
                &json!({"by": by, "reason": reason}),
            )?;
            audit::append(&tx, by, action, id, &json!({"reason": reason}), now)?;
            let runs = resolution_runs(&tx, &playbooks, &effects, now)?;
            tx.commit()?;
            Ok(runs)
        })();
        let runs = match result {
            Ok(runs) => runs,
            Err(e) => {
                guard.rebuild(&self.cfg)?;
                return Err(e.into());
            }
        };
        self.metrics.set_core_counts(
            guard.core.open_incidents().count(),
            guard.core.active_alerts(),
        );
        Ok(runs)
    }

    /// Creates a silence.
    pub fn add_silence(
        &self,
        new: &NewSilence,
        by: &str,
        now: UnixMs,
    ) -> Result<SilenceView, OpError> {
        let id = format!("sil-{}", fincorp_api::signing::random_hex(6));
        let (row, silence) =
            silences::build(new, id, by.to_owned(), now).map_err(OpError::Invalid)?;
        let mut guard = lock(&self.writer);
        let Writer { store, core, .. } = &mut *guard;
        let tx = store.conn.transaction().map_err(StoreError::from)?;
        silences::insert(&tx, &row)?;
        audit::append(
            &tx,
            by,
            "silence.create",
            &row.id,
            &json!({"matchers": row.matchers, "comment": row.comment}),
            now,
        )?;
        tx.commit().map_err(StoreError::from)?;
        core.add_silence(silence);
        Ok(row.view(now))
    }

    /// Expires a silence now.
    pub fn expire_silence(&self, id: &str, by: &str, now: UnixMs) -> Result<SilenceView, OpError> {
        let mut guard = lock(&self.writer);
        let Writer { store, core, .. } = &mut *guard;
        if !silences::exists(&store.conn, id)? {
            return Err(OpError::NoSilence(id.into()));
        }
        let tx = store.conn.transaction().map_err(StoreError::from)?;
        if !silences::expire(&tx, id, now)? {
            return Err(OpError::Conflict(format!(
                "silence {id} has already expired"
            )));
        }
        audit::append(&tx, by, "silence.expire", id, &json!({}), now)?;
        tx.commit().map_err(StoreError::from)?;
        core.expire_silence(id, now);
        let row = silences::get(&store.conn, id)?.ok_or_else(|| OpError::NoSilence(id.into()))?;
        Ok(row.view(now))
    }

    pub fn silences(&self, now: UnixMs) -> Result<Vec<SilenceView>, StoreError> {
        store::list_silences(&lock(&self.reader), now)
    }

    pub fn silence(&self, id: &str, now: UnixMs) -> Result<Option<SilenceView>, StoreError> {
        Ok(silences::get(&lock(&self.reader), id)?.map(|r| r.view(now)))
    }

    /// Audit entries after `after_seq` (oldest first), and the chain's head.
    pub fn audit(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        let conn = lock(&self.reader);
        Ok((audit::list(&conn, after_seq, limit)?, audit::head(&conn)?))
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

    /// Runs `f` in a write transaction of the writer connection, committed
    /// when it returns `Ok`. For the automation's bookkeeping: short, never
    /// waiting on anything but the database.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.writer);
        let tx = guard.store.conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on the reader connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&lock(&self.reader))
    }
}

/// Committed ingest requests waiting for the WAL to reach the disk, with
/// their answers.
type Committed = Vec<(oneshot::Sender<Result<Ingested, String>>, Ingested)>;

/// Flushes the WAL for committed ingest groups, then answers them. Groups
/// that commit while a flush is under way share the next one, so the writer
/// never waits for the disk and one flush serves many groups.
fn sync_loop(rx: &std::sync::mpsc::Receiver<Committed>, wal: &std::path::Path, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let started = Instant::now();
        let flushed = std::fs::File::open(wal).and_then(|f| f.sync_data());
        metrics.observe_sync(started.elapsed());
        match flushed {
            Ok(()) => {
                for (reply, out) in groups.into_iter().flatten() {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) => {
                let requests: usize = groups.iter().map(Vec::len).sum();
                tracing::error!(error = %e, wal = %wal.display(), requests,
                    "flushing the WAL to disk failed; the requests are refused (their senders retry), runs they decided start at the next restart");
                for (reply, _) in groups.into_iter().flatten() {
                    let _ = reply.send(Err(format!("flushing the WAL to disk failed: {e}")));
                }
            }
        }
    }
}

/// Sets the writer connection's `synchronous` mode: ingest groups commit
/// with NORMAL (no fsync in the commit; [`sync_loop`] flushes before any
/// answer), everything else with FULL.
fn set_synchronous(conn: &Connection, full: bool) {
    // Twice per group: the statements are kept prepared.
    let sql = if full {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    };
    let set = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]));
    if let Err(e) = set {
        tracing::error!(error = %e, sql, "setting the writer's synchronous mode failed");
    }
}

fn write_loop(
    mut rx: mpsc::Receiver<Job>,
    committed: &std::sync::mpsc::Sender<Committed>,
    writer: &Mutex<Writer>,
    playbooks: &RwLock<Arc<Vec<Playbook>>>,
    metrics: &Metrics,
    cfg: &core::Config,
) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let playbooks = playbooks.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut guard = lock(writer);
        set_synchronous(&guard.store.conn, false);
        let result = (|| -> Result<Vec<Ingested>, StoreError> {
            let Writer {
                store, core, dedup, ..
            } = &mut *guard;
            let tx = store.conn.transaction()?;
            let mut out = Vec::with_capacity(group.len());
            let mut row = store::EventLogRow::default();
            for job in group.iter_mut() {
                out.push(ingest_job(
                    &tx, core, dedup, &mut row, &playbooks, job, metrics,
                )?);
            }
            row.write(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        set_synchronous(&guard.store.conn, true);
        match result {
            Ok(outs) => {
                metrics.observe_commit(group.len(), started.elapsed());
                let w = &mut *guard;
                w.wal.check(&w.store.conn);
                metrics.set_core_counts(
                    guard.core.open_incidents().count(),
                    guard.core.active_alerts(),
                );
                let done: Committed = group.drain(..).map(|j| j.reply).zip(outs).collect();
                if let Err(std::sync::mpsc::SendError(done)) = committed.send(done) {
                    for (reply, _) in done {
                        let _ = reply.send(Err("the ingest sync thread has stopped".into()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = group.len(), "ingest transaction failed; rebuilding state from the database");
                if let Err(e2) = guard.rebuild(cfg) {
                    tracing::error!(error = %e2, "rebuilding the correlation state failed");
                }
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Runs decided by incidents resolving among `effects`: each playbook whose
/// trigger takes `resolved` and matches one of the incident's alerts gets a
/// run, triggered by (and targeting) the newest alert it matches.
fn resolution_runs(
    tx: &rusqlite::Transaction<'_>,
    playbooks: &[Playbook],
    effects: &[Effect],
    now: UnixMs,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let on_resolved: Vec<&Playbook> = playbooks
        .iter()
        .filter(|pb| {
            pb.trigger
                .incident()
                .is_some_and(|t| t.on.contains(&IncidentChange::Resolved))
        })
        .collect();
    if on_resolved.is_empty() {
        return Ok(out);
    }
    for effect in effects {
        let Effect::IncidentResolved { incident_id, .. } = effect else {
            continue;
        };
        let alerts = store::incident_alerts(tx, incident_id)?;
        for pb in &on_resolved {
            let trigger = pb.trigger.incident().expect("filtered above");
            let Some(alert) = alerts.iter().find(|a| {
                trigger.matches(&AlertFacts {
                    name: &a.name,
                    app: a.app.as_deref(),
                    source: &a.source,
                    severity: a.severity,
                    change: IncidentChange::Resolved,
                })
            }) else {
                continue;
            };
            let new = runs::NewRun {
                id: format!("run-{}", fincorp_api::signing::random_hex(6)),
                playbook: &pb.name,
                incident_id: Some(incident_id),
                scope: incident_id.clone(),
                trigger: format!("incident:{}", IncidentChange::Resolved.as_str()),
                alert: Some(alert),
                target_host: Some(&alert.host),
                target_app: alert.app.as_deref(),
                dry_run: pb.guardrails.dry_run,
            };
            if let Some(id) = runs::insert(tx, &new, now)? {
                out.push(id);
            }
        }
    }
    Ok(out)
}

fn ingest_job(
    tx: &rusqlite::Transaction<'_>,
    core: &mut core::State,
    dedup: &mut Dedup,
    row: &mut store::EventLogRow,
    playbooks: &[Playbook],
    job: &mut Job,
    metrics: &Metrics,
) -> Result<Ingested, StoreError> {
    let (alerts, log, now) = (
        std::mem::take(&mut job.alerts),
        std::mem::take(&mut job.log),
        job.now,
    );
    let (mut accepted, mut duplicates) = (0u32, 0u32);
    // Per source: (stored, duplicates), counted once per request.
    let mut tally: Vec<(String, u64, u64)> = Vec::new();
    let mut runs = Vec::new();
    dedup.warm((0..log.len()).map(|i| log.key(i)));
    let mut kept = Vec::with_capacity(alerts.len());
    for (i, alert) in alerts.into_iter().enumerate() {
        let new = dedup.insert(log.key(i), now);
        kept.push(new);
        match tally.iter_mut().find(|(s, ..)| *s == alert.source) {
            Some(t) => {
                t.1 += u64::from(new);
                t.2 += u64::from(!new);
            }
            None => tally.push((alert.source.clone(), u64::from(new), u64::from(!new))),
        }
        if !new {
            duplicates += 1;
            continue;
        }
        accepted += 1;
        let effects = core.ingest(alert, now);
        for effect in &effects {
            store::apply(tx, effect, now)?;
        }
        for effect in &effects {
            let Effect::AlertAttached {
                incident_id, alert, ..
            } = effect
            else {
                continue;
            };
            // What the alert did to its incident, from the same effects.
            let change = effects
                .iter()
                .find_map(|e| match e {
                    Effect::IncidentOpened { incident_id: i, .. } if i == incident_id => {
                        Some(IncidentChange::Opened)
                    }
                    Effect::IncidentReopened { incident_id: i, .. } if i == incident_id => {
                        Some(IncidentChange::Reopened)
                    }
                    _ => None,
                })
                .unwrap_or(IncidentChange::AlertJoined);
            let facts = AlertFacts {
                name: &alert.name,
                app: alert.app.as_deref(),
                source: &alert.source,
                severity: alert.severity,
                change,
            };
            for pb in playbooks
                .iter()
                .filter(|pb| pb.trigger.incident().is_some_and(|t| t.matches(&facts)))
            {
                let new = runs::NewRun {
                    id: format!("run-{}", fincorp_api::signing::random_hex(6)),
                    playbook: &pb.name,
                    incident_id: Some(incident_id),
                    scope: incident_id.clone(),
                    trigger: format!("incident:{}", change.as_str()),
                    alert: Some(alert),
                    target_host: Some(&alert.host),
                    target_app: alert.app.as_deref(),
                    dry_run: pb.guardrails.dry_run,
                };
                if let Some(id) = runs::insert(tx, &new, now)? {
                    runs.push(id);
                }
            }
        }
        runs.extend(resolution_runs(tx, playbooks, &effects, now)?);
    }
    row.append(&log, &kept, now);
    for (source, stored, dups) in tally {
        metrics.events(&source, stored, dups);
    }
    Ok(Ingested {
        ack: IngestAck {
            accepted,
            duplicates,
        },
        runs,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use fincorp_api::wire::{AlertStatus, Severity};
    use proptest::prelude::*;

    use super::*;

    /// An alert with event id `ev-{n}` and fingerprint `h{host}/r{name}`.
    pub(crate) fn alert(n: usize, host: u8, name: u8, firing: bool) -> Alert {
        let fp = format!("h{host}/r{name}");
        Alert {
            event_id: format!("ev-{n}"),
            source: "hardware".into(),
            fingerprint: fp,
            status: if firing {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            name: format!("r{name}"),
            host: format!("h{host}"),
            app: None,
            severity: Severity::Warning,
            metric: String::new(),
            value: 0.0,
            threshold: 0.0,
            summary: String::new(),
            labels: Default::default(),
            starts_at_ms: 0,
            at_ms: 0,
        }
    }

    /// An engine on a fresh database in `dir` (dedup window 1 h), and a
    /// runtime to submit with.
    fn open(
        dir: &std::path::Path,
        cfg: core::Config,
        playbooks: Vec<Playbook>,
    ) -> (Engine, tokio::runtime::Runtime) {
        open_capped(dir, cfg, playbooks, 1_000_000)
    }

    /// [`open`] with at most `max_ids` ids in the dedup set.
    fn open_capped(
        dir: &std::path::Path,
        cfg: core::Config,
        playbooks: Vec<Playbook>,
        max_ids: usize,
    ) -> (Engine, tokio::runtime::Runtime) {
        let engine = Engine::open(
            &dir.join("c.db"),
            cfg,
            Arc::new(playbooks),
            3_600_000,
            max_ids,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (engine, rt)
    }

    #[test]
    fn ids_forgotten_by_the_dedup_cap_are_counted_and_their_resends_absorbed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rt) = open_capped(dir.path(), core::Config::with_defaults(), vec![], 2);
        let submit = |alerts: Vec<Alert>, now| {
            rt.block_on(engine.submit(alerts, now, Duration::from_secs(5)))
                .unwrap()
        };
        let first = submit((0..3).map(|n| alert(n, 1, 1, true)).collect(), 1_000);
        assert_eq!(first.ack.accepted, 3);
        engine.tick(2_000).unwrap();
        let text = engine.metrics.render(0, 0);
        assert!(
            text.contains("fincorp_correlator_dedup_evicted_total 1"),
            "{text}"
        );
        // ev-0 was forgotten early: its resend is accepted again, and the
        // core absorbs it (a repeat of a firing alert changes no incident).
        let before = dump(&engine);
        let again = submit(vec![alert(0, 1, 1, true)], 3_000);
        assert_eq!((again.ack.accepted, again.ack.duplicates), (1, 0));
        let after = dump(&engine);
        assert_eq!(
            before[..3],
            after[..3],
            "incidents, alerts and timeline unchanged"
        );
    }

    /// Everything the store holds about incidents, in a comparable form.
    fn dump(engine: &Engine) -> Vec<String> {
        let conn = lock(&engine.reader);
        let mut out = Vec::new();
        for (table, sql) in [
            (
                "incidents",
                "SELECT id || state || severity || last_alert_at_ms FROM incidents ORDER BY id",
            ),
            (
                "alerts",
                "SELECT incident_id || fingerprint || starts_at_ms || status FROM alerts ORDER BY 1",
            ),
            (
                "timeline",
                "SELECT incident_id || kind || message FROM timeline ORDER BY id",
            ),
            ("events", "SELECT id FROM events ORDER BY id"),
        ] {
            let mut stmt = conn.prepare(sql).unwrap();
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            out.push(format!("{table}: {rows:?}"));
        }
        out
    }

    /// A playbook from YAML, written to `dir`.
    fn playbook(dir: &std::path::Path, name: &str, trigger: &str) -> Playbook {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "version: 1\nname: {name}\ntrigger:\n{trigger}\nsteps:\n  - id: tell\n    action: notify\n    with:\n      url: http://127.0.0.1:9/hook\n"
            ),
        )
        .unwrap();
        fincorp_playbooks::load_file(&path)
            .unwrap_or_else(|d| panic!("{d}"))
            .playbook
    }

    fn runs_of(engine: &Engine, incident: &str) -> Vec<(String, String, Option<String>)> {
        engine
            .read(|c| runs::of_incident(c, incident))
            .unwrap()
            .into_iter()
            .map(|r| (r.playbook, r.trigger, r.target_host))
            .collect()
    }

    #[test]
    fn a_resolved_incident_triggers_an_on_resolved_playbook_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let playbooks = vec![
            playbook(
                dir.path(),
                "on-resolved",
                "  alerts: [r1]\n  on: [resolved]",
            ),
            playbook(dir.path(), "on-opened", "  alerts: [r1]\n  on: [opened]"),
            // Its filter matches none of the incident's alerts.
            playbook(
                dir.path(),
                "other-app",
                "  apps: [FINCORP-APP-CRM]\n  on: [resolved]",
            ),
        ];
        let cfg = core::Config {
            resolve_after_ms: 1_000,
            ..core::Config::with_defaults()
        };
        let (engine, rt) = open(dir.path(), cfg, playbooks);
        let submit = |alerts: Vec<Alert>, now| {
            rt.block_on(engine.submit(alerts, now, Duration::from_secs(5)))
                .unwrap()
        };

        // Opening it starts only the `opened` playbook.
        let opened = submit(vec![alert(1, 1, 1, true)], 1_000);
        assert_eq!(opened.runs.len(), 1);
        let incident = engine.list_incidents(&IncidentFilter::default()).unwrap()[0]
            .id
            .clone();
        // Its alert resolving does not resolve it yet (resolve_after).
        let quiet = submit(vec![alert(2, 1, 1, false)], 2_000);
        assert!(quiet.runs.is_empty());
        let early = engine.tick(2_500).unwrap();
        assert!(early.resolved.is_empty() && early.runs.is_empty());

        // The tick that resolves it decides one run of `on-resolved`.
        let ticked = engine.tick(3_100).unwrap();
        assert_eq!(ticked.resolved, std::slice::from_ref(&incident));
        assert_eq!(ticked.runs.len(), 1, "{ticked:?}");
        // Later ticks decide nothing more.
        for now in [3_600, 10_000] {
            assert!(engine.tick(now).unwrap().runs.is_empty());
        }
        let runs = runs_of(&engine, &incident);
        assert_eq!(
            runs,
            [
                (
                    "on-opened".into(),
                    "incident:opened".into(),
                    Some("h1".into())
                ),
                (
                    "on-resolved".into(),
                    "incident:resolved".into(),
                    Some("h1".into())
                ),
            ]
        );
        let run = engine
            .read(|c| runs::get(c, &ticked.runs[0]))
            .unwrap()
            .unwrap();
        assert_eq!(run.alert.as_ref().map(|a| a.name.as_str()), Some("r1"));
        assert_eq!(run.scope, incident);

        // An operator resolving another incident decides its run too, once.
        submit(vec![alert(3, 2, 1, true)], 20_000);
        let second = engine
            .list_incidents(&IncidentFilter::default())
            .unwrap()
            .into_iter()
            .find(|i| i.id != incident)
            .unwrap()
            .id;
        let decided = engine
            .resolve_or_close(&second, false, "alice", "fixed by hand", 20_500)
            .unwrap();
        assert_eq!(decided.len(), 1);
        assert!(engine.tick(30_000).unwrap().runs.is_empty());
        assert_eq!(
            runs_of(&engine, &second)
                .iter()
                .filter(|r| r.1 == "incident:resolved")
                .count(),
            1
        );
    }

    #[test]
    fn an_ingest_answer_waits_for_the_wal_flush_and_other_writes_stay_fully_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let (engine, rt) = open(dir.path(), core::Config::with_defaults(), vec![]);
        let submit = |n: usize, now| {
            rt.block_on(engine.submit(vec![alert(n, 1, 1, true)], now, Duration::from_secs(5)))
        };

        let first = submit(1, 1_000).unwrap();
        assert_eq!(first.ack.accepted, 1);
        // Ingest commits with NORMAL and flushes itself; what follows on the
        // writer's connection (operators' actions, ticks) is FULL again.
        let mode: i64 = lock(&engine.writer)
            .store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "FULL");

        // When the flush cannot happen, the request is refused, not
        // acknowledged: the answer waits for the flush.
        std::fs::remove_file(db.with_extension("db-wal")).unwrap();
        let refused = submit(2, 2_000).unwrap_err().to_string();
        assert!(
            refused.contains("flushing the WAL to disk failed"),
            "{refused}"
        );
    }

    #[test]
    fn a_request_that_finds_the_queue_full_waits_then_is_refused_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rt) = open(dir.path(), core::Config::with_defaults(), vec![]);
        // The writer takes one group, then blocks on the lock held here.
        let held = lock(&engine.writer);
        for n in 0..QUEUE_CAPACITY + MAX_GROUP + 1 {
            // Polled once: the job is queued, its answer is not awaited.
            let submit = engine.submit(vec![alert(n, 1, 1, true)], 1_000, Duration::from_secs(5));
            let queued = rt.block_on(async { tokio::time::timeout(Duration::ZERO, submit).await });
            assert!(
                queued.is_err(),
                "nothing can be answered while the writer waits"
            );
        }
        assert_eq!(engine.queue_depth(), QUEUE_CAPACITY);
        let asked = Instant::now();
        let busy = rt.block_on(engine.submit(
            vec![alert(usize::MAX, 1, 1, true)],
            1_000,
            Duration::from_millis(50),
        ));
        assert!(matches!(busy, Err(SubmitError::Busy)), "{busy:?}");
        assert!(
            asked.elapsed() >= Duration::from_millis(50),
            "it waited for room first"
        );
        drop(held);
        // Once the writer moves on, requests are answered again.
        let ack = rt
            .block_on(engine.submit(vec![alert(0, 2, 2, true)], 2_000, Duration::from_secs(30)))
            .unwrap()
            .ack;
        assert_eq!(ack.duplicates, 1, "ev-0 was stored from the queue");
    }

    #[test]
    fn a_request_mixing_resends_and_new_events_logs_each_new_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, rt) = open(dir.path(), core::Config::with_defaults(), vec![]);
        let submit = |ns: &[usize], now| {
            let alerts = ns.iter().map(|n| alert(*n, 1, *n as u8, true)).collect();
            rt.block_on(engine.submit(alerts, now, Duration::from_secs(5)))
                .unwrap()
                .ack
        };
        assert_eq!(submit(&[0, 1], 1_000).accepted, 2);
        let mixed = submit(&[1, 2, 0, 3], 2_000);
        assert_eq!((mixed.accepted, mixed.duplicates), (2, 2));
        let rows = store::logged_events(&lock(&engine.writer).store.conn);
        let ids: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.received_at_ms))
            .collect();
        assert_eq!(
            ids,
            [
                ("ev-0", 1_000),
                ("ev-1", 1_000),
                ("ev-2", 2_000),
                ("ev-3", 2_000)
            ]
        );
        for (n, r) in rows.iter().enumerate() {
            assert_eq!(r.fingerprint, alert(n, 1, n as u8, true).fingerprint);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn replaying_a_stream_changes_nothing(stream in prop::collection::vec((0u8..3, 0u8..3, any::<bool>()), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (engine, rt) = open(dir.path(), core::Config::with_defaults(), vec![]);
            let alerts: Vec<Alert> = stream.iter().enumerate().map(|(n, (h, r, f))| alert(n, *h, *r, *f)).collect();
            let first = rt.block_on(engine.submit(alerts.clone(), 1_000, Duration::from_secs(5))).unwrap();
            prop_assert_eq!(first.ack.accepted as usize, alerts.len());
            let before = dump(&engine);
            let again = rt.block_on(engine.submit(alerts.clone(), 2_000, Duration::from_secs(5))).unwrap();
            prop_assert_eq!(again.ack.accepted, 0);
            prop_assert_eq!(again.ack.duplicates as usize, alerts.len());
            prop_assert_eq!(dump(&engine), before);
        }
    }
}
