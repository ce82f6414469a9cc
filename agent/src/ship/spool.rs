//! The durable on-disk spool: one file per batch, named by sequence number,
//! written to a temporary file, fsynced and renamed into place (then the
//! directory is fsynced), so a batch is either wholly in the spool or not at
//! all, whatever happens to the process (`kill -9`) or the machine.
//!
//! A batch leaves the spool only after the correlator acknowledged it (2xx)
//! or refused it for good (4xx), or when the spool is full and its policy is
//! `drop_oldest`. On start the spool is read back in order, so nothing
//! acknowledged is lost and nothing unacknowledged is forgotten: delivery is
//! at least once, and event ids make resends harmless.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{BatchQueue, QueuedBatch};

const SUFFIX: &str = ".batch";
const TMP_SUFFIX: &str = ".tmp";
const LOCK_FILE: &str = ".lock";
/// The last sequence number used, so numbering continues across restarts
/// even when the spool was empty (diagnostics only: not fsynced).
const SEQ_FILE: &str = "last_seq";

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    events: usize,
    size: u64,
}

/// A spool directory. Only one agent may use it at a time (an exclusive
/// lock on `.lock` is held for the spool's lifetime).
#[derive(Debug)]
pub struct DiskSpool {
    dir: PathBuf,
    entries: VecDeque<Entry>,
    bytes: u64,
    /// The front batch, read once and kept while it is being retried.
    front: Option<QueuedBatch>,
    last_seq: u64,
    /// Files found unreadable at start, moved aside as `*.corrupt`.
    pub corrupt_at_start: usize,
    _lock: File,
}

fn file_name(seq: u64, events: usize) -> String {
    format!("{seq:020}-{events}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<(u64, usize)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, events) = stem.split_once('-')?;
    Some((seq.parse().ok()?, events.parse().ok()?))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DiskSpool {
    /// Opens (creating it if needed, mode 0700) and locks the spool in `dir`,
    /// and reads back what an earlier run left.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("spool {} is in use by another fincorp-agent", dir.display()),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let mut found = Vec::new();
        let mut corrupt = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // A write interrupted before its rename: never acknowledged
                // as spooled, so never counted; remove it.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, events)) = parse_name(name) else {
                continue;
            };
            let body = std::fs::read(entry.path())?;
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                corrupt += 1;
                let aside = entry.path().with_extension("corrupt");
                tracing::error!(file = %entry.path().display(), "unreadable spooled batch moved aside");
                let _ = std::fs::rename(entry.path(), aside);
                continue;
            }
            found.push(Entry {
                seq,
                events,
                size: body.len() as u64,
            });
        }
        found.sort_by_key(|e| e.seq);
        let hinted = std::fs::read_to_string(dir.join(SEQ_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let last_seq = found.last().map_or(0, |e| e.seq).max(hinted);
        Ok(Self {
            dir: dir.to_path_buf(),
            bytes: found.iter().map(|e| e.size).sum(),
            entries: found.into(),
            front: None,
            last_seq,
            corrupt_at_start: corrupt,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(file_name(e.seq, e.events))
    }
}

impl BatchQueue for DiskSpool {
    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn append(&mut self, batch: &QueuedBatch) -> io::Result<()> {
        let entry = Entry {
            seq: batch.seq,
            events: batch.events,
            size: batch.body.len() as u64,
        };
        let path = self.path(&entry);
        let tmp = self.dir.join(format!("{}{TMP_SUFFIX}", batch.seq));
        let mut f = File::create(&tmp)?;
        f.write_all(&batch.body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.last_seq = self.last_seq.max(batch.seq);
        let _ = std::fs::write(self.dir.join(SEQ_FILE), self.last_seq.to_string());
        self.bytes += entry.size;
        self.entries.push_back(entry);
        Ok(())
    }

    fn front(&mut self) -> io::Result<Option<QueuedBatch>> {
        let Some(e) = self.entries.front().copied() else {
            return Ok(None);
        };
        if let Some(b) = &self.front {
            if b.seq == e.seq {
                return Ok(Some(b.clone()));
            }
        }
        let body = std::fs::read(self.path(&e))?;
        let batch = QueuedBatch {
            seq: e.seq,
            events: e.events,
            body,
        };
        self.front = Some(batch.clone());
        Ok(Some(batch))
    }

    fn remove_front(&mut self, seq: u64) -> io::Result<bool> {
        match self.entries.front().copied() {
            Some(e) if e.seq == seq => {
                self.pop_front()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn pop_front(&mut self) -> io::Result<Option<(u64, usize)>> {
        let Some(e) = self.entries.front().copied() else {
            return Ok(None);
        };
        match std::fs::remove_file(self.path(&e)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        self.entries.pop_front();
        self.bytes -= e.size;
        if self.front.as_ref().is_some_and(|b| b.seq == e.seq) {
            self.front = None;
        }
        Ok(Some((e.seq, e.events)))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn seqs(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.seq).collect()
    }
}
