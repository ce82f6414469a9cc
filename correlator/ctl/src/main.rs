//! `fincorpctl`: the operator CLI. Parses arguments and dispatches to the
//! library; exit codes 0 ok, 1 failure, 2 usage, 64 invalid playbook.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fincorp_api::rest::RunState;
use fincorpctl::chaos::{self, SpikeOptions};
use fincorpctl::client::{ApiFailure, Client, RunQuery};

/// Operate FINCORP AI Operator: incidents, playbooks and their runs, the
/// automation guardrails, silences, the audit log, and the chaos simulator.
#[derive(Debug, Parser)]
#[command(name = "fincorpctl", version)]
struct Cli {
    /// The correlator's base URL [default: the config file's `url`, else
    /// http://127.0.0.1:9470].
    #[arg(long, global = true, env = "FINCORP_URL")]
    url: Option<String>,
    /// A file holding the API bearer token (for a correlator with
    /// `api.tokens`). Or set FINCORP_TOKEN; never pass a token as an argument.
    #[arg(long, global = true, env = "FINCORP_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// A YAML file with `url` and `token_file` [default:
    /// ~/.config/fincorp/fincorpctl.yaml, if it exists]. Flags and the
    /// environment win over it.
    #[arg(long, global = true, env = "FINCORP_CTL_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `fincorpctl.yaml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlConfig {
    url: Option<String>,
    /// Relative to the config file.
    token_file: Option<std::path::PathBuf>,
}

/// The config file: `--config`/FINCORP_CTL_CONFIG (must exist), else the
/// per-user default when present. Returns it with its directory.
fn ctl_config(cli: &Cli) -> anyhow::Result<(CtlConfig, std::path::PathBuf)> {
    use anyhow::Context;
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => match std::env::var_os("HOME") {
            Some(home) => (
                std::path::Path::new(&home).join(".config/fincorp/fincorpctl.yaml"),
                false,
            ),
            None => return Ok((CtlConfig::default(), std::path::PathBuf::from("."))),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((CtlConfig::default(), std::path::PathBuf::from(".")));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let cfg: CtlConfig = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid fincorpctl config", path.display()))?;
    let dir = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    Ok((cfg, dir))
}

/// The correlator URL and API token: flags and the environment first, then
/// the config file, then the default URL and no token.
fn settings(cli: &Cli) -> anyhow::Result<(String, Option<fincorp_api::config::Secret>)> {
    use anyhow::Context;
    let (file, dir) = ctl_config(cli)?;
    let url = cli
        .url
        .clone()
        .or(file.url)
        .unwrap_or_else(|| "http://127.0.0.1:9470".to_owned());
    let token_file = cli
        .token_file
        .clone()
        .or_else(|| file.token_file.map(|f| dir.join(f)));
    if let Some(path) = token_file {
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        return Ok((url, Some(fincorp_api::config::Secret::new(bytes))));
    }
    let token = std::env::var("FINCORP_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(fincorp_api::config::Secret::new);
    Ok((url, token))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List and inspect incidents.
    #[command(subcommand)]
    Incidents(IncidentsCmd),
    /// Validate and dry-run playbooks; list and reload the loaded ones.
    #[command(subcommand)]
    Playbook(PlaybookCmd),
    /// Playbook runs: list, show, approve, reject.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// The automation guardrails: status, kill switch, circuit breakers.
    #[command(subcommand)]
    Automation(AutomationCmd),
    /// Silences and maintenance windows.
    #[command(subcommand)]
    Silences(SilencesCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Rehearse failures for real.
    #[command(subcommand)]
    Chaos(ChaosCmd),
    /// Print a shell completion script, e.g.
    /// `fincorpctl completions bash > /etc/bash_completion.d/fincorpctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCmd {
    /// List runs, newest first.
    List {
        /// Only the runs of this incident.
        #[arg(long)]
        incident: Option<String>,
        /// Only the runs of this playbook.
        #[arg(long)]
        playbook: Option<String>,
        /// Only runs in this state (pending, running, awaiting_approval,
        /// succeeded, failed, rolled_back, blocked, stopped, interrupted,
        /// rejected, expired, planned).
        #[arg(long, value_parser = run_state)]
        state: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its steps (action, phase, state, attempts, error) and
    /// the approval it waits for.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a run that waits for an operator: it goes on.
    Approve(DecisionArgs),
    /// Reject a run that waits for an operator: nothing is done.
    Reject(DecisionArgs),
}

#[derive(Debug, clap::Args)]
struct DecisionArgs {
    id: String,
    /// Who decides (default: the USER environment variable).
    #[arg(long, env = "USER", value_parser = who)]
    by: String,
    /// Why, recorded in the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AutomationCmd {
    /// The kill switch, tripped breakers (with reason and escalation),
    /// active runs and loaded playbooks.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop all automation at once, or let it run again (audited).
    #[command(subcommand)]
    KillSwitch(KillSwitchCmd),
    /// Circuit breakers tripped by a budget or the causal depth limit.
    #[command(subcommand)]
    Breaker(BreakerCmd),
}

#[derive(Debug, Subcommand)]
enum KillSwitchCmd {
    /// No run starts; running runs stop before their next step.
    On(SwitchArgs),
    /// Automation runs again.
    Off(SwitchArgs),
    /// Whether the kill switch is on, since when, by whom and why.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SwitchArgs {
    /// Who flips it (default: the USER environment variable).
    #[arg(long, env = "USER", value_parser = who)]
    by: String,
    /// Why, recorded in the audit log.
    #[arg(long)]
    reason: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BreakerCmd {
    /// Reset a tripped breaker so the runs it covers may start again. KEY is
    /// as `automation status` shows it: `fleet`, `playbook:NAME` or
    /// `playbook:NAME@HOST/APP`.
    Reset {
        key: String,
        /// Who resets it (default: the USER environment variable).
        #[arg(long, env = "USER", value_parser = who)]
        by: String,
        /// Why, recorded in the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
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
        #[arg(long, env = "USER", value_parser = who)]
        by: String,
    },
    /// End a silence now.
    Expire {
        id: String,
        #[arg(long, env = "USER", value_parser = who)]
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
    #[arg(long, env = "USER", value_parser = who)]
    by: String,
}

#[derive(Debug, Subcommand)]
enum PlaybookCmd {
    /// Report every problem (errors and warnings) of every file or directory
    /// at once, as file:line:col with the key path; exit 64 on errors.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print what the playbook in FILE would do, step by step, with the exact
    /// requests, executing nothing: offline against a sample incident
    /// (`--sample`), or by the correlator against a stored incident
    /// (`--incident`; the correlator plans the playbook of that name it has
    /// loaded, so reload it after editing FILE). Exit 64 when FILE is
    /// invalid, 1 when a mutating step cannot be planned.
    #[command(group(clap::ArgGroup::new("against").required(true).args(["sample", "incident"])))]
    Plan {
        file: PathBuf,
        /// Plan offline against the sample incident fc-sample-1 (a critical
        /// cpu_high on hft-ny-01).
        #[arg(long)]
        sample: bool,
        /// The sample incident's app [default: the trigger's first app].
        #[arg(long, conflicts_with = "incident")]
        app: Option<String>,
        /// Ask the correlator to plan against this incident.
        #[arg(long, value_name = "ID")]
        incident: Option<String>,
        /// Print `{"text": ..., "plan": ...}` instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Run the loaded playbook NAME for an incident now. The run meets every
    /// guardrail (kill switch, lock, breakers, budgets, approval) like any
    /// other; `--dry-run` plans it and executes nothing. Prints the run.
    Run {
        name: String,
        #[arg(long, value_name = "ID")]
        incident: String,
        #[arg(long)]
        dry_run: bool,
        /// Who asks [default: $USER; with an API token, its name].
        #[arg(long, env = "USER", value_parser = who)]
        by: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// The playbooks the correlator has loaded.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make the correlator reload its playbooks directory; on any error it
    /// keeps the loaded ones and the diagnostics are printed (exit 64).
    Reload {
        #[arg(long)]
        json: bool,
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

/// Exit code for an invalid playbook (SPEC §4).
const INVALID: u8 = 64;

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn playbook(client: &Client, cmd: PlaybookCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PlaybookCmd::Validate { .. } => unreachable!("handled before the runtime starts"),
        PlaybookCmd::Plan {
            file,
            sample: _,
            app,
            incident,
            json,
        } => {
            let loaded = match fincorp_playbooks::load_file(&file) {
                Ok(l) => l,
                Err(d) => {
                    eprintln!("{d}");
                    eprintln!(
                        "fincorpctl: {} is not a valid playbook: nothing planned",
                        file.display()
                    );
                    return Ok(ExitCode::from(INVALID));
                }
            };
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let outcome = match incident {
                Some(id) => {
                    let view = client.plan(&loaded.playbook.name, &id).await?;
                    let refusal = fincorpctl::playbook::refusal_of(&view.plan);
                    fincorpctl::playbook::PlanOutcome { view, refusal }
                }
                None => fincorpctl::playbook::plan_sample(&loaded.playbook, app.as_deref()),
            };
            if json {
                print_json(&outcome.view)?;
            } else {
                print!("{}", outcome.view.text);
            }
            if let Some(refusal) = outcome.refusal {
                eprintln!("fincorpctl: {refusal}");
                return Ok(ExitCode::FAILURE);
            }
        }
        PlaybookCmd::Run {
            name,
            incident,
            dry_run,
            by,
            reason,
            json,
        } => {
            let request = fincorp_api::rest::RunRequest {
                incident_id: incident,
                dry_run,
                by,
                reason,
            };
            let run = client.run_playbook(&name, &request).await?;
            // Show where it got to after a moment (it may wait for a lock).
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let run = client.run(&run.id).await.unwrap_or(run);
            if json {
                print_json(&run)?;
            } else {
                print!("{}", fincorpctl::runs::detail(&run));
            }
        }
        PlaybookCmd::List { json } => {
            let list = client.playbooks().await?;
            if json {
                print_json(&list)?;
            } else {
                print!("{}", fincorpctl::playbook::list(&list));
            }
        }
        PlaybookCmd::Reload { json } => match client.reload_playbooks().await {
            Ok(view) if json => print_json(&view)?,
            Ok(view) => print!("{}", fincorpctl::playbook::reloaded(&view)),
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.status == 400 => {
                    eprintln!("{}", f.message);
                    return Ok(ExitCode::from(INVALID));
                }
                _ => return Err(e),
            },
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(client: &Client, cmd: RunsCmd) -> anyhow::Result<()> {
    match cmd {
        RunsCmd::List {
            incident,
            playbook,
            state,
            limit,
            json,
        } => {
            let query = RunQuery {
                incident_id: incident,
                playbook,
                state,
                limit: Some(limit),
            };
            let list = client.runs(&query).await?;
            if json {
                print_json(&list)?;
            } else {
                print!("{}", fincorpctl::runs::table(&list.runs));
            }
        }
        RunsCmd::Show { id, json } => {
            let run = client.run(&id).await?;
            if json {
                print_json(&run)?;
            } else {
                print!("{}", fincorpctl::runs::detail(&run));
            }
        }
        RunsCmd::Approve(d) => decide(client, true, d).await?,
        RunsCmd::Reject(d) => decide(client, false, d).await?,
    }
    Ok(())
}

/// Records the decision, then waits a little for the run to act on it so
/// the state printed is the one it moved to.
async fn decide(client: &Client, approve: bool, d: DecisionArgs) -> anyhow::Result<()> {
    let mut run = client.decide(&d.id, approve, &d.by, &d.reason).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while run.state == RunState::AwaitingApproval && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        run = client.run(&d.id).await?;
    }
    if d.json {
        return print_json(&run);
    }
    let verb = if approve { "approved" } else { "rejected" };
    if run.state == RunState::AwaitingApproval {
        println!("run {} {verb} by {}; it has not moved on yet", run.id, d.by);
    } else {
        println!("run {} {verb} by {}; it is now {}", run.id, d.by, run.state);
    }
    Ok(())
}

async fn automation(client: &Client, cmd: AutomationCmd) -> anyhow::Result<()> {
    match cmd {
        AutomationCmd::Status { json } => {
            let status = client.automation().await?;
            if json {
                print_json(&status)?;
            } else {
                print!("{}", fincorpctl::automation::status(&status));
            }
        }
        AutomationCmd::KillSwitch(KillSwitchCmd::Status { json }) => {
            let k = client.kill_switch().await?;
            if json {
                print_json(&k)?;
            } else {
                print!("{}", fincorpctl::automation::kill_switch(&k));
            }
        }
        AutomationCmd::KillSwitch(cmd @ (KillSwitchCmd::On(_) | KillSwitchCmd::Off(_))) => {
            let (on, a) = match cmd {
                KillSwitchCmd::On(a) => (true, a),
                KillSwitchCmd::Off(a) => (false, a),
                KillSwitchCmd::Status { .. } => unreachable!(),
            };
            let k = client.set_kill_switch(on, &a.by, &a.reason).await?;
            if a.json {
                print_json(&k)?;
            } else {
                print!("{}", fincorpctl::automation::kill_switch(&k));
            }
        }
        AutomationCmd::Breaker(BreakerCmd::Reset {
            key,
            by,
            reason,
            json,
        }) => {
            let status = client.reset_breaker(&key, &by, &reason).await?;
            if json {
                print_json(&status)?;
            } else {
                println!("breaker {key} reset by {by}");
                print!("{}", fincorpctl::automation::status(&status));
            }
        }
    }
    Ok(())
}

async fn action(client: &Client, op: &str, a: ActionArgs) -> anyhow::Result<()> {
    let d = client.incident_action(&a.id, op, &a.by, &a.reason).await?;
    println!("{} is now {}", d.incident.id, d.incident.state.as_str());
    Ok(())
}

/// Who acts (`--by`, default `$USER`): recorded in the audit log, so never blank.
fn who(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("name who acts: pass --by or set USER".into());
    }
    Ok(s.to_owned())
}

fn run_state(s: &str) -> Result<String, String> {
    s.parse::<RunState>().map(|r| r.as_str().to_owned())
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    s.parse::<fincorp_api::config::Duration>().map(|d| d.0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if e.kind() == clap::error::ErrorKind::MissingRequiredArgument
                && e.to_string().contains("--by <")
            {
                eprintln!("note: --by names who acts; it defaults to $USER, which is not set");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if let Command::Completions { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "fincorpctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
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
        let v = fincorpctl::playbook::validate(paths);
        print!("{}", v.report);
        return if v.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(INVALID)
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
    let (url, token) = settings(&cli)?;
    let client = Client::new(&url).with_token(token.clone());
    match cli.command {
        Command::Completions { .. } => unreachable!("handled before the runtime starts"),
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
                correlator: (!no_watch).then(|| url.clone()),
                token: token.clone(),
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
        Command::Playbook(cmd) => return playbook(&client, cmd).await,
        Command::Runs(cmd) => runs(&client, cmd).await?,
        Command::Automation(cmd) => automation(&client, cmd).await?,
        Command::Chaos(ChaosCmd::Burn { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(ExitCode::SUCCESS)
}
