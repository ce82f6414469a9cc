//! SQLite storage (WAL): events, incidents, alert episodes, timelines,
//! silences, the audit log, playbook runs and tickets.
//!
//! Every accepted event and every effect of the correlation core is written
//! inside the transaction of its request (or of the group of requests
//! committed together), committed before the request is acknowledged, so a
//! 2xx means durable. The core's in-memory state is rebuilt from these tables
//! at start ([`Store::load_core`]).

use std::collections::BTreeMap;
use std::path::Path;

use fincorp_api::UnixMs;
use fincorp_api::rest::{
    IncidentAlert, IncidentDetail, IncidentState, IncidentSummary, SilenceView, TicketView,
    TimelineEntry,
};
use fincorp_api::wire::{AlertStatus, Severity};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::{Value, json};
use thiserror::Error;

use crate::core::{self, Effect, Incident, Status};

pub mod audit;
pub mod dedup;
pub mod runs;
pub(crate) mod schema;
pub mod silences;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database holds an unreadable value in {table}.{column}: {value:?}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    #[error("database schema version {found} is newer than this build understands ({known})")]
    TooNew { found: i64, known: i64 },
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub state: Option<IncidentState>,
    pub app: Option<String>,
    pub host: Option<String>,
    /// At least this severity.
    pub severity: Option<Severity>,
    /// Updated at or after.
    pub since_ms: Option<UnixMs>,
    /// Opened before.
    pub until_ms: Option<UnixMs>,
    /// Only incidents with a smaller `seq` (the paging cursor).
    pub before: Option<u64>,
    pub limit: u32,
}

/// Opens a connection with the settings every connection uses.
pub fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed transaction survives power loss, not only SIGKILL.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// The writer: one connection, owned by the engine.
pub struct Store {
    pub(crate) conn: Connection,
}

fn parse_col<T: std::str::FromStr>(
    value: &str,
    table: &'static str,
    column: &'static str,
) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        column,
        value: value.to_owned(),
    })
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).expect("labels serialise")
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = connect(path)?;
        schema::migrate(&mut conn)?;
        // Room for every statement the writer keeps prepared (about 40).
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn })
    }

    /// The incident id prefix of this database, created once.
    pub fn id_prefix(&self) -> Result<String, StoreError> {
        let existing: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'id_prefix'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(p) = existing {
            return Ok(p);
        }
        let prefix = format!("fc-{}", &fincorp_api::signing::random_hex(2));
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('id_prefix', ?1)",
            [&prefix],
        )?;
        Ok(prefix)
    }

    /// Rebuilds the correlation core: open and reopenable incidents with their
    /// firing alerts, silenced firing alerts, and silences.
    pub fn load_core(&self, cfg: core::Config) -> Result<core::State, StoreError> {
        let prefix = self.id_prefix()?;
        let next_seq: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM incidents", [], |r| {
                    r.get(0)
                })?;
        let next_seq = u64::try_from(next_seq).unwrap_or(1);
        let mut state = core::State::new(cfg, prefix, next_seq);
        type IncidentRow = (
            String,
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let mut stmt = self.conn.prepare(
            "SELECT id, group_key, state, severity, window_start_ms, last_alert_at_ms, quiet_since_ms, resolved_at_ms
             FROM incidents WHERE state IN ('open', 'acknowledged', 'remediating')
                OR (state = 'resolved' AND closed_at_ms IS NULL)",
        )?;
        let rows: Vec<IncidentRow> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut firing_stmt = self
            .conn
            .prepare("SELECT fingerprint, starts_at_ms FROM alerts WHERE incident_id = ?1 AND status = 'firing'")?;
        let mut apps_stmt = self.conn.prepare(
            "SELECT DISTINCT app FROM alerts WHERE incident_id = ?1 AND app IS NOT NULL",
        )?;
        for (
            id,
            key,
            st,
            severity,
            window_start_ms,
            last_alert_at_ms,
            quiet_since_ms,
            resolved_at_ms,
        ) in rows
        {
            let firing: Vec<(String, i64)> = firing_stmt
                .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let apps: foldhash::HashSet<String> = apps_stmt
                .query_map([&id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let status = if st == "resolved" {
                Status::Resolved {
                    at_ms: resolved_at_ms.unwrap_or(last_alert_at_ms),
                }
            } else {
                Status::Open
            };
            let incident = Incident {
                id,
                key,
                status,
                severity: parse_col(&severity, "incidents", "severity")?,
                window_start_ms,
                last_alert_at_ms,
                firing: Default::default(),
                held: Default::default(),
                quiet_since_ms,
                apps,
            };
            state.restore(incident, &firing);
        }
        let mut stmt = self.conn.prepare(
            "SELECT fingerprint, starts_at_ms FROM silenced_alerts WHERE status = 'firing'",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (fp, starts) = row?;
            state.restore_silenced(fp, starts);
        }
        for s in silences::load_all(&self.conn)? {
            state.add_silence(s);
        }
        Ok(state)
    }
}

/// The events of one request as the event log keeps them (schema migration
/// 6): their dedup keys, 16 bytes each, and a JSON array of
/// `[id, source, fingerprint, status]`. Prepared on the HTTP worker, so the
/// single writer only checks the keys and, when none is a resend (the usual
/// case), copies the prepared entries whole into its group's row.
#[derive(Debug, Default)]
pub struct LoggedRequest {
    keys: Vec<u8>,
    events: String,
    /// Where each event's entry ends in `events`.
    ends: Vec<usize>,
}

impl LoggedRequest {
    pub fn of(alerts: &[core::Alert]) -> Self {
        let mut keys = Vec::with_capacity(16 * alerts.len());
        let mut events = Vec::with_capacity(2 + 100 * alerts.len());
        let mut ends = Vec::with_capacity(alerts.len());
        events.push(b'[');
        for (i, alert) in alerts.iter().enumerate() {
            if i > 0 {
                events.push(b',');
            }
            keys.extend_from_slice(&schema::event_key(&alert.event_id));
            let entry = (
                &alert.event_id,
                &alert.source,
                &alert.fingerprint,
                alert.status.as_str(),
            );
            serde_json::to_writer(&mut events, &entry)
                .expect("a tuple of strings always serialises");
            ends.push(events.len());
        }
        events.push(b']');
        Self {
            keys,
            events: String::from_utf8(events).expect("serde_json writes UTF-8"),
            ends,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The dedup key of event `i`.
    pub fn key(&self, i: usize) -> [u8; 16] {
        let mut key = [0u8; 16];
        key.copy_from_slice(self.key_bytes(i));
        key
    }

    fn key_bytes(&self, i: usize) -> &[u8] {
        &self.keys[16 * i..16 * (i + 1)]
    }

    fn entry(&self, i: usize) -> &str {
        let start = if i == 0 { 1 } else { self.ends[i - 1] + 1 };
        &self.events[start..self.ends[i]]
    }

    /// The request's entries, without the array's brackets.
    fn entries(&self) -> &str {
        &self.events[1..self.events.len() - 1]
    }
}

/// The event log row of one commit group: the events of every request in
/// it that dedup let through, in order, written with one insert (SQLite's
/// cost is per row, the group's rows are written together anyway). The
/// view `events` shows one row per event.
#[derive(Debug, Default)]
pub struct EventLogRow {
    keys: Vec<u8>,
    events: String,
    /// When the earliest request it logs was received.
    received_at_ms: Option<UnixMs>,
}

impl EventLogRow {
    /// Adds the events of `log` marked in `kept`, received at `at_ms`.
    pub fn append(&mut self, log: &LoggedRequest, kept: &[bool], at_ms: UnixMs) {
        debug_assert_eq!(kept.len(), log.len());
        if !kept.contains(&true) {
            return;
        }
        self.received_at_ms = Some(self.received_at_ms.map_or(at_ms, |t| t.min(at_ms)));
        let mut push = |entry: &str| {
            self.events
                .push(if self.events.is_empty() { '[' } else { ',' });
            self.events.push_str(entry);
        };
        if !kept.contains(&false) {
            self.keys.extend_from_slice(&log.keys);
            push(log.entries());
            return;
        }
        for i in (0..log.len()).filter(|i| kept[*i]) {
            self.keys.extend_from_slice(log.key_bytes(i));
            push(log.entry(i));
        }
    }

    /// Writes the row; nothing when no event was added.
    pub fn write(mut self, tx: &Connection) -> Result<(), StoreError> {
        let Some(received_at_ms) = self.received_at_ms else {
            return Ok(());
        };
        self.events.push(']');
        tx.prepare_cached(
            "INSERT INTO event_log(received_at_ms, keys, events) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![received_at_ms, self.keys, self.events])?;
        Ok(())
    }
}

/// One row of the `events` view (tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct LoggedRow {
    pub id: String,
    pub received_at_ms: UnixMs,
    pub source: String,
    pub fingerprint: String,
    pub status: String,
}

/// Every logged event in order (tests); each key is checked against its id.
#[cfg(test)]
pub(crate) fn logged_events(conn: &Connection) -> Vec<LoggedRow> {
    let mut stmt = conn
        .prepare("SELECT key, id, received_at_ms, source, fingerprint, status FROM events")
        .unwrap();
    stmt.query_map([], |r| {
        let (key, id): (Vec<u8>, String) = (r.get(0)?, r.get(1)?);
        assert_eq!(key, schema::event_key(&id), "the key of {id}");
        Ok(LoggedRow {
            id,
            received_at_ms: r.get(2)?,
            source: r.get(3)?,
            fingerprint: r.get(4)?,
            status: r.get(5)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Deletes logged requests older than the dedup window (their events can no
/// longer be recognised as resends anyway). Returns how many.
pub fn prune_events(conn: &Connection, before_ms: UnixMs) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM event_log WHERE received_at_ms < ?1",
        [before_ms],
    )?)
}

/// Appends a timeline entry.
pub fn timeline(
    tx: &Connection,
    incident_id: &str,
    at_ms: UnixMs,
    kind: &str,
    message: &str,
    data: &Value,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO timeline(incident_id, at_ms, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![incident_id, at_ms, kind, message, data.to_string()])?;
    Ok(())
}

fn alert_name(
    tx: &Connection,
    fingerprint: &str,
    starts_at_ms: UnixMs,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT name FROM alerts WHERE fingerprint = ?1 AND starts_at_ms = ?2")?
        .query_row(params![fingerprint, starts_at_ms], |r| r.get(0))
        .optional()?)
}

/// The alerts of an incident in the core's form, newest first: what a
/// trigger on the incident's resolution is matched against. (`event_id`
/// names the alert episode; the events themselves are not kept.)
pub fn incident_alerts(
    conn: &Connection,
    incident_id: &str,
) -> Result<Vec<core::Alert>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT fingerprint, starts_at_ms, source, name, host, app, severity, status, metric, value,
                threshold, summary, labels, updated_at_ms
         FROM alerts WHERE incident_id = ?1 ORDER BY starts_at_ms DESC, received_at_ms DESC",
    )?;
    let rows: Vec<(core::Alert, String, String, String)> = stmt
        .query_map([incident_id], |r| {
            let fingerprint: String = r.get(0)?;
            let starts_at_ms: UnixMs = r.get(1)?;
            Ok((
                core::Alert {
                    event_id: format!("{fingerprint}@{starts_at_ms}"),
                    source: r.get(2)?,
                    fingerprint,
                    status: AlertStatus::Firing,
                    name: r.get(3)?,
                    host: r.get(4)?,
                    app: r.get(5)?,
                    severity: Severity::Info,
                    metric: r.get(8)?,
                    value: r.get(9)?,
                    threshold: r.get(10)?,
                    summary: r.get(11)?,
                    labels: BTreeMap::new(),
                    starts_at_ms,
                    at_ms: r.get(13)?,
                },
                r.get(6)?,
                r.get(7)?,
                r.get(12)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(mut a, severity, status, labels)| {
            a.severity = parse_col(&severity, "alerts", "severity")?;
            a.status = match status.as_str() {
                "firing" => AlertStatus::Firing,
                "resolved" => AlertStatus::Resolved,
                _ => {
                    return Err(StoreError::Corrupt {
                        table: "alerts",
                        column: "status",
                        value: status,
                    });
                }
            };
            a.labels = serde_json::from_str(&labels).map_err(|_| StoreError::Corrupt {
                table: "alerts",
                column: "labels",
                value: labels,
            })?;
            Ok(a)
        })
        .collect()
}

/// Writes one effect of the correlation core.
pub fn apply(tx: &Transaction<'_>, effect: &Effect, now: UnixMs) -> Result<(), StoreError> {
    match effect {
        Effect::IncidentOpened {
            incident_id,
            seq,
            key,
            host,
            app,
            severity,
            title,
            at_ms,
            reason,
        } => {
            tx.prepare_cached(
                "INSERT INTO incidents(id, seq, state, severity, host, app, title, opened_at_ms, updated_at_ms,
                                       last_alert_at_ms, group_key, window_start_ms)
                 VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?6, ?7, ?7, ?7, ?8, ?7)",
            )?
            .execute(params![incident_id, *seq as i64, severity.as_str(), host, app, title, at_ms, key])?;
            timeline(
                tx,
                incident_id,
                *at_ms,
                "opened",
                &format!("incident opened: {}", reason.detail),
                &json!(reason),
            )?;
        }
        Effect::AlertAttached {
            incident_id,
            alert,
            reason,
        } => {
            tx.prepare_cached(
                "INSERT INTO alerts(incident_id, fingerprint, starts_at_ms, source, name, host, app, severity, status,
                                    metric, value, threshold, summary, received_at_ms, updated_at_ms, labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'firing', ?9, ?10, ?11, ?12, ?13, ?13, ?14)
                 ON CONFLICT(fingerprint, starts_at_ms) DO UPDATE SET status = 'firing', ends_at_ms = NULL,
                     incident_id = excluded.incident_id, value = excluded.value, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![
                incident_id,
                alert.fingerprint,
                alert.starts_at_ms,
                alert.source,
                alert.name,
                alert.host,
                alert.app,
                alert.severity.as_str(),
                alert.metric,
                alert.value,
                alert.threshold,
                alert.summary,
                now,
                labels_json(&alert.labels)
            ])?;
            tx.prepare_cached(
                "UPDATE incidents SET last_alert_at_ms = ?2, quiet_since_ms = NULL, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![incident_id, now])?;
            timeline(
                tx,
                incident_id,
                now,
                "alert_joined",
                &format!(
                    "{} firing [{}]: {} ({})",
                    alert.name, alert.source, alert.summary, reason.detail
                ),
                &json!({
                    "fingerprint": alert.fingerprint,
                    "source": alert.source,
                    "reason": reason,
                    "summary": alert.summary,
                    "labels": alert.labels,
                }),
            )?;
        }
        // A repeat of a firing alert is not a transition: its event is stored
        // (dedup, record) but the alert's row is left as it was.
        Effect::AlertRefreshed { .. } => {}
        Effect::AlertSilenced { alert, silence_id } => {
            tx.prepare_cached(
                "INSERT INTO silenced_alerts(fingerprint, starts_at_ms, silence_id, source, name, host, app, severity,
                                             status, summary, labels, value, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'firing', ?9, ?10, ?11, ?12)
                 ON CONFLICT(fingerprint, starts_at_ms) DO UPDATE SET status = 'firing', ends_at_ms = NULL",
            )?
            .execute(params![
                alert.fingerprint,
                alert.starts_at_ms,
                silence_id,
                alert.source,
                alert.name,
                alert.host,
                alert.app,
                alert.severity.as_str(),
                alert.summary,
                labels_json(&alert.labels),
                alert.value,
                now
            ])?;
        }
        Effect::AlertResolved {
            incident_id: None,
            fingerprint,
            starts_at_ms,
            at_ms,
            value,
        } => {
            tx.prepare_cached(
                "UPDATE silenced_alerts SET status = 'resolved', ends_at_ms = ?3, value = ?4
                 WHERE fingerprint = ?1 AND starts_at_ms = ?2",
            )?
            .execute(params![fingerprint, starts_at_ms, at_ms, value])?;
        }
        Effect::AlertResolved {
            incident_id: Some(incident_id),
            fingerprint,
            starts_at_ms,
            at_ms,
            value,
        } => {
            tx.prepare_cached(
                "UPDATE alerts SET status = 'resolved', ends_at_ms = ?3, value = ?4, updated_at_ms = ?5
                 WHERE fingerprint = ?1 AND starts_at_ms = ?2",
            )?
            .execute(params![fingerprint, starts_at_ms, at_ms, value, now])?;
            let name = alert_name(tx, fingerprint, *starts_at_ms)?;
            let still_firing: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM alerts WHERE incident_id = ?1 AND status = 'firing'",
                )?
                .query_row([incident_id], |r| r.get(0))?;
            if still_firing == 0 {
                tx.prepare_cached(
                    "UPDATE incidents SET quiet_since_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
                )?
                .execute(params![incident_id, now])?;
            }
            timeline(
                tx,
                incident_id,
                now,
                "alert_resolved",
                &format!(
                    "{} resolved ({still_firing} alert(s) still firing)",
                    name.as_deref().unwrap_or(fingerprint)
                ),
                &json!({"fingerprint": fingerprint, "value": value}),
            )?;
        }
        Effect::SeverityRaised {
            incident_id,
            severity,
            at_ms,
        } => {
            tx.prepare_cached(
                "UPDATE incidents SET severity = ?2, updated_at_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![incident_id, severity.as_str(), at_ms])?;
            timeline(
                tx,
                incident_id,
                *at_ms,
                "severity",
                &format!("severity raised to {severity}"),
                &json!({}),
            )?;
        }
        Effect::RootCause {
            incident_id,
            app,
            at_ms,
            reason,
        } => {
            tx.prepare_cached(
                "UPDATE incidents SET root_app = ?2, updated_at_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![incident_id, app, at_ms])?;
            timeline(
                tx,
                incident_id,
                *at_ms,
                "root_cause",
                &format!("root cause: {app} ({})", reason.detail),
                &json!(reason),
            )?;
        }
        Effect::IncidentResolved {
            incident_id,
            at_ms,
            quiet_ms,
        } => {
            tx.prepare_cached(
                "UPDATE incidents SET state = 'resolved', resolved_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![incident_id, at_ms])?;
            if let Some(quiet_ms) = quiet_ms {
                timeline(
                    tx,
                    incident_id,
                    *at_ms,
                    "resolved",
                    &format!("resolved: all alerts resolved and quiet for {quiet_ms} ms"),
                    &json!({"quiet_ms": quiet_ms}),
                )?;
            }
        }
        Effect::IncidentReopened {
            incident_id,
            at_ms,
            reason,
        } => {
            tx.prepare_cached(
                "UPDATE incidents SET state = 'open', resolved_at_ms = NULL, window_start_ms = ?2,
                     reopened = reopened + 1, updated_at_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![incident_id, at_ms])?;
            timeline(
                tx,
                incident_id,
                *at_ms,
                "reopened",
                &reason.detail,
                &json!(reason),
            )?;
        }
        Effect::IncidentClosed {
            incident_id,
            at_ms,
            auto,
        } => {
            tx.prepare_cached("UPDATE incidents SET state = 'closed', closed_at_ms = ?2, updated_at_ms = ?2 WHERE id = ?1")?
                .execute(params![incident_id, at_ms])?;
            if *auto {
                timeline(
                    tx,
                    incident_id,
                    *at_ms,
                    "closed",
                    "closed: resolved for longer than close_after",
                    &json!({}),
                )?;
            }
        }
        Effect::AlertFlapping {
            incident_id,
            fingerprint,
            name,
            transitions,
            at_ms,
        } => {
            tx.prepare_cached("UPDATE alerts SET flapping = 1 WHERE fingerprint = ?1")?
                .execute([fingerprint])?;
            if let Some(id) = incident_id {
                timeline(
                    tx,
                    id,
                    *at_ms,
                    "flapping",
                    &format!(
                        "{name} is flapping ({transitions} changes): the incident stays open until it settles"
                    ),
                    &json!({"fingerprint": fingerprint, "transitions": transitions}),
                )?;
            }
        }
        Effect::AlertSettled {
            incident_id,
            fingerprint,
            at_ms,
        } => {
            tx.prepare_cached("UPDATE alerts SET flapping = 0 WHERE fingerprint = ?1")?
                .execute([fingerprint])?;
            if let Some(id) = incident_id {
                timeline(
                    tx,
                    id,
                    *at_ms,
                    "settled",
                    "a flapping alert settled",
                    &json!({"fingerprint": fingerprint}),
                )?;
            }
        }
        Effect::Ignored { .. } => {}
    }
    Ok(())
}

/// An operator acknowledges an open incident.
pub fn acknowledge(
    tx: &Transaction<'_>,
    id: &str,
    by: &str,
    reason: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE incidents SET state = CASE WHEN state = 'open' THEN 'acknowledged' ELSE state END,
             acknowledged_at_ms = ?2, acknowledged_by = ?3, updated_at_ms = ?2 WHERE id = ?1",
        params![id, now, by],
    )?;
    timeline(
        tx,
        id,
        now,
        "acknowledged",
        &format!("acknowledged by {by}: {reason}"),
        &json!({"by": by, "reason": reason}),
    )
}

const SUMMARY_COLUMNS: &str = "i.id, i.state, i.severity, i.host, i.app, i.title, i.opened_at_ms, i.updated_at_ms,
     i.resolved_at_ms, (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id), i.seq, i.group_key, i.root_app,
     i.acknowledged_by, i.closed_at_ms, i.reopened";

fn summary(r: &Row<'_>) -> rusqlite::Result<(IncidentSummary, String, String)> {
    let state: String = r.get(1)?;
    let severity: String = r.get(2)?;
    let seq: i64 = r.get(10)?;
    Ok((
        IncidentSummary {
            id: r.get(0)?,
            seq: u64::try_from(seq).unwrap_or(0),
            state: IncidentState::Open,
            severity: Severity::Info,
            host: r.get(3)?,
            app: r.get(4)?,
            title: r.get(5)?,
            opened_at_ms: r.get(6)?,
            updated_at_ms: r.get(7)?,
            resolved_at_ms: r.get(8)?,
            alert_count: r.get(9)?,
            group_key: r.get(11)?,
            root_app: r.get(12)?,
            acknowledged_by: r.get(13)?,
            closed_at_ms: r.get(14)?,
            reopened: r.get(15)?,
        },
        state,
        severity,
    ))
}

fn finish_summary(
    (mut s, state, severity): (IncidentSummary, String, String),
) -> Result<IncidentSummary, StoreError> {
    s.state = parse_col(&state, "incidents", "state")?;
    s.severity = parse_col(&severity, "incidents", "severity")?;
    Ok(s)
}

/// Lists incidents, newest first.
pub fn list_incidents(
    conn: &Connection,
    f: &IncidentFilter,
) -> Result<Vec<IncidentSummary>, StoreError> {
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
        args.push(v);
        sql.push_str(&clause.replace("?N", &format!("?{}", args.len())));
    };
    if let Some(state) = f.state {
        arg(&mut sql, " AND i.state = ?N", Box::new(state.as_str()));
    }
    if let Some(app) = &f.app {
        arg(
            &mut sql,
            " AND (i.app = ?N OR EXISTS (SELECT 1 FROM alerts a WHERE a.incident_id = i.id AND a.app = ?N))",
            Box::new(app.clone()),
        );
    }
    if let Some(host) = &f.host {
        arg(&mut sql, " AND i.host = ?N", Box::new(host.clone()));
    }
    if let Some(sev) = f.severity {
        let at_least: Vec<&str> = [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .filter(|s| *s >= sev)
            .map(Severity::as_str)
            .collect();
        sql.push_str(&format!(" AND i.severity IN ('{}')", at_least.join("','")));
    }
    if let Some(since) = f.since_ms {
        arg(&mut sql, " AND i.updated_at_ms >= ?N", Box::new(since));
    }
    if let Some(until) = f.until_ms {
        arg(&mut sql, " AND i.opened_at_ms < ?N", Box::new(until));
    }
    if let Some(before) = f.before {
        arg(
            &mut sql,
            " AND i.seq < ?N",
            Box::new(i64::try_from(before).unwrap_or(i64::MAX)),
        );
    }
    sql.push_str(&format!(
        " ORDER BY i.seq DESC LIMIT {}",
        f.limit.clamp(1, 1000)
    ));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), summary)?;
    rows.map(|r| finish_summary(r?)).collect()
}

/// Everything about one incident, or `None`.
pub fn incident_detail(conn: &Connection, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
    let Some(row) = conn
        .query_row(
            &format!("SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE i.id = ?1"),
            [id],
            summary,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let incident = finish_summary(row)?;

    let mut stmt = conn.prepare(
        "SELECT fingerprint, source, name, host, app, severity, status, metric, value, threshold, summary,
                starts_at_ms, ends_at_ms, received_at_ms, labels, flapping
         FROM alerts WHERE incident_id = ?1 ORDER BY received_at_ms, fingerprint",
    )?;
    let raw_alerts: Vec<(IncidentAlert, String, String)> = stmt
        .query_map([id], |r| {
            let labels: String = r.get(14)?;
            Ok((
                IncidentAlert {
                    fingerprint: r.get(0)?,
                    source: r.get(1)?,
                    name: r.get(2)?,
                    host: r.get(3)?,
                    app: r.get(4)?,
                    severity: Severity::Info,
                    status: AlertStatus::Firing,
                    metric: r.get(7)?,
                    value: r.get(8)?,
                    threshold: r.get(9)?,
                    summary: r.get(10)?,
                    starts_at_ms: r.get(11)?,
                    ends_at_ms: r.get(12)?,
                    received_at_ms: r.get(13)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    flapping: r.get(15)?,
                },
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut alerts = Vec::with_capacity(raw_alerts.len());
    for (mut a, severity, status) in raw_alerts {
        a.severity = parse_col(&severity, "alerts", "severity")?;
        a.status = match status.as_str() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => {
                return Err(StoreError::Corrupt {
                    table: "alerts",
                    column: "status",
                    value: other.into(),
                });
            }
        };
        alerts.push(a);
    }

    let mut stmt = conn.prepare(
        "SELECT at_ms, kind, message, data FROM timeline WHERE incident_id = ?1 ORDER BY id",
    )?;
    let timeline = stmt
        .query_map([id], |r| {
            let data: String = r.get(3)?;
            Ok(TimelineEntry {
                at_ms: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })?
        .collect::<Result<_, _>>()?;

    let runs = runs::of_incident(conn, id)?;

    let mut stmt = conn.prepare(
        "SELECT system, number, sys_id, created_at_ms FROM tickets WHERE incident_id = ?1 ORDER BY created_at_ms",
    )?;
    let tickets = stmt
        .query_map([id], |r| {
            Ok(TicketView {
                system: r.get(0)?,
                number: r.get(1)?,
                sys_id: r.get(2)?,
                created_at_ms: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;

    Ok(Some(IncidentDetail {
        incident,
        alerts,
        timeline,
        runs,
        tickets,
    }))
}

/// The silence views for the API.
pub fn list_silences(conn: &Connection, now: UnixMs) -> Result<Vec<SilenceView>, StoreError> {
    silences::list(conn, now)
}
