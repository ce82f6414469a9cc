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
    open_incidents: Gauge,
    active_alerts: Gauge,
    queue_depth: Gauge,
    dedup_ids: Gauge,
    agent_commands_waiting: Gauge,
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
        Self {
            registry,
            events,
            duplicates,
            requests,
            commits,
            commit_seconds,
            commit_requests,
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
