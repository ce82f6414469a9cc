//! `set_limits` against fake cgroup v1 and v2 trees, and against the real
//! cgroup v1 `cpu` and `memory` controllers of this machine. (cgroup v2's cpu
//! and memory controllers are not available here: v2 writes are tested on a
//! fake tree only.)

use super::*;

const REL: &str = "fincorp/APP";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

fn all() -> Wanted {
    Wanted {
        cpu_cores: Some(1.5),
        cpu_weight: Some(200),
        memory_max_bytes: Some(512 << 20),
    }
}

fn applied(o: Outcome) -> (String, AppLimits, AppLimits, String, String) {
    match o {
        Outcome::Applied {
            message,
            detail:
                CommandDetail::Limits {
                    before,
                    after,
                    backend,
                    target,
                    ..
                },
        } => (message, before, after, backend, target),
        other => panic!("expected applied limits, got {other:?}"),
    }
}

#[test]
fn weights_convert_like_systemd() {
    assert_eq!(weight_to_shares(100), 1024);
    assert_eq!(weight_to_shares(200), 2048);
    assert_eq!(weight_to_shares(1), 10);
    assert_eq!(weight_to_shares(10_000), 102_400);
    assert_eq!(shares_to_weight(1024), 100);
    assert_eq!(shares_to_weight(2048), 200);
}

#[test]
fn v1_quota_shares_and_memory_limit_are_written_and_read_back() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let cpu = r.join("cpu").join(REL);
    let mem = r.join("memory").join(REL);
    write(&cpu.join("cpu.cfs_quota_us"), "-1\n");
    write(&cpu.join("cpu.cfs_period_us"), "100000\n");
    write(&cpu.join("cpu.shares"), "1024\n");
    write(&mem.join("memory.limit_in_bytes"), "9223372036854771712\n");
    let backend = Backend::Cgroup {
        root: r.to_path_buf(),
        rel: REL.into(),
    };
    let (message, before, after, backend_name, target) =
        applied(set_limits("APP", &backend, &all()));
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "150000");
    assert_eq!(read_trim(&cpu.join("cpu.shares")), "2048");
    assert_eq!(
        read_trim(&mem.join("memory.limit_in_bytes")),
        (512u64 << 20).to_string()
    );
    assert_eq!(backend_name, "cgroup_v1");
    assert_eq!(target, format!("{},{}", cpu.display(), mem.display()));
    assert_eq!(before.cpu.unwrap().quota_us, None);
    assert_eq!(
        before.memory,
        Some(MemoryLimit { max_bytes: None }),
        "LONG_MAX is unlimited"
    );
    assert_eq!(after.cpu.unwrap().cores(), Some(1.5));
    assert_eq!(
        (before.cpu_weight, after.cpu_weight),
        (Some(100), Some(200))
    );
    assert_eq!(after.memory.unwrap().max_bytes, Some(512 << 20));
    assert!(
        message.contains("memory unlimited") && message.contains("memory 536870912 bytes"),
        "{message}"
    );
}

#[test]
fn v2_cpu_max_weight_and_memory_max_on_a_fake_tree() {
    // cgroup v2 with the cpu and memory controllers does not exist on this
    // machine; this tree has the same files and formats.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let dir = r.join(REL);
    write(&dir.join("cpu.max"), "max 100000\n");
    write(&dir.join("cpu.weight"), "100\n");
    write(&dir.join("memory.max"), "max\n");
    let backend = Backend::Cgroup {
        root: r.to_path_buf(),
        rel: REL.into(),
    };
    let (_, before, after, name, target) = applied(set_limits("APP", &backend, &all()));
    assert_eq!(read_trim(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(read_trim(&dir.join("cpu.weight")), "200");
    assert_eq!(
        read_trim(&dir.join("memory.max")),
        (512u64 << 20).to_string()
    );
    assert_eq!(
        (name.as_str(), target),
        ("cgroup_v2", dir.display().to_string())
    );
    assert_eq!(before.memory, Some(MemoryLimit { max_bytes: None }));
    assert_eq!(after.cpu_weight, Some(200));

    // Memory reallocation: +50% of 512 MiB, capped at 600 MiB.
    let out = raise_memory("APP", &backend, 50.0, 600 << 20);
    let (_, before, after, _, _) = applied(out);
    assert_eq!(before.memory.unwrap().max_bytes, Some(512 << 20));
    assert_eq!(after.memory.unwrap().max_bytes, Some(600 << 20));
    assert!(
        matches!(raise_memory("APP", &backend, 50.0, 600 << 20), Outcome::Refused(m) if m.starts_with("already at the ceiling"))
    );
}

#[test]
fn a_missing_controller_fails_with_the_paths_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("cpu").join(REL).join("cpu.cfs_quota_us"), "-1\n");
    let backend = Backend::Cgroup {
        root: r.to_path_buf(),
        rel: REL.into(),
    };
    match set_limits("APP", &backend, &all()) {
        Outcome::Failed(m) => assert!(m.starts_with("no memory cgroup found"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read_trim(&r.join("cpu").join(REL).join("cpu.cfs_quota_us")),
        "-1",
        "nothing written"
    );
}

/// Removes the test cgroups even when an assertion fails.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in &self.0 {
            if let Err(e) = std::fs::remove_dir(d) {
                eprintln!("could not remove test cgroup {}: {e}", d.display());
            }
        }
    }
}

/// Against the real kernel: this machine has writable cgroup v1 `cpu` and
/// `memory` controllers and the tests run as root.
#[test]
fn real_cgroup_v1_quota_shares_and_memory_limit_are_applied_by_the_kernel() {
    let root = Path::new("/sys/fs/cgroup");
    let name = format!("fincorp-limits-test-{}", std::process::id());
    let mut made = Cgroups(Vec::new());
    for controller in ["cpu", "memory"] {
        let dir = root.join(controller).join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            panic!(
                "cannot create the real cgroup {}: {e}. This test needs root and writable cgroup v1 `cpu` and \
                 `memory` controllers under /sys/fs/cgroup; it does not pass without them",
                dir.display()
            );
        }
        made.0.push(dir);
    }
    let backend = Backend::Cgroup {
        root: root.to_path_buf(),
        rel: PathBuf::from(&name),
    };
    let wanted = Wanted {
        cpu_cores: Some(0.75),
        cpu_weight: Some(50),
        memory_max_bytes: Some(256 << 20),
    };
    let (_, before, after, name_backend, _) = applied(set_limits("APP", &backend, &wanted));
    assert_eq!(name_backend, "cgroup_v1");
    assert_eq!(
        before.cpu.unwrap().quota_us,
        None,
        "a fresh cgroup is unlimited"
    );
    assert_eq!(read_trim(&made.0[0].join("cpu.cfs_quota_us")), "75000");
    assert_eq!(read_trim(&made.0[0].join("cpu.shares")), "512");
    assert_eq!(
        read_trim(&made.0[1].join("memory.limit_in_bytes")),
        (256u64 << 20).to_string()
    );
    assert_eq!(after.cpu.unwrap().cores(), Some(0.75));
    assert_eq!(after.cpu_weight, Some(50));
    assert_eq!(after.memory.unwrap().max_bytes, Some(256 << 20));
    // A limit that is not page-aligned is stored rounded down by the kernel;
    // the read-back check allows for exactly that.
    let odd = Wanted {
        memory_max_bytes: Some((300 << 20) + 123),
        ..Wanted::default()
    };
    let (_, _, after, _, _) = applied(set_limits("APP", &backend, &odd));
    assert_eq!(after.memory.unwrap().max_bytes, Some(300 << 20));
}
