//! Trend forecasting: when will this series cross its threshold?
//!
//! For one series, [`evaluate`] fits an ordinary least squares line
//! (linfa-linear) of value on time over each configured sliding window (the
//! 1 s ring for minutes, the downsampled ring for slow leaks; windows longer
//! than `max_window_per_horizon` horizons are skipped). From each fit come
//! the slope, the level now, R², and the slope's t-statistic, whose standard
//! error is inflated by `sqrt((1+ρ)/(1-ρ))` for the residuals' lag-1
//! autocorrelation ρ. Extrapolating the line gives the time to breach.
//!
//! Load wanders: CPU is autocorrelated noise, and over 30 s a wander looks
//! like a significant trend against the window's own residuals. So every
//! slope is also judged against the series' *normal* variability, a
//! [`NoiseModel`] (AR(1) plus white noise) estimated from its own history
//! before the window: a fast one from the 1 s ring before `reference_gap`,
//! and a slow one from the downsampled ring before the window starts (slow
//! wander, the other half of a cycle). [`NoiseModel::slope_sd`] is the exact
//! standard deviation of an OLS slope under that noise, and the slope's
//! `noise_t` must reach `min_noise_t`.
//!
//! A window *passes* when it has enough points and coverage, R² ≥ `min_r2`,
//! t ≥ `min_t`, `noise_t` ≥ `min_noise_t`, a positive slope, a level still
//! below the threshold, and a breach within the horizon and within
//! `max_extrapolation` window lengths. Of the passing windows the best fit
//! (highest R²) is the candidate; a second fit with a time² feature vetoes it
//! when the curvature is significantly negative and the curve tops out below
//! the threshold within the horizon (the rising half of a cycle). The last
//! raw sample must still be below the threshold too: a breach that is
//! already here is the agent's threshold alert, not a prediction.
//!
//! [`Track`] is the per-series state machine on top: `confirm` passing
//! evaluations in a row raise a prediction; while raised, relaxed gates keep
//! it (hysteresis) and `clear_after` misses in a row clear it; a sample over
//! the threshold clears it as `breached`; a cooldown follows every clear.

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

use crate::UnixMs;
use crate::config::ForecastConfig;
use crate::history::Window;
use crate::signal::{ClearReason, ForecastExplanation};

/// A series whose newest sample is older than this is not evaluated.
pub const STALE_MS: i64 = 10_000;

/// One window's straight-line fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendFit {
    pub window_ms: i64,
    pub points: u32,
    /// Fraction of the window's buckets that hold a value.
    pub coverage: f64,
    pub slope_per_s: f64,
    /// The fitted value at the evaluation time.
    pub level: f64,
    pub r2: f64,
    /// The slope's t-statistic, corrected for autocorrelation.
    pub t_stat: f64,
    /// Lag-1 autocorrelation of the residuals (clamped to 0..0.98).
    pub rho: f64,
    /// Standard deviation of the residuals.
    pub resid_sd: f64,
}

/// Fits `value = level + slope * t` to `(t_s, value)` points, `t_s` in
/// seconds relative to the evaluation time (≤ 0). `None` with fewer than 3
/// points, no spread in time, or a failed solve.
pub fn fit_line(points: &[(f64, f64)], window_ms: i64, slots: usize) -> Option<TrendFit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let x = Array2::from_shape_fn((n, 1), |(i, _)| points[i].0);
    let y = Array1::from_iter(points.iter().map(|p| p.1));
    let t_mean = x.sum() / n as f64;
    let sxx: f64 = points.iter().map(|p| (p.0 - t_mean).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let model = LinearRegression::new().fit(&Dataset::new(x, y)).ok()?;
    let slope = *model.params().get(0)?;
    let level = model.intercept();
    if !(slope.is_finite() && level.is_finite()) {
        return None;
    }
    let y_mean = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let mut sse = 0.0;
    let mut sst = 0.0;
    let mut lag = 0.0;
    let mut prev: Option<f64> = None;
    for &(t, v) in points {
        let r = v - (level + slope * t);
        sse += r * r;
        sst += (v - y_mean).powi(2);
        if let Some(p) = prev {
            lag += p * r;
        }
        prev = Some(r);
    }
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
    let rho = if sse > 0.0 {
        (lag / sse).clamp(0.0, 0.98)
    } else {
        0.0
    };
    let sigma2 = sse / (n as f64 - 2.0);
    let se = (sigma2 / sxx).sqrt() * ((1.0 + rho) / (1.0 - rho)).sqrt();
    let t_stat = if se > 0.0 {
        slope / se
    } else if slope > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Some(TrendFit {
        window_ms,
        points: n as u32,
        coverage: n as f64 / slots.max(1) as f64,
        slope_per_s: slope,
        level,
        r2,
        t_stat,
        rho,
        resid_sd: sigma2.max(0.0).sqrt(),
    })
}

/// The time² check: the t-statistic of the curvature and whether the
/// quadratic reaches `threshold` within `horizon_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curvature {
    pub t_stat: f64,
    pub reaches: bool,
}

/// Fits `value = a + b·u + c·u²` with `u = t / span` (linfa-linear, two
/// features) and reports the curvature's significance and whether the curve
/// reaches the threshold within the horizon.
pub fn fit_curvature(points: &[(f64, f64)], threshold: f64, horizon_s: f64) -> Option<Curvature> {
    let n = points.len();
    if n < 5 {
        return None;
    }
    let span = points.iter().map(|p| -p.0).fold(1.0_f64, f64::max);
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        let u = points[i].0 / span;
        if j == 0 { u } else { u * u }
    });
    let y = Array1::from_iter(points.iter().map(|p| p.1));
    let model = LinearRegression::new().fit(&Dataset::new(x, y)).ok()?;
    let (b, c) = (*model.params().get(0)?, *model.params().get(1)?);
    let a = model.intercept();
    // (X'X)^-1 of [1, u, u²] for the standard error of c.
    let mut s = [0.0_f64; 5];
    let mut sse = 0.0;
    for &(t, v) in points {
        let u = t / span;
        let mut p = 1.0;
        for k in s.iter_mut() {
            *k += p;
            p *= u;
        }
        let r = v - (a + b * u + c * u * u);
        sse += r * r;
    }
    let m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() <= f64::EPSILON {
        return None;
    }
    let inv_cc = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det;
    let se = (sse / (n as f64 - 3.0) * inv_cc).max(0.0).sqrt();
    let t_stat = if se > 0.0 { c / se } else { 0.0 };
    // Highest point of the curve over [now, now + horizon].
    let h_max = horizon_s / span;
    let at = |u: f64| a + b * u + c * u * u;
    let peak_u = if c < 0.0 {
        (-b / (2.0 * c)).clamp(0.0, h_max)
    } else {
        h_max
    };
    let reaches = at(peak_u).max(at(h_max)).max(at(0.0)) >= threshold;
    (t_stat.is_finite() && a.is_finite()).then_some(Curvature { t_stat, reaches })
}

/// A series' normal variability: AR(1) noise plus white noise, estimated
/// from its own history before the evaluated windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Standard deviation of the detrended reference (marginal).
    pub sd: f64,
    /// Per-second autocorrelation of the AR(1) part.
    pub phi: f64,
    /// Share of the variance in the AR(1) part (the rest is white).
    pub ar_share: f64,
}

impl NoiseModel {
    /// Estimates the model from `(t_s, value)` points `step_s` apart (gaps
    /// allowed): a straight-line fit (linfa-linear) removes any trend, and
    /// the residuals' lag-1 and lag-2 autocorrelations `r1 = s·φ`, `r2 =
    /// s·φ²` give the AR(1) coefficient φ and its share s.
    pub fn estimate(points: &[(f64, f64)], step_s: f64) -> Option<NoiseModel> {
        let fit = fit_line(points, 0, points.len())?;
        let resid: Vec<f64> = points
            .iter()
            .map(|&(t, v)| v - (fit.level + fit.slope_per_s * t))
            .collect();
        let n = resid.len() as f64;
        let var = resid.iter().map(|r| r * r).sum::<f64>() / n;
        if !(var.is_finite() && var > 0.0) {
            return Some(NoiseModel {
                sd: 0.0,
                phi: 0.0,
                ar_share: 0.0,
            });
        }
        let lag = |k: usize| {
            resid
                .iter()
                .zip(&resid[k.min(resid.len())..])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / n
                / var
        };
        let (r1, r2) = (lag(1), lag(2));
        let (phi_step, share) = if r1 <= 0.0 {
            (0.0, 0.0)
        } else if r2 <= 0.0 || r2 >= r1 {
            (r1.min(0.98), 1.0)
        } else {
            let phi = (r2 / r1).min(0.98);
            (phi, (r1 / phi).min(1.0))
        };
        Some(NoiseModel {
            sd: var.sqrt(),
            phi: phi_step.powf(1.0 / step_s.max(1.0)),
            ar_share: share,
        })
    }

    /// The standard deviation of an OLS slope over points at `times_s`
    /// (sorted) if the series were only this noise: exact for AR(1) plus
    /// white noise, `sqrt(c' Σ c) / Sxx` with `c` the centred times, in O(n).
    pub fn slope_sd(&self, times_s: &[f64]) -> f64 {
        let n = times_s.len();
        if n < 3 {
            return f64::INFINITY;
        }
        let mean = times_s.iter().sum::<f64>() / n as f64;
        let mut sxx = 0.0;
        // cross = Σ_{i<j} c_i c_j φ^(t_j - t_i), by the recursion
        // s_j = φ^(t_j - t_{j-1}) (s_{j-1} + c_{j-1}).
        let mut cross = 0.0;
        let mut acc = 0.0;
        let mut prev: Option<(f64, f64)> = None;
        for &t in times_s {
            let c = t - mean;
            sxx += c * c;
            if let Some((pt, pc)) = prev {
                acc = self.phi.powf(t - pt) * (acc + pc);
                cross += c * acc;
            }
            prev = Some((t, c));
        }
        if sxx <= 0.0 {
            return f64::INFINITY;
        }
        let var = self.sd * self.sd;
        let quad = (1.0 - self.ar_share) * var * sxx + self.ar_share * var * (sxx + 2.0 * cross);
        quad.max(0.0).sqrt() / sxx
    }
}

/// The fast noise model of a series: from its 1 s ring before `now -
/// reference_gap`, so a trend that just started does not count as its
/// normal. It needs `min_reference_points` samples (fewer when the series is
/// sampled less often than every second: 70% of what the stretch holds at
/// its cadence, and at least 10). `None` while there is not enough history.
pub fn fast_noise(input: &SeriesInput, cfg: &ForecastConfig, now: UnixMs) -> Option<NoiseModel> {
    let gap = cfg.reference_gap.as_millis_i64();
    let cutoff = (now - gap) as f64;
    let pts: Vec<(f64, f64)> = input
        .raw
        .points()
        .filter(|(t, _)| *t <= cutoff)
        .map(|(t, v)| ((t - cutoff) / 1000.0, v))
        .collect();
    let cadence = cadence_ms(&input.raw);
    let span_ms = input.raw.values.len() as i64 * input.raw.res_ms - gap;
    let at_cadence = (0.7 * span_ms as f64 / cadence as f64) as usize;
    let needed = (cfg.min_reference_points as usize).min(at_cadence).max(10);
    if pts.len() < needed {
        return None;
    }
    NoiseModel::estimate(&pts, cadence as f64 / 1000.0)
}

/// The slow noise model of a series: from its downsampled ring before
/// `before_ms` (at least 6 whole buckets), i.e. what the series did before
/// the window being judged: slow wander, cycles. Only its AR(1) part: the
/// bucket-to-bucket scatter is the fast model's business. `None` without
/// enough history.
pub fn slow_noise(input: &SeriesInput, before_ms: UnixMs) -> Option<NoiseModel> {
    let w = input.coarse.as_ref()?;
    let cutoff = before_ms as f64;
    let half = w.res_ms as f64 / 2.0;
    let pts: Vec<(f64, f64)> = w
        .points()
        .filter(|(t, _)| t + half <= cutoff)
        .map(|(t, v)| ((t - cutoff) / 1000.0, v))
        .collect();
    if pts.len() < 6 {
        return None;
    }
    let m = NoiseModel::estimate(&pts, w.res_ms as f64 / 1000.0)?;
    Some(NoiseModel {
        sd: m.sd * m.ar_share.sqrt(),
        phi: m.phi,
        ar_share: 1.0,
    })
}

/// What one series needs for one evaluation (copied out of its history).
#[derive(Debug, Clone)]
pub struct SeriesInput {
    pub threshold: f64,
    pub horizon_ms: i64,
    /// The widest raw window; narrower ones are its tail.
    pub raw: Window,
    /// The downsampled ring (its whole retention): the coarse windows and
    /// the slow noise model's reference.
    pub coarse: Option<Window>,
    /// The newest raw sample.
    pub last: Option<(UnixMs, f64)>,
}

/// One evaluation's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub at_ms: UnixMs,
    /// The best window passing every gate, with its explanation.
    pub pass: Option<ForecastExplanation>,
    /// Some window passes the relaxed gates (keeps a raised prediction).
    pub holds: bool,
    /// Windows fitted (for cost accounting).
    pub fits: u32,
}

/// The last `len_ms` of `w` as `(t_s, value)` points, `t_s` relative to
/// `now`, and how many samples the window should hold at `cadence_ms`.
fn points_of(w: &Window, now: UnixMs, len_ms: i64, cadence_ms: i64) -> (Vec<(f64, f64)>, usize) {
    let slots = (len_ms / w.res_ms).max(1) as usize;
    let skip = w.values.len().saturating_sub(slots);
    let last = w.values.len().saturating_sub(1);
    let pts = w.values[skip..]
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| {
            let i = skip + k;
            let center = match w.open_center_ms {
                Some(c) if i == last => c,
                _ => w.start_ms + i as i64 * w.res_ms + w.res_ms / 2,
            };
            ((center - now) as f64 / 1000.0, f64::from(*v))
        })
        .collect();
    let expected = (len_ms / cadence_ms.max(w.res_ms)).max(1) as usize;
    (pts, expected.min(slots.min(w.values.len())))
}

/// The series' sampling interval: the median gap between the samples of the
/// 1 s ring (1 s when the agent ships every sample; more when it samples
/// less often). Windows, coverage and the noise model are judged at it.
pub fn cadence_ms(w: &Window) -> i64 {
    const MAX_GAP: usize = 64;
    let mut counts = [0u32; MAX_GAP + 1];
    let mut prev: Option<usize> = None;
    let mut n = 0;
    for (i, v) in w.values.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        if let Some(p) = prev {
            counts[(i - p).min(MAX_GAP)] += 1;
            n += 1;
        }
        prev = Some(i);
    }
    if n == 0 {
        return w.res_ms;
    }
    let mut seen = 0;
    for (gap, c) in counts.iter().enumerate() {
        seen += c;
        if seen * 2 >= n {
            return gap.max(1) as i64 * w.res_ms;
        }
    }
    w.res_ms
}

/// Fits every window of `input` at `now` and applies the gates.
pub fn evaluate(input: &SeriesInput, cfg: &ForecastConfig, now: UnixMs) -> Evaluation {
    let thr = input.threshold;
    let horizon_s = input.horizon_ms as f64 / 1000.0;
    let mut eval = Evaluation {
        at_ms: now,
        pass: None,
        holds: false,
        fits: 0,
    };
    // No recent sample (nothing to extrapolate from), or already at or over
    // the threshold (the agent's alert, not ours).
    if input
        .last
        .is_none_or(|(t, v)| v >= thr || now - t > STALE_MS)
    {
        return eval;
    }
    let cadence = cadence_ms(&input.raw);
    let mut fits: Vec<(TrendFit, Vec<(f64, f64)>)> = Vec::new();
    let windows = cfg
        .windows
        .iter()
        .map(|w| (&input.raw, w.as_millis_i64()))
        .chain(
            cfg.coarse_windows
                .iter()
                .filter_map(|w| Some((input.coarse.as_ref()?, w.as_millis_i64()))),
        );
    let longest = (input.horizon_ms as f64 * cfg.max_window_per_horizon) as i64;
    for (w, len_ms) in windows.filter(|(_, len)| *len <= longest) {
        let (pts, slots) = points_of(w, now, len_ms, cadence);
        if pts.len() < (cfg.min_points as usize).max(3) {
            continue;
        }
        eval.fits += 1;
        if let Some(fit) = fit_line(&pts, len_ms, slots) {
            fits.push((fit, pts));
        }
    }
    let time_to_breach = |f: &TrendFit| (thr - f.level) / f.slope_per_s;
    let extrapolation = |f: &TrendFit| time_to_breach(f) / (f.window_ms as f64 / 1000.0);
    // The cheap gates first; the noise models only for fits that pass them.
    let strict = |f: &TrendFit| {
        let ttb = time_to_breach(f);
        f.coverage >= cfg.min_coverage
            && f.slope_per_s > 0.0
            && f.level < thr
            && f.r2 >= cfg.min_r2
            && f.t_stat >= cfg.min_t
            && ttb > 0.0
            && ttb <= horizon_s
            && extrapolation(f) <= cfg.max_extrapolation
    };
    let relaxed = |f: &TrendFit| {
        f.coverage >= cfg.min_coverage
            && f.slope_per_s > 0.0
            && f.r2 >= cfg.min_r2 / 2.0
            && f.t_stat >= cfg.min_t / 2.0
            && time_to_breach(f) <= 2.0 * horizon_s
            && extrapolation(f) <= 2.0 * cfg.max_extrapolation
    };
    let mut noise = NoiseCache {
        input,
        cfg,
        now,
        fast: None,
    };
    let mut order: Vec<usize> = (0..fits.len()).collect();
    order.sort_by(|&a, &b| fits[b].0.r2.total_cmp(&fits[a].0.r2));
    let vetoed = |pts: &[(f64, f64)], eval: &mut Evaluation| -> (bool, Option<f64>) {
        eval.fits += 1;
        match fit_curvature(pts, thr, horizon_s) {
            Some(c) => (c.t_stat < -cfg.curvature_t && !c.reaches, Some(c.t_stat)),
            None => (false, None),
        }
    };
    for &i in &order {
        let (fit, pts) = &fits[i];
        if !strict(fit) {
            continue;
        }
        let Some((noise_sd, noise_t)) = noise.judge(fit, pts, &mut eval.fits) else {
            continue;
        };
        if noise_t < cfg.min_noise_t {
            continue;
        }
        let (veto, curvature_t) = vetoed(pts, &mut eval);
        if veto {
            continue;
        }
        let ttb = time_to_breach(fit);
        let lead_ms = (ttb * 1000.0).round() as i64;
        eval.pass = Some(ForecastExplanation {
            window_ms: fit.window_ms,
            points: fit.points,
            slope_per_s: fit.slope_per_s,
            level: fit.level,
            r2: fit.r2,
            t_stat: fit.t_stat,
            rho: fit.rho,
            noise_sd,
            noise_t,
            curvature_t,
            threshold: thr,
            horizon_ms: input.horizon_ms,
            evaluated_at_ms: now,
            predicted_breach_at_ms: now.saturating_add(lead_ms),
            lead_ms,
            score: horizon_s / ttb.max(1e-3),
        });
        eval.holds = true;
        return eval;
    }
    for &i in &order {
        let (fit, pts) = &fits[i];
        if relaxed(fit)
            && noise
                .judge(fit, pts, &mut eval.fits)
                .is_some_and(|(_, t)| t >= cfg.min_noise_t / 2.0)
            && !vetoed(pts, &mut eval).0
        {
            eval.holds = true;
            break;
        }
    }
    eval
}

/// The noise models of one evaluation, estimated when first needed.
struct NoiseCache<'a> {
    input: &'a SeriesInput,
    cfg: &'a ForecastConfig,
    now: UnixMs,
    fast: Option<Option<NoiseModel>>,
}

impl NoiseCache<'_> {
    /// The fast model's standard deviation and the slope's t-statistic
    /// against the fast model and the slow model of what came before the
    /// window (the larger slope deviation of the two). `None` without a fast
    /// model: without history there is no telling a trend from wander.
    fn judge(&mut self, fit: &TrendFit, pts: &[(f64, f64)], fits: &mut u32) -> Option<(f64, f64)> {
        let fast = *self.fast.get_or_insert_with(|| {
            *fits += 1;
            fast_noise(self.input, self.cfg, self.now)
        });
        let fast = fast?;
        let times: Vec<f64> = pts.iter().map(|p| p.0).collect();
        let mut sd = fast.slope_sd(&times);
        if let Some(slow) = slow_noise(self.input, self.now - fit.window_ms) {
            *fits += 1;
            sd = sd.max(slow.slope_sd(&times));
        }
        let t = if sd > 0.0 {
            fit.slope_per_s / sd
        } else if fit.slope_per_s > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        Some((fast.sd, t))
    }
}

/// What a [`Track`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A new prediction: the episode starts at its `evaluated_at_ms`.
    Raise(ForecastExplanation),
    /// The raised prediction with a fresh estimate.
    Refresh {
        since_ms: UnixMs,
        explanation: ForecastExplanation,
    },
    /// The episode ended; `last` is its latest explanation.
    Clear {
        reason: ClearReason,
        since_ms: UnixMs,
        last: ForecastExplanation,
    },
}

/// Per-series prediction state: debounce, hysteresis, cooldown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Consecutive passing evaluations while idle.
    passes: u32,
    /// Consecutive evaluations that no longer hold while raised.
    misses: u32,
    cooldown_until: UnixMs,
    /// The open episode: when it was raised, the last explanation, and when
    /// a signal was last emitted.
    raised: Option<Raised>,
}

#[derive(Debug, Clone, PartialEq)]
struct Raised {
    since_ms: UnixMs,
    last: ForecastExplanation,
    emitted_ms: UnixMs,
}

impl Track {
    /// Whether a prediction is raised, and since when.
    pub fn raised_since(&self) -> Option<UnixMs> {
        self.raised.as_ref().map(|r| r.since_ms)
    }

    /// The latest explanation of the raised prediction.
    pub fn last_explanation(&self) -> Option<&ForecastExplanation> {
        self.raised.as_ref().map(|r| &r.last)
    }

    /// Applies one evaluation.
    pub fn on_eval(&mut self, e: &Evaluation, cfg: &ForecastConfig) -> Option<Transition> {
        let now = e.at_ms;
        match &mut self.raised {
            None => {
                match &e.pass {
                    Some(x) if now >= self.cooldown_until => {
                        self.passes += 1;
                        if self.passes >= cfg.confirm {
                            self.passes = 0;
                            self.misses = 0;
                            self.raised = Some(Raised {
                                since_ms: now,
                                last: x.clone(),
                                emitted_ms: now,
                            });
                            return Some(Transition::Raise(x.clone()));
                        }
                    }
                    _ => self.passes = 0,
                }
                None
            }
            Some(r) => {
                if e.holds {
                    self.misses = 0;
                    if let Some(x) = &e.pass {
                        r.last = x.clone();
                        if now - r.emitted_ms >= cfg.refresh_every.as_millis_i64() {
                            r.emitted_ms = now;
                            return Some(Transition::Refresh {
                                since_ms: r.since_ms,
                                explanation: x.clone(),
                            });
                        }
                    }
                    None
                } else {
                    self.misses += 1;
                    if self.misses >= cfg.clear_after {
                        self.clear(ClearReason::NoLongerHolds, now, cfg)
                    } else {
                        None
                    }
                }
            }
        }
    }

    /// Applies one raw sample: a value over the threshold fulfils a raised
    /// prediction.
    pub fn on_sample(
        &mut self,
        value: f64,
        threshold: f64,
        now: UnixMs,
        cfg: &ForecastConfig,
    ) -> Option<Transition> {
        if value > threshold {
            self.passes = 0;
            return self.clear(ClearReason::Breached, now, cfg);
        }
        None
    }

    /// Ends a raised prediction for `reason` (also for stale or disabled
    /// series); `None` when nothing was raised.
    pub fn close(
        &mut self,
        reason: ClearReason,
        now: UnixMs,
        cfg: &ForecastConfig,
    ) -> Option<Transition> {
        self.clear(reason, now, cfg)
    }

    fn clear(
        &mut self,
        reason: ClearReason,
        now: UnixMs,
        cfg: &ForecastConfig,
    ) -> Option<Transition> {
        let r = self.raised.take()?;
        self.passes = 0;
        self.misses = 0;
        self.cooldown_until = now.saturating_add(cfg.cooldown.as_millis_i64());
        Some(Transition::Clear {
            reason,
            since_ms: r.since_ms,
            last: r.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HistoryConfig;
    use crate::history::History;

    /// A deterministic noise source for tests (no RNG dependency here).
    fn noise(i: u64) -> f64 {
        let x = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        (x - 0.5) * 2.0
    }

    fn input(
        values: impl Iterator<Item = f64>,
        threshold: f64,
        horizon_s: i64,
    ) -> (SeriesInput, UnixMs) {
        let mut h = History::new(&HistoryConfig::default());
        let mut now = 0;
        for (i, v) in values.enumerate() {
            now = i as i64 * 1000;
            h.push(now, v);
        }
        (
            SeriesInput {
                threshold,
                horizon_ms: horizon_s * 1000,
                raw: h.raw.window(now, 300_000),
                coarse: Some(h.coarse.window(now, 1_800_000)),
                last: h.last(),
            },
            now,
        )
    }

    #[test]
    fn fit_line_recovers_slope_level_and_significance() {
        let pts: Vec<(f64, f64)> = (0..60)
            .map(|i| (-(59 - i) as f64, 10.0 + 0.5 * i as f64 + noise(i as u64)))
            .collect();
        let f = fit_line(&pts, 60_000, 60).unwrap();
        assert!((f.slope_per_s - 0.5).abs() < 0.02, "{f:?}");
        assert!((f.level - 39.5).abs() < 0.6, "{f:?}");
        assert!(f.r2 > 0.98 && f.t_stat > 50.0 && f.coverage == 1.0, "{f:?}");
        // Flat noise: no significant slope, no fit quality.
        let flat: Vec<(f64, f64)> = (0..60)
            .map(|i| (-(59 - i) as f64, 40.0 + noise(i as u64 + 99)))
            .collect();
        let f = fit_line(&flat, 60_000, 60).unwrap();
        assert!(f.r2 < 0.2 && f.t_stat.abs() < 4.0, "{f:?}");
        // Degenerate inputs give no fit rather than a panic.
        assert_eq!(fit_line(&[(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)], 1, 1), None);
        assert_eq!(fit_line(&[(0.0, 1.0)], 1, 1), None);
    }

    #[test]
    fn autocorrelated_wander_is_less_significant_than_white_noise() {
        // The same drift, once with smooth (autocorrelated) error and once
        // with white error of the same size.
        let smooth: Vec<(f64, f64)> = (0..60)
            .map(|i| {
                (
                    -(59 - i) as f64,
                    0.05 * i as f64 + 3.0 * (i as f64 / 9.0).sin(),
                )
            })
            .collect();
        let white: Vec<(f64, f64)> = (0..60)
            .map(|i| (-(59 - i) as f64, 0.05 * i as f64 + 3.0 * noise(i as u64)))
            .collect();
        let (s, w) = (
            fit_line(&smooth, 1, 60).unwrap(),
            fit_line(&white, 1, 60).unwrap(),
        );
        assert!(s.rho > 0.8 && w.rho < 0.3, "{s:?} {w:?}");
    }

    #[test]
    fn a_ramp_passes_with_its_breach_time_and_flat_load_does_not() {
        let cfg = ForecastConfig::default();
        // 200 s flat at 30, then +0.5/s for 60 s: at 59.5 now, 80 in ~41 s.
        let ramp = (0..260).map(|i| 30.0 + 0.5 * (i as f64 - 200.0).max(0.0) + noise(i));
        let (inp, now) = input(ramp, 80.0, 300);
        let e = evaluate(&inp, &cfg, now);
        let x = e.pass.expect("ramp passes");
        assert!((x.slope_per_s - 0.5).abs() < 0.05, "{x:?}");
        assert!((x.lead_ms - 41_000).abs() < 5_000, "{x:?}");
        assert_eq!(x.predicted_breach_at_ms, now + x.lead_ms);
        assert!(
            x.score > 1.0 && x.window_ms <= 60_000 && x.noise_t > cfg.min_noise_t,
            "{x:?}"
        );
        // 20 s into the same ramp, the breach is ~100 s away: more than
        // max_extrapolation windows ahead of any window that sees the ramp.
        let early = (0..220).map(|i| 30.0 + 0.5 * (i as f64 - 200.0).max(0.0) + noise(i));
        let (inp, now) = input(early, 80.0, 300);
        assert!(evaluate(&inp, &cfg, now).pass.is_none());

        let flat = (0..600).map(|i| 60.0 + 2.0 * noise(i));
        let (inp, now) = input(flat, 80.0, 300);
        let e = evaluate(&inp, &cfg, now);
        assert!(e.pass.is_none() && !e.holds, "{e:?}");
        // The 4 raw windows; the coarse ones (15 and 30 min) exceed
        // max_window_per_horizon, and no fit passed the cheap gates, so no
        // noise model was needed.
        assert_eq!(e.fits, 4, "{e:?}");
    }

    #[test]
    fn gates_reject_far_breaches_falling_trends_and_breaches_already_here() {
        let cfg = ForecastConfig::default();
        // +0.05/s from 20: 80 is 1200 s away, beyond a 300 s horizon...
        let slow = (0..300).map(|i| 20.0 + 0.05 * i as f64 + 0.1 * noise(i));
        let (inp, now) = input(slow.clone(), 80.0, 300);
        assert!(evaluate(&inp, &cfg, now).pass.is_none());
        // ...and, seen for only 5 min, further than max_extrapolation windows
        // even within a 30 min horizon...
        let (inp, now) = input(slow, 80.0, 1800);
        assert!(evaluate(&inp, &cfg, now).pass.is_none());
        // ...but seen for 12 min, inside that horizon.
        let longer = (0..720).map(|i| 20.0 + 0.05 * i as f64 + 0.1 * noise(i));
        let (inp, now) = input(longer, 80.0, 1800);
        let x = evaluate(&inp, &cfg, now).pass.expect("passes");
        assert!((x.lead_ms - 481_000).abs() < 30_000, "{x:?}");
        let falling = (0..300).map(|i| 70.0 - 0.1 * i as f64 + noise(i));
        let (inp, now) = input(falling, 80.0, 300);
        assert!(evaluate(&inp, &cfg, now).pass.is_none());
        let over = (0..300).map(|i| 50.0 + 0.2 * i as f64);
        let (inp, now) = input(over, 80.0, 300);
        assert!(evaluate(&inp, &cfg, now).pass.is_none(), "already at 109.8");
    }

    #[test]
    fn cadence_is_the_median_gap_between_samples() {
        let w = |present: &[usize]| Window {
            start_ms: 0,
            res_ms: 1000,
            values: (0..100)
                .map(|i| if present.contains(&i) { 1.0 } else { f32::NAN })
                .collect(),
            open_center_ms: None,
        };
        let every = |k: usize| (0..100).step_by(k).collect::<Vec<_>>();
        assert_eq!(cadence_ms(&w(&every(1))), 1000);
        assert_eq!(cadence_ms(&w(&every(5))), 5000);
        // An outage does not change the cadence.
        let mut gappy = every(2);
        gappy.retain(|i| !(30..70).contains(i));
        assert_eq!(cadence_ms(&w(&gappy)), 2000);
        assert_eq!(cadence_ms(&w(&[3])), 1000);
    }

    #[test]
    fn wander_that_looks_like_a_trend_in_its_window_is_judged_against_the_series_normal() {
        // Load swinging ±8 around 62 with a 2 min period: the last 30 s are
        // the rising half, straight enough for R², the window's own t and a
        // breach "within 60 s", but no steeper than the series always is.
        let swing = (0..300).map(|i| {
            62.0 + 8.0 * ((i as f64 - 299.0 + 15.0) / 120.0 * std::f64::consts::TAU).sin()
                + 0.3 * noise(i)
        });
        let (inp, now) = input(swing, 80.0, 300);
        let cfg = ForecastConfig::default();
        assert!(evaluate(&inp, &cfg, now).pass.is_none());
        // Without the noise gate it would be a prediction.
        let lax = ForecastConfig {
            min_noise_t: 0.0,
            ..ForecastConfig::default()
        };
        let x = evaluate(&inp, &lax, now)
            .pass
            .expect("passes the other gates");
        assert!(
            x.noise_t < cfg.min_noise_t && x.window_ms == 30_000,
            "{x:?}"
        );
    }

    /// An AR(1) series with coefficient `phi` and marginal sd 1 (Gaussian
    /// innovations from a deterministic source).
    fn ar1(n: usize, phi: f64, seed: u64) -> Vec<f64> {
        // splitmix64, summed: about Gaussian.
        let uniform = |i: u64| {
            let mut z = i
                .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        let gauss = |i: u64| (0..12).map(|k| uniform(i * 12 + k)).sum::<f64>() - 6.0;
        let mut x = 0.0;
        (0..n as u64)
            .map(|i| {
                x = phi * x + (1.0 - phi * phi).sqrt() * gauss(i);
                x
            })
            .collect()
    }

    #[test]
    fn noise_model_recovers_ar1_and_its_slope_sd_matches_the_brute_force_sum() {
        let xs = ar1(4000, 0.8, 1);
        let pts: Vec<(f64, f64)> = xs
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, 50.0 + 0.01 * i as f64 + v))
            .collect();
        let m = NoiseModel::estimate(&pts, 1.0).unwrap();
        assert!(
            (m.phi - 0.8).abs() < 0.08 && (m.sd - 1.0).abs() < 0.15 && m.ar_share > 0.8,
            "{m:?}"
        );
        let white = NoiseModel::estimate(
            &ar1(4000, 0.0, 2)
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as f64, v))
                .collect::<Vec<_>>(),
            1.0,
        )
        .unwrap();
        assert!(white.ar_share < 0.2 || white.phi < 0.1, "{white:?}");

        // slope_sd = sqrt(c' Σ c) / Sxx with Σ_ij = sd² (share φ^|ti-tj| + (1-share) δ_ij).
        let model = NoiseModel {
            sd: 2.0,
            phi: 0.9,
            ar_share: 0.7,
        };
        let times: Vec<f64> = (0..60).filter(|i| i % 7 != 3).map(f64::from).collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let c: Vec<f64> = times.iter().map(|t| t - mean).collect();
        let sxx: f64 = c.iter().map(|x| x * x).sum();
        let mut quad = 0.0;
        for (i, ti) in times.iter().enumerate() {
            for (j, tj) in times.iter().enumerate() {
                let cov =
                    4.0 * (0.7 * 0.9_f64.powf((ti - tj).abs()) + if i == j { 0.3 } else { 0.0 });
                quad += c[i] * c[j] * cov;
            }
        }
        let brute = quad.sqrt() / sxx;
        assert!(
            (model.slope_sd(&times) - brute).abs() < 1e-9 * brute,
            "{} {brute}",
            model.slope_sd(&times)
        );
        // Pure white noise: the textbook sd / sqrt(Sxx).
        let w = NoiseModel {
            sd: 2.0,
            phi: 0.0,
            ar_share: 0.0,
        };
        assert!((w.slope_sd(&times) - 2.0 / sxx.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_curve_levelling_off_below_the_threshold_is_vetoed_by_curvature() {
        let cfg = ForecastConfig::default();
        // A quarter sine rising from 40 toward a peak of 70 (threshold 80):
        // linear extrapolation would cross 80 soon, the curve never does.
        let arc = (0..300).map(|i| 40.0 + 30.0 * (i as f64 / 300.0 * 1.45).sin() + 0.3 * noise(i));
        let (inp, now) = input(arc, 80.0, 300);
        let e = evaluate(&inp, &cfg, now);
        assert!(e.pass.is_none(), "{e:?}");
        // The same arc, but heading for a peak above the threshold, passes.
        let high = (0..300).map(|i| 40.0 + 50.0 * (i as f64 / 300.0 * 0.7).sin() + 0.3 * noise(i));
        let (inp, now) = input(high, 80.0, 300);
        assert!(evaluate(&inp, &cfg, now).pass.is_some());
    }

    fn eval_at(at_ms: UnixMs, pass: bool, holds: bool) -> Evaluation {
        Evaluation {
            at_ms,
            pass: pass.then(|| ForecastExplanation {
                window_ms: 60_000,
                points: 60,
                slope_per_s: 0.5,
                level: 50.0,
                r2: 0.9,
                t_stat: 20.0,
                rho: 0.1,
                noise_sd: 2.0,
                noise_t: 15.0,
                curvature_t: None,
                threshold: 80.0,
                horizon_ms: 300_000,
                evaluated_at_ms: at_ms,
                predicted_breach_at_ms: at_ms + 60_000,
                lead_ms: 60_000,
                score: 5.0,
            }),
            holds: holds || pass,
            fits: 1,
        }
    }

    #[test]
    fn track_debounces_holds_with_hysteresis_clears_and_cools_down() {
        let cfg = ForecastConfig::default(); // confirm 2, clear_after 3, cooldown 60 s, refresh 30 s
        let mut t = Track::default();
        assert_eq!(
            t.on_eval(&eval_at(0, true, false), &cfg),
            None,
            "one pass is not enough"
        );
        assert_eq!(t.on_eval(&eval_at(2_000, false, false), &cfg), None);
        assert_eq!(
            t.on_eval(&eval_at(4_000, true, false), &cfg),
            None,
            "the count restarted"
        );
        assert!(matches!(
            t.on_eval(&eval_at(6_000, true, false), &cfg),
            Some(Transition::Raise(_))
        ));
        assert_eq!(t.raised_since(), Some(6_000));
        // Relaxed holds keep it; misses below clear_after keep it.
        assert_eq!(t.on_eval(&eval_at(8_000, false, true), &cfg), None);
        assert_eq!(t.on_eval(&eval_at(10_000, false, false), &cfg), None);
        assert_eq!(t.on_eval(&eval_at(12_000, false, false), &cfg), None);
        assert_eq!(
            t.on_eval(&eval_at(14_000, true, false), &cfg),
            None,
            "a pass resets the misses"
        );
        assert!(matches!(
            t.on_eval(&eval_at(36_000, true, false), &cfg),
            Some(Transition::Refresh {
                since_ms: 6_000,
                ..
            })
        ));
        for at in [38_000, 40_000] {
            assert_eq!(t.on_eval(&eval_at(at, false, false), &cfg), None);
        }
        match t.on_eval(&eval_at(42_000, false, false), &cfg) {
            Some(Transition::Clear {
                reason,
                since_ms,
                last,
            }) => {
                assert_eq!((reason, since_ms), (ClearReason::NoLongerHolds, 6_000));
                assert_eq!(last.evaluated_at_ms, 36_000, "the latest explanation");
            }
            other => panic!("{other:?}"),
        }
        // Cooldown: passes within 60 s are ignored.
        for at in (44_000..102_000).step_by(2_000) {
            assert_eq!(t.on_eval(&eval_at(at, true, false), &cfg), None, "at {at}");
        }
        t.on_eval(&eval_at(102_000, true, false), &cfg);
        assert!(matches!(
            t.on_eval(&eval_at(104_000, true, false), &cfg),
            Some(Transition::Raise(_))
        ));
        // A sample over the threshold fulfils it.
        assert_eq!(t.on_sample(79.0, 80.0, 105_000, &cfg), None);
        assert!(matches!(
            t.on_sample(80.5, 80.0, 106_000, &cfg),
            Some(Transition::Clear {
                reason: ClearReason::Breached,
                since_ms: 104_000,
                ..
            })
        ));
        assert_eq!(t.on_sample(81.0, 80.0, 107_000, &cfg), None);
        assert_eq!(t.close(ClearReason::Stale, 108_000, &cfg), None);
    }
}
