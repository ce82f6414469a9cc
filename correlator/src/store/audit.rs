//! The append-only audit log, hash-chained with SHA-256 (see
//! `fincorp_api::audit`). Entries are appended inside the transaction of the
//! action they record.

use fincorp_api::UnixMs;
use fincorp_api::audit::{GENESIS, hash};
use fincorp_api::rest::AuditEntry;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;

/// Appends an entry. `detail` is stored as its JSON text.
pub fn append(
    tx: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &Value,
    now: UnixMs,
) -> Result<AuditEntry, StoreError> {
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match last {
        Some((seq, h)) => (u64::try_from(seq).unwrap_or(0) + 1, h),
        None => (1, GENESIS.to_owned()),
    };
    let detail = detail.to_string();
    let h = hash(seq, now, actor, action, target, &detail, &prev_hash);
    tx.prepare_cached(
        "INSERT INTO audit(seq, at_ms, actor, action, target, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![seq as i64, now, actor, action, target, detail, prev_hash, h])?;
    Ok(AuditEntry {
        seq,
        at_ms: now,
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail,
        prev_hash,
        hash: h,
    })
}

/// Entries after `after_seq`, oldest first, at most `limit`.
pub fn list(conn: &Connection, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_ms, actor, action, target, detail, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![i64::try_from(after_seq).unwrap_or(i64::MAX), limit],
        |r| {
            let seq: i64 = r.get(0)?;
            Ok(AuditEntry {
                seq: u64::try_from(seq).unwrap_or(0),
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest entry's hash.
pub fn head(conn: &Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn appended_entries_form_a_verifiable_chain_and_tampering_shows() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        for i in 0..4 {
            append(
                &conn,
                "alice",
                "incident.ack",
                &format!("fc-{i}"),
                &json!({"reason": "on it"}),
                i,
            )
            .unwrap();
        }
        let entries = list(&conn, 0, 100).unwrap();
        assert_eq!(fincorp_api::audit::verify(&entries), Ok(4));
        assert_eq!(
            head(&conn).unwrap().as_deref(),
            Some(entries[3].hash.as_str())
        );

        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
            .unwrap();
        let tampered = list(&conn, 0, 100).unwrap();
        assert_eq!(
            fincorp_api::audit::verify(&tampered),
            Err(fincorp_api::audit::ChainError::Altered(2))
        );

        conn.execute("UPDATE audit SET actor = 'alice' WHERE seq = 2", [])
            .unwrap();
        conn.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        let deleted = list(&conn, 0, 100).unwrap();
        assert_eq!(
            fincorp_api::audit::verify(&deleted),
            Err(fincorp_api::audit::ChainError::Gap { after: 2, found: 4 })
        );
    }
}
