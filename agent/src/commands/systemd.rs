//! `systemctl` for apps that are systemd units: read and set resource
//! properties (`set-property --runtime`), restart, and read the unit's state.
//!
//! The program is configurable (`actions.systemctl`) so tests can point it
//! at a fake that records its arguments; it is run with a timeout and never
//! through a shell. Blocking: call from `spawn_blocking`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fincorp_api::wire::{AppLimits, CpuLimit, MemoryLimit, UnitState};

/// How long one `systemctl` call may take.
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// systemd's CFS period when it sets `CPUQuota=`.
const SYSTEMD_PERIOD_US: u64 = 100_000;

/// Runs `systemctl` with arguments; returns stdout, or why it failed.
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
    timeout: Duration,
}

impl Systemctl {
    pub fn new(program: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            timeout: SYSTEMCTL_TIMEOUT,
        }
    }

    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let shown = format!("{} {}", self.program.display(), args.join(" "));
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("`{shown}` timed out after {:?}", self.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("`{shown}`: {e}")),
            }
        };
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if status.success() {
            Ok(out)
        } else {
            Err(format!("`{shown}` failed ({status}): {}", err.trim()))
        }
    }

    /// `systemctl show UNIT -p A -p B ...` as a map.
    pub fn show(&self, unit: &str, props: &[&str]) -> Result<HashMap<String, String>, String> {
        let mut args = vec!["show", unit];
        for p in props {
            args.push("-p");
            args.push(p);
        }
        let out = self.run(&args)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// The unit's resource limits, as systemd reports them.
    pub fn limits(&self, unit: &str) -> Result<AppLimits, String> {
        let p = self.show(unit, &["CPUQuotaPerSecUSec", "CPUWeight", "MemoryMax"])?;
        let get = |k: &str| {
            p.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("`systemctl show {unit}` did not report {k}"))
        };
        let quota = parse_usec(get("CPUQuotaPerSecUSec")?)
            .map_err(|e| format!("CPUQuotaPerSecUSec: {e}"))?;
        let weight = match get("CPUWeight")? {
            "[not set]" | "" | "infinity" | "18446744073709551615" => None,
            w => Some(
                w.parse::<u64>()
                    .map_err(|_| format!("CPUWeight: bad value {w:?}"))?,
            ),
        };
        let memory = match get("MemoryMax")? {
            "infinity" | "" => None,
            m => Some(
                m.parse::<u64>()
                    .map_err(|_| format!("MemoryMax: bad value {m:?}"))?,
            ),
        };
        Ok(AppLimits {
            // CPUQuotaPerSecUSec is the quota per second of wall time.
            cpu: Some(CpuLimit {
                quota_us: quota.map(|per_sec| per_sec / 10),
                period_us: SYSTEMD_PERIOD_US,
            }),
            cpu_weight: weight,
            memory: Some(MemoryLimit { max_bytes: memory }),
        })
    }

    /// `systemctl set-property --runtime UNIT K=V ...` (runtime only: a
    /// reboot or daemon-reload returns to the unit file's values).
    pub fn set_properties(&self, unit: &str, props: &[String]) -> Result<(), String> {
        let mut args = vec!["set-property", "--runtime", unit];
        args.extend(props.iter().map(String::as_str));
        self.run(&args).map(|_| ())
    }

    pub fn state(&self, unit: &str) -> Result<UnitState, String> {
        let p = self.show(
            unit,
            &[
                "ActiveState",
                "SubState",
                "MainPID",
                "ExecMainStartTimestampMonotonic",
            ],
        )?;
        let num = |k: &str| p.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(UnitState {
            active_state: p.get("ActiveState").cloned().unwrap_or_default(),
            sub_state: p.get("SubState").cloned().unwrap_or_default(),
            main_pid: u32::try_from(num("MainPID")).unwrap_or(0),
            started_monotonic_us: num("ExecMainStartTimestampMonotonic"),
        })
    }

    pub fn restart(&self, unit: &str) -> Result<(), String> {
        self.run(&["restart", unit]).map(|_| ())
    }
}

/// `CPUQuota=` for a limit in cores: percent of one CPU (`150%` = 1.5 cores).
pub fn cpu_quota_property(cores: f64) -> String {
    format!("CPUQuota={}%", (cores * 100.0).round() as u64)
}

/// Parses a systemd time span as printed by `show`: `infinity`, `500ms`,
/// `1s 500ms`, `1.500000s`, `2min`, or plain microseconds. Returns
/// microseconds.
pub fn parse_usec(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "infinity" || t.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for part in t.split_whitespace() {
        let split = part
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(part.len());
        let (n, unit) = part.split_at(split);
        let n: f64 = n.parse().map_err(|_| format!("bad time span {text:?}"))?;
        let factor = match unit {
            "" | "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "min" => 60e6,
            "h" => 3_600e6,
            _ => return Err(format!("bad time span {text:?}")),
        };
        total += n * factor;
    }
    Ok(Some(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans_and_quota_properties() {
        assert_eq!(parse_usec("infinity"), Ok(None));
        assert_eq!(parse_usec("500ms"), Ok(Some(500_000)));
        assert_eq!(parse_usec("1.500s"), Ok(Some(1_500_000)));
        assert_eq!(parse_usec("2s"), Ok(Some(2_000_000)));
        assert_eq!(parse_usec("250000"), Ok(Some(250_000)));
        assert_eq!(parse_usec("1s 500ms"), Ok(Some(1_500_000)));
        assert_eq!(parse_usec("1500000us"), Ok(Some(1_500_000)));
        assert!(parse_usec("soon").is_err());
        assert_eq!(cpu_quota_property(1.5), "CPUQuota=150%");
        assert_eq!(cpu_quota_property(0.25), "CPUQuota=25%");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let err = Systemctl::new(Path::new("/nonexistent/systemctl"))
            .run(&["show", "x.service"])
            .unwrap_err();
        assert!(
            err.starts_with("cannot run `/nonexistent/systemctl show x.service`"),
            "{err}"
        );
    }
}
