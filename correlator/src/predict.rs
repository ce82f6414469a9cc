//! Predictive analytics in the correlator: every agent sample feeds the
//! [`fincorp_predict::Predictor`] (forecasts of threshold breaches,
//! anomaly scores), models are retrained once a second off the ingest path,
//! and what the predictor says becomes ordinary alerts (source `predict`)
//! that correlate into incidents and trigger playbooks.
//!
//! ```text
//!  POST /ingest/agent ─ observe(every sample) ─┐            (under the lock, µs)
//!  trainer, every 1 s: plan ─ run ─ install ───┤ signals    (plan/install under the lock,
//!                                              │             run on a blocking thread)
//!                             bounded queue ◄──┘ (sheds when full, counted)
//!                                  │
//!  submitter: Signal::to_alert ─ Engine::submit ─ Automation::start(runs)
//! ```
//!
//! The predictor's configuration is the `predict:` section, read at start
//! only (a SIGHUP reloads playbooks, not this).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fincorp_api::UnixMs;
use fincorp_api::wire::HostSample;
use fincorp_predict::{Predictor, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::automation::Automation;
use crate::core::Alert;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// How often training is planned (each series is refitted every
/// `predict.forecast.every`, each app's model every `predict.anomaly.every`).
const TRAIN_TICK: Duration = Duration::from_secs(1);
/// Signals waiting for the ingest path; beyond this they are shed (counted
/// in `fincorp_correlator_predict_signals_dropped_total`).
const SIGNAL_QUEUE: usize = 4096;
/// The most signals submitted in one ingest request.
const MAX_SUBMIT: usize = 512;
/// How long one submission waits for room in a full ingest queue.
const SUBMIT_WAIT: Duration = Duration::from_secs(5);
/// Attempts per submission while the ingest queue is full.
const SUBMIT_ATTEMPTS: u32 = 3;

/// The predictor behind its lock, and the queue its signals leave by.
pub struct Predict {
    predictor: Mutex<Predictor>,
    enabled: bool,
    queue: mpsc::Sender<Signal>,
    /// Taken by [`Predict::start`].
    receiver: Mutex<Option<mpsc::Receiver<Signal>>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The correlation core's alert for a predictor signal.
pub fn alert(signal: &Signal) -> Alert {
    let a = signal.to_alert();
    Alert {
        event_id: a.event_id,
        source: a.source,
        fingerprint: a.fingerprint,
        status: a.status,
        name: a.name,
        host: a.host,
        app: a.app,
        severity: a.severity,
        metric: a.metric,
        value: a.value,
        threshold: a.threshold,
        summary: a.summary,
        labels: a.labels,
        starts_at_ms: a.starts_at_ms,
        at_ms: a.at_ms,
    }
}

fn kind(s: &Signal) -> &'static str {
    match s.kind {
        SignalKind::Predicted => "predicted",
        SignalKind::Anomaly => "anomaly",
    }
}

impl Predict {
    /// A predictor with no history; `cfg` is validated already (config load).
    pub fn new(cfg: fincorp_predict::Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(SIGNAL_QUEUE);
        metrics.predict.set_enabled(cfg.enabled);
        Arc::new(Self {
            enabled: cfg.enabled,
            predictor: Mutex::new(Predictor::new(cfg)),
            queue,
            receiver: Mutex::new(Some(receiver)),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Feeds the samples of one accepted agent batch, received at `now`.
    pub fn observe(&self, host: &str, samples: &[HostSample], now: UnixMs) {
        if !self.enabled || samples.is_empty() {
            return;
        }
        let mut signals = Vec::new();
        {
            let mut p = lock(&self.predictor);
            for s in samples {
                signals.extend(p.observe(host, s, now));
            }
        }
        self.enqueue(signals);
    }

    /// Trains what is due at `now`: copies the windows out under the lock,
    /// fits on a blocking thread, installs the result under the lock.
    /// Returns the signals it queued.
    pub async fn train(&self, now: UnixMs) -> usize {
        let Some(job) = lock(&self.predictor).plan(now) else {
            return 0;
        };
        let trained = match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "predictor training task failed");
                return 0;
            }
        };
        self.metrics.predict.training(&trained.timing);
        tracing::trace!(
            series = trained.timing.series,
            fits = trained.timing.fits,
            forecast_us = trained.timing.forecast.as_micros() as u64,
            apps = trained.timing.apps,
            anomaly_us = trained.timing.anomaly.as_micros() as u64,
            "predictor trained"
        );
        let signals = lock(&self.predictor).install(trained, now);
        let n = signals.len();
        self.enqueue(signals);
        n
    }

    /// Brings the predictor's metrics up to date (at scrape time).
    pub fn export_metrics(&self) {
        let stats = lock(&self.predictor).stats();
        self.metrics.predict.export(&stats);
    }

    fn enqueue(&self, signals: Vec<Signal>) {
        for s in signals {
            tracing::info!(
                host = %s.host, app = %s.app, alert = %s.alert_name(), status = s.status.as_str(),
                cleared = s.cleared.map(|c| c.as_str()), summary = %s.summary(),
                "prediction"
            );
            self.metrics.predict.signal(kind(&s), s.status.as_str());
            if let Err(e) = self.queue.try_send(s) {
                self.metrics.predict.signals_dropped(1);
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "the signal queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the submitter has stopped",
                };
                tracing::warn!(reason, "predictor signal dropped");
            }
        }
    }

    /// Starts the trainer and the submitter (nothing when `predict.enabled`
    /// is false); abort the handles at shutdown.
    pub fn start(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        automation: Arc<Automation>,
    ) -> Vec<JoinHandle<()>> {
        let Some(rx) = lock(&self.receiver).take() else {
            return vec![];
        };
        if !self.enabled {
            return vec![];
        }
        vec![
            tokio::spawn(train_loop(self.clone())),
            tokio::spawn(submit_loop(rx, engine, automation, self.metrics.clone())),
        ]
    }
}

async fn train_loop(predict: Arc<Predict>) {
    let mut interval = tokio::time::interval(TRAIN_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        predict.train(fincorp_api::now_ms()).await;
    }
}

/// Submits queued signals as alerts through the normal ingest path, and
/// starts the playbook runs they decide.
async fn submit_loop(
    mut rx: mpsc::Receiver<Signal>,
    engine: Arc<Engine>,
    automation: Arc<Automation>,
    metrics: Arc<Metrics>,
) {
    let mut signals = Vec::new();
    while rx.recv_many(&mut signals, MAX_SUBMIT).await > 0 {
        let alerts: Vec<Alert> = signals.drain(..).map(|s| alert(&s)).collect();
        let n = alerts.len() as u64;
        let mut attempt = 1;
        loop {
            match engine
                .submit(alerts.clone(), fincorp_api::now_ms(), SUBMIT_WAIT)
                .await
            {
                Ok(ingested) => {
                    for run in ingested.runs {
                        automation.start(run);
                    }
                    break;
                }
                Err(crate::engine::SubmitError::Busy) if attempt < SUBMIT_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(
                        alerts = n,
                        attempt,
                        "ingest queue full; predictor alerts wait"
                    );
                }
                Err(e) => {
                    metrics.predict.signals_dropped(n);
                    tracing::error!(error = %e, alerts = n, "predictor alerts were not stored");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use fincorp_api::rest::{IncidentDetail, IncidentList};
    use fincorp_api::wire::{AlertStatus, AppSample, Severity};

    use super::*;
    use crate::api::tests::{fixture_with, send};

    const HOST: &str = "web01";
    const APP: &str = "FINCORP-APP-TRANSPROC-TEST";

    fn sample(at_ms: UnixMs, cpu: f64) -> HostSample {
        HostSample {
            at_ms,
            cpu_pct: cpu / 2.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            apps: vec![AppSample {
                app: APP.into(),
                processes: 1,
                cpu_pct: cpu,
                rss_bytes: 256 << 20,
                probe: None,
                host_cpu_pct: None,
                throttling: None,
            }],
            cpu_per_core_pct: vec![],
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        }
    }

    /// Small deterministic noise in [-1, 1].
    fn noise(s: i64) -> f64 {
        ((s * 7919 + 13) % 201 - 100) as f64 / 100.0
    }

    async fn get(state: &crate::api::AppState, path: &str) -> serde_json::Value {
        let (status, body) = send(state, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ramp_becomes_a_predicted_alert_in_an_incident_with_its_explanation() {
        let f = fixture_with(vec![], Default::default());
        let state = f.state.clone();
        let rx = lock(&state.predict.receiver).take().unwrap();
        let submitter = tokio::spawn(submit_loop(
            rx,
            state.engine.clone(),
            state.automation.clone(),
            state.engine.metrics.clone(),
        ));

        // Ten minutes in the past up to now: five of steady load at 30% of a
        // core, then a climb of 0.25 points a second (80 at second 500).
        let t0 = fincorp_api::now_ms() - 600_000;
        let cpu = |s: i64| {
            if s < 300 {
                30.0 + noise(s)
            } else {
                30.0 + 0.25 * (s - 300) as f64 + noise(s)
            }
        };
        let first_over = (0..600).find(|&s| cpu(s) > 80.0).unwrap();
        let mut raised_at = None;
        for s in 0..first_over {
            let now = t0 + s * 1000;
            // Batches of five samples, as a 5 s heartbeat carries them.
            if s % 5 == 4 {
                let batch: Vec<HostSample> =
                    (s - 4..=s).map(|k| sample(t0 + k * 1000, cpu(k))).collect();
                state.predict.observe(HOST, &batch, now);
            }
            if state.predict.train(now).await > 0 && raised_at.is_none() {
                raised_at = Some(s);
            }
        }
        let raised_at = raised_at.expect("a prediction before the breach");
        assert!(
            raised_at >= 300 && first_over - raised_at >= 30,
            "raised at {raised_at}, first sample over 80 at {first_over}"
        );

        // The prediction is an alert of an incident, explained in its timeline.
        let incident = loop {
            let list: IncidentList =
                serde_json::from_value(get(&state, &format!("/api/v1/incidents?app={APP}")).await)
                    .unwrap();
            if let Some(i) = list.incidents.first() {
                break i.id.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let detail: IncidentDetail =
            serde_json::from_value(get(&state, &format!("/api/v1/incidents/{incident}")).await)
                .unwrap();
        let a = &detail.alerts[0];
        assert_eq!(
            (a.name.as_str(), a.source.as_str(), a.severity),
            ("predicted_cpu_breach", "predict", Severity::Warning)
        );
        assert_eq!(detail.incident.app.as_deref(), Some(APP));
        let joined = detail
            .timeline
            .iter()
            .find(|t| t.kind == "alert_joined")
            .expect("alert_joined");
        assert!(
            joined.message.contains("predicted to cross 80") && joined.message.contains("rising"),
            "{}",
            joined.message
        );
        for label in ["window_s", "slope_per_s", "predicted_breach_at", "score"] {
            assert!(
                joined.data["labels"][label].is_string(),
                "{label} in {:#}",
                joined.data
            );
        }

        // The first sample over the threshold fulfils the prediction.
        let s = first_over;
        state
            .predict
            .observe(HOST, &[sample(t0 + s * 1000, cpu(s))], t0 + s * 1000);
        let resolved = loop {
            let detail: IncidentDetail =
                serde_json::from_value(get(&state, &format!("/api/v1/incidents/{incident}")).await)
                    .unwrap();
            if detail.alerts[0].status == AlertStatus::Resolved {
                break detail;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            resolved.timeline.iter().any(|t| t.kind == "alert_resolved"),
            "{:#?}",
            resolved.timeline
        );

        // /metrics shows the predictor's work.
        let (_, text) = send(
            &state,
            Request::get("/metrics").body(Body::empty()).unwrap(),
        )
        .await;
        let text = text.as_str().unwrap_or_default().to_owned();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        // Raised once, refreshed with new estimates while it held, resolved
        // once; each of those is a stored event.
        let firing =
            value("fincorp_correlator_predict_signals_total{kind=\"predicted\",status=\"firing\"}");
        assert!(firing >= 1.0, "{text}");
        assert_eq!(
            value(
                "fincorp_correlator_predict_signals_total{kind=\"predicted\",status=\"resolved\"}"
            ),
            1.0
        );
        assert_eq!(
            value("fincorp_correlator_ingest_events_total{source=\"predict\"}"),
            firing + 1.0
        );
        assert_eq!(value("fincorp_correlator_predict_enabled"), 1.0);
        assert_eq!(value("fincorp_correlator_predict_series"), 1.0);
        assert_eq!(
            value("fincorp_correlator_predict_raised{kind=\"predicted\"}"),
            0.0
        );
        assert_eq!(
            value("fincorp_correlator_predict_samples_total"),
            // Every sample of every batch, and the one over the threshold.
            (first_over / 5 * 5 + 1) as f64
        );
        assert!(
            value("fincorp_correlator_predict_training_seconds_count{phase=\"forecast\"}") > 0.0
        );
        submitter.abort();
    }

    #[tokio::test]
    async fn switched_off_it_observes_nothing_and_starts_no_task() {
        let f = fixture_with(vec![], Default::default());
        let p = Predict::new(
            fincorp_predict::Config {
                enabled: false,
                ..Default::default()
            },
            f.state.engine.metrics.clone(),
        );
        let now = fincorp_api::now_ms();
        p.observe(HOST, &[sample(now, 99.0)], now);
        assert_eq!(lock(&p.predictor).stats().samples, 0);
        assert!(
            p.start(f.state.engine.clone(), f.state.automation.clone())
                .is_empty()
        );
    }
}
