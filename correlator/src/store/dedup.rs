//! Exact dedup of event ids over a time window, in memory.
//!
//! The `events` table is an append-only log (cheap sequential inserts). The
//! uniqueness of event ids is checked here, against every id received within
//! `window`: a hash set of 16-byte keys (SHA-256 prefixes, uniformly random,
//! so the set hashes them by their first bytes) and a queue ordered by time
//! to forget the oldest. It is rebuilt from the log at start, so it survives
//! restarts and SIGKILL. About 50 bytes per id in the window.
//!
//! A duplicate older than the window is harmless in the correlation core: a
//! repeated firing refreshes its alert, a repeated resolve is ignored.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use fincorp_api::UnixMs;
use rusqlite::{Connection, params};

use super::StoreError;

/// Hashes a 16-byte key by its first 8 bytes: they are already random.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

/// Event ids seen within the window, at most `max_ids` of them: memory is
/// bounded whatever the ingest rate. Past the cap the oldest ids are
/// forgotten before the window ends (counted in `evicted`); a resend older
/// than what is remembered is absorbed by the core like one older than the
/// window.
pub struct Dedup {
    window_ms: i64,
    max_ids: usize,
    set: HashSet<[u8; 16], BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(UnixMs, [u8; 16])>,
    evicted: u64,
}

impl Dedup {
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        Self {
            window_ms,
            max_ids: max_ids.max(1),
            set: HashSet::default(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Rebuilds from the log: every id received within the window before
    /// `now` (the newest `max_ids` of them).
    pub fn load(
        conn: &Connection,
        window_ms: i64,
        max_ids: usize,
        now: UnixMs,
    ) -> Result<Self, StoreError> {
        let mut d = Self::new(window_ms, max_ids);
        let mut stmt = conn.prepare(
            "SELECT keys, received_at_ms FROM event_log WHERE received_at_ms >= ?1 ORDER BY received_at_ms, rowid",
        )?;
        let mut rows = stmt.query(params![now.saturating_sub(window_ms)])?;
        while let Some(r) = rows.next()? {
            let at = r.get(1)?;
            let keys: Vec<u8> = r.get(0)?;
            for key in keys.chunks_exact(16) {
                let mut k = [0u8; 16];
                k.copy_from_slice(key);
                d.insert(k, at);
            }
        }
        Ok(d)
    }

    /// Looks `keys` up without recording them, so that the inserts that
    /// follow find their buckets in cache: the lookups do not depend on one
    /// another, so the CPU overlaps their cache misses, which dominate
    /// inserting into a set of millions of random keys one by one.
    pub fn warm(&self, keys: impl Iterator<Item = [u8; 16]>) {
        for key in keys {
            std::hint::black_box(self.set.contains(&key));
        }
    }

    /// Records `key`; false when it was already there (a duplicate).
    pub fn insert(&mut self, key: [u8; 16], at: UnixMs) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back((at, key));
        if self.order.len() > self.max_ids {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.set.remove(&oldest);
                self.evicted += 1;
            }
        }
        true
    }

    /// Ids forgotten before the end of the window because of the cap, since
    /// start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// When the oldest id remembered was received.
    pub fn oldest_ms(&self) -> Option<UnixMs> {
        self.order.front().map(|(at, _)| *at)
    }

    pub fn max_ids(&self) -> usize {
        self.max_ids
    }

    /// Forgets ids received before `now - window`.
    pub fn expire(&mut self, now: UnixMs) {
        let horizon = now.saturating_sub(self.window_ms);
        while let Some((at, key)) = self.order.front().copied() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.set.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::alert;
    use crate::store::schema::event_key;
    use crate::store::{EventLogRow, LoggedRequest};

    #[test]
    fn an_id_is_new_once_within_the_window_and_new_again_after_it() {
        let mut d = Dedup::new(1_000, 100);
        assert!(d.insert(event_key("a"), 0));
        assert!(!d.insert(event_key("a"), 500));
        d.expire(999);
        assert!(!d.insert(event_key("a"), 999), "still within the window");
        d.expire(1_001);
        assert!(d.is_empty());
        assert!(d.insert(event_key("a"), 1_001));
    }

    #[test]
    fn past_its_cap_the_set_forgets_the_oldest_ids_and_counts_them() {
        let mut d = Dedup::new(3_600_000, 3);
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(d.insert(event_key(id), i as i64));
        }
        assert_eq!((d.len(), d.evicted(), d.oldest_ms()), (3, 2, Some(2)));
        assert!(!d.insert(event_key("e"), 10), "still remembered");
        assert!(d.insert(event_key("a"), 11), "forgotten early, by the cap");
        // Rebuilt from the log, it keeps the newest ids within the cap.
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        for n in 0..5 {
            let mut row = EventLogRow::default();
            row.append(
                &LoggedRequest::of(&[alert(n, 1, 1, true)]),
                &[true],
                n as i64,
            );
            row.write(&conn).unwrap();
        }
        let mut d = Dedup::load(&conn, 3_600_000, 2, 10).unwrap();
        assert_eq!(d.len(), 2);
        assert!(!d.insert(event_key("ev-4"), 10));
        assert!(d.insert(event_key("ev-0"), 10));
    }

    #[test]
    fn a_commit_group_is_one_log_row_holding_only_the_events_dedup_let_through() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let request = |ns: &[usize]| {
            let alerts: Vec<_> = ns.iter().map(|n| alert(*n, 1, 1, true)).collect();
            LoggedRequest::of(&alerts)
        };
        let mut row = EventLogRow::default();
        row.append(&request(&[0, 1]), &[true, true], 7);
        row.append(&request(&[2, 3, 4]), &[false, true, false], 5);
        row.append(&request(&[5]), &[false], 3);
        row.write(&conn).unwrap();
        // A group where every event was a resend writes nothing.
        let mut empty = EventLogRow::default();
        empty.append(&request(&[6]), &[false], 9);
        empty.write(&conn).unwrap();

        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM event_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let events = crate::store::logged_events(&conn);
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["ev-0", "ev-1", "ev-3"]);
        for e in &events {
            assert_eq!(
                (e.received_at_ms, e.status.as_str()),
                (5, "firing"),
                "the earliest request it logs"
            );
        }
    }

    #[test]
    fn it_is_rebuilt_from_the_log() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        // ev-0 is old; ev-1 and ev-2 arrived together, recently.
        for (ns, at) in [(&[0][..], 0), (&[1, 2][..], 5_000)] {
            let alerts: Vec<_> = ns.iter().map(|n| alert(*n, 1, 1, true)).collect();
            let mut row = EventLogRow::default();
            row.append(&LoggedRequest::of(&alerts), &vec![true; ns.len()], at);
            row.write(&conn).unwrap();
        }
        let mut d = Dedup::load(&conn, 2_000, 100, 6_000).unwrap();
        assert_eq!(d.len(), 2);
        assert!(!d.insert(event_key("ev-1"), 6_000));
        assert!(!d.insert(event_key("ev-2"), 6_000));
        assert!(d.insert(event_key("ev-0"), 6_000), "beyond the window");
    }
}
