//! Schema migrations, applied in order and tracked in `PRAGMA user_version`.

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema one version up. Never edit a released entry;
/// append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the walking skeleton.
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        received_at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        host TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        payload TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        host TEXT NOT NULL,
        app TEXT,
        title TEXT NOT NULL,
        opened_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        resolved_at_ms INTEGER,
        last_alert_at_ms INTEGER NOT NULL,
        quiet_since_ms INTEGER
    );
    CREATE INDEX incidents_state ON incidents(state);
    CREATE TABLE alerts (
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        fingerprint TEXT NOT NULL,
        starts_at_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        app TEXT,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        metric TEXT NOT NULL,
        value REAL NOT NULL,
        threshold REAL NOT NULL,
        summary TEXT NOT NULL,
        ends_at_ms INTEGER,
        received_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (fingerprint, starts_at_ms)
    );
    CREATE INDEX alerts_incident ON alerts(incident_id);
    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX timeline_incident ON timeline(incident_id, id);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        incident_id TEXT REFERENCES incidents(id),
        playbook TEXT NOT NULL,
        state TEXT NOT NULL,
        trigger_alert TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        UNIQUE (incident_id, playbook)
    );
    CREATE TABLE run_steps (
        run_id TEXT NOT NULL REFERENCES runs(id),
        idx INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        action TEXT NOT NULL,
        state TEXT NOT NULL,
        params TEXT,
        result TEXT,
        error TEXT,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        PRIMARY KEY (run_id, idx)
    );
    CREATE TABLE tickets (
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        system TEXT NOT NULL,
        sys_id TEXT NOT NULL,
        number TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (system, sys_id)
    );
    ",
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
