//! Labelled synthetic series, reproducible from a seed.
//!
//! One [`Scenario`] is one app on one host, sampled every second: `cpu` (% of
//! one core), `rss_mb` and `latency_ms`, and a [`Label`] saying what happens
//! in it. Every scenario has a realistic background: each metric wanders as
//! an AR(1) process (φ 0.3–0.9) plus white measurement noise, so short
//! stretches of steady load do drift. On top of it, one [`Class`] of
//! behaviour:
//!
//! - **ramp**: CPU idles at 5–30% for 10–15 min, then climbs linearly at a
//!   fixed slope (0.1, 0.25, 0.5, 1 or 2 points per second) to saturation
//!   at 100% and stays there. It breaches.
//! - **steady**: CPU at 10–65% for the whole run. It never breaches.
//! - **cycle**: a daily-like sinusoid compressed to a 30–60 min period,
//!   amplitude 10–25 points, whose peak stays 8–25 points (and at least
//!   4.5 noise standard deviations) under the threshold. It rises towards the threshold twice an hour and never
//!   crosses it: a linear forecaster's hardest false alarm.
//! - **spike**: steady load with 1–3 self-recovering spikes: a rise of 15+
//!   points in 2–6 s, a 5–20 s hold and an exponential decay (5–15 s), with
//!   the peak 5–15 points (and at least 4.5 noise standard deviations)
//!   *under* the threshold. Spikes that cross the
//!   threshold are a real breach the agent alerts on at once, with nothing
//!   to predict (the rise takes seconds); this class tests that short upward
//!   excursions do not raise predictions, and that the anomaly model sees
//!   them.
//! - **leak**: RSS grows linearly from 1–3 GB to the 6 GiB limit over
//!   20–45 min (about 1.2–4 MB/s, 0.02–0.07% of the limit per second), with
//!   a garbage-collector sawtooth on top. It breaches.
//!
//! The ground truth is computed from the generated values, not assumed:
//! `breach_s` is the first second whose labelled metric is over its
//! threshold, exactly when the agent's `when: cpu > 80` rule would fire.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};

use crate::Metric;

/// The alert thresholds the scenarios are built around.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub cpu: f64,
    pub rss_mb: f64,
    pub latency_ms: f64,
}

impl Default for Thresholds {
    /// `cpu > 80` (the agent's default rule), `rss_mb > 6144`,
    /// `latency_ms > 250`.
    fn default() -> Self {
        Self {
            cpu: 80.0,
            rss_mb: 6144.0,
            latency_ms: 250.0,
        }
    }
}

/// What happens in a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    /// CPU ramp at this many points per second.
    Ramp {
        slope: f64,
    },
    Steady,
    Cycle,
    Spike,
    Leak,
}

impl Class {
    pub fn name(&self) -> String {
        match self {
            Class::Ramp { slope } => format!("ramp {slope}%/s"),
            Class::Steady => "steady".into(),
            Class::Cycle => "cycle".into(),
            Class::Spike => "spike".into(),
            Class::Leak => "leak".into(),
        }
    }
}

/// The ground truth of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The metric the behaviour is in.
    pub metric: Metric,
    pub threshold: f64,
    /// When the behaviour starts (ramp or leak start, first spike).
    pub onset_s: Option<u32>,
    /// The first second over the threshold; `None`: it never breaches.
    pub breach_s: Option<u32>,
    /// Spikes as (start, end) seconds.
    pub spikes: Vec<(u32, u32)>,
    /// Some other metric crossed its threshold (a generator bug if set).
    pub other_breach: bool,
}

/// One app on one host, one sample per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub class: Class,
    pub seed: u64,
    pub cpu: Vec<f32>,
    pub rss_mb: Vec<f32>,
    pub latency_ms: Vec<f32>,
    pub label: Label,
}

impl Scenario {
    pub fn len(&self) -> usize {
        self.cpu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty()
    }

    /// The values of `metric` (cpu, rss_mb or latency_ms).
    pub fn values(&self, metric: Metric) -> Option<&[f32]> {
        match metric {
            Metric::Cpu => Some(&self.cpu),
            Metric::RssMb => Some(&self.rss_mb),
            Metric::LatencyMs => Some(&self.latency_ms),
            Metric::HostCpu => None,
        }
    }
}

/// A small seeded random source.
struct Rand(Xoshiro256PlusPlus);

impl Rand {
    fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// AR(1) noise with marginal standard deviation `sd`, plus white noise.
struct Wander {
    phi: f64,
    sd: f64,
    white: f64,
    x: f64,
}

impl Wander {
    fn new(r: &mut Rand, sd: f64, white: f64) -> Self {
        let phi = r.uniform(0.3, 0.9);
        let x = sd * r.normal();
        Self { phi, sd, white, x }
    }

    fn next(&mut self, r: &mut Rand) -> f64 {
        let innovation = self.sd * (1.0 - self.phi * self.phi).sqrt();
        self.x = self.phi * self.x + innovation * r.normal();
        self.x + self.white * r.normal()
    }
}

/// Durations of the classes without a natural end (steady, cycle, spike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    pub steady_s: u32,
    pub cycle_s: u32,
    pub spike_s: u32,
}

impl Default for Durations {
    /// One hour each (a cycle's period is at most an hour).
    fn default() -> Self {
        Self {
            steady_s: 3600,
            cycle_s: 3600,
            spike_s: 3600,
        }
    }
}

/// Generates one scenario of `class` from `seed`.
pub fn generate(class: Class, seed: u64, thr: Thresholds, dur: Durations) -> Scenario {
    let mut r = Rand::new(seed ^ 0x5EED_F1C0_0000_0000);
    let cpu_sd = r.uniform(1.0, 3.0);
    let mut cpu_noise = Wander::new(&mut r, cpu_sd, 0.5);
    let cpu_total_sd = (cpu_sd * cpu_sd + 0.25).sqrt();
    let rss_base = r.uniform(800.0, 3000.0);
    let rss_sd = r.uniform(2.0, 8.0);
    let mut rss_noise = Wander::new(&mut r, rss_sd, 1.0);
    let lat_base = r.uniform(10.0, 40.0);
    let mut lat_noise = Wander::new(&mut r, lat_base * 0.08, lat_base * 0.03);

    let mut label = Label {
        metric: Metric::Cpu,
        threshold: thr.cpu,
        onset_s: None,
        breach_s: None,
        spikes: Vec::new(),
        other_breach: false,
    };
    let mut cpu_level: Box<dyn FnMut(u32) -> f64>;
    let mut rss_level: Box<dyn FnMut(u32) -> f64> = Box::new(move |_| rss_base);
    let len: u32;
    match class {
        Class::Ramp { slope } => {
            let base = r.uniform(5.0, 30.0);
            let onset = r.uniform(600.0, 900.0).round() as u32;
            let to_saturation = ((100.0 - base) / slope.max(1e-3)).ceil() as u32;
            len = onset + to_saturation + 60;
            label.onset_s = Some(onset);
            cpu_level = Box::new(move |s| {
                (base + slope * (f64::from(s) - f64::from(onset)).max(0.0)).min(100.0)
            });
        }
        Class::Steady => {
            let level = r.uniform(10.0, 65.0);
            len = dur.steady_s;
            cpu_level = Box::new(move |_| level);
        }
        Class::Cycle => {
            let period = r.uniform(1800.0, 3600.0);
            let margin = r.uniform(8.0, 25.0).max(PEAK_MARGIN_SD * cpu_total_sd);
            let amp = r.uniform(10.0, 25.0).min((thr.cpu - margin - 5.0) / 2.0);
            let mid = thr.cpu - margin - amp;
            let phase = r.uniform(0.0, std::f64::consts::TAU);
            len = dur.cycle_s;
            cpu_level = Box::new(move |s| {
                mid + amp * (std::f64::consts::TAU * f64::from(s) / period + phase).sin()
            });
        }
        Class::Spike => {
            let level = r.uniform(10.0, 45.0);
            len = dur.spike_s;
            let n = 1 + (r.unit() * 3.0) as u32;
            let mut spikes = Vec::new();
            let mut at = r.uniform(600.0, 900.0) as u32;
            for _ in 0..n {
                let rise = r.uniform(2.0, 6.0);
                let hold = r.uniform(5.0, 20.0);
                let tau = r.uniform(5.0, 15.0);
                let peak = thr.cpu - r.uniform(5.0, 15.0).max(PEAK_MARGIN_SD * cpu_total_sd);
                let height = (peak - level).max(15.0);
                let end = at + (rise + hold + 4.0 * tau).ceil() as u32;
                if end + 60 > len {
                    break;
                }
                spikes.push((at, end, rise, hold, tau, height));
                at = end + r.uniform(300.0, 600.0) as u32;
            }
            label.onset_s = spikes.first().map(|s| s.0);
            label.spikes = spikes.iter().map(|s| (s.0, s.1)).collect();
            cpu_level = Box::new(move |s| {
                let mut v = level;
                for &(start, _, rise, hold, tau, height) in &spikes {
                    let dt = f64::from(s) - f64::from(start);
                    if dt < 0.0 {
                        continue;
                    }
                    v += if dt < rise {
                        height * dt / rise
                    } else if dt < rise + hold {
                        height
                    } else {
                        height * (-(dt - rise - hold) / tau).exp()
                    };
                }
                v
            });
        }
        Class::Leak => {
            let level = r.uniform(10.0, 50.0);
            let base = r.uniform(1000.0, 3000.0);
            let onset = r.uniform(300.0, 900.0).round() as u32;
            let runup = r.uniform(1200.0, 2700.0);
            let rate = (thr.rss_mb - base) / runup;
            let saw_amp = r.uniform(10.0, 40.0);
            let saw_period = r.uniform(30.0, 120.0);
            len = onset + runup.ceil() as u32 + 60;
            label.metric = Metric::RssMb;
            label.threshold = thr.rss_mb;
            label.onset_s = Some(onset);
            cpu_level = Box::new(move |_| level);
            rss_level = Box::new(move |s| {
                let t = f64::from(s);
                let grown = base + rate * (t - f64::from(onset)).max(0.0);
                // GC sawtooth: builds up, then drops.
                grown + saw_amp * ((t / saw_period).fract() - 0.5)
            });
        }
    }
    let mut cpu = Vec::with_capacity(len as usize);
    let mut rss = Vec::with_capacity(len as usize);
    let mut lat = Vec::with_capacity(len as usize);
    for s in 0..len {
        let c = (cpu_level(s) + cpu_noise.next(&mut r)).clamp(0.0, 100.0);
        cpu.push(c as f32);
        rss.push((rss_level(s) + rss_noise.next(&mut r)).max(1.0) as f32);
        // Latency rises a little with CPU load (queueing), never near 250 ms.
        let l = lat_base * (1.0 + 0.5 * (c / 100.0).powi(4)) + lat_noise.next(&mut r);
        lat.push(l.max(0.1) as f32);
    }
    let over = |v: &[f32], t: f64| v.iter().position(|x| f64::from(*x) > t).map(|i| i as u32);
    let (own, others): (&[f32], [(&[f32], f64); 2]) = match label.metric {
        Metric::RssMb => (&rss, [(&cpu, thr.cpu), (&lat, thr.latency_ms)]),
        _ => (&cpu, [(&rss, thr.rss_mb), (&lat, thr.latency_ms)]),
    };
    label.breach_s = over(own, label.threshold);
    label.other_breach = others.iter().any(|(v, t)| over(v, *t).is_some());
    Scenario {
        class,
        seed,
        cpu,
        rss_mb: rss,
        latency_ms: lat,
        label,
    }
}

/// Cycle and spike peaks stay at least this many noise standard deviations
/// under the threshold, so the noise on top does not make them breach.
pub const PEAK_MARGIN_SD: f64 = 4.5;

/// The ramp slopes of the suite, points per second.
pub const RAMP_SLOPES: [f64; 5] = [0.1, 0.25, 0.5, 1.0, 2.0];

/// `per_class` scenarios of each class (each ramp slope is a class), seeds
/// derived from `seed`; the order is class by class.
pub fn suite(per_class: usize, seed: u64, thr: Thresholds, dur: Durations) -> Vec<Scenario> {
    let mut classes: Vec<Class> = RAMP_SLOPES
        .iter()
        .map(|&slope| Class::Ramp { slope })
        .collect();
    classes.extend([Class::Steady, Class::Cycle, Class::Spike, Class::Leak]);
    let mut out = Vec::with_capacity(classes.len() * per_class);
    for (ci, class) in classes.iter().enumerate() {
        for i in 0..per_class {
            let s = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((ci as u64) << 32 | i as u64);
            out.push(generate(*class, s, thr, dur));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_class(class: Class, seed: u64) -> Scenario {
        generate(class, seed, Thresholds::default(), Durations::default())
    }

    #[test]
    fn the_same_seed_gives_the_same_series_and_another_seed_another() {
        let a = gen_class(Class::Ramp { slope: 0.5 }, 7);
        assert_eq!(a, gen_class(Class::Ramp { slope: 0.5 }, 7));
        assert_ne!(a.cpu, gen_class(Class::Ramp { slope: 0.5 }, 8).cpu);
    }

    #[test]
    fn ramps_breach_after_their_onset_at_about_their_slope() {
        for (i, slope) in RAMP_SLOPES.into_iter().enumerate() {
            for seed in 0..5 {
                let s = gen_class(Class::Ramp { slope }, seed * 10 + i as u64);
                let (onset, breach) = (s.label.onset_s.unwrap(), s.label.breach_s.unwrap());
                assert!(breach > onset, "{slope} {seed}");
                // Base 5–30 plus noise: the run-up is (80 - base)/slope, give or take the noise.
                let runup = f64::from(breach - onset) * slope;
                assert!((35.0..=85.0).contains(&runup), "{slope} {seed}: {runup}");
                assert!(!s.label.other_breach);
                assert_eq!(s.len() as u32, s.cpu.len() as u32);
                assert!(s.cpu.iter().all(|c| (0.0..=100.0).contains(c)));
            }
        }
    }

    #[test]
    fn non_breaching_classes_never_cross_any_threshold() {
        for class in [Class::Steady, Class::Cycle, Class::Spike] {
            for seed in 0..20 {
                let s = gen_class(class, seed);
                assert_eq!(s.label.breach_s, None, "{class:?} {seed}");
                assert!(!s.label.other_breach, "{class:?} {seed}");
                assert_eq!(s.len(), 3600);
            }
        }
    }

    #[test]
    fn cycles_rise_close_to_the_threshold_and_spikes_are_marked() {
        let s = gen_class(Class::Cycle, 3);
        let max = s.cpu.iter().copied().fold(0.0_f32, f32::max);
        let min = s.cpu.iter().copied().fold(100.0_f32, f32::min);
        assert!(max > 50.0 && max < 80.0 && max - min > 15.0, "{min} {max}");
        let s = gen_class(Class::Spike, 3);
        assert!(!s.label.spikes.is_empty());
        for &(a, b) in &s.label.spikes {
            let before = s.cpu[a as usize - 5];
            let peak = s.cpu[a as usize..b as usize]
                .iter()
                .copied()
                .fold(0.0_f32, f32::max);
            assert!(peak - before > 10.0 && peak < 80.0, "{before} {peak}");
        }
    }

    #[test]
    fn leaks_breach_the_memory_limit_slowly() {
        for seed in 0..10 {
            let s = gen_class(Class::Leak, seed);
            assert_eq!(s.label.metric, Metric::RssMb);
            let (onset, breach) = (s.label.onset_s.unwrap(), s.label.breach_s.unwrap());
            assert!(
                (1_000..=2_800).contains(&(breach - onset)),
                "{seed}: {}",
                breach - onset
            );
            assert!(!s.label.other_breach);
        }
    }

    #[test]
    fn suite_has_every_class_in_order() {
        let s = suite(2, 1, Thresholds::default(), Durations::default());
        assert_eq!(s.len(), 18);
        assert_eq!(s[0].class, Class::Ramp { slope: 0.1 });
        assert_eq!(s[17].class, Class::Leak);
        assert_ne!(s[0].seed, s[1].seed);
    }
}
