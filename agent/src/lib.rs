//! The FINCORP per-host agent: samples host and per-app metrics, evaluates
//! threshold rules locally, ships signed batches to the correlator through a
//! durable spool, and executes remediation commands from its allowlist.
//!
//! Data flow: [`collect::Sampler`] (blocking, on `spawn_blocking`) →
//! [`rules::RuleEngine`] (pure) → [`ship::Outbox`] over the on-disk
//! [`ship::spool::DiskSpool`] → [`ship::run_sender`] (signed POSTs, in
//! order, at least once). Independently, [`commands::run_poller`] long-polls
//! for commands, the [`commands::Executor`] checks and runs them, and
//! [`commands::run_reporter`] reports the results. [`metrics`] serves
//! `/metrics` and `/healthz`; [`governor`] keeps the agent within its
//! overhead budget; [`notify`] talks to systemd.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cgroup;
pub mod client;
pub mod collect;
pub mod commands;
pub mod config;
pub mod governor;
pub use fincorp_api::logging;
pub mod metrics;
pub mod notify;
pub mod rules;
pub mod ship;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
// Lets `testing.rs` name this crate the same way from unit tests and from
// the binary's tests, which include it.
#[cfg(test)]
extern crate self as fincorp_agent;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fincorp_api::wire::{AgentBatch, AgentInfo, AlertEvent, AlertStatus};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::client::Correlator;
use crate::collect::probe::ProbeResults;
use crate::collect::{CollectError, Sampler};
use crate::commands::Executor;
use crate::commands::journal::Journal;
use crate::config::AgentConfig;
use crate::governor::Governor;
use crate::metrics::{Snapshot, Telemetry};
use crate::rules::RuleEngine;
use crate::ship::samples::SampleBuffer;
use crate::ship::spool::DiskSpool;
use crate::ship::{BatchQueue, Outbox, Pushed, QueuedBatch};

pub use crate::config::load;

/// This agent's version, reported in every batch.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the agent stopped with an error.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error("the sampler stopped unexpectedly: {0}")]
    Sampler(String),
    #[error("cannot use the state directory {path}")]
    State {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for /metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The correlator clients and host name the background tasks use; replaced
/// on reload without restarting the tasks.
#[derive(Debug, Clone)]
pub struct Link {
    pub ingest: Correlator,
    pub poll: Correlator,
    pub host: String,
}

impl Link {
    fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        let c = &config.correlator;
        Ok(Self {
            ingest: Correlator::new(&c.url, c.key.clone(), c.timeout)
                .map_err(AgentError::HttpClient)?,
            poll: Correlator::new(&c.url, c.key.clone(), commands::POLL_TIMEOUT)
                .map_err(AgentError::HttpClient)?,
            host: config.host.clone(),
        })
    }
}

/// Runs the agent until `shutdown` completes, then gives queued batches
/// `config.shutdown_grace` to be delivered. No reloads.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let grace = config.shutdown_grace;
    run_with_grace(config, shutdown, grace).await
}

/// [`run`] with a custom shutdown grace period.
pub async fn run_with_grace(
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), AgentError> {
    config.shutdown_grace = grace;
    let (_keep, reloads) = mpsc::channel(1);
    run_agent(config, shutdown, reloads, Arc::new(Telemetry::default())).await
}

/// Everything rebuilt from the config on a reload.
struct Pipeline {
    sampler: Option<Sampler>,
    engine: RuleEngine,
    probes: ProbeResults,
    governor: Option<Governor>,
}

impl Pipeline {
    fn build(config: &AgentConfig) -> Result<Self, AgentError> {
        Ok(Self {
            sampler: Some(Sampler::new(
                &config.apps,
                config.discovery_interval,
                &config.cgroup_root,
            )?),
            engine: RuleEngine::new(&config.host, &config.apps, &config.host_rules),
            probes: ProbeResults::spawn(&config.apps, config.sample_interval)
                .map_err(AgentError::HttpClient)?,
            governor: config
                .overhead_budget
                .map(|b| Governor::new(b, config.sample_interval)),
        })
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    // `interval` panics on zero; validation forbids it, but the fields are public.
    let mut t = tokio::time::interval(interval.max(Duration::from_millis(1)));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

fn log_events(events: &[AlertEvent], telemetry: &Telemetry) {
    for e in events {
        let app = e.app.as_deref().unwrap_or("");
        match e.status {
            AlertStatus::Firing => {
                telemetry.events_firing.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    host = %e.host, app, rule = %e.name, severity = %e.severity, value = e.value,
                    threshold = e.threshold, event_id = %e.id, summary = %e.summary, "alert firing"
                )
            }
            AlertStatus::Resolved => {
                telemetry.events_resolved.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    host = %e.host, app, rule = %e.name, value = e.value, event_id = %e.id,
                    summary = %e.summary, "alert resolved"
                )
            }
        }
    }
}

/// The whole agent: runs until `shutdown` completes, reloading its config
/// (from `config.file`) on every message on `reloads`.
pub async fn run_agent(
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
    telemetry: Arc<Telemetry>,
) -> Result<(), AgentError> {
    let app_names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    tracing::info!(
        host = %config.host,
        apps = ?app_names,
        correlator = %config.correlator.url,
        key_id = config.correlator.key.id(),
        sample_interval_ms = config.sample_interval.as_millis() as u64,
        state_dir = %config.state_dir.display(),
        version = VERSION,
        "fincorp-agent starting"
    );

    // Durable state: spool, command journal, firing alerts.
    let state_err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| AgentError::State { path, source }
    };
    state::prepare(&config.state_dir).map_err(state_err(&config.state_dir))?;
    let spool_dir = config.state_dir.join(state::SPOOL_DIR);
    let spool = DiskSpool::open(&spool_dir).map_err(state_err(&spool_dir))?;
    if BatchQueue::len(&spool) > 0 {
        tracing::info!(
            batches = BatchQueue::len(&spool),
            bytes = BatchQueue::bytes(&spool),
            "batches left in the spool by an earlier run will be sent first"
        );
    }
    let outbox = Outbox::new(spool, config.spool.max_bytes, config.spool.when_full);
    let journal_path = config.state_dir.join(state::JOURNAL_FILE);
    let journal = Journal::open(&journal_path).map_err(state_err(&journal_path))?;
    let executor = Executor::with_journal(&config, journal);
    *telemetry.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(executor.counters.clone());
    *telemetry.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(outbox.clone());
    let executor = Arc::new(tokio::sync::Mutex::new(executor));

    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "serving /metrics and /healthz");
            Some(tokio::spawn(metrics::serve(listener, telemetry.clone())))
        }
        None => None,
    };

    let (link_tx, link_rx) = watch::channel(Link::new(&config)?);
    let sender = tokio::spawn(ship::run_sender(link_rx.clone(), outbox.clone()));
    let (results_tx, results_rx) = mpsc::channel(256);
    let poller = tokio::spawn(commands::run_poller(
        link_rx.clone(),
        executor.clone(),
        results_tx,
    ));
    let reporter = tokio::spawn(commands::run_reporter(link_rx.clone(), results_rx));

    let mut pipe = Pipeline::build(&config)?;
    let restored = pipe.engine.restore(&state::load_alerts(&config.state_dir));
    if restored > 0 {
        tracing::info!(
            alerts = restored,
            "alerts firing at the last stop are firing again until they resolve"
        );
    }

    let mut interval = config.sample_interval;
    telemetry
        .base_interval_ms
        .store(config.sample_interval.as_millis() as u64, Ordering::Relaxed);
    telemetry
        .interval_ms
        .store(interval.as_millis() as u64, Ordering::Relaxed);
    let mut tick = ticker(interval);
    let mut watchdog = notify::watchdog_interval().map(|every| {
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        ticker(every)
    });
    let mut first_tick = true;
    let mut last_batch: Option<Instant> = None;
    let mut pending: Vec<AlertEvent> = Vec::new();
    // Every sample since the last batch goes out with the next one.
    let mut unsent = SampleBuffer::default();
    let mut clock = TickClock::default();
    notify::ready(&format!(
        "sampling {} apps every {interval:?}",
        config.apps.len()
    ));
    tokio::pin!(shutdown);

    let result = 'run: loop {
        let tick_at = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(()) = reloads.recv() => {
                notify::reloading();
                match reload(&config).await {
                    Ok(new) => {
                        let mut next = match Pipeline::build(&new) {
                            Ok(p) => p,
                            Err(e) => {
                                reload_failed(&telemetry, &format!("{e}"));
                                continue;
                            }
                        };
                        next.engine.carry_over(&pipe.engine);
                        pending.extend(pipe.engine.resolve_dropped(&next.engine, fincorp_api::now_ms()));
                        warn_restart_only(&config, &new);
                        // A command may be running (a script, up to its
                        // timeout): never make sampling wait for it.
                        let (ex, cfg) = (executor.clone(), new.clone());
                        tokio::spawn(async move { ex.lock().await.reconfigure(&cfg) });
                        match Link::new(&new) {
                            Ok(link) => { let _ = link_tx.send(link); }
                            Err(e) => tracing::error!(error = %e, "cannot rebuild the correlator client; keeping the old one"),
                        }
                        if new.sample_interval != config.sample_interval {
                            interval = new.sample_interval;
                            tick = ticker(interval);
                        }
                        telemetry.base_interval_ms.store(new.sample_interval.as_millis() as u64, Ordering::Relaxed);
                        telemetry.interval_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
                        pipe = next;
                        config = keep_restart_only(config, new);
                        telemetry.reloads_ok.fetch_add(1, Ordering::Relaxed);
                        telemetry.last_reload_ok.store(true, Ordering::Relaxed);
                        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
                        tracing::info!(file = %config.file.display(), apps = ?names, "config reloaded");
                    }
                    Err(why) => reload_failed(&telemetry, &why),
                }
                notify::ready(&format!("sampling {} apps every {interval:?}", config.apps.len()));
                continue;
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                // Only claim liveness while sampling keeps up.
                if telemetry.health().is_ok() {
                    notify::watchdog();
                }
                continue;
            }
            t = tick.tick() => t,
        };

        // Sample on a blocking thread.
        let Some(mut sampler) = pipe.sampler.take() else {
            break Err(AgentError::Sampler("sampler lost".into()));
        };
        let now = tick_at.into_std();
        let at_ms = clock.at_ms(now, fincorp_api::now_ms());
        let started = Instant::now();
        let (sampler, mut sample) = match tokio::task::spawn_blocking(move || {
            let sample = sampler.sample(now, at_ms);
            (sampler, sample)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => break Err(AgentError::Sampler(e.to_string())),
        };
        telemetry
            .last_sample_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        telemetry.samples.fetch_add(1, Ordering::Relaxed);
        let known_processes = sampler.known_processes();
        pipe.sampler = Some(sampler);
        for (i, app) in sample.apps.iter_mut().enumerate() {
            app.probe = pipe.probes.latest(i);
        }

        let events = pipe.engine.observe(&sample);
        log_events(&events, &telemetry);
        pending.extend(events);
        telemetry.set_snapshot(Snapshot {
            sample: sample.clone(),
            firing: pipe
                .engine
                .active()
                .map(|a| metrics::FiringAlert {
                    app: a.app.map(str::to_owned),
                    rule: a.rule.to_owned(),
                    severity: a.severity,
                })
                .collect(),
            known_processes,
            taken: Instant::now(),
        });

        if let Some(g) = pipe.governor.as_mut() {
            if let Some((cpu, rss)) = collect::procfs::self_usage() {
                let v = g.observe(Instant::now(), cpu, rss);
                if let Some(c) = v.cpu_cores {
                    telemetry
                        .cpu_micro_cores
                        .store((c * 1e6) as u64, Ordering::Relaxed);
                }
                telemetry
                    .budget_exceeded
                    .store(v.exceeded, Ordering::Relaxed);
                if let Some(next) = v.change {
                    if next > interval {
                        telemetry.slowdowns.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            cpu_pct = v.cpu_cores.map(|c| c * 100.0),
                            rss_bytes = rss,
                            interval_ms = next.as_millis() as u64,
                            "over the overhead budget: sampling less often"
                        );
                    } else {
                        tracing::info!(
                            interval_ms = next.as_millis() as u64,
                            "back under the overhead budget: sampling more often"
                        );
                    }
                    interval = next;
                    tick = ticker(interval);
                    telemetry
                        .interval_ms
                        .store(interval.as_millis() as u64, Ordering::Relaxed);
                    notify::status(&format!(
                        "sampling {} apps every {interval:?}",
                        config.apps.len()
                    ));
                }
            }
        }

        // The first sample's CPU figures are meaningless (one reading): not sent.
        if std::mem::take(&mut first_tick) && pending.is_empty() {
            continue;
        }
        let dropped_before = unsent.dropped();
        unsent.push(sample);
        if unsent.dropped() > dropped_before {
            telemetry
                .samples_dropped
                .fetch_add(unsent.dropped() - dropped_before, Ordering::Relaxed);
        }
        let heartbeat_due = last_batch.is_none_or(|t| t.elapsed() >= config.heartbeat_interval);
        if pending.is_empty() && !heartbeat_due {
            continue;
        }
        let events = std::mem::take(&mut pending);
        let had_events = !events.is_empty();
        let batch = AgentBatch {
            agent: AgentInfo {
                host: config.host.clone(),
                version: VERSION.to_owned(),
            },
            seq: outbox.next_seq(),
            sent_at_ms: fincorp_api::now_ms(),
            events,
            samples: unsent.take(),
        };
        let queued = match QueuedBatch::encode(&batch) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(seq = batch.seq, error = %e, "cannot encode a batch; skipped");
                continue;
            }
        };
        // Store it durably; with `when_full: block`, sampling waits here.
        let mut blocked_since: Option<Instant> = None;
        loop {
            let o = outbox.clone();
            let q = queued.clone();
            let pushed = tokio::task::spawn_blocking(move || o.push(&q))
                .await
                .unwrap_or_else(|e| Pushed::Failed(std::io::Error::other(e.to_string())));
            match pushed {
                Pushed::Stored { .. } | Pushed::TooLarge => break,
                Pushed::Failed(e) => {
                    tracing::error!(seq = queued.seq, error = %e, "cannot write the batch to the spool; it is lost");
                    break;
                }
                Pushed::Full => {
                    if blocked_since.is_none() {
                        tracing::warn!(
                            seq = queued.seq,
                            spool_bytes = outbox.bytes(),
                            "spool full: sampling is blocked until the correlator takes batches (spool.when_full: block)"
                        );
                        telemetry.blocked_now.store(true, Ordering::Relaxed);
                        blocked_since = Some(Instant::now());
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => {
                            tracing::warn!(seq = queued.seq, "shutting down while blocked on a full spool; this batch is lost");
                            break 'run Ok(());
                        }
                        () = outbox.space() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        if let Some(since) = blocked_since {
            telemetry
                .blocked_ns
                .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
            telemetry.blocked_now.store(false, Ordering::Relaxed);
            tracing::info!(
                blocked_ms = since.elapsed().as_millis() as u64,
                "spool has room again: sampling resumes"
            );
        }
        if had_events {
            let dir = config.state_dir.clone();
            let firing = pipe.engine.firing_state();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || state::save_alerts(&dir, &firing)).await
            {
                tracing::error!(error = %e, "cannot record the firing alerts");
            }
        }
        last_batch = Some(Instant::now());
    };
    telemetry.blocked_now.store(false, Ordering::Relaxed);

    // Shutdown: stop taking commands and probing, then flush what is queued.
    notify::stopping();
    let grace = config.shutdown_grace;
    tracing::info!(
        queued = outbox.len(),
        grace_ms = grace.as_millis() as u64,
        "shutting down"
    );
    poller.abort();
    drop(pipe);
    let deadline = tokio::time::Instant::now() + grace;
    outbox.flush_now();
    if !outbox.drained(grace).await {
        tracing::warn!(
            unsent = outbox.len(),
            "shutdown grace period over; unsent batches stay in the spool and are sent at the next start"
        );
    }
    sender.abort();
    let reporter_abort = reporter.abort_handle();
    if tokio::time::timeout_at(deadline, reporter).await.is_err() {
        reporter_abort.abort();
        tracing::warn!("shutdown grace period over; some command results were not reported");
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    tracing::info!(dropped_batches = outbox.dropped(), "fincorp-agent stopped");
    result
}

/// Reads and validates the config file again (on a blocking thread).
async fn reload(current: &AgentConfig) -> Result<AgentConfig, String> {
    let file = current.file.clone();
    tracing::info!(file = %file.display(), "reloading the config (SIGHUP)");
    let loaded = tokio::task::spawn_blocking(move || config::load(&file))
        .await
        .map_err(|e| format!("the reload task failed: {e}"))?;
    match loaded {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!(diagnostic = %w, "config warning");
            }
            Ok(new)
        }
        Err(diags) => {
            for d in &diags.0 {
                tracing::error!(diagnostic = %d, "invalid config");
            }
            Err(format!(
                "{} problem(s), first: {}",
                diags.0.len(),
                diags.0.first().map(ToString::to_string).unwrap_or_default()
            ))
        }
    }
}

fn reload_failed(telemetry: &Telemetry, why: &str) {
    telemetry.reloads_failed.fetch_add(1, Ordering::Relaxed);
    telemetry.last_reload_ok.store(false, Ordering::Relaxed);
    tracing::error!(reason = %why, "config reload refused; still running with the previous config");
}

fn warn_restart_only(old: &AgentConfig, new: &AgentConfig) {
    let mut changed = Vec::new();
    if old.state_dir != new.state_dir {
        changed.push("state_dir");
    }
    if old.spool != new.spool {
        changed.push("spool");
    }
    if old.metrics_listen != new.metrics_listen {
        changed.push("metrics");
    }
    if !changed.is_empty() {
        tracing::warn!(keys = ?changed, "these settings take effect only after a restart");
    }
}

/// The new config, except for the settings that need a restart.
fn keep_restart_only(old: AgentConfig, mut new: AgentConfig) -> AgentConfig {
    new.state_dir = old.state_dir;
    new.spool = old.spool;
    new.metrics_listen = old.metrics_listen;
    new
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
