//! Prometheus `/metrics` and `/healthz` on a loopback port: the agent's own
//! health (samples, batches, spool, send failures, commands, reloads, its own
//! CPU and RSS, the overhead budget) and the latest sample of the host and
//! every app, so Prometheus can scrape the agent instead of running
//! node_exporter and process-exporter beside it.
//!
//! Everything is encoded at scrape time from [`Telemetry`] (atomics and the
//! latest snapshot) by a prometheus-client collector. Scrapers asking for
//! OpenMetrics get it; others (curl, `promtool check metrics`) get the
//! Prometheus text format 0.0.4.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fincorp_api::wire::{HostSample, Severity};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::collect::procfs;
use crate::commands::CommandCounters;
use crate::ship::Outbox;

/// A firing alert, for `fincorp_alerts_firing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlert {
    pub app: Option<String>,
    pub rule: String,
    pub severity: Severity,
}

/// The latest sampling pass, as exported.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sample: HostSample,
    pub firing: Vec<FiringAlert>,
    pub known_processes: usize,
    pub taken: Instant,
}

/// Everything `/metrics` reports; shared by the agent's tasks.
#[derive(Debug)]
pub struct Telemetry {
    pub samples: AtomicU64,
    /// Samples never sent: more were taken between two batches than one
    /// batch carries (`ship::samples::MAX_SAMPLES_PER_BATCH`).
    pub samples_dropped: AtomicU64,
    pub last_sample_ns: AtomicU64,
    pub events_firing: AtomicU64,
    pub events_resolved: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub last_reload_ok: AtomicBool,
    /// Current and configured sampling interval, ms.
    pub interval_ms: AtomicU64,
    pub base_interval_ms: AtomicU64,
    pub budget_exceeded: AtomicBool,
    pub slowdowns: AtomicU64,
    /// The agent's CPU over the budget window, in cores, ×10⁶; `u64::MAX`
    /// without an overhead budget (use `process_cpu_seconds_total`).
    pub cpu_micro_cores: AtomicU64,
    /// Time sampling spent blocked on a full spool, ns.
    pub blocked_ns: AtomicU64,
    pub blocked_now: AtomicBool,
    pub outbox: Mutex<Option<Outbox>>,
    pub commands: Mutex<Option<Arc<CommandCounters>>>,
    pub latest: Mutex<Option<Snapshot>>,
    pub start_unix_s: f64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            samples: AtomicU64::new(0),
            samples_dropped: AtomicU64::new(0),
            last_sample_ns: AtomicU64::new(0),
            events_firing: AtomicU64::new(0),
            events_resolved: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok: AtomicBool::new(true),
            interval_ms: AtomicU64::new(0),
            base_interval_ms: AtomicU64::new(0),
            budget_exceeded: AtomicBool::new(false),
            slowdowns: AtomicU64::new(0),
            cpu_micro_cores: AtomicU64::new(u64::MAX),
            blocked_ns: AtomicU64::new(0),
            blocked_now: AtomicBool::new(false),
            outbox: Mutex::new(None),
            commands: Mutex::new(None),
            latest: Mutex::new(None),
            start_unix_s: fincorp_api::now_ms() as f64 / 1e3,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telemetry {
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        *lock(&self.latest) = Some(snapshot);
    }

    /// Healthy while sampling keeps up: the last pass is recent, and
    /// sampling is not blocked on a full spool.
    pub fn health(&self) -> Result<(), String> {
        if self.blocked_now.load(Ordering::Relaxed) {
            return Err("sampling is blocked: the spool is full (spool.when_full: block)".into());
        }
        let interval = Duration::from_millis(self.interval_ms.load(Ordering::Relaxed).max(1));
        let allowed = (interval * 3).max(Duration::from_secs(5));
        let started = self.samples.load(Ordering::Relaxed) > 0;
        match lock(&self.latest).as_ref().map(|s| s.taken.elapsed()) {
            Some(age) if age > allowed => Err(format!(
                "no sample for {:.1}s (interval {interval:?})",
                age.as_secs_f64()
            )),
            None if started => Err("no sample yet".into()),
            _ => Ok(()),
        }
    }
}

/// Encodes one metric family from `(labels, value)` items; nothing when empty.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    items: Vec<(Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    if items.is_empty() {
        return Ok(());
    }
    // prometheus-client appends `_total` to counter names itself.
    let name = match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    if items.len() == 1 && items[0].0.is_empty() {
        if let Some((_, metric)) = items.into_iter().next() {
            metric.encode(m)?;
        }
        return Ok(());
    }
    for (labels, metric) in items {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        name,
        help,
        MetricType::Gauge,
        vec![(vec![], ConstGauge::new(value))],
    )
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        name,
        help,
        MetricType::Counter,
        vec![(vec![], ConstCounter::new(value))],
    )
}

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

#[derive(Debug)]
struct AgentCollector(Arc<Telemetry>);

impl Collector for AgentCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let t = &self.0;
        family(
            &mut e,
            "fincorp_agent_build_info",
            "The agent's version.",
            MetricType::Gauge,
            vec![(
                vec![("version", crate::VERSION.to_owned())],
                ConstGauge::new(1i64),
            )],
        )?;
        // Own resource use.
        if let Some((cpu, rss)) = procfs::self_usage() {
            counter(
                &mut e,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                cpu,
            )?;
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            )?;
        }
        gauge(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            t.start_unix_s,
        )?;
        let cpu = t.cpu_micro_cores.load(Ordering::Relaxed);
        if cpu != u64::MAX {
            gauge(
                &mut e,
                "fincorp_agent_cpu_usage_ratio",
                "The agent's own CPU use over the overhead budget window, in cores (0.005 = 0.5% of one core).",
                cpu as f64 / 1e6,
            )?;
        }
        // Sampling and the overhead budget.
        counter(
            &mut e,
            "fincorp_agent_samples_total",
            "Sampling passes completed.",
            load(&t.samples),
        )?;
        counter(
            &mut e,
            "fincorp_agent_samples_dropped_total",
            "Samples never sent because more were taken between two batches than one batch carries (60).",
            load(&t.samples_dropped),
        )?;
        gauge(
            &mut e,
            "fincorp_agent_sample_duration_seconds",
            "How long the last sampling pass took.",
            load(&t.last_sample_ns) / 1e9,
        )?;
        gauge(
            &mut e,
            "fincorp_agent_sample_interval_seconds",
            "The sampling interval in force (longer than configured while over the overhead budget).",
            load(&t.interval_ms) / 1e3,
        )?;
        gauge(
            &mut e,
            "fincorp_agent_configured_sample_interval_seconds",
            "The sampling interval set in the config.",
            load(&t.base_interval_ms) / 1e3,
        )?;
        gauge(
            &mut e,
            "fincorp_agent_overhead_budget_exceeded",
            "1 while the agent is over its CPU or RSS budget and sampling is slowed.",
            f64::from(u8::from(t.budget_exceeded.load(Ordering::Relaxed))),
        )?;
        counter(
            &mut e,
            "fincorp_agent_overhead_slowdowns_total",
            "Times the sampling interval was lengthened because the agent was over its budget.",
            load(&t.slowdowns),
        )?;
        counter(
            &mut e,
            "fincorp_agent_sampling_blocked_seconds_total",
            "Time sampling was blocked on a full spool (spool.when_full: block).",
            load(&t.blocked_ns) / 1e9,
        )?;
        family(
            &mut e,
            "fincorp_agent_alert_events_total",
            "Alert transitions produced by local rules.",
            MetricType::Counter,
            vec![
                (
                    vec![("status", "firing".to_owned())],
                    ConstCounter::new(t.events_firing.load(Ordering::Relaxed)),
                ),
                (
                    vec![("status", "resolved".to_owned())],
                    ConstCounter::new(t.events_resolved.load(Ordering::Relaxed)),
                ),
            ],
        )?;
        family(
            &mut e,
            "fincorp_agent_config_reloads_total",
            "Config reloads on SIGHUP, by result.",
            MetricType::Counter,
            vec![
                (
                    vec![("result", "ok".to_owned())],
                    ConstCounter::new(t.reloads_ok.load(Ordering::Relaxed)),
                ),
                (
                    vec![("result", "error".to_owned())],
                    ConstCounter::new(t.reloads_failed.load(Ordering::Relaxed)),
                ),
            ],
        )?;
        gauge(
            &mut e,
            "fincorp_agent_config_last_reload_successful",
            "1 if the last config reload succeeded (or none was asked for).",
            f64::from(u8::from(t.last_reload_ok.load(Ordering::Relaxed))),
        )?;

        // Delivery.
        if let Some(outbox) = lock(&t.outbox).clone() {
            let c = &outbox.counters;
            counter(
                &mut e,
                "fincorp_agent_batches_spooled_total",
                "Batches written to the spool.",
                load(&c.spooled),
            )?;
            counter(
                &mut e,
                "fincorp_agent_batches_sent_total",
                "Batches the correlator acknowledged.",
                load(&c.sent),
            )?;
            counter(
                &mut e,
                "fincorp_agent_send_failures_total",
                "Failed attempts to deliver a batch (each is retried).",
                load(&c.send_failures),
            )?;
            counter(
                &mut e,
                "fincorp_agent_batches_dropped_total",
                "Batches lost: dropped by a full spool (drop_oldest), too large, or unwritable.",
                load(&c.dropped),
            )?;
            counter(
                &mut e,
                "fincorp_agent_batches_rejected_total",
                "Batches the correlator refused for good (4xx).",
                load(&c.rejected),
            )?;
            counter(
                &mut e,
                "fincorp_agent_duplicate_events_total",
                "Resent events the correlator already had (harmless).",
                load(&c.duplicate_events),
            )?;
            counter(
                &mut e,
                "fincorp_agent_spool_errors_total",
                "Spool read or write errors.",
                load(&c.write_errors),
            )?;
            gauge(
                &mut e,
                "fincorp_agent_spool_bytes",
                "Bytes of batches waiting in the spool.",
                outbox.bytes() as f64,
            )?;
            gauge(
                &mut e,
                "fincorp_agent_spool_batches",
                "Batches waiting in the spool.",
                outbox.len() as f64,
            )?;
            gauge(
                &mut e,
                "fincorp_agent_spool_capacity_bytes",
                "The spool's size limit.",
                outbox.max_bytes() as f64,
            )?;
        }
        // Commands.
        if let Some(c) = lock(&t.commands).clone() {
            family(
                &mut e,
                "fincorp_agent_commands_total",
                "Commands handled, by outcome.",
                MetricType::Counter,
                [
                    ("applied", &c.applied),
                    ("refused", &c.refused),
                    ("failed", &c.failed),
                ]
                .into_iter()
                .map(|(o, v)| {
                    (
                        vec![("outcome", o.to_owned())],
                        ConstCounter::new(v.load(Ordering::Relaxed)),
                    )
                })
                .collect(),
            )?;
            counter(
                &mut e,
                "fincorp_agent_commands_forged_total",
                "Commands ignored because their signature did not verify.",
                load(&c.forged),
            )?;
            counter(
                &mut e,
                "fincorp_agent_commands_replayed_total",
                "Repeats of an already handled command id, answered without running it again.",
                load(&c.replayed),
            )?;
            counter(
                &mut e,
                "fincorp_agent_commands_rate_limited_total",
                "Commands refused by the local rate limit.",
                load(&c.rate_limited),
            )?;
        }

        let Some(snap) = lock(&t.latest).clone() else {
            return Ok(());
        };
        gauge(
            &mut e,
            "fincorp_agent_known_processes",
            "Processes known to discovery.",
            snap.known_processes as f64,
        )?;
        let s = &snap.sample;
        gauge(
            &mut e,
            "fincorp_host_cpu_usage_ratio",
            "Host CPU busy over the last interval, fraction of all cores.",
            s.cpu_pct / 100.0,
        )?;
        family(
            &mut e,
            "fincorp_host_cpu_core_usage_ratio",
            "CPU busy per core over the last interval, fraction of that core.",
            MetricType::Gauge,
            s.cpu_per_core_pct
                .iter()
                .enumerate()
                .map(|(i, v)| (vec![("core", i.to_string())], ConstGauge::new(v / 100.0)))
                .collect(),
        )?;
        gauge(
            &mut e,
            "fincorp_host_memory_used_bytes",
            "Memory in use.",
            s.mem_used_bytes as f64,
        )?;
        gauge(
            &mut e,
            "fincorp_host_memory_total_bytes",
            "Total memory.",
            s.mem_total_bytes as f64,
        )?;
        if let Some(v) = s.mem_available_bytes {
            gauge(
                &mut e,
                "fincorp_host_memory_available_bytes",
                "Memory available without swapping (MemAvailable).",
                v as f64,
            )?;
        }
        if let (Some(used), Some(total)) = (s.swap_used_bytes, s.swap_total_bytes) {
            gauge(
                &mut e,
                "fincorp_host_swap_used_bytes",
                "Swap in use.",
                used as f64,
            )?;
            gauge(
                &mut e,
                "fincorp_host_swap_total_bytes",
                "Total swap.",
                total as f64,
            )?;
        }
        if let Some(l) = s.load {
            gauge(
                &mut e,
                "fincorp_host_load1",
                "1-minute load average.",
                l.one,
            )?;
            gauge(
                &mut e,
                "fincorp_host_load5",
                "5-minute load average.",
                l.five,
            )?;
            gauge(
                &mut e,
                "fincorp_host_load15",
                "15-minute load average.",
                l.fifteen,
            )?;
        }
        let per_app = |f: &dyn Fn(&fincorp_api::wire::AppSample) -> Option<f64>| {
            s.apps
                .iter()
                .filter_map(|a| Some((vec![("app", a.app.clone())], ConstGauge::new(f(a)?))))
                .collect::<Vec<_>>()
        };
        let per_app_counter = |f: &dyn Fn(&fincorp_api::wire::AppSample) -> Option<f64>| {
            s.apps
                .iter()
                .filter_map(|a| Some((vec![("app", a.app.clone())], ConstCounter::new(f(a)?))))
                .collect::<Vec<_>>()
        };
        family(
            &mut e,
            "fincorp_app_up",
            "1 when the app has at least one process.",
            MetricType::Gauge,
            per_app(&|a| Some(f64::from(u8::from(a.processes > 0)))),
        )?;
        family(
            &mut e,
            "fincorp_app_processes",
            "Processes of the app, children included.",
            MetricType::Gauge,
            per_app(&|a| Some(f64::from(a.processes))),
        )?;
        family(
            &mut e,
            "fincorp_app_cpu_usage_ratio",
            "CPU used by the app over the last interval, in cores (1 = one full core).",
            MetricType::Gauge,
            per_app(&|a| Some(a.cpu_pct / 100.0)),
        )?;
        family(
            &mut e,
            "fincorp_app_host_cpu_usage_ratio",
            "CPU used by the app over the last interval, fraction of all the host's cores.",
            MetricType::Gauge,
            per_app(&|a| a.host_cpu_pct.map(|v| v / 100.0)),
        )?;
        family(
            &mut e,
            "fincorp_app_resident_memory_bytes",
            "Resident memory of the app's processes.",
            MetricType::Gauge,
            per_app(&|a| Some(a.rss_bytes as f64)),
        )?;
        family(
            &mut e,
            "fincorp_app_cpu_periods_total",
            "CFS enforcement periods of the app's cgroup.",
            MetricType::Counter,
            per_app_counter(&|a| a.throttling.map(|t| t.nr_periods as f64)),
        )?;
        family(
            &mut e,
            "fincorp_app_cpu_throttled_periods_total",
            "CFS periods in which the app's cgroup was throttled.",
            MetricType::Counter,
            per_app_counter(&|a| a.throttling.map(|t| t.nr_throttled as f64)),
        )?;
        family(
            &mut e,
            "fincorp_app_cpu_throttled_seconds_total",
            "Time the app's cgroup was throttled.",
            MetricType::Counter,
            per_app_counter(&|a| a.throttling.map(|t| t.throttled_us as f64 / 1e6)),
        )?;
        family(
            &mut e,
            "fincorp_app_probe_up",
            "1 when the app's latency probe succeeds.",
            MetricType::Gauge,
            per_app(&|a| a.probe.as_ref().map(|p| f64::from(u8::from(p.ok)))),
        )?;
        family(
            &mut e,
            "fincorp_app_probe_latency_seconds",
            "Latency of the app's last successful probe.",
            MetricType::Gauge,
            per_app(&|a| a.probe.as_ref()?.latency_ms.map(|ms| ms / 1e3)),
        )?;
        family(
            &mut e,
            "fincorp_alerts_firing",
            "Alerts of local rules currently firing.",
            MetricType::Gauge,
            snap.firing
                .iter()
                .map(|f| {
                    (
                        vec![
                            ("app", f.app.clone().unwrap_or_default()),
                            ("rule", f.rule.clone()),
                            ("severity", f.severity.as_str().to_owned()),
                        ],
                        ConstGauge::new(1i64),
                    )
                })
                .collect(),
        )?;
        Ok(())
    }
}

/// The registry with the agent's collector.
pub fn registry(telemetry: Arc<Telemetry>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(AgentCollector(telemetry)));
    r
}

/// The OpenMetrics text of the registry.
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

pub use fincorp_api::exposition::to_text_004;

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// What a request asks for; extracted so it can be answered off the runtime.
struct Asked {
    get: bool,
    path: String,
    openmetrics: bool,
}

impl Asked {
    fn of(req: &Request<Incoming>) -> Self {
        Self {
            get: req.method() == Method::GET || req.method() == Method::HEAD,
            path: req.uri().path().to_owned(),
            openmetrics: req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text")),
        }
    }
}

fn handle(asked: &Asked, registry: &Registry, telemetry: &Telemetry) -> Response<Full<Bytes>> {
    if !asked.get {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match asked.path.as_str() {
        "/metrics" => {
            let accept = asked.openmetrics.then_some("application/openmetrics-text");
            let (content_type, body) =
                fincorp_api::exposition::negotiate(accept, encode_openmetrics(registry));
            response(StatusCode::OK, content_type, body)
        }
        "/healthz" => match telemetry.health() {
            Ok(()) => response(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// Binds the metrics endpoint (loopback only; checked by the config).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/healthz` until the task is cancelled.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let registry = Arc::new(registry(telemetry.clone()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let asked = Asked::of(&req);
                let (registry, telemetry) = (registry.clone(), telemetry.clone());
                async move {
                    // Encoding reads the spool's size under its lock: off the runtime.
                    let r =
                        tokio::task::spawn_blocking(move || handle(&asked, &registry, &telemetry))
                            .await
                            .unwrap_or_else(|_| {
                                response(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "text/plain",
                                    "internal error\n".into(),
                                )
                            });
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scrape must not hold a connection for ever.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
mod tests;
