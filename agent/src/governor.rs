//! The overhead budget: the agent watches its own CPU and RSS and, when it
//! goes over the configured budget, doubles its sampling interval (up to a
//! ceiling); once comfortably back under (half the CPU budget, RSS within
//! budget) for a whole window, it halves the interval again, down to the
//! configured one. At most one change per window, so each decision is
//! measured at the interval it chose. Pure: time and readings come in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::OverheadBudget;

/// What the governor concluded from one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The agent's CPU over the window, in cores (None until a second reading).
    pub cpu_cores: Option<f64>,
    /// Over the CPU or RSS budget right now.
    pub exceeded: bool,
    /// A new sampling interval to switch to.
    pub change: Option<Duration>,
}

#[derive(Debug)]
pub struct Governor {
    budget: OverheadBudget,
    base: Duration,
    current: Duration,
    readings: VecDeque<(Instant, f64)>,
    last_change: Option<Instant>,
    started: Option<Instant>,
}

impl Governor {
    pub fn new(budget: OverheadBudget, base: Duration) -> Self {
        Self {
            budget,
            base,
            current: base,
            readings: VecDeque::new(),
            last_change: None,
            started: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.current
    }

    /// Feeds the agent's total CPU seconds and RSS at `now`.
    pub fn observe(&mut self, now: Instant, cpu_seconds: f64, rss_bytes: u64) -> Verdict {
        let started = *self.started.get_or_insert(now);
        self.readings.push_back((now, cpu_seconds));
        while self.readings.len() > 2
            && self
                .readings
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.budget.window)
        {
            self.readings.pop_front();
        }
        let cpu_cores = match (self.readings.front(), self.readings.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                Some(((c1 - c0) / t1.duration_since(*t0).as_secs_f64()).max(0.0))
            }
            _ => None,
        };
        let cpu_over = cpu_cores.is_some_and(|c| c * 100.0 > self.budget.cpu_pct);
        let rss_over = rss_bytes > self.budget.rss_bytes;
        let exceeded = cpu_over || rss_over;
        // Decide only on a full window of readings, once per window.
        let settled = now.saturating_duration_since(self.last_change.unwrap_or(started))
            >= self.budget.window;
        let mut change = None;
        if settled && cpu_cores.is_some() {
            let comfortable =
                !rss_over && cpu_cores.is_some_and(|c| c * 100.0 <= self.budget.cpu_pct / 2.0);
            let next = if exceeded {
                (self.current * 2).min(self.budget.max_sample_interval)
            } else if comfortable {
                (self.current / 2).max(self.base)
            } else {
                self.current
            };
            if next != self.current {
                self.current = next;
                self.last_change = Some(now);
                // Measure the new interval on its own.
                self.readings.clear();
                self.readings.push_back((now, cpu_seconds));
                change = Some(next);
            }
        }
        Verdict {
            cpu_cores,
            exceeded,
            change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> OverheadBudget {
        OverheadBudget {
            cpu_pct: 0.5,
            rss_bytes: 15 << 20,
            window: Duration::from_secs(10),
            max_sample_interval: Duration::from_secs(8),
        }
    }

    /// Feeds one reading a second at `cores` of CPU, for `secs` seconds.
    fn run(
        g: &mut Governor,
        t0: Instant,
        from: u64,
        secs: u64,
        cores: f64,
        cpu: &mut f64,
        rss: u64,
    ) -> Vec<Verdict> {
        (from..from + secs)
            .map(|s| {
                *cpu += cores;
                g.observe(t0 + Duration::from_secs(s), *cpu, rss)
            })
            .collect()
    }

    #[test]
    fn over_budget_doubles_up_to_the_ceiling_then_recovers_step_by_step() {
        let t0 = Instant::now();
        let base = Duration::from_secs(1);
        let mut g = Governor::new(budget(), base);
        let mut cpu = 0.0;
        // 2% of a core: four times the 0.5% budget.
        let v = run(&mut g, t0, 0, 10, 0.02, &mut cpu, 1 << 20);
        assert!(
            v.iter().all(|v| v.change.is_none()),
            "no decision before a full window"
        );
        assert!(v[5].exceeded && (v[5].cpu_cores.unwrap() - 0.02).abs() < 1e-9);
        let v = run(&mut g, t0, 10, 1, 0.02, &mut cpu, 1 << 20);
        assert_eq!(v[0].change, Some(Duration::from_secs(2)));
        let changes: Vec<_> = run(&mut g, t0, 11, 40, 0.02, &mut cpu, 1 << 20)
            .into_iter()
            .filter_map(|v| v.change)
            .collect();
        assert_eq!(
            changes,
            [Duration::from_secs(4), Duration::from_secs(8)],
            "capped at 8s"
        );
        assert_eq!(g.interval(), Duration::from_secs(8));
        // Back to 0.1%: under half the budget, so it speeds up again, a window at a time.
        let changes: Vec<_> = run(&mut g, t0, 51, 60, 0.001, &mut cpu, 1 << 20)
            .into_iter()
            .filter_map(|v| v.change)
            .collect();
        assert_eq!(
            changes,
            [
                Duration::from_secs(4),
                Duration::from_secs(2),
                Duration::from_secs(1)
            ]
        );
        assert_eq!(g.interval(), base, "never faster than configured");
    }

    #[test]
    fn rss_over_budget_slows_sampling_and_the_middle_band_holds() {
        let t0 = Instant::now();
        let mut g = Governor::new(budget(), Duration::from_secs(1));
        let mut cpu = 0.0;
        let v = run(&mut g, t0, 0, 11, 0.0, &mut cpu, 20 << 20);
        assert!(v[10].exceeded);
        assert_eq!(v[10].change, Some(Duration::from_secs(2)));
        // 0.4%: under budget but not under half of it: the interval holds.
        let v = run(&mut g, t0, 11, 30, 0.004, &mut cpu, 1 << 20);
        assert!(v.iter().all(|v| !v.exceeded && v.change.is_none()), "{v:?}");
    }
}
