//! The command journal: which command ids this agent has started and how
//! each ended, kept on disk so a command is executed at most once even
//! across restarts and crashes.
//!
//! Before a command executes, a `started` record is appended and fsynced;
//! afterwards its result is. A command found `started` without a result
//! after a restart was interrupted mid-way: it is never run again, and a
//! repeat is answered `failed` with that reason. The file is JSON lines,
//! compacted to the newest [`JOURNAL_KEEP`] ids at start.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use fincorp_api::UnixMs;
use fincorp_api::wire::CommandResult;
use serde::{Deserialize, Serialize};

/// How many command ids are remembered.
pub const JOURNAL_KEEP: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Started { id: String, at_ms: UnixMs },
    Finished { result: Box<CommandResult> },
}

/// What the journal knows about a command id.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Finished(Box<CommandResult>),
    /// Started, but the agent stopped before it finished.
    Interrupted {
        started_at_ms: UnixMs,
    },
}

/// The journal; in memory only when it has no file (tests).
#[derive(Debug)]
pub struct Journal {
    path: Option<PathBuf>,
    file: Option<File>,
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
    keep: usize,
}

impl Journal {
    pub fn in_memory(keep: usize) -> Self {
        Self {
            path: None,
            file: None,
            entries: HashMap::new(),
            order: VecDeque::new(),
            keep: keep.max(1),
        }
    }

    /// Opens `path`, reads what earlier runs recorded, and rewrites it
    /// compacted. Unreadable lines (a torn last write) are skipped.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut j = Self::in_memory(JOURNAL_KEEP);
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Record>(&line) {
                        Ok(Record::Started { id, at_ms }) => j.remember(
                            id,
                            Entry::Interrupted {
                                started_at_ms: at_ms,
                            },
                        ),
                        Ok(Record::Finished { result }) => {
                            j.remember(result.command_id.clone(), Entry::Finished(result))
                        }
                        Err(_) => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Compact: rewrite the kept entries, then append from there.
        let tmp = path.with_extension("tmp");
        {
            let mut out = File::create(&tmp)?;
            for id in &j.order {
                let record = match &j.entries[id] {
                    Entry::Finished(r) => Record::Finished { result: r.clone() },
                    Entry::Interrupted { started_at_ms } => Record::Started {
                        id: id.clone(),
                        at_ms: *started_at_ms,
                    },
                };
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&record).map_err(io::Error::other)?
                )?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        j.file = Some(OpenOptions::new().append(true).open(path)?);
        j.path = Some(path.to_path_buf());
        Ok(j)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn remember(&mut self, id: String, entry: Entry) {
        if self.entries.insert(id.clone(), entry).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.keep {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(record).map_err(io::Error::other)?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()?;
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Records that `id` is about to execute. If this fails the command
    /// must not run (it could otherwise run twice).
    pub fn begin(&mut self, id: &str, at_ms: UnixMs) -> io::Result<()> {
        self.append(&Record::Started {
            id: id.to_owned(),
            at_ms,
        })?;
        self.remember(
            id.to_owned(),
            Entry::Interrupted {
                started_at_ms: at_ms,
            },
        );
        Ok(())
    }

    /// Records how a command ended (also for refusals, which need no `begin`).
    pub fn finish(&mut self, result: &CommandResult) {
        if let Err(e) = self.append(&Record::Finished {
            result: Box::new(result.clone()),
        }) {
            tracing::error!(command_id = %result.command_id, error = %e, "cannot write the command journal");
        }
        self.remember(
            result.command_id.clone(),
            Entry::Finished(Box::new(result.clone())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fincorp_api::wire::CommandOutcome;

    fn result(id: &str) -> CommandResult {
        CommandResult {
            command_id: id.into(),
            host: "h".into(),
            outcome: CommandOutcome::Applied,
            message: "done".into(),
            detail: None,
            finished_at_ms: 7,
        }
    }

    #[test]
    fn the_journal_forgets_the_oldest() {
        let mut j = Journal::in_memory(2);
        j.finish(&result("a"));
        j.finish(&result("b"));
        j.finish(&result("a"));
        j.finish(&result("c"));
        assert!(j.get("a").is_none());
        assert!(j.get("b").is_some() && j.get("c").is_some());
    }

    #[test]
    fn results_and_interrupted_commands_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        {
            let mut j = Journal::open(&path).unwrap();
            j.begin("done-1", 1).unwrap();
            j.finish(&result("done-1"));
            j.begin("crashed-2", 2).unwrap();
            // The process dies here: no result for crashed-2.
        }
        // A torn last line from a crash mid-write is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"record\":\"fini")
            .unwrap();
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            j.get("done-1"),
            Some(&Entry::Finished(Box::new(result("done-1"))))
        );
        assert_eq!(
            j.get("crashed-2"),
            Some(&Entry::Interrupted { started_at_ms: 2 })
        );
        assert_eq!(j.get("never"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "compacted: {text}");
    }
}
