//! The FINCORP correlator: ingests alerts, groups them into incidents, runs
//! playbooks and serves the REST API.
//!
//! Data enters through [`api`], is correlated by the pure [`core`], made
//! durable by [`store`] (the [`engine`] ties those two under one lock), and
//! drives playbook runs with their guardrails in [`automation`], which
//! reaches agents through [`commands`].
#![forbid(unsafe_code)]

pub mod api;
pub mod automation;
pub mod commands;
pub mod config;
pub mod core;
pub mod dashboard;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod predict;
pub mod samples;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fincorp_api::signing::Verifier;
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_integrations::vsphere::VsphereClient;

use crate::api::AppState;
use crate::automation::{Automation, Setup};
use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::samples::Samples;

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
    for w in &cfg.playbook_warnings {
        tracing::warn!(warning = %w, "risky playbook");
    }
    let playbooks = Arc::new(cfg.playbooks);
    let playbook_count = playbooks.len();
    let engine = Arc::new(
        Engine::open(
            &db,
            cfg.correlation,
            playbooks,
            cfg.dedup_window_ms,
            cfg.dedup_max_ids,
        )
        .with_context(|| format!("cannot open the database {}", db.display()))?,
    );
    let (open, firing) = engine.core_counts();
    let servicenow = cfg
        .servicenow
        .map(|sn| ServiceNowClient::with_options(sn.config, sn.options))
        .transpose()
        .context("cannot set up the ServiceNow client")?;
    let vsphere = cfg
        .vsphere
        .map(VsphereClient::new)
        .transpose()
        .context("cannot set up the vSphere client")?;
    let bus = Arc::new(CommandBus::new(cfg.keys.clone()));
    let samples = Arc::new(Samples::default());
    let automation = Automation::new(
        engine.clone(),
        Setup {
            bus: bus.clone(),
            servicenow,
            vsphere,
            samples: samples.clone(),
            settings: cfg.automation,
            secrets: cfg.secrets,
            playbooks_dir: cfg.playbooks_dir.clone(),
        },
    )?;
    let predict = predict::Predict::new(cfg.predict, engine.metrics.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::new(api::Shared {
        predict: predict.clone(),
        engine: engine.clone(),
        verifier: Arc::new(Verifier::new(cfg.keys, cfg.max_skew_ms)),
        bus,
        automation: automation.clone(),
        samples,
        tokens: Arc::new(cfg.tokens),
        alertmanager: Arc::new(cfg.alertmanager),
        shutdown: stop_rx,
    });

    let tls = cfg
        .tls
        .as_ref()
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr, db = %db.display(), playbooks = playbook_count, open_incidents = open, firing_alerts = firing,
        "correlator listening on {scheme}://{addr}"
    );

    // systemd (Type=notify): READY=1 once the API accepts connections,
    // WATCHDOG=1 at half of WatchdogSec=, STOPPING=1 when shutdown begins.
    // Best effort: not under systemd (no NOTIFY_SOCKET), nothing is sent.
    let under_systemd = std::env::var_os("NOTIFY_SOCKET").is_some();
    let notify = move |states: &[sd_notify::NotifyState<'_>]| {
        if !under_systemd {
            return;
        }
        // `false`: never unset the environment (unsound with threads).
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    };
    if !under_systemd {
        tracing::debug!("NOTIFY_SOCKET is not set: not notifying systemd");
    }
    let status = format!(
        "listening on {addr}; {} playbook(s), {open} open incident(s)",
        playbook_count
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let mut watchdog_usec = 0u64;
    let watchdog = (sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0)
        .then(|| {
            let every = Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(100));
            tracing::info!(
                every_ms = every.as_millis() as u64,
                "systemd watchdog enabled"
            );
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                loop {
                    interval.tick().await;
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            })
        });

    let resumed = automation.resume().await?;
    if resumed > 0 {
        tracing::warn!(
            resumed,
            "resuming runs left under way by the previous process"
        );
    }
    let scheduler = automation.start_scheduler();
    let reloader = tokio::spawn(reload_on_sighup(automation.clone()));
    let ticker = tokio::spawn(tick_loop(engine.clone(), automation.clone()));
    let predictor = predict.start(engine.clone(), automation.clone());
    if predict.enabled() {
        tracing::info!("predictive analytics on");
    } else {
        tracing::info!("predictive analytics off (predict.enabled: false)");
    }
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let on_shutdown = async move {
        shutdown.await;
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping: finishing in-flight requests"),
        ]);
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        let _ = began_tx.send(());
    };
    let app = api::router(state);
    let server: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = match tls {
        None => Box::pin(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(on_shutdown)
                .await
                .context("HTTP server failed")
        }),
        Some(acceptor) => Box::pin(tls::serve(listener, acceptor, app, on_shutdown)),
    };
    let result = tokio::select! {
        r = server => r,
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
    for task in predictor {
        task.abort();
    }
    scheduler.abort();
    reloader.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    result
}

/// Makes the time-based decisions every [`TICK`], and starts the runs that
/// incidents resolving decided.
async fn tick_loop(engine: Arc<Engine>, automation: Arc<Automation>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || engine.tick(fincorp_api::now_ms())).await {
            Ok(Ok(ticked)) => {
                for incident_id in ticked.resolved {
                    tracing::info!(incident_id, "incident resolved");
                }
                for run_id in ticked.runs {
                    automation.start(run_id);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "tick failed"),
            Err(e) => tracing::error!(error = %e, "tick task failed"),
        }
    }
}

/// SIGHUP reloads the playbooks directory; a broken set is refused and the
/// running one kept.
async fn reload_on_sighup(automation: Arc<Automation>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install a SIGHUP handler; reload with POST /api/v1/playbooks/reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let a = automation.clone();
        match tokio::task::spawn_blocking(move || a.reload()).await {
            Ok(Ok(view)) => {
                for w in &view.warnings {
                    tracing::warn!(warning = %w, "risky playbook");
                }
                tracing::info!(playbooks = ?view.playbooks, "SIGHUP: playbooks reloaded");
            }
            Ok(Err(d)) => {
                tracing::error!(problems = %d, "SIGHUP: the playbooks have errors; keeping the ones loaded")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
        }
    }
}
