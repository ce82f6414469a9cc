//! The `reallocate` action: raise an app's CFS CPU quota through its cgroup,
//! on cgroup v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`) or v2 (`cpu.max`).
//!
//! This is blocking file IO; callers run it on `spawn_blocking`.

use std::path::{Path, PathBuf};

use fincorp_api::wire::{CommandDetail, CpuLimit};

/// How one reallocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied {
        message: String,
        detail: CommandDetail,
    },
    Refused(String),
    Failed(String),
    /// Attempted and failed, with what is known (e.g. a script's exit code).
    FailedWith {
        message: String,
        detail: CommandDetail,
    },
}

/// Which cgroup interface an app's directory uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interface {
    /// `dir` holds `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1 { dir: PathBuf },
    /// `dir` holds `cpu.max`.
    V2 { dir: PathBuf },
}

impl Interface {
    fn find(root: &Path, rel: &Path) -> Result<Self, String> {
        let v1 = root.join("cpu").join(rel);
        if v1.join("cpu.cfs_quota_us").is_file() {
            return Ok(Interface::V1 { dir: v1 });
        }
        let v2 = [root.join(rel), root.join("unified").join(rel)];
        if let Some(dir) = v2.iter().find(|d| d.join("cpu.max").is_file()) {
            return Ok(Interface::V2 { dir: dir.clone() });
        }
        // A v2 group without cpu.max: its cpu controller is not enabled.
        if let Some(dir) = v2.iter().find(|d| d.join("cgroup.controllers").is_file()) {
            let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default();
            let parent = dir.parent().unwrap_or(dir);
            return Err(format!(
                "the cgroup v2 group {} has no cpu.max: its cpu controller is not enabled \
                 (its cgroup.controllers: {controllers:?}). Enable it with `echo +cpu > {}`, \
                 or, where the cpu controller is bound to cgroup v1 (a hybrid host), give the \
                 app a cgroup under the v1 cpu hierarchy",
                dir.display(),
                parent.join("cgroup.subtree_control").display()
            ));
        }
        Err(format!(
            "no cpu cgroup found: none of {}, {}, {} exists",
            v1.join("cpu.cfs_quota_us").display(),
            v2[0].join("cpu.max").display(),
            v2[1].join("cpu.max").display()
        ))
    }

    fn dir(&self) -> &Path {
        match self {
            Interface::V1 { dir } | Interface::V2 { dir } => dir,
        }
    }

    fn version(&self) -> u8 {
        match self {
            Interface::V1 { .. } => 1,
            Interface::V2 { .. } => 2,
        }
    }

    /// The file a new quota is written to.
    fn file(&self) -> PathBuf {
        match self {
            Interface::V1 { dir } => dir.join("cpu.cfs_quota_us"),
            Interface::V2 { dir } => dir.join("cpu.max"),
        }
    }

    fn read(&self) -> Result<CpuLimit, String> {
        match self {
            Interface::V1 { dir } => {
                let quota: i64 = read_number(&dir.join("cpu.cfs_quota_us"))?;
                let period: u64 = read_number(&dir.join("cpu.cfs_period_us"))?;
                Ok(CpuLimit {
                    quota_us: u64::try_from(quota).ok(),
                    period_us: period,
                })
            }
            Interface::V2 { dir } => {
                let path = dir.join("cpu.max");
                parse_cpu_max(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    fn write(&self, limit: &CpuLimit) -> Result<(), String> {
        let (path, text) = match self {
            Interface::V1 { .. } => (
                self.file(),
                limit.quota_us.map_or("-1".to_owned(), |q| q.to_string()),
            ),
            Interface::V2 { .. } => (
                self.file(),
                format!(
                    "{} {}",
                    limit.quota_us.map_or("max".to_owned(), |q| q.to_string()),
                    limit.period_us
                ),
            ),
        };
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Result<T, String> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| {
        format!(
            "{}: expected a number, found {:?}",
            path.display(),
            text.trim()
        )
    })
}

/// Parses cgroup v2 `cpu.max`: `max 100000` or `150000 100000`.
fn parse_cpu_max(text: &str) -> Result<CpuLimit, String> {
    let mut parts = text.split_whitespace();
    let quota = match parts.next() {
        Some("max") => None,
        Some(q) => Some(
            q.parse::<u64>()
                .map_err(|_| format!("bad quota {q:?} in cpu.max"))?,
        ),
        None => return Err("cpu.max is empty".into()),
    };
    let period = match parts.next() {
        Some(p) => p
            .parse::<u64>()
            .map_err(|_| format!("bad period {p:?} in cpu.max"))?,
        None => 100_000,
    };
    if parts.next().is_some() || period == 0 {
        return Err(format!("unexpected cpu.max contents {:?}", text.trim()));
    }
    Ok(CpuLimit {
        quota_us: quota,
        period_us: period,
    })
}

/// Raises the CPU quota of `app`'s cgroup `rel` (below `root`) by
/// `increase_pct` percent, never above `max_cpu_cores` cores, then reads it
/// back to check the kernel took it. The caller has already checked
/// `increase_pct` against the allowlist.
pub fn reallocate_cpu(
    app: &str,
    root: &Path,
    rel: &Path,
    increase_pct: f64,
    max_cpu_cores: f64,
) -> Outcome {
    let iface = match Interface::find(root, rel) {
        Ok(i) => i,
        Err(e) => return Outcome::Failed(e),
    };
    let before = match iface.read() {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e),
    };
    let Some(old) = before.quota_us else {
        return Outcome::Failed(format!(
            "quota is unlimited; nothing to raise ({} is {before})",
            iface.file().display()
        ));
    };
    let raised = (old as f64 * (1.0 + increase_pct / 100.0)).round();
    let ceiling = (max_cpu_cores * before.period_us as f64).floor();
    let new = raised.min(ceiling);
    if !new.is_finite() || new <= old as f64 {
        return Outcome::Refused(format!(
            "already at the ceiling: quota {before} cannot be raised above max_cpu_cores {max_cpu_cores}"
        ));
    }
    let wanted = CpuLimit {
        quota_us: Some(new as u64),
        period_us: before.period_us,
    };
    if let Err(e) = iface.write(&wanted) {
        return Outcome::Failed(e);
    }
    let after = match iface.read() {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(format!("wrote {wanted} but cannot read it back: {e}")),
    };
    if after != wanted {
        return Outcome::Failed(format!(
            "wrote {wanted} to {} but read back {after}",
            iface.file().display()
        ));
    }
    let clamped = if raised > ceiling {
        " (clamped to max_cpu_cores)"
    } else {
        ""
    };
    Outcome::Applied {
        message: format!("raised the cpu quota of {app} from {before} to {after}{clamped}"),
        detail: CommandDetail::Reallocate {
            app: app.to_owned(),
            cgroup: iface.dir().display().to_string(),
            cgroup_version: iface.version(),
            file: iface.file().display().to_string(),
            before,
            after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_tree(quota: &str, period: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cpu/fincorp/APP");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), format!("{quota}\n")).unwrap();
        std::fs::write(dir.join("cpu.cfs_period_us"), format!("{period}\n")).unwrap();
        root
    }

    fn v2_tree(sub: &str, max: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(sub).join("fincorp/APP");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.max"), format!("{max}\n")).unwrap();
        root
    }

    fn applied(outcome: Outcome) -> (String, CommandDetail) {
        match outcome {
            Outcome::Applied { message, detail } => (message, detail),
            other => panic!("expected Applied, got {other:?}"),
        }
    }

    const REL: &str = "fincorp/APP";

    #[test]
    fn v1_quota_is_raised_and_read_back() {
        let root = v1_tree("50000", "100000");
        let (message, detail) = applied(reallocate_cpu(
            "APP",
            root.path(),
            Path::new(REL),
            20.0,
            2.0,
        ));
        let file = root.path().join("cpu/fincorp/APP/cpu.cfs_quota_us");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60000");
        assert_eq!(
            detail,
            CommandDetail::Reallocate {
                app: "APP".into(),
                cgroup: root.path().join("cpu/fincorp/APP").display().to_string(),
                cgroup_version: 1,
                file: file.display().to_string(),
                before: CpuLimit {
                    quota_us: Some(50_000),
                    period_us: 100_000
                },
                after: CpuLimit {
                    quota_us: Some(60_000),
                    period_us: 100_000
                },
            }
        );
        assert!(
            message.contains("50000/100000us (0.50 cores) to 60000/100000us (0.60 cores)"),
            "{message}"
        );
    }

    #[test]
    fn v2_cpu_max_is_raised_under_root_or_unified() {
        for sub in ["", "unified"] {
            let root = v2_tree(sub, "150000 100000");
            let (_, detail) = applied(reallocate_cpu(
                "APP",
                root.path(),
                Path::new(REL),
                20.0,
                4.0,
            ));
            let file = root.path().join(sub).join("fincorp/APP/cpu.max");
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                "180000 100000",
                "under {sub:?}"
            );
            let CommandDetail::Reallocate {
                cgroup_version,
                file: written,
                before,
                after,
                ..
            } = detail
            else {
                panic!("not a reallocate detail")
            };
            assert_eq!(cgroup_version, 2);
            assert_eq!(written, file.display().to_string());
            assert_eq!(
                (before.quota_us, after.quota_us),
                (Some(150_000), Some(180_000))
            );
        }
    }

    #[test]
    fn a_v2_group_without_the_cpu_controller_is_named_not_written() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("unified").join(REL);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let Outcome::Failed(e) = reallocate_cpu("APP", root.path(), Path::new(REL), 20.0, 2.0)
        else {
            panic!("expected a failure")
        };
        assert!(e.contains("cpu controller is not enabled"), "{e}");
        assert!(e.contains("\"hugetlb\""), "{e}");
        assert!(!dir.join("cpu.max").exists(), "nothing is written");
    }

    /// Against the real kernel's cgroup v2 hierarchy: at /sys/fs/cgroup on a
    /// v2-only host, at /sys/fs/cgroup/unified on a hybrid one (this
    /// machine, where the cpu controller is bound to v1, so v2 groups cannot
    /// have one). With a cpu controller the quota is raised and read back
    /// from the kernel; without one the refusal names what is missing and
    /// nothing is written.
    #[test]
    fn real_cgroup_v2_gets_its_quota_raised_or_the_missing_controller_named() {
        let fs = Path::new("/sys/fs/cgroup");
        let v2_root = [fs.to_path_buf(), fs.join("unified")]
            .into_iter()
            .find(|d| d.join("cgroup.controllers").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no cgroup v2 hierarchy is mounted at {} or {}/unified; this test needs one",
                    fs.display(),
                    fs.display()
                )
            });
        let name = format!("fincorp-realloc-v2-test-{}", std::process::id());
        let dir = v2_root.join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            panic!(
                "cannot create the real cgroup {}: {e}. This test needs root and a writable cgroup v2 hierarchy",
                dir.display()
            );
        }
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                if let Err(e) = std::fs::remove_dir(&self.0) {
                    eprintln!("could not remove test cgroup {}: {e}", self.0.display());
                }
            }
        }
        let _cleanup = Remove(dir.clone());
        let available = std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap();
        if available.split_whitespace().any(|c| c == "cpu") {
            std::fs::write(v2_root.join("cgroup.subtree_control"), "+cpu").unwrap();
            std::fs::write(dir.join("cpu.max"), "50000 100000").unwrap();
            let (_, detail) = applied(reallocate_cpu("APP", fs, Path::new(&name), 20.0, 2.0));
            assert_eq!(
                std::fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
                "60000 100000"
            );
            let CommandDetail::Reallocate { cgroup_version, .. } = detail else {
                panic!("not a reallocate detail")
            };
            assert_eq!(cgroup_version, 2);
        } else {
            let outcome = reallocate_cpu("APP", fs, Path::new(&name), 20.0, 2.0);
            let Outcome::Failed(e) = outcome else {
                panic!("expected a failure naming the missing cpu controller, got {outcome:?}")
            };
            assert!(e.contains("cpu controller is not enabled"), "{e}");
            assert!(e.contains(&dir.display().to_string()), "{e}");
            assert!(
                !dir.join("cpu.max").exists(),
                "the kernel offers no cpu.max here"
            );
        }
    }

    #[test]
    fn v1_wins_when_both_layouts_exist() {
        let root = v1_tree("50000", "100000");
        let v2 = root.path().join(REL);
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.max"), "10000 100000").unwrap();
        let (_, CommandDetail::Reallocate { cgroup_version, .. }) = applied(reallocate_cpu(
            "APP",
            root.path(),
            Path::new(REL),
            10.0,
            2.0,
        )) else {
            panic!("not a reallocate detail")
        };
        assert_eq!(cgroup_version, 1);
        assert_eq!(
            std::fs::read_to_string(v2.join("cpu.max")).unwrap(),
            "10000 100000",
            "v2 untouched"
        );
    }

    #[test]
    fn unlimited_quotas_fail_on_both_versions() {
        let root = v1_tree("-1", "100000");
        let out = reallocate_cpu("APP", root.path(), Path::new(REL), 20.0, 2.0);
        assert!(
            matches!(&out, Outcome::Failed(m) if m.starts_with("quota is unlimited; nothing to raise")),
            "{out:?}"
        );
        let root = v2_tree("", "max 100000");
        let out = reallocate_cpu("APP", root.path(), Path::new(REL), 20.0, 2.0);
        assert!(
            matches!(&out, Outcome::Failed(m) if m.starts_with("quota is unlimited; nothing to raise")),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join(REL).join("cpu.max")).unwrap(),
            "max 100000\n"
        );
    }

    #[test]
    fn the_ceiling_clamps_and_then_refuses() {
        let root = v1_tree("180000", "100000");
        let (message, _) = applied(reallocate_cpu(
            "APP",
            root.path(),
            Path::new(REL),
            50.0,
            2.0,
        ));
        assert!(message.ends_with("(clamped to max_cpu_cores)"), "{message}");
        let file = root.path().join("cpu/fincorp/APP/cpu.cfs_quota_us");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "200000");
        let out = reallocate_cpu("APP", root.path(), Path::new(REL), 50.0, 2.0);
        assert!(
            matches!(&out, Outcome::Refused(m) if m.starts_with("already at the ceiling")),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "200000",
            "nothing written"
        );
    }

    #[test]
    fn a_missing_cgroup_or_garbage_fails_with_the_paths() {
        let root = tempfile::tempdir().unwrap();
        let out = reallocate_cpu("APP", root.path(), Path::new(REL), 20.0, 2.0);
        assert!(
            matches!(&out, Outcome::Failed(m) if m.starts_with("no cpu cgroup found") && m.contains("cpu.max")),
            "{out:?}"
        );
        let root = v1_tree("lots", "100000");
        let out = reallocate_cpu("APP", root.path(), Path::new(REL), 20.0, 2.0);
        assert!(
            matches!(&out, Outcome::Failed(m) if m.contains("expected a number, found \"lots\"")),
            "{out:?}"
        );
    }

    #[test]
    fn cpu_max_parsing() {
        assert_eq!(
            parse_cpu_max("max 100000\n"),
            Ok(CpuLimit {
                quota_us: None,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cpu_max("150000 50000"),
            Ok(CpuLimit {
                quota_us: Some(150_000),
                period_us: 50_000
            })
        );
        assert_eq!(
            parse_cpu_max("max"),
            Ok(CpuLimit {
                quota_us: None,
                period_us: 100_000
            })
        );
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("1 2 3").is_err());
        assert!(parse_cpu_max("-5 100000").is_err());
        assert!(parse_cpu_max("5 0").is_err());
    }

    /// Removes the test cgroup even when an assertion fails.
    struct CgroupDir(PathBuf);

    impl Drop for CgroupDir {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir(&self.0) {
                eprintln!("could not remove test cgroup {}: {e}", self.0.display());
            }
        }
    }

    /// Against the real kernel: this machine has a writable cgroup v1 `cpu`
    /// controller at /sys/fs/cgroup/cpu and the tests run as root.
    #[test]
    fn a_real_cgroup_v1_quota_is_raised_by_the_kernel() {
        let root = Path::new("/sys/fs/cgroup");
        let name = format!("fincorp-agent-test-{}", std::process::id());
        let dir = root.join("cpu").join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            panic!(
                "cannot create the real cgroup {}: {e}. This test needs root and a writable cgroup v1 \
                 `cpu` controller mounted at /sys/fs/cgroup/cpu; it does not pass without one",
                dir.display()
            );
        }
        let _cleanup = CgroupDir(dir.clone());
        let quota = dir.join("cpu.cfs_quota_us");
        std::fs::write(&quota, "50000")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", quota.display()));
        let period: u64 = read_number(&dir.join("cpu.cfs_period_us")).unwrap();
        assert_eq!(period, 100_000, "a fresh cgroup has the default period");

        let (_, detail) = applied(reallocate_cpu("APP", root, Path::new(&name), 20.0, 2.0));
        assert_eq!(
            std::fs::read_to_string(&quota).unwrap().trim(),
            "60000",
            "the kernel holds the new quota"
        );
        let CommandDetail::Reallocate {
            cgroup_version,
            before,
            after,
            ..
        } = detail
        else {
            panic!("not a reallocate detail")
        };
        assert_eq!(cgroup_version, 1);
        assert_eq!(before.quota_us, Some(50_000));
        assert_eq!(after.quota_us, Some(60_000));
    }
}
