//! `fincorp-sim`: serves a simulator of an external system (ServiceNow, or
//! the vSphere Automation REST API) until SIGTERM or SIGINT. Thin: parsing,
//! wiring and exit codes only; the simulators live in the library.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};
use fincorp_api::config::SecretSource;
use fincorp_sim::{apps, servicenow, vsphere};

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
    /// Serve a ServiceNow simulator (Table API: incident, sys_journal_field,
    /// em_event; Event Management; OAuth)
    Servicenow(ServiceNowArgs),
    /// Serve a vSphere Automation REST simulator (sessions, VMs, power,
    /// CPU/memory hot-add)
    Vsphere(VsphereArgs),
    /// Stand in for the bank's applications' health endpoints on a demo
    /// host: HTTP `GET /health` answering 200 `UP` (`POST /sim/down` and
    /// `/sim/up` to rehearse an outage), or a TCP port that accepts
    Apps(AppsArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("endpoints").required(true).multiple(true).args(["http", "tcp"])))]
struct AppsArgs {
    /// Serve an HTTP health endpoint on this address (repeatable)
    #[arg(long, value_name = "ADDR")]
    http: Vec<SocketAddr>,
    /// Accept TCP connections on this address (repeatable)
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
#[command(group(ArgGroup::new("oauth_secret").args(["oauth_secret_env", "oauth_secret_file"]).requires("oauth_client_id")))]
struct ServiceNowArgs {
    /// Address to listen on (port 0 picks a free port; the line printed on
    /// start-up says which)
    #[arg(long, default_value = "127.0.0.1:9471")]
    listen: SocketAddr,
    /// The one user accepted by basic authentication and the password grant
    #[arg(long, default_value = "fincorp-operator")]
    username: String,
    /// Read the user's password from this environment variable
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Read the user's password from this file (surrounding whitespace is ignored)
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// Register an OAuth application with this client id (enables
    /// /oauth_token.do); needs --oauth-secret-env or --oauth-secret-file
    #[arg(long, value_name = "ID", requires = "oauth_secret")]
    oauth_client_id: Option<String>,
    /// Read the OAuth client secret from this environment variable
    #[arg(long, value_name = "VAR")]
    oauth_secret_env: Option<String>,
    /// Read the OAuth client secret from this file
    #[arg(long, value_name = "PATH")]
    oauth_secret_file: Option<PathBuf>,
    /// Access token lifetime, e.g. 30m (ServiceNow's default) or 5s
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    token_lifetime: Duration,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
struct VsphereArgs {
    /// Address to listen on (port 0 picks a free port; the line printed on
    /// start-up says which). 9472 is the agent's metrics port.
    #[arg(long, default_value = "127.0.0.1:9473")]
    listen: SocketAddr,
    /// The one user accepted by POST /api/session
    #[arg(long, default_value = "fincorp-automation@vsphere.local")]
    username: String,
    /// Read the user's password from this environment variable
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Read the user's password from this file (surrounding whitespace is ignored)
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// The VMs to serve, a YAML or JSON file: `vms:` with `name`, `host`,
    /// `power_state`, `cpu_count`, `memory_mib` and optional `vm`,
    /// `cores_per_socket`, hot-add settings, `guest_os` (example:
    /// packaging/local/vsphere-inventory.yaml). Default: the built-in
    /// inventory (core-primary-ny, core-standby-london and one VM per app)
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Sessions unused for this long expire, e.g. 30m (vCenter's default) or 2s
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    session_idle_timeout: Duration,
}

fn main() -> ExitCode {
    // clap exits 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    if let Err(e) = fincorp_api::logging::init(fincorp_api::logging::LogFormat::Text) {
        eprintln!("fincorp-sim: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Servicenow(args) => match servicenow_state(&args) {
            Ok(state) => exit(run(serve("servicenow", args.listen, |listener, stop| {
                servicenow::serve(listener, state, stop)
            }))),
            Err(e) => usage_error(&e),
        },
        Command::Apps(args) => exit(run(serve_apps(args))),
        Command::Vsphere(args) => {
            let inventory = match &args.inventory {
                Some(path) => match vsphere::Inventory::load(path) {
                    Ok(inventory) => inventory,
                    Err(diagnostics) => {
                        eprintln!("{diagnostics}");
                        eprintln!("fincorp-sim: error: invalid inventory {}", path.display());
                        return ExitCode::from(64);
                    }
                },
                None => vsphere::Inventory::default(),
            };
            match vsphere_state(&args, inventory) {
                Ok(state) => exit(run(serve("vsphere", args.listen, |listener, stop| {
                    vsphere::serve(listener, state, stop)
                }))),
                Err(e) => usage_error(&e),
            }
        }
    }
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("fincorp-sim: error: {e:#}");
    ExitCode::from(2)
}

/// Reads a secret named on the command line; `what` names it in errors.
fn secret(env: &Option<String>, file: &Option<PathBuf>, what: &str) -> anyhow::Result<String> {
    let source = match (env, file) {
        (Some(var), _) => SecretSource::Env(var.clone()),
        (None, Some(path)) => SecretSource::File(path.clone()),
        (None, None) => anyhow::bail!("give the {what} with an environment variable or a file"),
    };
    let secret = source
        .resolve(Path::new("."))
        .with_context(|| format!("cannot read the {what}"))?;
    let text = secret
        .expose_str()
        .with_context(|| format!("cannot read the {what}"))?;
    anyhow::ensure!(!text.is_empty(), "the {what} is empty");
    Ok(text.to_owned())
}

fn servicenow_state(args: &ServiceNowArgs) -> anyhow::Result<servicenow::SimState> {
    let password = secret(
        &args.password_env,
        &args.password_file,
        "simulator password",
    )?;
    let state = servicenow::SimState::new(args.username.clone(), password);
    if let Some(client_id) = &args.oauth_client_id {
        anyhow::ensure!(!client_id.trim().is_empty(), "--oauth-client-id is empty");
        anyhow::ensure!(
            !args.token_lifetime.is_zero(),
            "--token-lifetime must be above 0"
        );
        let client_secret = secret(
            &args.oauth_secret_env,
            &args.oauth_secret_file,
            "OAuth client secret",
        )?;
        state.enable_oauth(servicenow::OAuthApp {
            access_token_lifetime: args.token_lifetime,
            ..servicenow::OAuthApp::new(client_id.clone(), client_secret)
        });
    }
    Ok(state)
}

fn vsphere_state(
    args: &VsphereArgs,
    inventory: vsphere::Inventory,
) -> anyhow::Result<vsphere::SimState> {
    let password = secret(
        &args.password_env,
        &args.password_file,
        "simulator password",
    )?;
    anyhow::ensure!(
        !args.session_idle_timeout.is_zero(),
        "--session-idle-timeout must be above 0"
    );
    let state = vsphere::SimState::new(args.username.clone(), password, inventory);
    state.set_session_idle_timeout(args.session_idle_timeout);
    Ok(state)
}

fn run(task: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
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

/// Binds every stand-in first (a taken port fails the start, naming it),
/// then serves them all until SIGTERM/SIGINT.
async fn serve_apps(args: AppsArgs) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    for (addr, http) in args
        .http
        .iter()
        .map(|a| (a, true))
        .chain(args.tcp.iter().map(|a| (a, false)))
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let kind = if http { "http" } else { "tcp" };
        println!("app stand-in ({kind}) listening on {addr}");
        let stop = stopped(&stop_tx);
        if http {
            servers.spawn(apps::serve_http(listener, apps::Health::new(), stop));
        } else {
            servers.spawn(apps::serve_tcp(listener, stop));
        }
    }
    tracing::info!(
        http = args.http.len(),
        tcp = args.tcp.len(),
        "app stand-ins started"
    );
    tokio::select! {
        () = shutdown_signal() => {
            let _ = stop_tx.send(());
        }
        Some(done) = servers.join_next() => {
            done.context("an app stand-in panicked")?.context("an app stand-in failed")?;
            anyhow::bail!("an app stand-in stopped unexpectedly");
        }
    }
    while let Some(done) = servers.join_next().await {
        done.context("an app stand-in panicked")?
            .context("an app stand-in failed")?;
    }
    tracing::info!("app stand-ins stopped");
    Ok(())
}

/// What a simulator's `serve` is given to stop on.
type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds, announces "<name> simulator listening on http://ADDR", serves
/// until SIGTERM/SIGINT, then lets requests in flight finish (up to GRACE).
async fn serve<F, Fut>(name: &'static str, listen: SocketAddr, server: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!("{name} simulator listening on http://{addr}");
    tracing::info!(%addr, simulator = name, "simulator started");

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing requests in flight");
        let _ = stopping_tx.send(());
    };
    let server = server(listener, Box::pin(shutdown));
    tokio::select! {
        result = server => result.with_context(|| format!("{name} simulator failed"))?,
        () = async {
            match stopping_rx.await {
                Ok(()) => tokio::time::sleep(GRACE).await,
                Err(_) => std::future::pending().await,
            }
        } => tracing::warn!(grace = ?GRACE, "requests still in flight after the grace period; exiting"),
    }
    tracing::info!(simulator = name, "simulator stopped");
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
