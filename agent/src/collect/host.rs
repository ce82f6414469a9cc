//! Host-wide metrics: CPU busy across all cores and memory use.

use sysinfo::{MemoryRefreshKind, System};

/// The host's numbers from one sampling pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostStats {
    /// Percent of all cores, 0–100.
    pub cpu_pct: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
}

/// Refreshes global CPU usage and RAM figures. Call it before refreshing
/// processes so both use the same CPU-time interval.
pub fn refresh(system: &mut System) {
    system.refresh_cpu_usage();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
}

/// Reads what [`refresh`] loaded.
pub fn stats(system: &System) -> HostStats {
    let cpu = f64::from(system.global_cpu_usage());
    HostStats {
        cpu_pct: if cpu.is_finite() {
            cpu.clamp(0.0, 100.0)
        } else {
            0.0
        },
        mem_used_bytes: system.used_memory(),
        mem_total_bytes: system.total_memory(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_are_plausible() {
        let mut system = System::new().expect("sysinfo works on Linux");
        refresh(&mut system);
        let s = stats(&system);
        assert!(s.mem_total_bytes > 64 * 1024 * 1024, "{s:?}");
        assert!(
            s.mem_used_bytes > 0 && s.mem_used_bytes <= s.mem_total_bytes,
            "{s:?}"
        );
        assert!((0.0..=100.0).contains(&s.cpu_pct), "{s:?}");
    }
}
