//! `fincorp-sim`: serves a simulator of an external system (today the
//! ServiceNow Table API) until SIGTERM or SIGINT. Thin: parsing, wiring and
//! exit codes only; the simulators live in the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};
use fincorp_api::config::SecretSource;
use fincorp_sim::servicenow::{self, SimState};

/// How long requests in flight may finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "fincorp-sim",
    version,
    about = "Simulators of external systems for FINCORP demos and tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a ServiceNow Table API simulator (incident, sys_journal_field)
    Servicenow(ServiceNowArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
struct ServiceNowArgs {
    /// Address to listen on (port 0 picks a free port; the line printed on
    /// start-up says which)
    #[arg(long, default_value = "127.0.0.1:9471")]
    listen: SocketAddr,
    /// The one user accepted by basic authentication
    #[arg(long, default_value = "fincorp-operator")]
    username: String,
    /// Read the user's password from this environment variable
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Read the user's password from this file (surrounding whitespace is ignored)
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    // clap exits 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    if let Err(e) = fincorp_api::logging::init(fincorp_api::logging::LogFormat::Text) {
        eprintln!("fincorp-sim: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Servicenow(args) => {
            let password = match password(&args) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("fincorp-sim: error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            exit(run(serve_servicenow(args.listen, args.username, password)))
        }
    }
}

fn password(args: &ServiceNowArgs) -> anyhow::Result<String> {
    let source = match (&args.password_env, &args.password_file) {
        (Some(var), _) => SecretSource::Env(var.clone()),
        (None, Some(path)) => SecretSource::File(path.clone()),
        (None, None) => anyhow::bail!("give --password-env VAR or --password-file PATH"),
    };
    let secret = source
        .resolve(Path::new("."))
        .context("cannot read the simulator password")?;
    let text = secret
        .expose_str()
        .context("cannot read the simulator password")?;
    anyhow::ensure!(!text.is_empty(), "the simulator password is empty");
    Ok(text.to_owned())
}

fn run(task: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(task)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fincorp-sim: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve_servicenow(
    listen: SocketAddr,
    username: String,
    password: String,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!("servicenow simulator listening on http://{addr}");
    tracing::info!(%addr, %username, "servicenow simulator started");

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing requests in flight");
        let _ = stopping_tx.send(());
    };
    let server = servicenow::serve(listener, SimState::new(username, password), shutdown);
    tokio::select! {
        result = server => result.context("servicenow simulator failed")?,
        () = async {
            match stopping_rx.await {
                Ok(()) => tokio::time::sleep(GRACE).await,
                Err(_) => std::future::pending().await,
            }
        } => tracing::warn!(grace = ?GRACE, "requests still in flight after the grace period; exiting"),
    }
    tracing::info!("servicenow simulator stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
