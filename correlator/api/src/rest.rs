//! JSON shapes of the correlator's REST API (`/api/v1`), shared by the
//! correlator (which serialises them) and `fincorpctl` (which reads them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::UnixMs;
use crate::wire::{AlertStatus, Severity};

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Remediating,
    Resolved,
    Closed,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Remediating => "remediating",
            IncidentState::Resolved => "resolved",
            IncidentState::Closed => "closed",
        }
    }

    /// Open, acknowledged or remediating: still needs someone or something.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            IncidentState::Open | IncidentState::Acknowledged | IncidentState::Remediating
        )
    }
}

impl std::str::FromStr for IncidentState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "open" => IncidentState::Open,
            "acknowledged" => IncidentState::Acknowledged,
            "remediating" => IncidentState::Remediating,
            "resolved" => IncidentState::Resolved,
            "closed" => IncidentState::Closed,
            other => return Err(format!("unknown incident state {other:?}")),
        })
    }
}

/// One incident in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    pub id: String,
    /// Increases with every new incident; the paging cursor.
    #[serde(default)]
    pub seq: u64,
    pub state: IncidentState,
    pub severity: Severity,
    pub host: String,
    /// The app of the alert that opened the incident, if any.
    pub app: Option<String>,
    pub title: String,
    pub alert_count: u32,
    pub opened_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    pub resolved_at_ms: Option<UnixMs>,
    /// The group key the incident was opened under, e.g. `host=web01`.
    #[serde(default)]
    pub group_key: String,
    /// The app found to be the root cause (topology), if any.
    #[serde(default)]
    pub root_app: Option<String>,
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub closed_at_ms: Option<UnixMs>,
    /// How many times it reopened.
    #[serde(default)]
    pub reopened: u32,
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentList {
    pub incidents: Vec<IncidentSummary>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(default)]
    pub next_before: Option<u64>,
}

/// The body of `POST /api/v1/incidents/{id}/ack|resolve|close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentAction {
    /// Who does it. With API tokens, the token's name is used instead.
    #[serde(default)]
    pub by: Option<String>,
    /// Why, in words; recorded in the timeline and the audit log.
    pub reason: String,
}

/// `POST /api/v1/silences`: one-off (`ends_at` or `duration`, from `starts_at`
/// or now) or recurring (`schedule`, a cron expression with seconds, plus
/// `duration`; optionally `until`). Times are RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`; all must hold.
    pub matchers: Vec<String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    /// E.g. `2h`.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    pub comment: String,
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: String,
    pub matchers: Vec<String>,
    pub starts_at_ms: Option<UnixMs>,
    pub ends_at_ms: Option<UnixMs>,
    pub schedule: Option<String>,
    pub duration_ms: Option<i64>,
    pub until_ms: Option<UnixMs>,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: UnixMs,
    pub expired_at_ms: Option<UnixMs>,
    /// In force right now.
    pub active: bool,
}

/// `GET /api/v1/silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceList {
    pub silences: Vec<SilenceView>,
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: UnixMs,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// JSON text, hashed as is.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// The hash of the newest entry, to anchor elsewhere.
    pub head: Option<String>,
}

/// `GET /api/v1/incidents/{id}`: everything known about one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentSummary,
    pub alerts: Vec<IncidentAlert>,
    /// Oldest first. Grouping decisions carry their reason in `data`.
    pub timeline: Vec<TimelineEntry>,
    pub runs: Vec<RunView>,
    pub tickets: Vec<TicketView>,
}

/// One alert episode (a firing and, later, its resolution) in an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub fingerprint: String,
    pub source: String,
    pub name: String,
    pub host: String,
    pub app: Option<String>,
    pub severity: Severity,
    pub status: AlertStatus,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub starts_at_ms: UnixMs,
    pub ends_at_ms: Option<UnixMs>,
    /// When the correlator first stored this episode.
    pub received_at_ms: UnixMs,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Changing state too often: it holds its incident open until it settles.
    #[serde(default)]
    pub flapping: bool,
}

/// One line of an incident's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: UnixMs,
    /// `opened`, `alert_joined`, `alert_resolved`, `run_started`,
    /// `step_finished`, `run_finished`, `ticket_created`, `resolved`.
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub data: Value,
}

/// How a playbook run or step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => RunState::Pending,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "skipped" => RunState::Skipped,
            other => return Err(format!("unknown run state {other:?}")),
        })
    }
}

/// One playbook run with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub playbook: String,
    pub incident_id: Option<String>,
    pub state: RunState,
    pub started_at_ms: UnixMs,
    pub finished_at_ms: Option<UnixMs>,
    pub steps: Vec<StepView>,
}

/// One step of a run: what it was asked to do and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub action: String,
    pub state: RunState,
    /// The step's `with`, rendered.
    pub params: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub started_at_ms: Option<UnixMs>,
    pub finished_at_ms: Option<UnixMs>,
}

/// A ticket in an external system linked to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketView {
    pub system: String,
    pub number: String,
    pub sys_id: String,
    pub created_at_ms: UnixMs,
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A short machine-readable code: `unauthorized`, `bad_request`,
    /// `not_found`, `payload_too_large`, `internal`.
    pub code: String,
    pub message: String,
}
