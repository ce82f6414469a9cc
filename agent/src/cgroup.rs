//! What the agent knows about cgroup layouts: where an app's cgroup is for a
//! given controller on v1, v2 or hybrid hosts, which processes are in a
//! cgroup, where a systemd unit's cgroup is, and the CPU throttling counters.
//!
//! Paths in the config are relative to a controller's mount: `<root>/cpu/<p>`
//! (v1) or `<root>/<p>` / `<root>/unified/<p>` (v2). All of this is blocking
//! file IO, run from the sampler thread or `spawn_blocking`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use fincorp_api::wire::CpuThrottling;

/// Deepest level searched for a systemd unit's cgroup
/// (`user.slice/user-1000.slice/user@1000.service/app.slice/x.service` is 5).
const MAX_UNIT_DEPTH: usize = 6;
/// Most directories visited by one unit search.
const MAX_UNIT_SEARCH: usize = 20_000;
/// Most cgroup directories read for one app's processes.
const MAX_PROCS_DIRS: usize = 4_096;

/// A controller whose files the agent reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Cpu,
    Memory,
}

/// Where the app's directory for `controller` is, and in which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerDir {
    pub dir: PathBuf,
    pub version: u8,
}

/// Finds `rel` under the mount of `controller`: v1 first (its control file
/// exists), then v2 (`<root>/<rel>` or `<root>/unified/<rel>` with the v2
/// control file). `Err` lists what was looked for.
pub fn controller_dir(
    root: &Path,
    rel: &Path,
    controller: Controller,
) -> Result<ControllerDir, String> {
    let (v1_mounts, v1_file, v2_file): (&[&str], &str, &str) = match controller {
        Controller::Cpu => (&["cpu", "cpu,cpuacct"], "cpu.cfs_quota_us", "cpu.max"),
        Controller::Memory => (&["memory"], "memory.limit_in_bytes", "memory.max"),
    };
    let mut tried = Vec::new();
    for mount in v1_mounts {
        let dir = root.join(mount).join(rel);
        if dir.join(v1_file).is_file() {
            return Ok(ControllerDir { dir, version: 1 });
        }
        tried.push(dir.join(v1_file));
    }
    for dir in [root.join(rel), root.join("unified").join(rel)] {
        if dir.join(v2_file).is_file() {
            return Ok(ControllerDir { dir, version: 2 });
        }
        tried.push(dir.join(v2_file));
    }
    let name = match controller {
        Controller::Cpu => "cpu",
        Controller::Memory => "memory",
    };
    Err(format!(
        "no {name} cgroup found: none of {} exists",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The mounted hierarchies in which process membership can be looked up:
/// the v2 tree (at the root or `unified/`), then v1 ones (`systemd`, `cpu`,
/// `memory`, ...). A path may exist in several; callers take the union.
pub fn hierarchies(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if root.join("cgroup.procs").is_file() {
        out.push(root.to_path_buf());
    }
    for name in ["unified", "systemd", "cpu", "cpu,cpuacct", "memory", "pids"] {
        let dir = root.join(name);
        if dir.join("cgroup.procs").is_file() {
            out.push(dir);
        }
    }
    out
}

/// Appends the PIDs in `dir` and every cgroup below it.
pub fn procs_below(dir: &Path, out: &mut Vec<u32>) {
    let mut queue = VecDeque::from([dir.to_path_buf()]);
    let mut visited = 0;
    while let Some(d) = queue.pop_front() {
        visited += 1;
        if visited > MAX_PROCS_DIRS {
            tracing::warn!(dir = %dir.display(), "cgroup tree too large; stopped reading its processes");
            return;
        }
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    queue.push_back(e.path());
                }
            }
        }
    }
}

/// Every directory named `unit` in the hierarchies, breadth first.
pub fn find_unit_dirs(hierarchies: &[PathBuf], unit: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for h in hierarchies {
        let mut queue = VecDeque::from([(h.clone(), 0usize)]);
        let mut visited = 0;
        while let Some((dir, depth)) = queue.pop_front() {
            visited += 1;
            if visited > MAX_UNIT_SEARCH {
                break;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if e.file_name() == unit {
                    found.push(e.path());
                } else if depth + 1 < MAX_UNIT_DEPTH {
                    queue.push_back((e.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// Parses `cpu.stat`: v1 (`nr_periods`, `nr_throttled`, `throttled_time` in
/// ns) or v2 (`nr_periods`, `nr_throttled`, `throttled_usec`).
pub fn parse_cpu_stat(text: &str) -> Option<CpuThrottling> {
    let (mut periods, mut throttled, mut us) = (None, None, None);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "nr_periods" => periods = Some(value),
            "nr_throttled" => throttled = Some(value),
            "throttled_usec" => us = Some(value),
            "throttled_time" => us = Some(value / 1_000),
            _ => {}
        }
    }
    Some(CpuThrottling {
        nr_periods: periods?,
        nr_throttled: throttled?,
        throttled_us: us?,
    })
}

/// The throttling counters of the cpu cgroup `dir`, if it has them.
pub fn read_throttling(dir: &Path) -> Option<CpuThrottling> {
    parse_cpu_stat(&std::fs::read_to_string(dir.join("cpu.stat")).ok()?)
}

/// `dir`'s path relative to whichever hierarchy in `hierarchies` holds it.
pub fn relative_to_hierarchy<'a>(hierarchies: &[PathBuf], dir: &'a Path) -> Option<&'a Path> {
    hierarchies
        .iter()
        .filter_map(|h| dir.strip_prefix(h).ok())
        // The longest prefix wins: `<root>` is a prefix of `<root>/cpu/...` too.
        .min_by_key(|rel| rel.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_parses_both_versions() {
        let v1 = "nr_periods 120\nnr_throttled 30\nthrottled_time 4500000000\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Some(CpuThrottling {
                nr_periods: 120,
                nr_throttled: 30,
                throttled_us: 4_500_000
            })
        );
        let v2 = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 10\nnr_throttled 2\nthrottled_usec 777\nnr_bursts 0\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Some(CpuThrottling {
                nr_periods: 10,
                nr_throttled: 2,
                throttled_us: 777
            })
        );
        // v2 without the cpu controller only has usage lines.
        assert_eq!(parse_cpu_stat("usage_usec 100\n"), None);
    }

    #[test]
    fn layouts_are_found_per_controller_and_version() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("cpu/a/APP")).unwrap();
        std::fs::write(r.join("cpu/a/APP/cpu.cfs_quota_us"), "-1").unwrap();
        std::fs::create_dir_all(r.join("unified/a/APP")).unwrap();
        std::fs::write(r.join("unified/a/APP/memory.max"), "max").unwrap();
        let rel = Path::new("a/APP");
        assert_eq!(
            controller_dir(r, rel, Controller::Cpu),
            Ok(ControllerDir {
                dir: r.join("cpu/a/APP"),
                version: 1
            })
        );
        assert_eq!(
            controller_dir(r, rel, Controller::Memory),
            Ok(ControllerDir {
                dir: r.join("unified/a/APP"),
                version: 2
            })
        );
        let err = controller_dir(r, Path::new("nope"), Controller::Memory).unwrap_err();
        assert!(err.starts_with("no memory cgroup found: none of "), "{err}");
        assert!(
            err.contains("memory/nope/memory.limit_in_bytes") && err.contains("nope/memory.max"),
            "{err}"
        );
    }

    #[test]
    fn units_and_their_processes_are_found_in_a_fake_v2_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.procs"), "1\n").unwrap();
        let unit = r.join("system.slice/hft.service");
        std::fs::create_dir_all(unit.join("worker")).unwrap();
        std::fs::write(unit.join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(unit.join("worker/cgroup.procs"), "12\n").unwrap();
        std::fs::create_dir_all(r.join("system.slice/other.service")).unwrap();
        let h = hierarchies(r);
        assert_eq!(h, [r.to_path_buf()]);
        let dirs = find_unit_dirs(&h, "hft.service");
        assert_eq!(dirs, std::slice::from_ref(&unit));
        let mut pids = Vec::new();
        procs_below(&dirs[0], &mut pids);
        pids.sort();
        assert_eq!(pids, [10, 11, 12]);
        assert!(find_unit_dirs(&h, "missing.service").is_empty());
        assert_eq!(
            relative_to_hierarchy(&h, &unit),
            Some(Path::new("system.slice/hft.service"))
        );
    }
}
