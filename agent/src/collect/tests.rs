//! Sampler tests against real processes spawned by the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use regex::Regex;

use super::*;
use crate::config::Selector;

/// A token no other process on the machine has in its command line.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Kills what a test started, even when the test fails.
struct Reaper {
    child: Child,
    extra_pids: Vec<u32>,
}

impl Reaper {
    fn new(child: Child) -> Self {
        Self {
            child,
            extra_pids: Vec::new(),
        }
    }

    fn kill_now(&mut self) {
        for pid in self.extra_pids.drain(..) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn app(name: &str, selector: Selector) -> AppConfig {
    AppConfig {
        name: name.into(),
        selector,
        cgroup: None,
        probe: None,
        rules: Vec::new(),
    }
}

fn cmdline(pattern: &str) -> Selector {
    Selector::Cmdline(Regex::new(pattern).unwrap())
}

fn at(sample: &HostSample, app: &str) -> AppSample {
    sample
        .apps
        .iter()
        .find(|a| a.app == app)
        .cloned()
        .unwrap_or_else(|| panic!("{app} missing: {sample:?}"))
}

#[test]
fn a_cmdline_selector_finds_a_real_process_and_drops_it_when_it_exits() {
    let seconds = format!("300.{}", unique());
    let mut sleeper = Reaper::new(
        Command::new("sleep")
            .arg(&seconds)
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = sleeper.child.id();
    let apps = [
        app(
            "SLEEPER",
            cmdline(&format!("^sleep {}$", regex::escape(&seconds))),
        ),
        app("NOBODY", Selector::Exe(format!("no-such-exe-{}", unique()))),
    ];
    let mut sampler = Sampler::new(&apps, Duration::ZERO, Path::new("/sys/fs/cgroup")).unwrap();

    let first = sampler.sample(Instant::now(), 1_000);
    assert_eq!(first.apps.len(), 2, "every configured app is reported");
    let s = at(&first, "SLEEPER");
    assert_eq!(s.processes, 1, "{first:?}");
    assert_eq!(sampler.pids_of(0), [pid]);
    assert!(s.rss_bytes > 0, "{s:?}");
    assert_eq!(s.cpu_pct, 0.0, "a newly discovered pid contributes 0 CPU");
    assert_eq!(
        at(&first, "NOBODY"),
        AppSample {
            app: "NOBODY".into(),
            processes: 0,
            cpu_pct: 0.0,
            rss_bytes: 0,
            probe: None,
            host_cpu_pct: Some(0.0),
            throttling: None,
        }
    );
    assert_eq!(first.at_ms, 1_000);
    assert!(first.mem_total_bytes > 0 && first.mem_used_bytes > 0);

    sleeper.kill_now();
    let after = sampler.sample(Instant::now(), 2_000);
    let s = at(&after, "SLEEPER");
    assert_eq!(
        (s.processes, s.cpu_pct, s.rss_bytes),
        (0, 0.0, 0),
        "{after:?}"
    );
    assert!(sampler.pids_of(0).is_empty());
}

#[test]
fn an_exe_selector_matches_the_executable_file_name_not_argv() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("fincorp-exe-test-{}", unique());
    let exe = dir.path().join(&name);
    std::fs::copy(which_sleep(), &exe).unwrap();
    // Another thread may fork while the copy is still open for writing
    // ("text file busy"); retry briefly.
    let mut spawned = None;
    for _ in 0..50 {
        match Command::new(&exe).arg("300").spawn() {
            Ok(child) => {
                spawned = Some(child);
                break;
            }
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("spawn {}: {e}", exe.display()),
        }
    }
    let sleeper = Reaper::new(spawned.expect("spawn kept failing with ETXTBSY"));
    let apps = [
        app("BY-EXE", Selector::Exe(name.clone())),
        app("BY-ARGV0", cmdline(&format!("^{name}$"))),
    ];
    let mut sampler = Sampler::new(&apps, Duration::ZERO, Path::new("/sys/fs/cgroup")).unwrap();
    let sample = sampler.sample(Instant::now(), 0);
    assert_eq!(at(&sample, "BY-EXE").processes, 1, "{sample:?}");
    assert_eq!(sampler.pids_of(0), [sleeper.child.id()]);
    assert_eq!(
        at(&sample, "BY-ARGV0").processes,
        0,
        "argv is `<path> 300`, not the bare name"
    );
}

fn which_sleep() -> &'static str {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("coreutils sleep is installed")
}

#[test]
fn children_of_a_matched_process_are_folded_into_its_app() {
    let marker = format!("fincorp-fold-{}", unique());
    let mut child = Command::new("sh")
        .args(["-c", "sleep 300 & echo $!; wait", &marker])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reaper = Reaper::new(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the sleep's pid");
    let sleep_pid: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {line:?}"));
    reaper.extra_pids.push(sleep_pid);
    let sh_pid = reaper.child.id();

    let apps = [app("PARENT", cmdline(&regex::escape(&marker)))];
    let mut sampler = Sampler::new(&apps, Duration::ZERO, Path::new("/sys/fs/cgroup")).unwrap();
    let sample = sampler.sample(Instant::now(), 0);
    assert_eq!(at(&sample, "PARENT").processes, 2, "{sample:?}");
    let mut expected = vec![sh_pid, sleep_pid];
    expected.sort();
    assert_eq!(sampler.pids_of(0), expected);
}

#[test]
fn the_agent_never_matches_itself() {
    let me = std::env::current_exe().unwrap();
    let name = me.file_name().unwrap().to_string_lossy().into_owned();
    let apps = [app("SELF", Selector::Exe(name))];
    let mut sampler = Sampler::new(&apps, Duration::ZERO, Path::new("/sys/fs/cgroup")).unwrap();
    sampler.sample(Instant::now(), 0);
    assert!(!sampler.pids_of(0).contains(&std::process::id()));
}

#[test]
fn cpu_is_summed_per_app_once_a_pid_has_two_readings_and_drops_to_zero_on_exit() {
    let marker = format!("fincorp-burn-{}", unique());
    let mut burner = Reaper::new(
        Command::new("sh")
            .args(["-c", "while :; do :; done", &marker])
            .spawn()
            .expect("spawn sh"),
    );
    // sysinfo treats a first reading of zero CPU ticks as "no reading yet";
    // let the burner accumulate a few ticks first.
    std::thread::sleep(Duration::from_millis(300));
    let apps = [app("BURNER", cmdline(&regex::escape(&marker)))];
    // A long discovery interval: after the first scan only the known pid is refreshed.
    let mut sampler = Sampler::new(
        &apps,
        Duration::from_secs(3600),
        Path::new("/sys/fs/cgroup"),
    )
    .unwrap();
    let t0 = Instant::now();
    let first = sampler.sample(t0, 0);
    assert_eq!(at(&first, "BURNER").processes, 1, "{first:?}");
    assert_eq!(at(&first, "BURNER").cpu_pct, 0.0, "first reading");

    std::thread::sleep(Duration::from_millis(1_000));
    let second = sampler.sample(Instant::now(), 1_000);
    let cpu = at(&second, "BURNER").cpu_pct;
    // A busy loop uses close to a full core; anything above 10% proves the
    // per-pid refresh computes CPU over the interval.
    assert!(
        cpu > 10.0 && cpu <= 100.0 * sysinfo_cpus() as f64 + 1.0,
        "burner cpu {cpu}"
    );
    assert!(second.cpu_pct > 1.0, "host cpu {}", second.cpu_pct);

    burner.kill_now();
    let third = sampler.sample(Instant::now(), 2_000);
    let s = at(&third, "BURNER");
    assert_eq!((s.processes, s.cpu_pct), (0, 0.0), "{third:?}");
}

fn sysinfo_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------
// One test per selector kind: a spawned process tree (a shell and two
// children) is grouped into the right app, children counted.
// ---------------------------------------------------------------------------

/// A shell that starts two `sleep` children and prints their PIDs. `setup`
/// runs first in the shell (e.g. to move itself into a cgroup, so the
/// children are born there).
struct Tree {
    reaper: Reaper,
    children: Vec<u32>,
}

impl Tree {
    fn spawn(program: &Path, setup: &str, marker: &str) -> Tree {
        let script = format!("{setup}sleep 300 & echo $!; sleep 300 & echo $!; wait");
        let mut spawned = None;
        for _ in 0..50 {
            match Command::new(program)
                .args(["-c", &script, marker])
                .stdout(Stdio::piped())
                .spawn()
            {
                Ok(c) => {
                    spawned = Some(c);
                    break;
                }
                // A copied executable may still be open for writing in
                // another thread's fork ("text file busy"); retry briefly.
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("spawn {}: {e}", program.display()),
            }
        }
        let mut child = spawned.expect("spawn kept failing with ETXTBSY");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reaper = Reaper::new(child);
        let mut lines = BufReader::new(stdout).lines();
        let mut children = Vec::new();
        for _ in 0..2 {
            let line = lines.next().expect("a child pid").expect("read");
            let pid: u32 = line
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a pid: {line:?}"));
            reaper.extra_pids.push(pid);
            children.push(pid);
        }
        Tree { reaper, children }
    }

    fn pids(&self) -> Vec<u32> {
        let mut all = self.children.clone();
        all.push(self.reaper.child.id());
        all.sort();
        all
    }
}

fn sh() -> &'static Path {
    Path::new("/bin/sh")
}

/// Samples with a decoy app first in config order that matches nothing, so
/// the tree must land in the app under test (index 1).
fn grouped(selector: Selector, cgroup_root: &Path) -> (Vec<u32>, AppSample, AppSample) {
    let apps = [
        app("DECOY", Selector::Exe(format!("no-such-exe-{}", unique()))),
        app("UNDER-TEST", selector),
    ];
    let mut sampler = Sampler::new(&apps, Duration::ZERO, cgroup_root).unwrap();
    let s = sampler.sample(Instant::now(), 0);
    (sampler.pids_of(1), at(&s, "DECOY"), at(&s, "UNDER-TEST"))
}

fn assert_tree_grouped(tree: &Tree, selector: Selector, cgroup_root: &Path) {
    let (pids, decoy, app) = grouped(selector, cgroup_root);
    assert_eq!(pids, tree.pids(), "the shell and both children");
    assert_eq!(app.processes, 3, "{app:?}");
    assert!(app.rss_bytes > 0);
    assert_eq!(decoy.processes, 0);
}

#[test]
fn selector_exe_groups_a_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    // Longer than the 15 characters Linux keeps of a process name.
    let name = format!("fincorp-exe-selector-{}", unique());
    let exe = dir.path().join(&name);
    std::fs::copy(sh(), &exe).unwrap();
    let tree = Tree::spawn(&exe, "", "x");
    assert_tree_grouped(&tree, Selector::Exe(name), Path::new("/sys/fs/cgroup"));
}

#[test]
fn selector_cmdline_groups_a_process_tree() {
    let marker = format!("fincorp-cmdline-selector-{}", unique());
    let tree = Tree::spawn(sh(), "", &marker);
    assert_tree_grouped(
        &tree,
        cmdline(&regex::escape(&marker)),
        Path::new("/sys/fs/cgroup"),
    );
}

#[test]
fn selector_pidfile_groups_a_process_tree() {
    let tree = Tree::spawn(sh(), "", "pidfile-test");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    std::fs::write(&pidfile, format!("{}\n", tree.reaper.child.id())).unwrap();
    assert_tree_grouped(
        &tree,
        Selector::Pidfile(pidfile.clone()),
        Path::new("/sys/fs/cgroup"),
    );
    // A pidfile naming a process that is gone selects nothing.
    std::fs::write(&pidfile, "4194303\n").unwrap();
    let (pids, _, app) = grouped(Selector::Pidfile(pidfile), Path::new("/sys/fs/cgroup"));
    assert!(pids.is_empty() && app.processes == 0, "{app:?}");
}

/// A real cgroup v1 `cpu` directory, removed (after its processes) on drop.
struct RealCgroup(PathBuf);

impl RealCgroup {
    fn create(rel: &str) -> RealCgroup {
        let dir = Path::new("/sys/fs/cgroup/cpu").join(rel);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!(
                "cannot create the real cgroup {}: {e}. This test needs root and a writable cgroup v1 `cpu` \
                 controller at /sys/fs/cgroup/cpu; it does not pass without one",
                dir.display()
            );
        }
        RealCgroup(dir)
    }

    /// Shell code that moves the shell itself into this cgroup.
    fn join(&self) -> String {
        format!("echo $$ > {}/cgroup.procs; ", self.0.display())
    }
}

impl Drop for RealCgroup {
    fn drop(&mut self) {
        // Remove the leaf, then its parents up to the controller's mount.
        let mut dir = Some(self.0.as_path());
        while let Some(d) = dir.filter(|d| *d != Path::new("/sys/fs/cgroup/cpu")) {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            dir = d.parent();
        }
    }
}

#[test]
fn selector_cgroup_groups_a_process_tree_in_a_real_v1_cgroup() {
    let rel = format!("fincorp-sel-cg-{}/app", unique());
    let cg = RealCgroup::create(&rel);
    let tree = Tree::spawn(sh(), &cg.join(), "cgroup-test");
    assert_tree_grouped(
        &tree,
        Selector::Cgroup(PathBuf::from(&rel)),
        Path::new("/sys/fs/cgroup"),
    );
    // The parent cgroup selects the processes below it too.
    let parent = rel.split('/').next().unwrap();
    let (_, _, app) = grouped(
        Selector::Cgroup(PathBuf::from(parent)),
        Path::new("/sys/fs/cgroup"),
    );
    assert_eq!(app.processes, 3);
    drop(tree);
}

#[test]
fn selector_systemd_unit_groups_a_process_tree_in_its_real_v1_cgroup() {
    // systemd is not PID 1 here, so this builds what systemd would: the
    // unit's cgroup below a slice, in a real (v1 cpu) hierarchy.
    let unit = format!("fincorp-sel-{}.service", unique());
    let cg = RealCgroup::create(&format!("fincorp-test-{}.slice/{unit}", unique()));
    let tree = Tree::spawn(sh(), &cg.join(), "unit-test");
    assert_tree_grouped(
        &tree,
        Selector::SystemdUnit(unit),
        Path::new("/sys/fs/cgroup"),
    );
    drop(tree);
}

#[test]
fn selector_systemd_unit_in_a_fake_v2_tree_and_its_throttling() {
    // A cgroup v2 layout (no v2 cpu controller exists on this machine): the
    // unit's cgroup.procs lists the real tree's PIDs; cpu.stat is v2's.
    let tree = Tree::spawn(sh(), "", "unit-v2-test");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.procs"), "1\n").unwrap();
    let unit_dir = root.path().join("system.slice/hft.service");
    std::fs::create_dir_all(unit_dir.join("worker")).unwrap();
    let [a, b] = [tree.children[0], tree.children[1]];
    std::fs::write(
        unit_dir.join("cgroup.procs"),
        format!("{}\n{a}\n", tree.reaper.child.id()),
    )
    .unwrap();
    std::fs::write(unit_dir.join("worker/cgroup.procs"), format!("{b}\n")).unwrap();
    std::fs::write(unit_dir.join("cpu.max"), "50000 100000\n").unwrap();
    std::fs::write(
        unit_dir.join("cpu.stat"),
        "usage_usec 1\nnr_periods 40\nnr_throttled 10\nthrottled_usec 123456\n",
    )
    .unwrap();
    let (pids, _, app) = grouped(Selector::SystemdUnit("hft.service".into()), root.path());
    assert_eq!(pids, tree.pids());
    assert_eq!(app.processes, 3);
    assert_eq!(
        app.throttling,
        Some(fincorp_api::wire::CpuThrottling {
            nr_periods: 40,
            nr_throttled: 10,
            throttled_us: 123_456
        })
    );
}

#[test]
fn a_real_cgroup_reports_throttling_and_host_cpu_share() {
    let rel = format!("fincorp-throttle-{}", unique());
    let cg = RealCgroup::create(&rel);
    std::fs::write(cg.0.join("cpu.cfs_quota_us"), "10000").unwrap();
    // A busy loop limited to 10% of a core is throttled almost every period.
    let mut burner = Reaper::new(
        Command::new("sh")
            .args(["-c", &format!("{}while :; do :; done", cg.join())])
            .spawn()
            .unwrap(),
    );
    let mut a = app("THROTTLED", Selector::Cgroup(PathBuf::from(&rel)));
    a.cgroup = Some(PathBuf::from(&rel));
    let mut sampler =
        Sampler::new(&[a], Duration::from_secs(3600), Path::new("/sys/fs/cgroup")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let first = sampler.sample(Instant::now(), 0);
    std::thread::sleep(Duration::from_millis(1_000));
    let second = sampler.sample(Instant::now(), 1_000);
    burner.kill_now();
    let (t0, t1) = (
        first.apps[0].throttling.expect("cpu.stat read"),
        second.apps[0].throttling.expect("cpu.stat read"),
    );
    assert!(
        t1.nr_periods > t0.nr_periods && t1.nr_throttled > t0.nr_throttled,
        "{t0:?} {t1:?}"
    );
    assert!(t1.throttled_us > t0.throttled_us);
    let s = &second.apps[0];
    assert!(
        s.cpu_pct > 3.0 && s.cpu_pct < 20.0,
        "held near the 10% quota: {}",
        s.cpu_pct
    );
    let cores = sysinfo_cpus() as f64;
    assert!((s.host_cpu_pct.unwrap() - s.cpu_pct / cores).abs() < 1e-9);
}
