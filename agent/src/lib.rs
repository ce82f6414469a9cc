//! The FINCORP per-host agent: samples host and per-app metrics, evaluates
//! threshold rules locally, ships signed batches to the correlator and
//! executes remediation commands from its allowlist.
//!
//! Data flow: [`collect::Sampler`] (blocking, on `spawn_blocking`) →
//! [`rules::RuleEngine`] (pure) → [`ship::Outbox`] (bounded) →
//! [`ship::run_sender`] (signed POSTs, in order). Independently,
//! [`commands::run_poller`] long-polls for commands, the
//! [`commands::Executor`] checks and runs them, and
//! [`commands::run_reporter`] reports the results.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod collect;
pub mod commands;
pub mod config;
pub use fincorp_api::logging;
pub mod rules;
pub mod ship;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::time::{Duration, Instant};

use fincorp_api::wire::{AgentBatch, AgentInfo, AlertStatus};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::client::Correlator;
use crate::collect::probe::ProbeResults;
use crate::collect::{CollectError, Sampler};
use crate::commands::Executor;
use crate::config::AgentConfig;
use crate::rules::RuleEngine;
use crate::ship::{Outbox, QueuedBatch};

pub use crate::config::load;

/// This agent's version, reported in every batch.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long [`run`] keeps delivering queued batches after shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the agent stopped with an error.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error("the sampler stopped unexpectedly: {0}")]
    Sampler(String),
}

/// Runs the agent until `shutdown` completes, then gives queued batches and
/// command results [`SHUTDOWN_GRACE`] to be delivered.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with_grace(config, shutdown, SHUTDOWN_GRACE).await
}

/// [`run`] with a custom shutdown grace period.
pub async fn run_with_grace(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), AgentError> {
    let app_names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    tracing::info!(
        host = %config.host,
        apps = ?app_names,
        correlator = %config.correlator.url,
        key_id = config.correlator.key.id(),
        sample_interval_ms = config.sample_interval.as_millis() as u64,
        version = VERSION,
        "fincorp-agent starting"
    );

    let key = &config.correlator.key;
    let url = &config.correlator.url;
    let ingest = Correlator::new(url, key.clone(), config.correlator.timeout)
        .map_err(AgentError::HttpClient)?;
    let poll = Correlator::new(url, key.clone(), commands::POLL_TIMEOUT)
        .map_err(AgentError::HttpClient)?;
    let probes = ProbeResults::spawn(&config.apps, config.sample_interval)
        .map_err(AgentError::HttpClient)?;
    let mut sampler = Some(Sampler::new(&config.apps, config.discovery_interval)?);
    let mut engine = RuleEngine::new(&config.host, &config.apps, &config.host_rules);

    let outbox = Outbox::in_memory();
    let sender = tokio::spawn(ship::run_sender(ingest.clone(), outbox.clone()));
    let (results_tx, results_rx) = mpsc::channel(256);
    let poller = tokio::spawn(commands::run_poller(
        poll,
        config.host.clone(),
        Executor::new(&config),
        results_tx,
    ));
    let reporter = tokio::spawn(commands::run_reporter(ingest, results_rx));

    // `interval` panics on zero; validation forbids it, but the fields are public.
    let mut ticker = tokio::time::interval(config.sample_interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut first_tick = true;
    let mut last_batch: Option<Instant> = None;
    let agent = AgentInfo {
        host: config.host.clone(),
        version: VERSION.to_owned(),
    };
    tokio::pin!(shutdown);

    let mut clock = TickClock::default();
    let result = loop {
        let tick = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            tick = ticker.tick() => tick,
        };
        let Some(mut s) = sampler.take() else {
            break Err(AgentError::Sampler("sampler lost".into()));
        };
        let now = tick.into_std();
        let at_ms = clock.at_ms(now, fincorp_api::now_ms());
        let (s, mut sample) = match tokio::task::spawn_blocking(move || {
            let sample = s.sample(now, at_ms);
            (s, sample)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => break Err(AgentError::Sampler(e.to_string())),
        };
        sampler = Some(s);
        for (i, app) in sample.apps.iter_mut().enumerate() {
            app.probe = probes.latest(i);
        }

        let events = engine.observe(&sample);
        for e in &events {
            let app = e.app.as_deref().unwrap_or("");
            match e.status {
                AlertStatus::Firing => tracing::warn!(
                    host = %e.host, app, rule = %e.name, severity = %e.severity, value = e.value,
                    threshold = e.threshold, summary = %e.summary, "alert firing"
                ),
                AlertStatus::Resolved => tracing::info!(
                    host = %e.host, app, rule = %e.name, value = e.value, summary = %e.summary, "alert resolved"
                ),
            }
        }
        // The first sample's CPU figures are meaningless (one reading): not sent.
        if std::mem::take(&mut first_tick) {
            continue;
        }
        let heartbeat_due = last_batch.is_none_or(|t| t.elapsed() >= config.heartbeat_interval);
        if events.is_empty() && !heartbeat_due {
            continue;
        }
        seq += 1;
        let batch = AgentBatch {
            agent: agent.clone(),
            seq,
            sent_at_ms: fincorp_api::now_ms(),
            events,
            samples: vec![sample],
        };
        match QueuedBatch::encode(&batch) {
            Ok(queued) => outbox.push(queued),
            Err(e) => tracing::error!(seq, error = %e, "cannot encode a batch; skipped"),
        }
        last_batch = Some(Instant::now());
    };

    // Shutdown: stop taking commands and probing, then flush what is queued.
    tracing::info!(
        queued = outbox.len(),
        grace_ms = grace.as_millis() as u64,
        "shutting down"
    );
    poller.abort();
    drop(probes);
    let deadline = tokio::time::Instant::now() + grace;
    outbox.flush_now();
    if !outbox.drained(grace).await {
        tracing::warn!(
            unsent = outbox.len(),
            "shutdown grace period over; unsent batches are lost"
        );
    }
    sender.abort();
    let reporter_abort = reporter.abort_handle();
    if tokio::time::timeout_at(deadline, reporter).await.is_err() {
        reporter_abort.abort();
        tracing::warn!("shutdown grace period over; some command results were not reported");
    }
    tracing::info!(dropped_batches = outbox.dropped(), "fincorp-agent stopped");
    result
}

/// Stamps samples with wall-clock times derived from the ticker's scheduled
/// instants, so consecutive samples are exactly one interval apart and a
/// rule's `for` is not missed by a millisecond of scheduling jitter. It
/// re-anchors to the wall clock whenever the two drift more than
/// [`TickClock::MAX_DRIFT_MS`] apart (NTP steps, a stalled runtime).
#[derive(Debug, Default)]
pub struct TickClock {
    anchor: Option<(Instant, fincorp_api::UnixMs)>,
}

impl TickClock {
    pub const MAX_DRIFT_MS: i64 = 500;

    /// The timestamp for the tick scheduled at `tick`, given the wall clock now.
    pub fn at_ms(
        &mut self,
        tick: Instant,
        wall_now_ms: fincorp_api::UnixMs,
    ) -> fincorp_api::UnixMs {
        if let Some((instant, ms)) = self.anchor {
            if let Some(since) = tick.checked_duration_since(instant) {
                let at = ms.saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
                if (at - wall_now_ms).abs() <= Self::MAX_DRIFT_MS {
                    return at;
                }
            }
        }
        self.anchor = Some((tick, wall_now_ms));
        wall_now_ms
    }
}

/// An error and its sources on one line: `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
