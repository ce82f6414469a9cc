//! `fincorp-agent`: parses flags, loads the config (exit 64 with every
//! problem on stderr when it is invalid), then runs the agent until SIGTERM
//! or SIGINT; SIGHUP reloads the config. Everything else lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fincorp_agent::logging::LogFormat;

/// Exit code for an invalid configuration (EX_DATAERR).
const EXIT_INVALID_CONFIG: u8 = 64;

/// The FINCORP per-host agent: samples host and app metrics, evaluates local
/// alert rules, ships signed batches to the correlator and executes
/// allowlisted remediation commands.
#[derive(Debug, Parser)]
#[command(name = "fincorp-agent", version)]
struct Args {
    /// The agent configuration file.
    #[arg(
        long,
        env = "FINCORP_AGENT_CONFIG",
        default_value = "/etc/fincorp/agent.yaml"
    )]
    config: PathBuf,
    /// Validate the configuration and exit: prints OK (exit 0) or every
    /// problem as file:line:col (exit 64).
    #[arg(long)]
    check_config: bool,
    /// Log format: text for terminals, json for journald and ELK. Filter with RUST_LOG.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Overrides `state_dir` (spool, command journal, alert state).
    #[arg(long, env = "FINCORP_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match fincorp_agent::load(&args.config) {
        Ok(mut config) => {
            if let Some(dir) = &args.state_dir {
                config.state_dir = dir.clone();
            }
            config
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    for warning in &config.warnings {
        eprintln!("{warning}");
    }
    if args.check_config {
        println!("OK");
        return ExitCode::SUCCESS;
    }
    match run(config, args.log_format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fincorp-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: fincorp_agent::config::AgentConfig, log_format: LogFormat) -> anyhow::Result<()> {
    fincorp_agent::logging::init(log_format).context("cannot set up logging")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
            }
        };
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // A reload already queued covers this one too.
                let _ = reload_tx.try_send(());
            }
        });
        fincorp_agent::run_agent(config, shutdown, reload_rx, Default::default())
            .await
            .context("the agent stopped")
    })
}
