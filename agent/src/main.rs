//! `fincorp-agent`: parses flags, loads the config (exit 64 with every
//! problem on stderr when it is invalid), then runs the agent until SIGTERM
//! or SIGINT. Everything else lives in the library.
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match fincorp_agent::load(&args.config) {
        Ok(config) => config,
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
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
            }
        };
        fincorp_agent::run(config, shutdown)
            .await
            .context("the agent stopped")
    })
}
