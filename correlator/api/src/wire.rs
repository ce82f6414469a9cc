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
}

impl CommandAction {
    pub fn kind(&self) -> &'static str {
        match self {
            CommandAction::Reallocate { .. } => "reallocate",
        }
    }
}

/// A resource an app's allocation can be changed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
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
