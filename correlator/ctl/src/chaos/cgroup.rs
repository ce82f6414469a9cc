//! The chaos burner's cgroup: created with a CPU quota before the burner
//! starts, read back while it runs, removed afterwards. Works on cgroup v1
//! (`<root>/cpu/...`, `cpu.cfs_quota_us`) and v2 (`cpu.max`, also under a
//! hybrid `<root>/unified`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fincorp_api::wire::CpuLimit;

/// CFS period used for the chaos cgroup.
pub const PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct ChaosCgroup {
    pub dir: PathBuf,
    pub version: u8,
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| {
        format!(
            "cannot write {value:?} to {} (cgroups must be writable: run as root on a host with the cpu controller)",
            path.display()
        )
    })
}

fn has_cpu_controller(v2_root: &Path) -> bool {
    fs::read_to_string(v2_root.join("cgroup.controllers"))
        .map(|c| c.split_whitespace().any(|x| x == "cpu"))
        .unwrap_or(false)
}

impl ChaosCgroup {
    /// Creates `<relative>` under the cpu controller below `root` and sets
    /// its quota to `quota_cores`.
    pub fn prepare(root: &Path, relative: &str, quota_cores: f64) -> anyhow::Result<Self> {
        let relative = relative.trim_matches('/');
        if relative.is_empty() || relative.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("cgroup path {relative:?} must be a relative path without '..'");
        }
        if !(quota_cores > 0.0 && quota_cores.is_finite()) {
            bail!("--quota-cores must be above 0");
        }
        let quota_us = (quota_cores * PERIOD_US as f64).round() as u64;
        if root.join("cpu").join("cpu.cfs_quota_us").exists() {
            let dir = root.join("cpu").join(relative);
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            return Ok(Self { dir, version: 1 });
        }
        for v2 in [root.to_path_buf(), root.join("unified")] {
            if !has_cpu_controller(&v2) {
                continue;
            }
            let dir = v2.join(relative);
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
            // Delegate the cpu controller down to the new group.
            let mut parent = v2.clone();
            for part in relative.split('/') {
                write(&parent.join("cgroup.subtree_control"), "+cpu")?;
                parent = parent.join(part);
            }
            write(&dir.join("cpu.max"), &format!("{quota_us} {PERIOD_US}"))?;
            return Ok(Self { dir, version: 2 });
        }
        bail!(
            "no cgroup cpu controller under {} (looked for v1 {0}/cpu and v2 with `cpu` in cgroup.controllers); \
             the chaos spike needs one to cap the burner",
            root.display()
        )
    }

    /// The file holding the quota.
    pub fn quota_file(&self) -> PathBuf {
        self.dir.join(if self.version == 1 {
            "cpu.cfs_quota_us"
        } else {
            "cpu.max"
        })
    }

    pub fn add_pid(&self, pid: u32) -> anyhow::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The current limit, read from the kernel.
    pub fn read_limit(&self) -> anyhow::Result<CpuLimit> {
        let read = |name: &str| {
            fs::read_to_string(self.dir.join(name))
                .with_context(|| format!("cannot read {}", self.dir.join(name).display()))
        };
        if self.version == 1 {
            let quota: i64 = read("cpu.cfs_quota_us")?
                .trim()
                .parse()
                .context("cpu.cfs_quota_us is not a number")?;
            let period: u64 = read("cpu.cfs_period_us")?
                .trim()
                .parse()
                .context("cpu.cfs_period_us is not a number")?;
            Ok(CpuLimit {
                quota_us: u64::try_from(quota).ok(),
                period_us: period,
            })
        } else {
            let text = read("cpu.max")?;
            let mut parts = text.split_whitespace();
            let quota = parts.next().unwrap_or("max");
            let period: u64 = parts
                .next()
                .unwrap_or("100000")
                .parse()
                .context("cpu.max period is not a number")?;
            Ok(CpuLimit {
                quota_us: quota.parse().ok(),
                period_us: period,
            })
        }
    }

    /// Periods in which the group was throttled so far.
    pub fn throttled_periods(&self) -> Option<u64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Removes the group once its processes are gone (best effort, bounded).
    pub fn remove(&self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!(
            "fincorpctl: could not remove cgroup {}; remove it by hand with rmdir",
            self.dir.display()
        );
    }
}

/// CPU time used so far by all threads of `pid`, in nanoseconds, from
/// `/proc/<pid>/task/*/schedstat`. `None` once the process is gone.
pub fn cpu_time_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_a_v2_group_in_a_fake_tree_and_reads_it_back() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory\n",
        )
        .unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        // A real kernel creates these files in every new group.
        fs::create_dir_all(root.path().join("fincorp")).unwrap();
        fs::write(root.path().join("fincorp/cgroup.subtree_control"), "").unwrap();
        let cg = ChaosCgroup::prepare(root.path(), "fincorp/APP", 1.5).unwrap();
        assert_eq!(cg.version, 2);
        assert_eq!(
            fs::read_to_string(cg.quota_file()).unwrap(),
            "150000 100000"
        );
        assert_eq!(
            cg.read_limit().unwrap(),
            CpuLimit {
                quota_us: Some(150_000),
                period_us: 100_000
            }
        );
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
    }

    #[test]
    fn refuses_paths_that_escape_the_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let err = ChaosCgroup::prepare(root.path(), "../etc", 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without '..'"), "{err}");
    }

    #[test]
    fn says_so_when_there_is_no_cpu_controller() {
        let root = tempfile::tempdir().unwrap();
        let err = ChaosCgroup::prepare(root.path(), "fincorp/APP", 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup cpu controller"), "{err}");
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let me = std::process::id();
        let before = cpu_time_ns(me).unwrap();
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        assert!(cpu_time_ns(me).unwrap() > before);
    }
}
