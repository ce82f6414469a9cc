//! `fincorp-correlator`: parse arguments, load and validate the config (exit
//! 64 on problems), run until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fincorp_api::logging::{self, LogFormat};
use fincorp_correlator::config::{self, Overrides};

/// mimalloc instead of glibc's malloc: ingest allocates an event's strings
/// on an HTTP worker and frees them on the ingest writer, the cross-thread
/// pattern glibc handles worst (see `correlator/bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The FINCORP correlator: ingests agent batches, correlates alerts into
/// incidents, runs remediation playbooks and serves the REST API.
#[derive(Debug, Parser)]
#[command(name = "fincorp-correlator", version)]
struct Args {
    /// The configuration file.
    #[arg(
        long,
        env = "FINCORP_CORRELATOR_CONFIG",
        default_value = "/etc/fincorp/correlator.yaml"
    )]
    config: PathBuf,
    /// Where the SQLite database lives; overrides `state_dir` in the file.
    #[arg(long, env = "FINCORP_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Address to listen on; overrides `listen` in the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Validate the configuration and playbooks, print the result, and exit
    /// (0 when valid, 64 when not).
    #[arg(long)]
    check_config: bool,
    /// Log format: text for a terminal, json for journald or ELK.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        state_dir: args.state_dir.clone(),
    };
    let cfg = match config::load(&args.config, &overrides) {
        Ok(cfg) => cfg,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            eprintln!(
                "fincorp-correlator: {} problem(s) in the configuration",
                diagnostics.0.len()
            );
            return ExitCode::from(64);
        }
    };
    if args.check_config {
        for w in &cfg.playbook_warnings {
            eprintln!("{w}");
        }
        println!(
            "{}: OK ({} playbook(s) in {})",
            args.config.display(),
            cfg.playbooks.len(),
            cfg.playbooks_dir.display()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logging::init(args.log_format) {
        eprintln!("fincorp-correlator: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fincorp-correlator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fincorp_correlator::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "correlator failed");
            eprintln!("fincorp-correlator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
