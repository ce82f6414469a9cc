//! `set_limits` and memory `reallocate`: an app's CPU quota, CPU weight and
//! memory limit, written to its cgroup (v1: `cpu.cfs_quota_us`, `cpu.shares`,
//! `memory.limit_in_bytes`; v2: `cpu.max`, `cpu.weight`, `memory.max`) or set
//! with `systemctl set-property` when the app is a systemd unit. Every change
//! is read back and reported as before/after.
//!
//! Blocking file IO; callers run it on `spawn_blocking`. Bounds have been
//! checked against the allowlist by the caller.

use std::path::{Path, PathBuf};

use fincorp_api::wire::{AppLimits, CommandDetail, CpuLimit, MemoryLimit};

use super::reallocate::Outcome;
use super::systemd::{Systemctl, cpu_quota_property};
use crate::cgroup::{Controller, ControllerDir, controller_dir};

/// cgroup v1 reports "no limit" as a page-aligned `LONG_MAX`; anything this
/// large is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// What to set; `None` fields are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Wanted {
    pub cpu_cores: Option<f64>,
    pub cpu_weight: Option<u64>,
    pub memory_max_bytes: Option<u64>,
}

/// Where an app's limits are controlled.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// Its cgroup, relative to each controller's mount.
    Cgroup { root: PathBuf, rel: PathBuf },
    /// Its systemd unit.
    Systemd { systemctl: PathBuf, unit: String },
}

/// cgroup v2 `cpu.weight` (1–10000, default 100) to v1 `cpu.shares`
/// (2–262144, default 1024), as systemd converts it.
pub fn weight_to_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).clamp(2, 262_144)
}

pub fn shares_to_weight(shares: u64) -> u64 {
    ((shares * 100 + 512) / 1024).clamp(1, 10_000)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text)
        .map_err(|e| format!("cannot write {text:?} to {}: {e}", path.display()))
}

fn number(path: &Path) -> Result<u64, String> {
    let t = read(path)?;
    t.parse()
        .map_err(|_| format!("{}: expected a number, found {t:?}", path.display()))
}

fn read_cpu(d: &ControllerDir) -> Result<CpuLimit, String> {
    if d.version == 1 {
        let quota = read(&d.dir.join("cpu.cfs_quota_us"))?;
        let quota: i64 = quota
            .parse()
            .map_err(|_| format!("cpu.cfs_quota_us: expected a number, found {quota:?}"))?;
        Ok(CpuLimit {
            quota_us: u64::try_from(quota).ok(),
            period_us: number(&d.dir.join("cpu.cfs_period_us"))?,
        })
    } else {
        let text = read(&d.dir.join("cpu.max"))?;
        let mut parts = text.split_whitespace();
        let quota = match parts.next() {
            Some("max") | None => None,
            Some(q) => Some(q.parse().map_err(|_| format!("bad cpu.max {text:?}"))?),
        };
        let period = parts
            .next()
            .map(|p| p.parse().map_err(|_| format!("bad cpu.max {text:?}")))
            .transpose()?
            .unwrap_or(100_000);
        Ok(CpuLimit {
            quota_us: quota,
            period_us: period,
        })
    }
}

fn read_weight(d: &ControllerDir) -> Result<u64, String> {
    if d.version == 1 {
        Ok(shares_to_weight(number(&d.dir.join("cpu.shares"))?))
    } else {
        number(&d.dir.join("cpu.weight"))
    }
}

fn read_memory(d: &ControllerDir) -> Result<MemoryLimit, String> {
    if d.version == 1 {
        let v = number(&d.dir.join("memory.limit_in_bytes"))?;
        Ok(MemoryLimit {
            max_bytes: (v < V1_UNLIMITED).then_some(v),
        })
    } else {
        let t = read(&d.dir.join("memory.max"))?;
        Ok(MemoryLimit {
            max_bytes: if t == "max" {
                None
            } else {
                Some(t.parse().map_err(|_| format!("bad memory.max {t:?}"))?)
            },
        })
    }
}

/// The app's cgroup directories for what `wanted` touches.
struct Dirs {
    cpu: Option<ControllerDir>,
    memory: Option<ControllerDir>,
}

impl Dirs {
    fn find(root: &Path, rel: &Path, wanted: &Wanted) -> Result<Self, String> {
        let cpu = if wanted.cpu_cores.is_some() || wanted.cpu_weight.is_some() {
            Some(controller_dir(root, rel, Controller::Cpu)?)
        } else {
            None
        };
        let memory = if wanted.memory_max_bytes.is_some() {
            Some(controller_dir(root, rel, Controller::Memory)?)
        } else {
            None
        };
        Ok(Self { cpu, memory })
    }

    fn read(&self, wanted: &Wanted) -> Result<AppLimits, String> {
        let mut l = AppLimits::default();
        if let Some(d) = &self.cpu {
            if wanted.cpu_cores.is_some() {
                l.cpu = Some(read_cpu(d)?);
            }
            if wanted.cpu_weight.is_some() {
                l.cpu_weight = Some(read_weight(d)?);
            }
        }
        if let Some(d) = &self.memory {
            l.memory = Some(read_memory(d)?);
        }
        Ok(l)
    }

    fn version(&self) -> u8 {
        self.cpu
            .as_ref()
            .or(self.memory.as_ref())
            .map_or(2, |d| d.version)
    }

    fn target(&self) -> String {
        let mut dirs: Vec<String> = [&self.cpu, &self.memory]
            .into_iter()
            .flatten()
            .map(|d| d.dir.display().to_string())
            .collect();
        dirs.dedup();
        dirs.join(",")
    }
}

/// The page-aligned value the kernel will store for a memory limit.
fn page_aligned(bytes: u64) -> u64 {
    let page = crate::collect::procfs::page_size().max(1);
    bytes / page * page
}

/// Sets the wanted limits through the backend and reads them back.
pub fn set_limits(app: &str, backend: &Backend, wanted: &Wanted) -> Outcome {
    match backend {
        Backend::Cgroup { root, rel } => set_cgroup(app, root, rel, wanted),
        Backend::Systemd { systemctl, unit } => {
            set_systemd(app, &Systemctl::new(systemctl), unit, wanted)
        }
    }
}

fn set_cgroup(app: &str, root: &Path, rel: &Path, wanted: &Wanted) -> Outcome {
    let dirs = match Dirs::find(root, rel, wanted) {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(e),
    };
    let before = match dirs.read(wanted) {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e),
    };
    let mut expected = before;
    if let (Some(cores), Some(d)) = (wanted.cpu_cores, &dirs.cpu) {
        let period = before.cpu.map_or(100_000, |c| c.period_us);
        let quota = ((cores * period as f64).round() as u64).max(1_000);
        let (file, text) = if d.version == 1 {
            ("cpu.cfs_quota_us", quota.to_string())
        } else {
            ("cpu.max", format!("{quota} {period}"))
        };
        if let Err(e) = write(&d.dir.join(file), &text) {
            return Outcome::Failed(e);
        }
        expected.cpu = Some(CpuLimit {
            quota_us: Some(quota),
            period_us: period,
        });
    }
    if let (Some(weight), Some(d)) = (wanted.cpu_weight, &dirs.cpu) {
        let result = if d.version == 1 {
            let shares = weight_to_shares(weight);
            expected.cpu_weight = Some(shares_to_weight(shares));
            write(&d.dir.join("cpu.shares"), &shares.to_string())
        } else {
            expected.cpu_weight = Some(weight);
            write(&d.dir.join("cpu.weight"), &weight.to_string())
        };
        if let Err(e) = result {
            return Outcome::Failed(e);
        }
    }
    if let (Some(bytes), Some(d)) = (wanted.memory_max_bytes, &dirs.memory) {
        let file = if d.version == 1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        if let Err(e) = write(&d.dir.join(file), &bytes.to_string()) {
            return Outcome::Failed(e);
        }
        expected.memory = Some(MemoryLimit {
            max_bytes: Some(page_aligned(bytes)),
        });
    }
    let after = match dirs.read(wanted) {
        Ok(l) => l,
        Err(e) => {
            return Outcome::Failed(format!("wrote the limits but cannot read them back: {e}"));
        }
    };
    if after != expected {
        return Outcome::Failed(format!(
            "wrote {} but read back {}",
            describe(&expected),
            describe(&after)
        ));
    }
    let version = dirs.version();
    Outcome::Applied {
        message: format!(
            "set the limits of {app} (cgroup v{version}) from {} to {}",
            describe(&before),
            describe(&after)
        ),
        detail: CommandDetail::Limits {
            app: app.to_owned(),
            backend: format!("cgroup_v{version}"),
            target: dirs.target(),
            before,
            after,
        },
    }
}

fn set_systemd(app: &str, systemctl: &Systemctl, unit: &str, wanted: &Wanted) -> Outcome {
    let before = match systemctl.limits(unit) {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e),
    };
    let mut props = Vec::new();
    if let Some(cores) = wanted.cpu_cores {
        props.push(cpu_quota_property(cores));
    }
    if let Some(weight) = wanted.cpu_weight {
        props.push(format!("CPUWeight={weight}"));
    }
    if let Some(bytes) = wanted.memory_max_bytes {
        props.push(format!("MemoryMax={bytes}"));
    }
    if let Err(e) = systemctl.set_properties(unit, &props) {
        return Outcome::Failed(e);
    }
    let after = match systemctl.limits(unit) {
        Ok(l) => l,
        Err(e) => {
            return Outcome::Failed(format!(
                "set {} but cannot read it back: {e}",
                props.join(" ")
            ));
        }
    };
    let cpu_ok = wanted.cpu_cores.is_none_or(|c| {
        after
            .cpu
            .and_then(|l| l.cores())
            .is_some_and(|got| (got - c).abs() < 0.011)
    });
    let weight_ok = wanted
        .cpu_weight
        .is_none_or(|w| after.cpu_weight == Some(w));
    let memory_ok = wanted.memory_max_bytes.is_none_or(|m| {
        after
            .memory
            .and_then(|l| l.max_bytes)
            .is_some_and(|got| got.abs_diff(m) < 4096 * 2)
    });
    if !(cpu_ok && weight_ok && memory_ok) {
        return Outcome::Failed(format!(
            "set {} on {unit} but systemd reports {}",
            props.join(" "),
            describe(&after)
        ));
    }
    Outcome::Applied {
        message: format!(
            "set {} on {unit} for {app}: {} -> {}",
            props.join(" "),
            describe(&before),
            describe(&after)
        ),
        detail: CommandDetail::Limits {
            app: app.to_owned(),
            backend: "systemd".into(),
            target: unit.to_owned(),
            before,
            after,
        },
    }
}

/// Raises the memory limit by `increase_pct`, never above `max_bytes`.
pub fn raise_memory(app: &str, backend: &Backend, increase_pct: f64, max_bytes: u64) -> Outcome {
    let probe = Wanted {
        memory_max_bytes: Some(0),
        ..Wanted::default()
    };
    let current = match backend {
        Backend::Cgroup { root, rel } => Dirs::find(root, rel, &probe).and_then(|d| d.read(&probe)),
        Backend::Systemd { systemctl, unit } => Systemctl::new(systemctl).limits(unit),
    };
    let current = match current {
        Ok(l) => l.memory.and_then(|m| m.max_bytes),
        Err(e) => return Outcome::Failed(e),
    };
    let Some(old) = current else {
        return Outcome::Failed("the memory limit is unlimited; nothing to raise".into());
    };
    let raised = (old as f64 * (1.0 + increase_pct / 100.0)).round() as u64;
    let new = raised.min(max_bytes);
    if new <= old {
        return Outcome::Refused(format!(
            "already at the ceiling: memory limit {old} bytes cannot be raised above max_memory_mb ({max_bytes} bytes)"
        ));
    }
    set_limits(
        app,
        backend,
        &Wanted {
            memory_max_bytes: Some(new),
            ..Wanted::default()
        },
    )
}

/// One line for logs and messages.
pub fn describe(l: &AppLimits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.cpu {
        parts.push(format!("cpu {c}"));
    }
    if let Some(w) = l.cpu_weight {
        parts.push(format!("weight {w}"));
    }
    if let Some(m) = l.memory {
        parts.push(match m.max_bytes {
            Some(b) => format!("memory {b} bytes"),
            None => "memory unlimited".into(),
        });
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests;
