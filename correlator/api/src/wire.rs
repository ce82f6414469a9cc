//! Agent ↔ correlator messages.
//!
//! The agent POSTs [`AgentBatch`]es to `/api/v1/ingest/agent`, long-polls
//! `/api/v1/agent/commands/poll` for [`SignedCommand`]s and POSTs each
//! [`CommandResult`] to `/api/v1/agent/commands/result`. Every request is
//! signed (see [`crate::signing`]); every command is signed by the correlator.
//! Every event carries an `id`, so a resend after a lost response is harmless:
//! the correlator stores each id once.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::UnixMs;

/// Path of the signed batch ingest endpoint.
pub const INGEST_AGENT_PATH: &str = "/api/v1/ingest/agent";
/// Path the agent long-polls for commands.
pub const COMMAND_POLL_PATH: &str = "/api/v1/agent/commands/poll";
/// Path the agent reports command results to.
pub const COMMAND_RESULT_PATH: &str = "/api/v1/agent/commands/result";

/// How bad an alert or incident is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity {other:?} (expected info, warning or critical)"
            )),
        }
    }
}

/// Whether an alert is firing or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One signed POST from an agent: alert transitions plus the latest samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBatch {
    pub agent: AgentInfo,
    /// Increases by one per batch within one agent process; for diagnostics.
    pub seq: u64,
    pub sent_at_ms: UnixMs,
    #[serde(default)]
    pub events: Vec<AlertEvent>,
    #[serde(default)]
    pub samples: Vec<HostSample>,
}

/// Who sent a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub host: String,
    pub version: String,
}

/// A firing or resolved transition of one local rule on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertEvent {
    /// Unique per event (not per alert); the correlator's dedup key.
    pub id: String,
    /// Stable per (host, app, rule): every transition of one alert shares it.
    pub fingerprint: String,
    pub status: AlertStatus,
    /// The rule's name, e.g. `cpu_high`.
    pub name: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub severity: Severity,
    /// The metric the rule watches, e.g. `cpu`.
    pub metric: String,
    /// The metric's value when the transition happened.
    pub value: f64,
    pub threshold: f64,
    /// When the rule's condition first became true for this episode.
    pub starts_at_ms: UnixMs,
    /// When this transition happened on the agent.
    pub at_ms: UnixMs,
    pub summary: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One sampling pass on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSample {
    pub at_ms: UnixMs,
    /// Host CPU busy, percent of all cores (0–100).
    pub cpu_pct: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    #[serde(default)]
    pub apps: Vec<AppSample>,
    /// CPU busy per core, percent of that core (0–100), in core order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_per_core_pct: Vec<f64>,
    /// Memory available for new work without swapping (`MemAvailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadAverage>,
}

/// The kernel's 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// CFS bandwidth throttling counters of a cgroup (`cpu.stat`), cumulative
/// since the cgroup was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuThrottling {
    /// Enforcement periods that have elapsed.
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: u64,
    /// Total time the cgroup's tasks were throttled, microseconds.
    pub throttled_us: u64,
}

/// One app's metrics in one sampling pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSample {
    pub app: String,
    /// Processes matched by the app's selector.
    pub processes: u32,
    /// CPU used by those processes, percent of one core (can exceed 100).
    pub cpu_pct: f64,
    pub rss_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSample>,
    /// CPU used by the app's processes, percent of all the host's cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_pct: Option<f64>,
    /// The app cgroup's CPU throttling counters, where the app has a cgroup
    /// with the cpu controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttling: Option<CpuThrottling>,
}

/// The result of one latency probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSample {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The correlator's answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAck {
    /// Events stored by this request.
    pub accepted: u32,
    /// Events already stored earlier (resends), ignored.
    pub duplicates: u32,
}

/// The agent's long-poll request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    pub host: String,
    /// How long the correlator may hold the request open when it has nothing.
    pub wait_ms: u64,
}

/// The correlator's answer to a poll: zero or more signed commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollResponse {
    pub commands: Vec<SignedCommand>,
}

/// A [`Command`] as JSON text plus the correlator's HMAC over it.
///
/// The JSON is carried as a string so the signature covers exact bytes, with
/// no canonicalisation. See [`crate::signing::sign_command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    pub key_id: String,
    pub payload: String,
    pub signature: String,
}

/// An instruction from the correlator to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Idempotency key: an agent executes each id at most once and answers a
    /// repeat with the first result.
    pub id: String,
    /// The agent refuses commands addressed to another host.
    pub host: String,
    pub issued_at_ms: UnixMs,
    /// The agent refuses commands past this time.
    pub expires_at_ms: UnixMs,
    pub action: CommandAction,
}

/// What a command asks for. The agent executes only variants enabled in its
/// allowlist; anything else is refused and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandAction {
    /// Raise an app's CPU allocation by a percentage of its current quota.
    Reallocate {
        app: String,
        resource: Resource,
        increase_pct: f64,
    },
    /// Set an app's CPU quota, CPU weight and/or memory limit to absolute
    /// values (absent ones are left alone), through its cgroup (v1 or v2) or
    /// `systemctl set-property` when the app is a systemd unit.
    SetLimits {
        app: String,
        /// CPU quota in cores (e.g. `1.5`); the period is left as it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_cores: Option<f64>,
        /// CPU weight on cgroup v2's scale, 1–10000 (default 100); converted
        /// to `cpu.shares` on cgroup v1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_weight: Option<u64>,
        /// Hard memory limit in bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_max_bytes: Option<u64>,
    },
    /// Restart the systemd unit of an app selected by `systemd_unit`. The
    /// unit is the app's, from the agent's config; never a name on the wire.
    RestartUnit { app: String },
    /// Run a script from the agent's allowlist directory with a timeout.
    RunScript {
        /// A file name inside the allowlist directory, never a path.
        script: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
        /// At most the agent's configured maximum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

impl CommandAction {
    pub fn kind(&self) -> &'static str {
        match self {
            CommandAction::Reallocate { .. } => "reallocate",
            CommandAction::SetLimits { .. } => "set_limits",
            CommandAction::RestartUnit { .. } => "restart_unit",
            CommandAction::RunScript { .. } => "run_script",
        }
    }
}

/// A resource an app's allocation can be changed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    /// The hard memory limit (`memory.limit_in_bytes` / `memory.max` /
    /// `MemoryMax=`).
    Memory,
}

/// How a command ended on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandOutcome {
    /// Done; `detail` holds the before and after state.
    Applied,
    /// Not executed: not allowlisted, not for this host, expired or invalid.
    Refused,
    /// Attempted and failed; `message` says why.
    Failed,
}

/// The agent's report on one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    pub command_id: String,
    pub host: String,
    pub outcome: CommandOutcome,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<CommandDetail>,
    pub finished_at_ms: UnixMs,
}

/// The before/after state of an applied command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandDetail {
    Reallocate {
        app: String,
        /// The cgroup directory that was written.
        cgroup: String,
        /// 1 or 2.
        cgroup_version: u8,
        /// The file that was written (`cpu.cfs_quota_us` or `cpu.max`).
        file: String,
        before: CpuLimit,
        after: CpuLimit,
    },
    /// `set_limits`, or a memory `reallocate`: the app's limits before and
    /// after, as read back from the kernel or systemd.
    Limits {
        app: String,
        /// `cgroup_v1`, `cgroup_v2` or `systemd`.
        backend: String,
        /// The cgroup directory (or directories, comma-separated) or the unit.
        target: String,
        before: AppLimits,
        after: AppLimits,
    },
    /// `restart_unit`: the unit's state before and after the restart.
    Restart {
        app: String,
        unit: String,
        before: UnitState,
        after: UnitState,
    },
    /// `run_script`: how the script ended.
    Script {
        script: String,
        /// `None` when the script was killed (timeout or signal).
        exit_code: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        /// The end of its output, at most a few KiB each.
        stdout: String,
        stderr: String,
    },
}

/// An app's resource limits as read back. `None` fields were not read (not
/// asked for, or not available on this backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuLimit>,
    /// On cgroup v2's scale (1–10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryLimit>,
}

/// A hard memory limit; `max_bytes: None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimit {
    pub max_bytes: Option<u64>,
}

/// What `systemctl show` says about a unit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitState {
    /// `ActiveState`, e.g. `active`.
    pub active_state: String,
    /// `SubState`, e.g. `running`.
    pub sub_state: String,
    /// `MainPID`; 0 when none.
    pub main_pid: u32,
    /// `ExecMainStartTimestampMonotonic`: changes on every (re)start.
    pub started_monotonic_us: u64,
}

/// A CFS bandwidth limit: `quota_us` per `period_us`; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLimit {
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl CpuLimit {
    /// The limit in cores, or `None` when unlimited.
    pub fn cores(&self) -> Option<f64> {
        self.quota_us
            .map(|q| q as f64 / self.period_us.max(1) as f64)
    }
}

impl fmt::Display for CpuLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota_us {
            Some(q) => write!(
                f,
                "{q}/{}us ({:.2} cores)",
                self.period_us,
                q as f64 / self.period_us.max(1) as f64
            ),
            None => write!(f, "max/{}us (unlimited)", self.period_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_with_kind_tag() {
        let cmd = Command {
            id: "run-1:raise_cpu".into(),
            host: "db01".into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            action: CommandAction::Reallocate {
                app: "FINCORP-APP-HFT".into(),
                resource: Resource::Cpu,
                increase_pct: 20.0,
            },
        };
        let text = serde_json::to_string(&cmd).unwrap();
        assert!(text.contains(r#""kind":"reallocate""#), "{text}");
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
    }

    #[test]
    fn new_command_kinds_round_trip_and_old_samples_still_parse() {
        for action in [
            CommandAction::SetLimits {
                app: "A".into(),
                cpu_cores: Some(1.5),
                cpu_weight: None,
                memory_max_bytes: Some(1 << 30),
            },
            CommandAction::RestartUnit { app: "A".into() },
            CommandAction::RunScript {
                script: "drain.sh".into(),
                args: vec!["--fast".into()],
                timeout_ms: Some(5_000),
            },
            CommandAction::Reallocate {
                app: "A".into(),
                resource: Resource::Memory,
                increase_pct: 10.0,
            },
        ] {
            let text = serde_json::to_string(&action).unwrap();
            assert!(
                text.contains(&format!(r#""kind":"{}""#, action.kind())),
                "{text}"
            );
            assert_eq!(
                serde_json::from_str::<CommandAction>(&text).unwrap(),
                action
            );
        }
        // A sample from an agent that predates the optional fields.
        let old = r#"{"at_ms":1,"cpu_pct":2.0,"mem_used_bytes":3,"mem_total_bytes":4,
            "apps":[{"app":"A","processes":1,"cpu_pct":0.5,"rss_bytes":9}]}"#;
        let s: HostSample = serde_json::from_str(old).unwrap();
        assert_eq!((s.load, s.apps[0].throttling), (None, None));
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            !text.contains("load") && !text.contains("throttling"),
            "{text}"
        );
    }

    #[test]
    fn unknown_command_kind_is_rejected() {
        let text = r#"{"id":"x","host":"h","issued_at_ms":1,"expires_at_ms":2,
            "action":{"kind":"rm_rf","path":"/"}}"#;
        assert!(serde_json::from_str::<Command>(text).is_err());
    }

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("page".parse::<Severity>().is_err());
    }

    #[test]
    fn cpu_limit_reports_cores() {
        let l = CpuLimit {
            quota_us: Some(120_000),
            period_us: 100_000,
        };
        assert_eq!(l.cores(), Some(1.2));
        assert_eq!(
            CpuLimit {
                quota_us: None,
                period_us: 100_000
            }
            .cores(),
            None
        );
    }
}
