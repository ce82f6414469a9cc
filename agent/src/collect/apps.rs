//! Per-app process collection: which processes belong to which app
//! (selectors, child folding) and their summed CPU, memory and count.
//!
//! Every tick only the matched PIDs' `/proc/<pid>/stat` is read. Discovery,
//! every `discovery_interval`, lists `/proc` and reads `stat`, `exe` and
//! `cmdline` only of PIDs it has not seen before (once more on the next
//! pass, in case the first read raced a fork → exec); pidfile, cgroup and
//! systemd-unit selectors read their pidfile or `cgroup.procs` files. This
//! keeps the agent's CPU use low on hosts with hundreds of processes.
//!
//! Limitations, by design: a process that `exec`s into an app binary long
//! after it started is only matched by exe/cmdline if it does so before the
//! second discovery pass that sees it (use a pidfile, cgroup or unit selector
//! for such apps); a daemon that double-forks away from its parent before
//! discovery sees it is folded only by cgroup or unit selectors.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fincorp_api::wire::CpuThrottling;

use super::procfs::{ProcFs, clock_ticks_per_second, page_size};
use crate::cgroup;
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
    pub throttling: Option<CpuThrottling>,
}

/// What matching needs to know about one process.
#[derive(Debug, Clone)]
pub struct ProcInfo<'a> {
    pub pid: u32,
    pub parent: Option<u32>,
    /// Kernel threads are listed like processes; they are skipped.
    pub is_thread: bool,
    pub exe: Option<&'a Path>,
    pub cmd: &'a [OsString],
}

/// Whether an exe or cmdline `selector` picks a process with this executable
/// and argv. Other selectors match by membership, never here.
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
        Selector::Pidfile(_) | Selector::SystemdUnit(_) | Selector::Cgroup(_) => false,
    }
}

/// Assigns processes to apps: a process matched by a selector belongs to the
/// first app (in config order) whose selector matches it; any other process
/// belongs to the app of its nearest matched ancestor. Threads and `own_pid`
/// are never assigned. (The pure core of [`ProcessTracker::discover`].)
pub fn assign(procs: &[ProcInfo<'_>], selectors: &[Selector], own_pid: u32) -> HashMap<u32, usize> {
    let mut nodes: HashMap<u32, Node> = HashMap::with_capacity(procs.len());
    for p in procs.iter().filter(|p| !p.is_thread && p.pid != own_pid) {
        let direct = selectors
            .iter()
            .position(|s| selector_matches(s, p.exe, p.cmd));
        nodes.insert(
            p.pid,
            Node {
                parent: p.parent,
                direct,
                sticky: None,
            },
        );
    }
    resolve(&nodes)
}

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: Option<u32>,
    /// The app this process matches itself.
    direct: Option<usize>,
    /// The app it last belonged to, used when its parent is gone.
    sticky: Option<usize>,
}

/// Each node's app: its own match, else its nearest matched ancestor's; when
/// the chain reaches a process that is no longer listed, that process's
/// last known app (`sticky`) of the node where the chain broke.
fn resolve(nodes: &HashMap<u32, Node>) -> HashMap<u32, usize> {
    let mut resolved: HashMap<u32, Option<usize>> = HashMap::with_capacity(nodes.len());
    let mut chain = Vec::new();
    for &pid in nodes.keys() {
        chain.clear();
        let mut cur = pid;
        let found = loop {
            if let Some(known) = resolved.get(&cur) {
                break *known;
            }
            let Some(node) = nodes.get(&cur) else {
                break None;
            };
            if node.direct.is_some() {
                break node.direct;
            }
            chain.push(cur);
            if chain.len() > MAX_ANCESTRY {
                break None;
            }
            match node.parent {
                Some(parent) if nodes.contains_key(&parent) => cur = parent,
                _ => break node.sticky,
            }
        };
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

/// A process seen by discovery.
#[derive(Debug, Clone)]
struct Known {
    start_ticks: u64,
    parent: Option<u32>,
    kernel_thread: bool,
    /// The exe/cmdline selector it matches, if any.
    matched: Option<usize>,
    /// Read exe and cmdline once more on the next pass.
    recheck: bool,
    /// The app it belonged to after the last pass.
    app: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    app: usize,
    start_ticks: u64,
    /// CPU ticks at the previous reading, and when.
    last: Option<(u64, Instant)>,
}

/// Finds and follows the processes of every configured app.
#[derive(Debug)]
pub struct ProcessTracker {
    selectors: Vec<Selector>,
    /// Each app's cgroup for throttling counters (relative, cpu controller).
    cpu_cgroups: Vec<Option<PathBuf>>,
    own_pid: u32,
    proc: ProcFs,
    cgroup_root: PathBuf,
    hierarchies: Vec<PathBuf>,
    /// Found cgroup directories of systemd-unit selectors, by app.
    unit_dirs: HashMap<usize, Vec<PathBuf>>,
    /// Each app's cpu cgroup directory, found at discovery.
    throttle_dirs: Vec<Option<PathBuf>>,
    /// Whether any selector needs exe and cmdline.
    needs_cmd: bool,
    known: HashMap<u32, Known>,
    tracked: HashMap<u32, Tracked>,
    ticks_per_second: f64,
    page_size: u64,
}

impl ProcessTracker {
    /// `cpu_cgroups[i]` is app `i`'s cgroup relative to the cpu controller,
    /// for its throttling counters.
    pub fn new(
        selectors: Vec<Selector>,
        cpu_cgroups: Vec<Option<PathBuf>>,
        own_pid: u32,
        proc_root: &Path,
        cgroup_root: &Path,
    ) -> Self {
        let needs_cmd = selectors
            .iter()
            .any(|s| matches!(s, Selector::Exe(_) | Selector::Cmdline(_)));
        Self {
            selectors,
            cpu_cgroups,
            own_pid,
            proc: ProcFs::new(proc_root),
            cgroup_root: cgroup_root.to_path_buf(),
            hierarchies: cgroup::hierarchies(cgroup_root),
            unit_dirs: HashMap::new(),
            throttle_dirs: Vec::new(),
            needs_cmd,
            known: HashMap::new(),
            tracked: HashMap::new(),
            ticks_per_second: clock_ticks_per_second() as f64,
            page_size: page_size(),
        }
    }

    fn read_cmd_match(&mut self, pid: u32) -> Option<usize> {
        if !self.needs_cmd {
            return None;
        }
        let exe = self.proc.exe(pid);
        let cmd = self.proc.cmdline(pid);
        self.selectors
            .iter()
            .position(|s| selector_matches(s, exe.as_deref(), &cmd))
    }

    /// PIDs selected by membership (pidfile, cgroup, unit), by app.
    fn members(&mut self) -> HashMap<u32, usize> {
        let mut out = HashMap::new();
        for (app, selector) in self.selectors.iter().enumerate() {
            let mut pids = Vec::new();
            match selector {
                Selector::Pidfile(path) => {
                    if let Some(pid) = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok())
                    {
                        pids.push(pid);
                    }
                }
                Selector::Cgroup(rel) => {
                    for h in &self.hierarchies {
                        let dir = h.join(rel);
                        if dir.is_dir() {
                            cgroup::procs_below(&dir, &mut pids);
                        }
                    }
                }
                Selector::SystemdUnit(unit) => {
                    let cached = self
                        .unit_dirs
                        .get(&app)
                        .is_some_and(|dirs| dirs.iter().any(|d| d.is_dir()));
                    if !cached {
                        let dirs = cgroup::find_unit_dirs(&self.hierarchies, unit);
                        self.unit_dirs.insert(app, dirs);
                    }
                    for dir in self.unit_dirs.get(&app).into_iter().flatten() {
                        cgroup::procs_below(dir, &mut pids);
                    }
                }
                Selector::Exe(_) | Selector::Cmdline(_) => {}
            }
            for pid in pids {
                // The first app in config order wins.
                out.entry(pid).or_insert(app);
            }
        }
        out
    }

    /// Discovery: lists `/proc`, reads what is new, and re-matches selectors.
    /// Newly matched PIDs contribute 0 CPU until their second reading.
    pub fn discover(&mut self) {
        if self.hierarchies.is_empty() {
            self.hierarchies = cgroup::hierarchies(&self.cgroup_root);
        }
        let pids = self.proc.pids();
        let live: HashSet<u32> = pids.iter().copied().collect();
        self.known.retain(|pid, _| live.contains(pid));

        let rechecks: Vec<u32> = self
            .known
            .iter()
            .filter(|(_, k)| k.recheck)
            .map(|(p, _)| *p)
            .collect();
        for pid in rechecks {
            let matched = self.read_cmd_match(pid);
            if let Some(k) = self.known.get_mut(&pid) {
                k.matched = matched;
                k.recheck = false;
            }
        }
        for pid in pids {
            if pid == self.own_pid || self.known.contains_key(&pid) {
                continue;
            }
            let Some(stat) = self.proc.stat(pid) else {
                continue;
            };
            let matched = if stat.kernel_thread {
                None
            } else {
                self.read_cmd_match(pid)
            };
            self.known.insert(
                pid,
                Known {
                    start_ticks: stat.start_ticks,
                    parent: Some(stat.ppid).filter(|p| *p != 0),
                    kernel_thread: stat.kernel_thread,
                    matched,
                    recheck: !stat.kernel_thread,
                    app: None,
                },
            );
        }

        let members = self.members();
        let nodes: HashMap<u32, Node> = self
            .known
            .iter()
            .filter(|(_, k)| !k.kernel_thread)
            .map(|(pid, k)| {
                let direct = match (k.matched, members.get(pid)) {
                    (Some(a), Some(b)) => Some(a.min(*b)),
                    (a, b) => a.or(b.copied()),
                };
                (
                    *pid,
                    Node {
                        parent: k.parent,
                        direct,
                        sticky: k.app,
                    },
                )
            })
            .collect();
        let assigned = resolve(&nodes);
        for (pid, k) in &mut self.known {
            k.app = assigned.get(pid).copied();
        }
        let previous = std::mem::take(&mut self.tracked);
        self.tracked = assigned
            .into_iter()
            .filter_map(|(pid, app)| {
                let start_ticks = self.known.get(&pid)?.start_ticks;
                let last = previous
                    .get(&pid)
                    .filter(|t| t.start_ticks == start_ticks)
                    .and_then(|t| t.last);
                Some((
                    pid,
                    Tracked {
                        app,
                        start_ticks,
                        last,
                    },
                ))
            })
            .collect();
        self.throttle_dirs = (0..self.selectors.len())
            .map(|app| self.throttling_dir(app))
            .collect();
    }

    /// Every tick: reads `stat` of the tracked PIDs only and sums each app.
    /// Forgets PIDs that exited (or were reused).
    pub fn sample(&mut self, now: Instant) -> Vec<AppStats> {
        let mut out = vec![AppStats::default(); self.selectors.len()];
        let mut gone = Vec::new();
        for (pid, t) in &mut self.tracked {
            let stat = match self.proc.stat(*pid) {
                Some(s) if s.start_ticks == t.start_ticks && !s.is_zombie() => s,
                _ => {
                    gone.push(*pid);
                    continue;
                }
            };
            let Some(stats) = out.get_mut(t.app) else {
                continue;
            };
            stats.processes += 1;
            stats.rss_bytes = stats
                .rss_bytes
                .saturating_add(stat.rss_pages.saturating_mul(self.page_size));
            if let Some((ticks, at)) = t.last {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    let used = stat.cpu_ticks.saturating_sub(ticks) as f64 / self.ticks_per_second;
                    stats.cpu_pct += used * 100.0 / secs;
                }
            }
            t.last = Some((stat.cpu_ticks, now));
        }
        for pid in gone {
            self.tracked.remove(&pid);
            self.known.remove(&pid);
        }
        for (app, stats) in out.iter_mut().enumerate() {
            stats.throttling = self
                .throttle_dirs
                .get(app)
                .and_then(Option::as_deref)
                .and_then(cgroup::read_throttling);
        }
        out
    }

    /// The cpu-controller directory of app `app`, for throttling counters.
    fn throttling_dir(&self, app: usize) -> Option<PathBuf> {
        if let Some(Some(rel)) = self.cpu_cgroups.get(app) {
            return cgroup::controller_dir(&self.cgroup_root, rel, cgroup::Controller::Cpu)
                .ok()
                .map(|d| d.dir);
        }
        // A systemd unit: its cgroup's path, in the cpu hierarchy.
        let dir = self.unit_dirs.get(&app)?.first()?;
        let rel = cgroup::relative_to_hierarchy(&self.hierarchies, dir)?;
        cgroup::controller_dir(&self.cgroup_root, rel, cgroup::Controller::Cpu)
            .ok()
            .map(|d| d.dir)
    }

    /// The tracked PIDs of app number `app`, sorted; for tests and logs.
    pub fn pids_of(&self, app: usize) -> Vec<u32> {
        let mut pids: Vec<_> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.app == app)
            .map(|(p, _)| *p)
            .collect();
        pids.sort();
        pids
    }

    /// How many processes discovery knows (for self-metrics).
    pub fn known_processes(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

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
            pid,
            parent: Some(parent),
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
        let got = assign(&procs, &selectors, 99);
        let mut got: Vec<(u32, usize)> = got.into_iter().collect();
        got.sort();
        assert_eq!(got, [(10, 0), (11, 0), (12, 0), (20, 1), (21, 1)]);
    }

    #[test]
    fn a_parent_cycle_terminates() {
        let w = os(&["w"]);
        let procs = vec![info(5, 6, &w), info(6, 5, &w)];
        assert!(assign(&procs, &[Selector::Exe("x".into())], 1).is_empty());
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
        assert_eq!(assign(&procs, &selectors, 1).get(&7), Some(&0));
    }

    #[test]
    fn a_child_whose_parent_exited_stays_in_its_app() {
        let mut nodes = HashMap::new();
        nodes.insert(
            20,
            Node {
                parent: Some(10),
                direct: None,
                sticky: Some(3),
            },
        );
        nodes.insert(
            21,
            Node {
                parent: Some(20),
                direct: None,
                sticky: Some(3),
            },
        );
        // 10 (the matched parent) is gone: the children keep app 3.
        let got = resolve(&nodes);
        assert_eq!((got.get(&20), got.get(&21)), (Some(&3), Some(&3)));
        // A process never assigned stays unassigned.
        nodes.insert(
            30,
            Node {
                parent: Some(1),
                direct: None,
                sticky: None,
            },
        );
        assert_eq!(resolve(&nodes).get(&30), None);
    }
}
