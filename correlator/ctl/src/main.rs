//! `fincorpctl`: the operator CLI. Parses arguments and dispatches to the
//! library; exit codes 0 ok, 1 failure, 2 usage, 64 invalid playbook.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fincorpctl::chaos::{self, SpikeOptions};
use fincorpctl::client::Client;

/// Operate FINCORP AI Operator: incidents, playbooks, and the chaos simulator.
#[derive(Debug, Parser)]
#[command(name = "fincorpctl", version)]
struct Cli {
    /// The correlator's base URL.
    #[arg(
        long,
        global = true,
        env = "FINCORP_URL",
        default_value = "http://127.0.0.1:9470"
    )]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List and inspect incidents.
    #[command(subcommand)]
    Incidents(IncidentsCmd),
    /// Validate playbooks.
    #[command(subcommand)]
    Playbook(PlaybookCmd),
    /// Silences and maintenance windows.
    #[command(subcommand)]
    Silences(SilencesCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Rehearse failures for real.
    #[command(subcommand)]
    Chaos(ChaosCmd),
}

#[derive(Debug, Subcommand)]
enum SilencesCmd {
    /// List silences, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Silence alerts whose labels match (`name=value`, `name!=value`,
    /// `name=~regex`, `name!~regex`; all must hold), for `--duration` from
    /// now, or every `--schedule` (cron with seconds, UTC) for `--duration`.
    Add {
        #[arg(required = true)]
        matchers: Vec<String>,
        #[arg(long)]
        duration: Option<String>,
        #[arg(long)]
        schedule: Option<String>,
        /// RFC 3339 start (default now) for a one-off silence.
        #[arg(long)]
        starts_at: Option<String>,
        #[arg(long)]
        comment: String,
        /// Who is silencing.
        #[arg(long, env = "USER")]
        by: String,
    },
    /// End a silence now.
    Expire {
        id: String,
        #[arg(long, env = "USER")]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Fetch the whole audit log and check its hash chain: any edited or
    /// deleted entry is reported. Exit 1 when the chain is broken.
    Verify,
}

#[derive(Debug, Subcommand)]
enum IncidentsCmd {
    /// List incidents, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident: alerts, timeline with grouping reasons, runs, tickets.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an open incident.
    Ack(ActionArgs),
    /// Resolve an open incident.
    Resolve(ActionArgs),
    /// Close a resolved incident (it can no longer reopen).
    Close(ActionArgs),
}

#[derive(Debug, clap::Args)]
struct ActionArgs {
    id: String,
    /// Why, recorded in the timeline and the audit log.
    #[arg(long)]
    reason: String,
    /// Who is acting.
    #[arg(long, env = "USER")]
    by: String,
}

#[derive(Debug, Subcommand)]
enum PlaybookCmd {
    /// Report every problem of every file at once (file:line:col); exit 64 on errors.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ChaosCmd {
    /// Burn CPU as APP inside its cgroup, rising from 50% by 5-15 points per
    /// step until 95%, and print the remediation timeline.
    CpuSpike {
        #[arg(long)]
        app: String,
        /// The app's cgroup below the cpu controller [default: fincorp/<APP>].
        #[arg(long)]
        cgroup: Option<String>,
        #[arg(long, default_value = "/sys/fs/cgroup")]
        cgroup_root: PathBuf,
        /// The app's CPU allocation when the spike starts, in cores.
        #[arg(long, default_value_t = 1.0)]
        quota_cores: f64,
        /// Starting load, % of one core.
        #[arg(long, default_value_t = 50.0)]
        start: f64,
        /// Keep rising until the load reaches this, % of one core.
        #[arg(long, default_value_t = 95.0)]
        until: f64,
        /// Time between rises.
        #[arg(long, default_value = "5s", value_parser = humantime_duration)]
        step: Duration,
        /// How long to hold the peak before stopping.
        #[arg(long, default_value = "30s", value_parser = humantime_duration)]
        hold: Duration,
        /// The alert threshold the times are measured from, % of one core.
        #[arg(long, default_value_t = 80.0)]
        threshold: f64,
        /// How long to wait for the incident to resolve after the spike.
        #[arg(long, default_value = "60s", value_parser = humantime_duration)]
        wait_resolve: Duration,
        /// Seed for the random rises, to repeat a run exactly.
        #[arg(long)]
        seed: Option<u64>,
        /// Don't watch the correlator; just run the spike.
        #[arg(long)]
        no_watch: bool,
        /// Print one JSON object per event, then a summary object.
        #[arg(long)]
        json: bool,
        /// Leave the cgroup in place afterwards.
        #[arg(long)]
        keep_cgroup: bool,
    },
    /// The burner itself (started by cpu-spike): burns the CPU demanded on stdin.
    #[command(hide = true)]
    Burn {
        #[arg(long)]
        app: String,
    },
}

async fn action(client: &Client, op: &str, a: ActionArgs) -> anyhow::Result<()> {
    let d = client.incident_action(&a.id, op, &a.by, &a.reason).await?;
    println!("{} is now {}", d.incident.id, d.incident.state.as_str());
    Ok(())
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    s.parse::<fincorp_api::config::Duration>().map(|d| d.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Chaos(ChaosCmd::Burn { app }) = &cli.command {
        return match chaos::burner::burn(app) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fincorpctl chaos burn: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Playbook(PlaybookCmd::Validate { paths }) = &cli.command {
        let (report, ok) = fincorpctl::playbook::validate(paths);
        print!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(64)
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fincorpctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fincorpctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(&cli.url);
    match cli.command {
        Command::Incidents(IncidentsCmd::List {
            state,
            app,
            host,
            limit,
            json,
        }) => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [("state", state), ("app", app), ("host", host)] {
                if let Some(v) = v {
                    query.push(format!("{k}={v}"));
                }
            }
            let list = client.incidents(&query.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", fincorpctl::incidents::table(&list.incidents));
            }
        }
        Command::Incidents(IncidentsCmd::Show { id, json }) => {
            let d = client.incident(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", fincorpctl::incidents::detail(&d));
            }
        }
        Command::Incidents(IncidentsCmd::Ack(a)) => action(&client, "ack", a).await?,
        Command::Incidents(IncidentsCmd::Resolve(a)) => action(&client, "resolve", a).await?,
        Command::Incidents(IncidentsCmd::Close(a)) => action(&client, "close", a).await?,
        Command::Silences(SilencesCmd::List { json }) => {
            let list = client.silences().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", fincorpctl::incidents::silences(&list.silences));
            }
        }
        Command::Silences(SilencesCmd::Add {
            matchers,
            duration,
            schedule,
            starts_at,
            comment,
            by,
        }) => {
            let new = fincorp_api::rest::NewSilence {
                matchers,
                starts_at,
                duration,
                schedule,
                created_by: Some(by),
                comment,
                ..Default::default()
            };
            let s = client.add_silence(&new).await?;
            println!(
                "{} created ({})",
                s.id,
                if s.active {
                    "active now"
                } else {
                    "not active yet"
                }
            );
        }
        Command::Silences(SilencesCmd::Expire { id, by }) => {
            let s = client.expire_silence(&id, &by).await?;
            println!("{} expired", s.id);
        }
        Command::Audit(AuditCmd::Verify) => {
            let log = client.audit().await?;
            match fincorp_api::audit::verify(&log.entries) {
                Ok(n) => println!(
                    "audit log intact: {n} entries, head {}",
                    log.head.as_deref().unwrap_or("(empty)")
                ),
                Err(e) => {
                    eprintln!("fincorpctl: audit log BROKEN: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Chaos(ChaosCmd::CpuSpike {
            app,
            cgroup,
            cgroup_root,
            quota_cores,
            start,
            until,
            step,
            hold,
            threshold,
            wait_resolve,
            seed,
            no_watch,
            json,
            keep_cgroup,
        }) => {
            let opts = SpikeOptions {
                app,
                cgroup_root,
                cgroup,
                quota_cores,
                start_pct: start,
                until_pct: until,
                step,
                hold,
                threshold_pct: threshold,
                correlator: (!no_watch).then(|| cli.url.clone()),
                wait_resolve,
                seed,
                json,
                keep_cgroup,
            };
            let watched = opts.correlator.is_some();
            let timeline = chaos::cpu_spike(opts, &mut std::io::stdout()).await?;
            if watched && !timeline.summary().complete {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Playbook(_) | Command::Chaos(ChaosCmd::Burn { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(ExitCode::SUCCESS)
}
