//! The FINCORP correlator: ingests alerts, groups them into incidents, runs
//! playbooks and serves the REST API.
//!
//! Data enters through [`api`], is correlated by the pure [`core`], made
//! durable by [`store`] (the [`engine`] ties those two under one lock), and
//! drives playbook runs in [`runner`], which reaches agents through
//! [`commands`].
#![forbid(unsafe_code)]

pub mod api;
pub mod commands;
pub mod config;
pub mod core;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod runner;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fincorp_api::signing::Verifier;
use fincorp_integrations::servicenow::ServiceNowClient;

use crate::api::AppState;
use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::runner::{RunEnv, Runner};

/// How often time-based decisions (auto-resolution) are made.
const TICK: Duration = Duration::from_millis(500);
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the correlator until `shutdown` completes.
pub async fn run(
    cfg: config::Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state directory {}", cfg.state_dir.display()))?;
    let db = cfg.database();
    let playbooks = Arc::new(cfg.playbooks);
    let engine = Arc::new(
        Engine::open(&db, cfg.correlation, playbooks.clone(), cfg.dedup_window_ms)
            .with_context(|| format!("cannot open the database {}", db.display()))?,
    );
    let interrupted = engine.interrupt_unfinished_runs(fincorp_api::now_ms())?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "runs left unfinished by the previous process were marked failed, not resumed"
        );
    }
    let (open, firing) = engine.core_counts();
    let servicenow = cfg
        .servicenow
        .map(|sn| ServiceNowClient::with_options(sn.config, sn.options))
        .transpose()
        .context("cannot set up the ServiceNow client")?;
    let bus = Arc::new(CommandBus::new(cfg.keys.clone()));
    let runner = Runner::new(
        engine.clone(),
        RunEnv {
            bus: bus.clone(),
            servicenow,
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        engine: engine.clone(),
        verifier: Arc::new(Verifier::new(cfg.keys, cfg.max_skew_ms)),
        bus,
        runner,
        alertmanager: Arc::new(cfg.alertmanager),
        shutdown: stop_rx,
    };

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr, db = %db.display(), playbooks = playbooks.len(), open_incidents = open, firing_alerts = firing,
        "correlator listening on http://{addr}"
    );

    let ticker = tokio::spawn(tick_loop(engine.clone()));
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
            let _ = began_tx.send(());
        })
        .into_future();
    let result = tokio::select! {
        r = server => r.context("HTTP server failed"),
        _ = async {
            if began_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight after the grace period; exiting anyway");
            Ok(())
        }
    };
    ticker.abort();
    result
}

async fn tick_loop(engine: Arc<Engine>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || engine.tick(fincorp_api::now_ms())).await {
            Ok(Ok(resolved)) => {
                for incident_id in resolved {
                    tracing::info!(incident_id, "incident resolved");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "tick failed"),
            Err(e) => tracing::error!(error = %e, "tick task failed"),
        }
    }
}
