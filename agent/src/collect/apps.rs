//! Per-app process collection: which processes belong to which app
//! (selectors, child folding) and their summed CPU, memory and count.
//!
//! Every tick only the matched PIDs' CPU and memory are read. A full scan of
//! the process table (parent, start time; exe and cmdline once per process)
//! runs every `discovery_interval` to find new processes. This keeps the
//! agent's own CPU use low on hosts with hundreds of processes.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::Path;

use sysinfo::{
    Pid, Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind,
};

use crate::config::Selector;

/// Ancestor chains longer than this are treated as unmatched (and cannot loop).
const MAX_ANCESTRY: usize = 128;

/// One app's numbers from one sampling pass.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AppStats {
    pub processes: u32,
    /// % of one core, summed over the app's processes.
    pub cpu_pct: f64,
    pub rss_bytes: u64,
}

/// What matching needs to know about one process.
#[derive(Debug, Clone)]
pub struct ProcInfo<'a> {
    pub pid: Pid,
    pub parent: Option<Pid>,
    /// Linux threads (and kernel threads) are listed like processes; they are skipped.
    pub is_thread: bool,
    pub exe: Option<&'a Path>,
    pub cmd: &'a [OsString],
}

impl<'a> ProcInfo<'a> {
    fn of(process: &'a Process) -> Self {
        Self {
            pid: process.pid(),
            parent: process.parent(),
            is_thread: process.thread_kind().is_some(),
            exe: process.exe(),
            cmd: process.cmd(),
        }
    }
}

/// Whether `selector` picks a process with this executable and argv.
pub fn selector_matches(selector: &Selector, exe: Option<&Path>, cmd: &[OsString]) -> bool {
    match selector {
        Selector::Exe(name) => exe.and_then(Path::file_name) == Some(OsStr::new(name)),
        Selector::Cmdline(re) => {
            if cmd.is_empty() {
                return false;
            }
            let joined = cmd
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ");
            re.is_match(&joined)
        }
    }
}

/// Assigns processes to apps: a process matched by a selector belongs to the
/// first app (in config order) whose selector matches it; any other process
/// belongs to the app of its nearest matched ancestor. Threads and `own_pid`
/// are never assigned.
pub fn assign(procs: &[ProcInfo<'_>], selectors: &[Selector], own_pid: Pid) -> HashMap<Pid, usize> {
    let mut parent: HashMap<Pid, Option<Pid>> = HashMap::with_capacity(procs.len());
    let mut direct: HashMap<Pid, Option<usize>> = HashMap::with_capacity(procs.len());
    for p in procs.iter().filter(|p| !p.is_thread && p.pid != own_pid) {
        parent.insert(p.pid, p.parent);
        let app = selectors
            .iter()
            .position(|s| selector_matches(s, p.exe, p.cmd));
        direct.insert(p.pid, app);
    }

    let mut resolved: HashMap<Pid, Option<usize>> = HashMap::with_capacity(direct.len());
    let mut chain = Vec::new();
    for &pid in direct.keys() {
        chain.clear();
        let mut cur = Some(pid);
        let mut found = None;
        while let Some(p) = cur {
            if let Some(known) = resolved.get(&p) {
                found = *known;
                break;
            }
            // Unknown parent (not listed, a thread or the agent itself): stop.
            let Some(app) = direct.get(&p) else { break };
            if app.is_some() {
                found = *app;
                break;
            }
            chain.push(p);
            if chain.len() > MAX_ANCESTRY {
                break;
            }
            cur = parent.get(&p).copied().flatten();
        }
        resolved.insert(pid, found);
        for p in &chain {
            resolved.insert(*p, found);
        }
    }
    resolved
        .into_iter()
        .filter_map(|(pid, app)| Some((pid, app?)))
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    app: usize,
    /// Whether CPU% of this PID has been refreshed over a full interval.
    primed: bool,
}

/// Finds and follows the processes of every configured app.
#[derive(Debug)]
pub struct ProcessTracker {
    selectors: Vec<Selector>,
    own_pid: Pid,
    tracked: HashMap<Pid, Tracked>,
    /// The keys of `tracked`, for `ProcessesToUpdate::Some`.
    pids: Vec<Pid>,
    /// PIDs seen by the previous full scan.
    known: HashSet<Pid>,
    /// PIDs first seen by the previous full scan: their exe and cmdline are
    /// read once more, in case the first read raced a fork → exec.
    recheck: Vec<Pid>,
}

fn sample_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cpu()
        .with_memory()
        .without_tasks()
}

/// The full scan reads each process's `stat` (parent, start time) and, once,
/// its exe and cmdline. CPU and memory are only read for tracked PIDs: on a
/// host with hundreds of processes that halves the scan's cost.
fn discovery_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .without_tasks()
        .with_exe(UpdateKind::OnlyIfNotSet)
        .with_cmd(UpdateKind::OnlyIfNotSet)
}

fn is_live(process: &Process) -> bool {
    process.thread_kind().is_none()
        && !matches!(
            process.status(),
            ProcessStatus::Zombie | ProcessStatus::Dead
        )
}

impl ProcessTracker {
    pub fn new(selectors: Vec<Selector>, own_pid: Pid) -> Self {
        Self {
            selectors,
            own_pid,
            tracked: HashMap::new(),
            pids: Vec::new(),
            known: HashSet::new(),
            recheck: Vec::new(),
        }
    }

    /// Full scan: lists every process (exe and cmdline are read once) and
    /// re-matches selectors. Call it after [`ProcessTracker::refresh`] in the
    /// same tick. Newly matched PIDs get their memory read now and contribute
    /// 0 CPU until they have been refreshed over a full interval.
    pub fn discover(&mut self, system: &mut System) {
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, discovery_kind());
        if !self.recheck.is_empty() {
            let kind = ProcessRefreshKind::nothing()
                .without_tasks()
                .with_exe(UpdateKind::Always)
                .with_cmd(UpdateKind::Always);
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&self.recheck), false, kind);
        }
        let procs: Vec<ProcInfo<'_>> = system
            .processes()
            .values()
            .filter(|p| is_live(p))
            .map(ProcInfo::of)
            .collect();
        let current: HashSet<Pid> = procs.iter().map(|p| p.pid).collect();
        self.recheck = current.difference(&self.known).copied().collect();
        self.known = current;

        let assigned = assign(&procs, &self.selectors, self.own_pid);
        let previous = std::mem::take(&mut self.tracked);
        self.tracked = assigned
            .into_iter()
            .map(|(pid, app)| {
                let primed = previous.get(&pid).is_some_and(|t| t.app == app && t.primed);
                (pid, Tracked { app, primed })
            })
            .collect();
        self.pids = self.tracked.keys().copied().collect();
        let fresh: Vec<Pid> = self
            .tracked
            .iter()
            .filter(|(_, t)| !t.primed)
            .map(|(p, _)| *p)
            .collect();
        if !fresh.is_empty() {
            let memory = ProcessRefreshKind::nothing().without_tasks().with_memory();
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&fresh), true, memory);
        }
    }

    /// Every tick: CPU and memory of the tracked PIDs only.
    pub fn refresh(&mut self, system: &mut System) {
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&self.pids),
            true,
            sample_kind(),
        );
    }

    /// Sums each app's processes. Forgets PIDs that exited and marks the
    /// others as primed for the next pass.
    pub fn stats(&mut self, system: &System) -> Vec<AppStats> {
        let mut out = vec![AppStats::default(); self.selectors.len()];
        let mut gone = Vec::new();
        for (pid, t) in &mut self.tracked {
            let Some(process) = system.process(*pid).filter(|p| is_live(p)) else {
                gone.push(*pid);
                continue;
            };
            let Some(stats) = out.get_mut(t.app) else {
                continue;
            };
            stats.processes += 1;
            stats.rss_bytes = stats.rss_bytes.saturating_add(process.memory());
            if t.primed {
                stats.cpu_pct += f64::from(process.cpu_usage());
            }
            t.primed = true;
        }
        if !gone.is_empty() {
            for pid in &gone {
                self.tracked.remove(pid);
            }
            self.pids = self.tracked.keys().copied().collect();
        }
        out
    }

    /// The tracked PIDs of app number `app`, sorted; for tests and logs.
    pub fn pids_of(&self, app: usize) -> Vec<Pid> {
        let mut pids: Vec<_> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.app == app)
            .map(|(p, _)| *p)
            .collect();
        pids.sort();
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use std::path::PathBuf;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn exe_matches_the_file_name_and_cmdline_the_joined_arguments() {
        let exe = Selector::Exe("hft-engine".into());
        assert!(selector_matches(
            &exe,
            Some(Path::new("/opt/hft/bin/hft-engine")),
            &[]
        ));
        assert!(!selector_matches(
            &exe,
            Some(Path::new("/opt/hft/bin/hft-engine-2")),
            &[]
        ));
        assert!(
            !selector_matches(&exe, None, &os(&["hft-engine"])),
            "argv[0] is not the exe"
        );

        let re = Selector::Cmdline(Regex::new(r"java .*-Dapp=crm\b").unwrap());
        assert!(selector_matches(
            &re,
            None,
            &os(&["java", "-Xmx1g", "-Dapp=crm", "Main"])
        ));
        assert!(!selector_matches(&re, None, &os(&["java", "-Dapp=crmx"])));
        assert!(
            !selector_matches(&Selector::Cmdline(Regex::new(".*").unwrap()), None, &[]),
            "no argv, no match"
        );
    }

    fn info<'a>(pid: u32, parent: u32, cmd: &'a [OsString]) -> ProcInfo<'a> {
        ProcInfo {
            pid: Pid::from_u32(pid),
            parent: Some(Pid::from_u32(parent)),
            is_thread: false,
            exe: None,
            cmd,
        }
    }

    #[test]
    fn children_fold_into_the_nearest_matched_ancestor_and_threads_and_self_are_skipped() {
        let init = os(&["init"]);
        let a = os(&["server", "--app", "A"]);
        let b = os(&["server", "--app", "B"]);
        let worker = os(&["worker"]);
        let procs = vec![
            info(1, 0, &init),
            info(10, 1, &a),
            info(11, 10, &worker),
            info(12, 11, &worker), // grandchild of A
            info(20, 11, &b),      // B started by A's worker: B wins (nearest match)
            info(21, 20, &worker),
            ProcInfo {
                is_thread: true,
                ..info(13, 10, &a)
            },
            info(99, 10, &a), // the agent itself
            info(30, 1, &worker),
            info(40, 41, &worker), // parent not listed
        ];
        let selectors = [
            Selector::Cmdline(Regex::new("--app A").unwrap()),
            Selector::Cmdline(Regex::new("--app B").unwrap()),
        ];
        let got = assign(&procs, &selectors, Pid::from_u32(99));
        let mut got: Vec<(u32, usize)> = got.into_iter().map(|(p, a)| (p.as_u32(), a)).collect();
        got.sort();
        assert_eq!(got, [(10, 0), (11, 0), (12, 0), (20, 1), (21, 1)]);
    }

    #[test]
    fn a_parent_cycle_terminates() {
        let w = os(&["w"]);
        let procs = vec![info(5, 6, &w), info(6, 5, &w)];
        assert!(assign(&procs, &[Selector::Exe("x".into())], Pid::from_u32(1)).is_empty());
    }

    #[test]
    fn the_first_app_in_config_order_wins_a_tie() {
        let cmd = os(&["both"]);
        let exe = PathBuf::from("/bin/both");
        let procs = vec![ProcInfo {
            exe: Some(&exe),
            ..info(7, 1, &cmd)
        }];
        let selectors = [
            Selector::Exe("both".into()),
            Selector::Cmdline(Regex::new("both").unwrap()),
        ];
        assert_eq!(
            assign(&procs, &selectors, Pid::from_u32(1)).get(&Pid::from_u32(7)),
            Some(&0)
        );
    }
}
