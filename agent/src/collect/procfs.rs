//! A minimal reader of `/proc/<pid>/…`: just what per-app sampling needs, so
//! the 1 s path costs one small file read per tracked process and discovery
//! reads `stat`, `exe` and `cmdline` of a process only once, when it is new.
//!
//! sysinfo's full scan reads `stat` and `status` of every process on every
//! pass; on a host with ~500 processes that alone is about 1% of a core at
//! 1 s. See ARCHITECTURE.md ("agent/").

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    pub ppid: u32,
    /// `R`, `S`, `Z`, ...
    pub state: u8,
    pub kernel_thread: bool,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks: with the PID, it identifies a process.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

impl PidStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(text: &[u8]) -> Option<PidStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // Fields from 3 (state) on; index 0 here is field 3.
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let mut nth = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
    let ppid = nth(0)?; // field 4
    let flags = nth(4)?; // field 9
    let utime = nth(4)?; // field 14
    let stime = nth(0)?; // field 15
    let start_ticks = nth(6)?; // field 22
    let rss_pages = nth(1)?; // field 24
    Some(PidStat {
        ppid: u32::try_from(ppid).ok()?,
        state,
        kernel_thread: flags & PF_KTHREAD != 0,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
        rss_pages,
    })
}

/// Reads `/proc` with reusable buffers.
#[derive(Debug)]
pub struct ProcFs {
    root: PathBuf,
    buf: Vec<u8>,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            buf: Vec::with_capacity(1024),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every numeric entry of `/proc`: the PIDs of all processes (not threads).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let name = e.ok()?.file_name();
            let name = name.to_str()?;
            if name.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                name.parse().ok()
            } else {
                None
            }
        })
        .collect()
    }

    fn read_into_buf(&mut self, pid: u32, file: &str) -> bool {
        self.buf.clear();
        let path = self.root.join(pid.to_string()).join(file);
        match std::fs::File::open(path) {
            Ok(mut f) => f.read_to_end(&mut self.buf).is_ok(),
            Err(_) => false,
        }
    }

    pub fn stat(&mut self, pid: u32) -> Option<PidStat> {
        if !self.read_into_buf(pid, "stat") {
            return None;
        }
        parse_stat(&self.buf)
    }

    /// The executable's path (`None` for kernel threads, exited processes,
    /// or without permission).
    pub fn exe(&self, pid: u32) -> Option<PathBuf> {
        std::fs::read_link(self.root.join(pid.to_string()).join("exe")).ok()
    }

    /// The argument vector.
    pub fn cmdline(&mut self, pid: u32) -> Vec<OsString> {
        if !self.read_into_buf(pid, "cmdline") {
            return Vec::new();
        }
        let text = self.buf.strip_suffix(b"\0").unwrap_or(&self.buf);
        if text.is_empty() {
            return Vec::new();
        }
        text.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for CPU times in `stat`.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// The size of a memory page, for RSS in `stat`.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Total CPU time of a process, seconds, and its resident set, bytes: for the
/// agent's own overhead.
pub fn self_usage() -> Option<(f64, u64)> {
    let stat = parse_stat(&std::fs::read("/proc/self/stat").ok()?)?;
    Some((
        stat.cpu_ticks as f64 / clock_ticks_per_second() as f64,
        stat.rss_pages * page_size(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = b"4242 (we (ird) name) S 17 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 3 0 987654 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            PidStat {
                ppid: 17,
                state: b'S',
                kernel_thread: false,
                cpu_ticks: 175,
                start_ticks: 987_654,
                rss_pages: 2048,
            }
        );
        let kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 1 0 0 0 0 0\n";
        assert!(parse_stat(kthread).unwrap().kernel_thread);
        assert!(parse_stat(b"12 (x").is_none());
        assert!(parse_stat(b"12 (x) S 1 2").is_none());
        assert!(parse_stat(b"").is_none());
    }

    #[test]
    fn this_process_reads_back_from_the_real_proc() {
        let mut fs = ProcFs::new("/proc");
        let me = std::process::id();
        assert!(fs.pids().contains(&me));
        let stat = fs.stat(me).expect("own stat");
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
        assert!(stat.rss_pages > 0 && !stat.kernel_thread);
        assert_eq!(fs.exe(me), std::env::current_exe().ok());
        let args: Vec<OsString> = std::env::args_os().collect();
        assert_eq!(fs.cmdline(me), args);
        assert_eq!(fs.stat(u32::MAX), None);
        let (cpu, rss) = self_usage().unwrap();
        assert!(cpu >= 0.0 && rss > 1024 * 1024, "{cpu} {rss}");
        assert!((1..=10_000).contains(&clock_ticks_per_second()));
    }
}
