//! `fincorpctl chaos cpu-spike`: the guide's CPU-spike rehearsal, for real.
//!
//! A burner process that the agent recognises as the app runs inside a cgroup
//! with a CPU quota. Its load starts at `--start` % of one core and rises by a
//! random 5–15 points every `--step` until it reaches `--until`, holds for
//! `--hold`, then stops. Meanwhile the correlator is watched and every link of
//! the chain is printed with its elapsed time: alert, incident, reallocation
//! (read back from the cgroup), ticket, resolution. The summary gives the time
//! to detect and to remediate, measured from the moment the load first
//! crossed `--threshold`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fincorp_api::now_ms;
use fincorp_api::wire::CpuLimit;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub mod burner;
pub mod cgroup;
mod monitor;
mod timeline;

pub use timeline::{Event, Summary, Timeline};

use cgroup::ChaosCgroup;

/// Everything `chaos cpu-spike` can be told.
#[derive(Debug, Clone)]
pub struct SpikeOptions {
    pub app: String,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// The app's cgroup below the cpu controller (default `fincorp/<APP>`),
    /// as in the agent's config.
    pub cgroup: Option<String>,
    /// The app's CPU allocation when the spike starts, in cores.
    pub quota_cores: f64,
    pub start_pct: f64,
    pub until_pct: f64,
    pub step: Duration,
    pub hold: Duration,
    /// The alert threshold the summary measures detection from.
    pub threshold_pct: f64,
    /// The correlator to watch; `None` runs the spike unobserved.
    pub correlator: Option<String>,
    /// The API token for it, if it has `api.tokens`.
    pub token: Option<fincorp_api::config::Secret>,
    /// How long to wait for the incident to resolve after the spike ends.
    pub wait_resolve: Duration,
    pub seed: Option<u64>,
    pub json: bool,
    pub keep_cgroup: bool,
}

/// The random 5–15 point rises, from `start` until `until` is reached.
pub fn load_schedule(start: f64, until: f64, seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut load = start;
    let mut steps = vec![load];
    while load < until {
        load += f64::from(rng.u8(5..=15));
        steps.push(load);
    }
    steps
}

/// Runs the spike and prints the timeline to `out`. Returns the timeline.
pub async fn cpu_spike(
    opts: SpikeOptions,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Timeline> {
    let relative = opts
        .cgroup
        .clone()
        .unwrap_or_else(|| format!("fincorp/{}", opts.app));
    let cg = ChaosCgroup::prepare(&opts.cgroup_root, &relative, opts.quota_cores)?;
    let initial: CpuLimit = cg.read_limit()?;
    let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
    let schedule = load_schedule(opts.start_pct, opts.until_pct, seed);

    let exe =
        std::env::current_exe().context("cannot find my own executable to start the burner")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["chaos", "burn", "--app", &opts.app])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the burner process")?;
    let pid = child.id().context("the burner exited at once")?;
    if let Err(e) = cg.add_pid(pid) {
        let _ = child.kill().await;
        cg.remove();
        return Err(e);
    }
    let mut stdin = child.stdin.take().context("burner has no stdin")?;

    let start_ms = now_ms();
    let (tx, rx) = mpsc::channel::<(i64, Event)>(256);
    let printer = tokio::spawn(timeline::print(
        rx,
        start_ms,
        opts.json,
        initial,
        opts.threshold_pct,
        Box::new(std::io::stdout()),
    ));
    let _ = tx
        .send((
            start_ms,
            Event::Started {
                app: opts.app.clone(),
                pid,
                cgroup: cg.dir.display().to_string(),
                cgroup_version: cg.version,
                quota_file: cg.quota_file().display().to_string(),
                limit: initial.to_string(),
                seed,
            },
        ))
        .await;
    let (resolved_tx, mut resolved_rx) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(monitor::watch(
        opts.clone(),
        cg.clone(),
        pid,
        start_ms,
        tx.clone(),
        resolved_tx,
    ));

    let spike_tx = tx.clone();
    let (step, hold) = (opts.step, opts.hold);
    // The burner's stdin moves into the spike: when the spike ends or is
    // interrupted, stdin closes and the burner exits.
    let spike = async move {
        for load in &schedule {
            let demand = load / 100.0;
            stdin
                .write_all(format!("{demand}\n").as_bytes())
                .await
                .context("the burner stopped reading")?;
            stdin.flush().await?;
            let _ = spike_tx
                .send((
                    now_ms(),
                    Event::Load {
                        load_pct: *load,
                        demand_cores: demand,
                    },
                ))
                .await;
            tokio::time::sleep(step).await;
        }
        tokio::time::sleep(hold.saturating_sub(step)).await;
        drop(stdin);
        anyhow::Ok(())
    };
    let spike_result = tokio::select! {
        r = spike => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = child.kill().await;
    let _ = tx.send((now_ms(), Event::SpikeEnded)).await;

    if spike_result.is_ok() && opts.correlator.is_some() {
        let waited = tokio::time::timeout(opts.wait_resolve, resolved_rx.wait_for(|r| *r)).await;
        if waited.is_err() {
            let _ = tx
                .send((
                    now_ms(),
                    Event::Warning {
                        message: format!(
                            "the incident did not resolve within {:?}",
                            opts.wait_resolve
                        ),
                    },
                ))
                .await;
        }
    }
    monitor.abort();
    let _ = monitor.await;
    drop(tx);
    let mut timeline = printer.await.context("the timeline printer failed")?;
    timeline.final_limit = cg.read_limit().ok();
    if !opts.keep_cgroup {
        cg.remove();
    }
    spike_result?;
    let summary = timeline.summary();
    if opts.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        write!(out, "{}", summary.render())?;
    }
    Ok(timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_starts_at_50_rises_5_to_15_and_stops_once_past_95() {
        for seed in 0..200 {
            let s = load_schedule(50.0, 95.0, seed);
            assert_eq!(s[0], 50.0);
            for w in s.windows(2) {
                let rise = w[1] - w[0];
                assert!((5.0..=15.0).contains(&rise), "seed {seed}: {s:?}");
            }
            assert!(*s.last().unwrap() >= 95.0, "seed {seed}: {s:?}");
            assert!(
                s[s.len() - 2] < 95.0,
                "seed {seed}: stops at the first step past 95: {s:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(load_schedule(50.0, 95.0, 7), load_schedule(50.0, 95.0, 7));
    }
}
