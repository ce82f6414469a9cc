//! Schema migrations, applied in order and tracked in `PRAGMA user_version`.

use rusqlite::{Connection, Transaction, params};

use super::StoreError;

/// One step up: plain SQL, or code for what SQL cannot do alone.
enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction<'_>) -> Result<(), StoreError>),
}

/// Each entry moves the schema one version up. Never edit a released entry;
/// append a new one.
const MIGRATIONS: &[Migration] = &[
    // 1: the walking skeleton.
    Migration::Sql(
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
    ),
    // 2: the correlator in depth: labels, lifecycle, silences, audit.
    Migration::Sql(
        "
    ALTER TABLE alerts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE alerts ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE incidents ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE incidents ADD COLUMN window_start_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE incidents ADD COLUMN root_app TEXT;
    ALTER TABLE incidents ADD COLUMN acknowledged_at_ms INTEGER;
    ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE incidents ADD COLUMN closed_at_ms INTEGER;
    ALTER TABLE incidents ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0;
    UPDATE incidents SET group_key = 'host=' || host, window_start_ms = opened_at_ms;
    CREATE INDEX incidents_host ON incidents(host);
    CREATE INDEX alerts_app ON alerts(app);
    CREATE TABLE silenced_alerts (
        fingerprint TEXT NOT NULL,
        starts_at_ms INTEGER NOT NULL,
        silence_id TEXT NOT NULL,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        app TEXT,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        summary TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL,
        received_at_ms INTEGER NOT NULL,
        ends_at_ms INTEGER,
        PRIMARY KEY (fingerprint, starts_at_ms)
    );
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at_ms INTEGER,
        ends_at_ms INTEGER,
        schedule TEXT,
        duration_ms INTEGER,
        until_ms INTEGER,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expired_at_ms INTEGER
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
        ",
    ),
    // 3: the dedup log: append-only, keyed by 16 bytes of SHA-256 of the
    // event id; raw payloads are no longer kept.
    Migration::Code(events_v3),
    // 4: the playbook engine in depth: several runs per incident (ordinal),
    // durable cursors for resuming, guardrails (mutations for causal
    // attribution, breakers, approvals, the kill switch).
    Migration::Sql(
        "
    CREATE TABLE runs_v4 (
        id TEXT PRIMARY KEY,
        incident_id TEXT REFERENCES incidents(id),
        playbook TEXT NOT NULL,
        ordinal INTEGER NOT NULL DEFAULT 1,
        scope TEXT NOT NULL,
        state TEXT NOT NULL,
        trigger TEXT NOT NULL DEFAULT '',
        trigger_alert TEXT,
        depth INTEGER NOT NULL DEFAULT 0,
        caused_by_run TEXT,
        target_host TEXT,
        target_app TEXT,
        phase TEXT NOT NULL DEFAULT 'main',
        cursor INTEGER NOT NULL DEFAULT 0,
        mutated INTEGER NOT NULL DEFAULT 0,
        dry_run INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        created_at_ms INTEGER NOT NULL,
        admitted_at_ms INTEGER,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        UNIQUE (scope, playbook)
    );
    INSERT INTO runs_v4(id, incident_id, playbook, scope, state, trigger, trigger_alert, created_at_ms, admitted_at_ms, started_at_ms, finished_at_ms)
        SELECT id, incident_id, playbook, COALESCE(incident_id, id), state, 'incident:opened', trigger_alert, created_at_ms, started_at_ms, started_at_ms, finished_at_ms FROM runs;
    CREATE TABLE run_steps_v4 (
        run_id TEXT NOT NULL REFERENCES runs_v4(id),
        seq INTEGER NOT NULL,
        phase TEXT NOT NULL DEFAULT 'main',
        step_index INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        action TEXT NOT NULL,
        mutating INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        params TEXT,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        PRIMARY KEY (run_id, seq)
    );
    INSERT INTO run_steps_v4(run_id, seq, step_index, step_id, action, state, params, result, error, attempts, started_at_ms, finished_at_ms)
        SELECT run_id, idx, idx, step_id, action, state, params, result, error, 1, started_at_ms, finished_at_ms FROM run_steps;
    DROP TABLE run_steps;
    DROP TABLE runs;
    ALTER TABLE runs_v4 RENAME TO runs;
    ALTER TABLE run_steps_v4 RENAME TO run_steps;
    CREATE INDEX runs_incident ON runs(incident_id);
    CREATE INDEX runs_state ON runs(state);
    CREATE INDEX runs_admitted ON runs(admitted_at_ms);
    ALTER TABLE incidents ADD COLUMN caused_by_run TEXT;
    CREATE TABLE mutations (
        run_id TEXT NOT NULL,
        playbook TEXT NOT NULL,
        step_id TEXT NOT NULL,
        host TEXT NOT NULL,
        app TEXT,
        depth INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER NOT NULL
    );
    CREATE INDEX mutations_target ON mutations(host, finished_at_ms);
    CREATE TABLE breakers (
        key TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        tripped_at_ms INTEGER NOT NULL,
        run_id TEXT,
        escalation TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE approvals (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        requested_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        decided_at_ms INTEGER,
        approved INTEGER,
        decided_by TEXT,
        reason TEXT,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE automation_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
        ",
    ),
    // 5: when each breaker was last reset: its budget counts runs admitted
    // since then, so a reset gives the target a fresh budget.
    Migration::Sql(
        "
    CREATE TABLE breaker_resets (
        key TEXT PRIMARY KEY,
        reset_at_ms INTEGER NOT NULL,
        reset_by TEXT NOT NULL
    );
        ",
    ),
    // 6: the event log takes one row per ingest request instead of one per
    // event: the dedup keys side by side in one blob (16 bytes each), the
    // events as a JSON array of [id, source, fingerprint, status]. A row per
    // event cost more than everything else the ingest writer does. The view
    // `events` shows one row per event, as the table did. (The writer now
    // writes one row per commit group; the layout is the same.)
    Migration::Sql(
        "
    CREATE TABLE event_log (
        received_at_ms INTEGER NOT NULL,
        keys BLOB NOT NULL,
        events TEXT NOT NULL
    );
    INSERT INTO event_log(received_at_ms, keys, events)
        SELECT received_at_ms, key, json_array(json_array(id, source, fingerprint, status))
        FROM events ORDER BY received_at_ms, rowid;
    DROP TABLE events;
    CREATE INDEX event_log_received ON event_log(received_at_ms);
    CREATE VIEW events(key, id, received_at_ms, source, fingerprint, status) AS
        SELECT substr(l.keys, e.key * 16 + 1, 16), e.value ->> 0, l.received_at_ms,
               e.value ->> 1, e.value ->> 2, e.value ->> 3
        FROM event_log AS l, json_each(l.events) AS e;
        ",
    ),
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies migrations up to `version` (tests start from older schemas).
pub(super) fn migrate_to(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, m) in MIGRATIONS
        .iter()
        .enumerate()
        .take(version)
        .skip(found as usize)
    {
        let tx = conn.transaction()?;
        match m {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(f) => f(&tx)?,
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The dedup key of an event id: the first 16 bytes of its SHA-256.
pub fn event_key(id: &str) -> [u8; 16] {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&d.as_ref()[..16]);
    key
}

/// The events table becomes an append-only log (cheap sequential inserts);
/// uniqueness is enforced in memory over the dedup window (see `dedup`).
fn events_v3(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE events_v3 (
             key BLOB NOT NULL,
             id TEXT NOT NULL,
             received_at_ms INTEGER NOT NULL,
             source TEXT NOT NULL,
             fingerprint TEXT NOT NULL,
             status TEXT NOT NULL
         );",
    )?;
    {
        let mut read = tx.prepare("SELECT id, received_at_ms, source, fingerprint, status FROM events ORDER BY received_at_ms")?;
        let mut write = tx.prepare(
            "INSERT INTO events_v3(key, id, received_at_ms, source, fingerprint, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            write.execute(params![
                event_key(&id).as_slice(),
                id,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?
            ])?;
        }
    }
    tx.execute_batch(
        "DROP TABLE events;
         ALTER TABLE events_v3 RENAME TO events;
         CREATE INDEX events_received ON events(received_at_ms);",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_migrates_and_keeps_its_incidents() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 1).unwrap();
        conn.execute(
            "INSERT INTO incidents(id, seq, state, severity, host, title, opened_at_ms, updated_at_ms, last_alert_at_ms)
             VALUES ('fc-1', 1, 'open', 'critical', 'web01', 't', 5, 5, 5)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (key, start): (String, i64) = conn
            .query_row(
                "SELECT group_key, window_start_ms FROM incidents WHERE id = 'fc-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((key.as_str(), start), ("host=web01", 5));
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        // Running again is a no-op.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn events_keep_their_ids_through_the_dedup_log_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 2).unwrap();
        conn.execute(
            "INSERT INTO events(id, received_at_ms, source, host, fingerprint, status, payload)
             VALUES ('ev-1', 1, 'agent', 'h', 'fp', 'firing', '{}')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (key, id): (Vec<u8>, String) = conn
            .query_row("SELECT key, id FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (key.as_slice(), id.as_str()),
            (event_key("ev-1").as_slice(), "ev-1")
        );
    }

    #[test]
    fn events_keep_their_ids_keys_and_order_through_the_one_row_per_request_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 5).unwrap();
        for (id, at) in [("ev-2", 7), ("ev-1", 3), ("ev-\"3\"", 7)] {
            conn.execute(
                "INSERT INTO events(key, id, received_at_ms, source, fingerprint, status)
                 VALUES (?1, ?2, ?3, 'agent', 'fp', 'firing')",
                params![event_key(id).as_slice(), id, at],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let rows = super::super::logged_events(&conn);
        let ids: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.received_at_ms))
            .collect();
        assert_eq!(ids, [("ev-1", 3), ("ev-2", 7), ("ev-\"3\"", 7)]);
        for r in &rows {
            assert_eq!(
                (r.source.as_str(), r.fingerprint.as_str(), r.status.as_str()),
                ("agent", "fp", "firing")
            );
        }
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
