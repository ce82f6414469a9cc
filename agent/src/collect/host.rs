//! Host-wide metrics through sysinfo: CPU busy (all cores and per core),
//! memory used and available, swap, and load averages.

use fincorp_api::wire::LoadAverage;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

/// The host's numbers from one sampling pass.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    /// Percent of all cores, 0–100.
    pub cpu_pct: f64,
    /// Percent of each core, 0–100.
    pub cpu_per_core_pct: Vec<f64>,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub load: LoadAverage,
}

/// Refreshes CPU usage (global and per core) and memory figures.
pub fn refresh(system: &mut System) {
    system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
}

fn pct(v: f32) -> f64 {
    let v = f64::from(v);
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Reads what [`refresh`] loaded, plus the load averages.
pub fn stats(system: &System) -> HostStats {
    let load = System::load_average().unwrap_or_default();
    HostStats {
        cpu_pct: pct(system.global_cpu_usage()),
        cpu_per_core_pct: system.cpus().iter().map(|c| pct(c.usage())).collect(),
        mem_used_bytes: system.used_memory(),
        mem_total_bytes: system.total_memory(),
        mem_available_bytes: system.available_memory(),
        swap_used_bytes: system.used_swap(),
        swap_total_bytes: system.total_swap(),
        load: LoadAverage {
            one: load.one,
            five: load.five,
            fifteen: load.fifteen,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_figures_are_plausible_and_cover_every_core() {
        let mut system = System::new().expect("sysinfo works on Linux");
        refresh(&mut system);
        std::thread::sleep(std::time::Duration::from_millis(300));
        refresh(&mut system);
        let s = stats(&system);
        assert!(s.mem_total_bytes > 64 * 1024 * 1024, "{s:?}");
        assert!(
            s.mem_used_bytes > 0 && s.mem_used_bytes <= s.mem_total_bytes,
            "{s:?}"
        );
        assert!(
            s.mem_available_bytes > 0 && s.mem_available_bytes <= s.mem_total_bytes,
            "{s:?}"
        );
        assert!(s.swap_used_bytes <= s.swap_total_bytes, "{s:?}");
        assert!((0.0..=100.0).contains(&s.cpu_pct), "{s:?}");
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        assert_eq!(s.cpu_per_core_pct.len(), cores, "{s:?}");
        assert!(s.cpu_per_core_pct.iter().all(|c| (0.0..=100.0).contains(c)));
        // The kernel's own figure, read independently.
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap();
        let one: f64 = loadavg.split_whitespace().next().unwrap().parse().unwrap();
        assert!((s.load.one - one).abs() < 1.0, "{} vs {one}", s.load.one);
    }
}
