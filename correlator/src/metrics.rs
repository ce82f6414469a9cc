//! The correlator's own Prometheus metrics, served at `/metrics` in the text
//! exposition format (prometheus-client).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// `kind` (`predicted`, `anomaly`) and `status` (`firing`, `resolved`) of
/// a predictor signal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub kind: String,
    pub status: String,
}

/// `kind` of a predictor signal: `predicted` or `anomaly`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// `phase` of a training job: `forecast` or `anomaly`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub code: String,
}

/// Every metric the correlator exports.
pub struct Metrics {
    registry: Registry,
    events: Family<SourceLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    commits: Counter,
    commit_seconds: Histogram,
    commit_requests: Histogram,
    sync_seconds: Histogram,
    dedup_evicted: Counter,
    open_incidents: Gauge,
    active_alerts: Gauge,
    queue_depth: Gauge,
    dedup_ids: Gauge,
    agent_commands_waiting: Gauge,
    /// The predictor's (`crate::predict`).
    pub predict: PredictMetrics,
}

/// The predictor's metrics: its sizes and counters (from
/// `fincorp_predict::Stats`, brought up to date at scrape time), the
/// signals it raised, what was shed, and the time training takes.
pub struct PredictMetrics {
    enabled: Gauge,
    samples: Counter,
    samples_skewed: Counter,
    units: Gauge,
    series: Gauge,
    history_bytes: Gauge,
    reservoir_bytes: Gauge,
    models: Gauge,
    raised: Family<KindLabels, Gauge>,
    forecast_evaluations: Counter,
    forecast_fits: Counter,
    anomaly_trainings: Counter,
    signals: Family<SignalLabels, Counter>,
    signals_dropped: Counter,
    training_seconds: Family<PhaseLabels, Histogram>,
    forecast_seconds_per_series: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The cumulative stats already exported, to add only what is new.
    exported: std::sync::Mutex<fincorp_predict::Stats>,
}

fn training_histogram() -> Histogram {
    // 50 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl PredictMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            enabled: Gauge::default(),
            samples: Counter::default(),
            samples_skewed: Counter::default(),
            units: Gauge::default(),
            series: Gauge::default(),
            history_bytes: Gauge::default(),
            reservoir_bytes: Gauge::default(),
            models: Gauge::default(),
            raised: Family::default(),
            forecast_evaluations: Counter::default(),
            forecast_fits: Counter::default(),
            anomaly_trainings: Counter::default(),
            signals: Family::default(),
            signals_dropped: Counter::default(),
            training_seconds: Family::new_with_constructor(training_histogram),
            forecast_seconds_per_series: Gauge::default(),
            exported: std::sync::Mutex::new(fincorp_predict::Stats::default()),
        };
        let r = registry;
        r.register(
            "predict_enabled",
            "1 when predictive analytics is on (predict.enabled)",
            m.enabled.clone(),
        );
        r.register(
            "predict_samples",
            "Agent host samples the predictor observed",
            m.samples.clone(),
        );
        r.register(
            "predict_samples_skewed",
            "Samples dropped for a timestamp too far from the receive time (predict.history.max_clock_skew)",
            m.samples_skewed.clone(),
        );
        r.register(
            "predict_units",
            "(host, app) pairs the predictor tracks",
            m.units.clone(),
        );
        r.register(
            "predict_series",
            "(host, app, metric) series with history and forecasts",
            m.series.clone(),
        );
        r.register(
            "predict_history_bytes",
            "Memory held by all series' history",
            m.history_bytes.clone(),
        );
        r.register(
            "predict_reservoir_bytes",
            "Memory held by the anomaly models' training samples",
            m.reservoir_bytes.clone(),
        );
        r.register(
            "predict_models",
            "Apps with a trained anomaly model",
            m.models.clone(),
        );
        r.register(
            "predict_raised",
            "Predictions and anomalies raised now, by kind",
            m.raised.clone(),
        );
        r.register(
            "predict_forecast_evaluations",
            "Series forecasts evaluated",
            m.forecast_evaluations.clone(),
        );
        r.register(
            "predict_forecast_fits",
            "Regressions fitted (several windows per evaluation)",
            m.forecast_fits.clone(),
        );
        r.register(
            "predict_anomaly_trainings",
            "Per-app k-means models trained",
            m.anomaly_trainings.clone(),
        );
        r.register(
            "predict_signals",
            "Predictor signals turned into alerts, by kind and status",
            m.signals.clone(),
        );
        r.register(
            "predict_signals_dropped",
            "Predictor signals lost: the signal queue was full or the ingest refused them",
            m.signals_dropped.clone(),
        );
        r.register(
            "predict_training_seconds",
            "Time of each training job, by phase (forecast: all due series; anomaly: all due apps)",
            m.training_seconds.clone(),
        );
        r.register(
            "predict_forecast_seconds_per_series",
            "Forecast time per series in the last training job",
            m.forecast_seconds_per_series.clone(),
        );
        m
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.set(i64::from(on));
    }

    /// Brings the gauges and counters up to date with the predictor's stats.
    pub fn export(&self, s: &fincorp_predict::Stats) {
        let gauge = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.units, s.units);
        gauge(&self.series, s.series);
        gauge(&self.history_bytes, s.history_bytes);
        gauge(&self.reservoir_bytes, s.reservoir_bytes);
        gauge(&self.models, s.models);
        for (kind, n) in [
            ("predicted", s.raised_predictions),
            ("anomaly", s.raised_anomalies),
        ] {
            gauge(
                &self.raised.get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
        let mut old = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        let add = |c: &Counter, new: u64, old: u64| {
            if new > old {
                c.inc_by(new - old);
            }
        };
        add(&self.samples, s.samples, old.samples);
        add(&self.samples_skewed, s.dropped_skew, old.dropped_skew);
        add(
            &self.forecast_evaluations,
            s.forecast_evaluations,
            old.forecast_evaluations,
        );
        add(&self.forecast_fits, s.forecast_fits, old.forecast_fits);
        add(
            &self.anomaly_trainings,
            s.anomaly_trainings,
            old.anomaly_trainings,
        );
        *old = s.clone();
    }

    /// Counts one signal handed to the ingest path.
    pub fn signal(&self, kind: &str, status: &str) {
        self.signals
            .get_or_create(&SignalLabels {
                kind: kind.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn signals_dropped(&self, n: u64) {
        self.signals_dropped.inc_by(n);
    }

    /// Records one training job's timing.
    pub fn training(&self, t: &fincorp_predict::predictor::Timing) {
        let phase = |p: &str| PhaseLabels { phase: p.into() };
        if t.series > 0 {
            self.training_seconds
                .get_or_create(&phase("forecast"))
                .observe(t.forecast.as_secs_f64());
            self.forecast_seconds_per_series
                .set(t.forecast.as_secs_f64() / t.series as f64);
        }
        if t.apps > 0 {
            self.training_seconds
                .get_or_create(&phase("anomaly"))
                .observe(t.anomaly.as_secs_f64());
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fincorp_correlator");
        let events = Family::<SourceLabels, Counter>::default();
        registry.register("ingest_events", "Events stored, by source", events.clone());
        let duplicates = Family::<SourceLabels, Counter>::default();
        registry.register(
            "ingest_duplicates",
            "Events received again and ignored (dedup hits), by source",
            duplicates.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Ingest requests, by endpoint and HTTP status",
            requests.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "ingest_commits",
            "Ingest transactions committed",
            commits.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        registry.register(
            "ingest_commit_seconds",
            "Time to process and commit one group of requests",
            commit_seconds.clone(),
        );
        let commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "ingest_commit_requests",
            "Requests committed together in one transaction",
            commit_requests.clone(),
        );
        let sync_seconds = Histogram::new(exponential_buckets(0.000_125, 2.0, 14));
        registry.register(
            "ingest_sync_seconds",
            "Time to flush the WAL to disk for committed ingest groups, before they are answered",
            sync_seconds.clone(),
        );
        let dedup_evicted = Counter::default();
        registry.register(
            "dedup_evicted",
            "Event ids forgotten before the end of dedup_window because the set reached dedup_max_ids",
            dedup_evicted.clone(),
        );
        let open_incidents = Gauge::default();
        registry.register(
            "open_incidents",
            "Incidents open now",
            open_incidents.clone(),
        );
        let active_alerts = Gauge::default();
        registry.register(
            "active_alerts",
            "Firing alerts held in memory",
            active_alerts.clone(),
        );
        let dedup_ids = Gauge::default();
        registry.register(
            "dedup_ids",
            "Event ids remembered for dedup (the dedup window)",
            dedup_ids.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "ingest_queue_depth",
            "Ingest requests waiting for the writer",
            queue_depth.clone(),
        );
        let agent_commands_waiting = Gauge::default();
        registry.register(
            "agent_commands_waiting",
            "Commands queued for agents, not yet picked up",
            agent_commands_waiting.clone(),
        );
        let predict = PredictMetrics::register(&mut registry);
        Self {
            predict,
            registry,
            events,
            duplicates,
            requests,
            commits,
            commit_seconds,
            commit_requests,
            sync_seconds,
            dedup_evicted,
            open_incidents,
            active_alerts,
            queue_depth,
            dedup_ids,
            agent_commands_waiting,
        }
    }

    /// Counts events of one request from `source`: stored and duplicates.
    pub fn events(&self, source: &str, stored: u64, duplicates: u64) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        if stored > 0 {
            self.events.get_or_create(&labels).inc_by(stored);
        }
        if duplicates > 0 {
            self.duplicates.get_or_create(&labels).inc_by(duplicates);
        }
    }

    pub fn request(&self, endpoint: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    pub fn observe_commit(&self, requests: usize, took: Duration) {
        self.commits.inc();
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_requests.observe(requests as f64);
    }

    pub fn dedup_evicted(&self, n: u64) {
        self.dedup_evicted.inc_by(n);
    }

    pub fn observe_sync(&self, took: Duration) {
        self.sync_seconds.observe(took.as_secs_f64());
    }

    pub fn set_core_counts(&self, open_incidents: usize, active_alerts: usize) {
        self.open_incidents
            .set(i64::try_from(open_incidents).unwrap_or(i64::MAX));
        self.active_alerts
            .set(i64::try_from(active_alerts).unwrap_or(i64::MAX));
    }

    pub fn set_dedup_ids(&self, n: usize) {
        self.dedup_ids.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The text exposition, with the queue gauges read at scrape time.
    pub fn render(&self, queue_depth: usize, commands_waiting: usize) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.agent_commands_waiting
            .set(i64::try_from(commands_waiting).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
