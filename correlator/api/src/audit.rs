//! The audit log's hash chain. Each entry's hash covers its fields and the
//! previous entry's hash, so editing or deleting any entry breaks every hash
//! after it. The correlator computes hashes when it appends;
//! `fincorpctl audit verify` recomputes them from what the API returns.

use ring::digest::{SHA256, digest};

use crate::UnixMs;
use crate::rest::AuditEntry;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an entry with these fields.
pub fn hash(
    seq: u64,
    at_ms: UnixMs,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let text = format!(
        "fincorp-audit-v1\n{seq}\n{at_ms}\n{}\n{actor}\n{}\n{action}\n{}\n{target}\n{}\n{detail}\n{prev_hash}",
        actor.len(),
        action.len(),
        target.len(),
        detail.len()
    );
    hex::encode(digest(&SHA256, text.as_bytes()).as_ref())
}

/// What is wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {found} follows entry {after}: entries are missing")]
    Gap { after: u64, found: u64 },
    #[error("entry {0} does not start the log at 1")]
    BadStart(u64),
    #[error("entry {0} does not link to the previous entry's hash")]
    BrokenLink(u64),
    #[error("entry {0} was altered: its hash does not match its content")]
    Altered(u64),
}

/// Checks a whole chain, oldest first. Returns the number of entries.
pub fn verify(entries: &[AuditEntry]) -> Result<usize, ChainError> {
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        match prev {
            None if e.seq != 1 => return Err(ChainError::BadStart(e.seq)),
            None if e.prev_hash != GENESIS => return Err(ChainError::BrokenLink(e.seq)),
            Some(p) if e.seq != p.seq + 1 => {
                return Err(ChainError::Gap {
                    after: p.seq,
                    found: e.seq,
                });
            }
            Some(p) if e.prev_hash != p.hash => return Err(ChainError::BrokenLink(e.seq)),
            _ => {}
        }
        if hash(
            e.seq,
            e.at_ms,
            &e.actor,
            &e.action,
            &e.target,
            &e.detail,
            &e.prev_hash,
        ) != e.hash
        {
            return Err(ChainError::Altered(e.seq));
        }
        prev = Some(e);
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for seq in 1..=n {
            let prev_hash = out
                .last()
                .map(|e| e.hash.clone())
                .unwrap_or_else(|| GENESIS.into());
            let (actor, action, target, detail) = (
                "alice",
                "incident.ack",
                format!("fc-{seq}"),
                r#"{"reason":"on it"}"#,
            );
            out.push(AuditEntry {
                seq,
                at_ms: seq as i64 * 1000,
                hash: hash(
                    seq,
                    seq as i64 * 1000,
                    actor,
                    action,
                    &target,
                    detail,
                    &prev_hash,
                ),
                actor: actor.into(),
                action: action.into(),
                target,
                detail: detail.into(),
                prev_hash,
            });
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn an_edited_entry_is_detected() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        assert_eq!(verify(&c), Err(ChainError::Altered(3)));
    }

    #[test]
    fn an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].detail = r#"{"reason":"nothing to see"}"#.into();
        let e = &c[2];
        c[2].hash = hash(
            e.seq,
            e.at_ms,
            &e.actor,
            &e.action,
            &e.target,
            &e.detail,
            &e.prev_hash,
        );
        assert_eq!(verify(&c), Err(ChainError::BrokenLink(4)));
    }

    #[test]
    fn a_deleted_entry_is_detected() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify(&c), Err(ChainError::Gap { after: 1, found: 3 }));
        let mut c = chain(3);
        c.remove(0);
        assert_eq!(verify(&c), Err(ChainError::BadStart(2)));
    }

    #[test]
    fn field_boundaries_are_part_of_the_hash() {
        assert_ne!(
            hash(1, 1, "ab", "c", "t", "{}", GENESIS),
            hash(1, 1, "a", "bc", "t", "{}", GENESIS)
        );
    }
}
