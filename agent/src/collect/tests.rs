//! Sampler tests against real processes spawned by the test.

use std::io::{BufRead, BufReader};
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
    let mut sampler = Sampler::new(&apps, Duration::ZERO).unwrap();

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
            probe: None
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
    let mut sampler = Sampler::new(&apps, Duration::ZERO).unwrap();
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
    let mut sampler = Sampler::new(&apps, Duration::ZERO).unwrap();
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
    let mut sampler = Sampler::new(&apps, Duration::ZERO).unwrap();
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
    let mut sampler = Sampler::new(&apps, Duration::from_secs(3600)).unwrap();
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
