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
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Decided, waiting for its guardrails (lock, budget) to let it start.
    Pending,
    Running,
    /// Waiting for an operator before its first mutating step.
    AwaitingApproval,
    Succeeded,
    Failed,
    /// Failed after a mutating step; the rollback steps ran.
    RolledBack,
    /// Refused by a guardrail (budget, causal depth, breaker, kill switch)
    /// before any step ran.
    Blocked,
    /// The kill switch stopped it between two steps.
    Stopped,
    /// A correlator restart cut it off while a step that cannot safely be
    /// repeated was in flight; that step's outcome is unknown.
    Interrupted,
    /// An operator rejected it.
    Rejected,
    /// Nobody approved it in time: nothing was done.
    Expired,
    /// A dry run: every step planned, none executed.
    Planned,
    /// A step whose `when` was false.
    Skipped,
}

impl RunState {
    pub const ALL: [RunState; 13] = [
        RunState::Pending,
        RunState::Running,
        RunState::AwaitingApproval,
        RunState::Succeeded,
        RunState::Failed,
        RunState::RolledBack,
        RunState::Blocked,
        RunState::Stopped,
        RunState::Interrupted,
        RunState::Rejected,
        RunState::Expired,
        RunState::Planned,
        RunState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::RolledBack => "rolled_back",
            RunState::Blocked => "blocked",
            RunState::Stopped => "stopped",
            RunState::Interrupted => "interrupted",
            RunState::Rejected => "rejected",
            RunState::Expired => "expired",
            RunState::Planned => "planned",
            RunState::Skipped => "skipped",
        }
    }

    /// Still under way: it may yet run steps.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Pending | RunState::Running | RunState::AwaitingApproval
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown run state {s:?}"))
    }
}

/// One playbook run with its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub playbook: String,
    /// `None` for scheduled runs.
    pub incident_id: Option<String>,
    pub state: RunState,
    /// What started it: `incident:opened`, `incident:alert_joined`,
    /// `incident:reopened`, `schedule:<slot>`, or `manual:<who>`.
    #[serde(default)]
    pub trigger: String,
    /// The n-th run of this playbook for this incident (1 for the first).
    #[serde(default)]
    pub ordinal: u32,
    /// 0, or how many of our own runs led to this one (causal chain).
    #[serde(default)]
    pub depth: u32,
    /// The run whose remediation caused the incident that started this one.
    #[serde(default)]
    pub caused_by_run: Option<String>,
    /// The host and app it acts on.
    #[serde(default)]
    pub target_host: Option<String>,
    #[serde(default)]
    pub target_app: Option<String>,
    /// Why it is blocked, stopped, interrupted, rejected, expired or failed.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// A mutating step succeeded.
    #[serde(default)]
    pub mutated: bool,
    #[serde(default)]
    pub created_at_ms: UnixMs,
    pub started_at_ms: UnixMs,
    pub finished_at_ms: Option<UnixMs>,
    /// The approval it waits for, when `state` is `awaiting_approval`.
    #[serde(default)]
    pub approval: Option<ApprovalView>,
    pub steps: Vec<StepView>,
}

/// An approval a run waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub step_id: String,
    pub prompt: String,
    pub requested_at_ms: UnixMs,
    /// Nothing is done if nobody decides by then.
    pub expires_at_ms: UnixMs,
}

/// One step of a run: what it was asked to do and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub action: String,
    pub state: RunState,
    /// `main` or `rollback`.
    #[serde(default)]
    pub phase: String,
    /// The step's `with`, rendered (secrets redacted).
    pub params: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Attempts made (retries included).
    #[serde(default)]
    pub attempts: u32,
    pub started_at_ms: Option<UnixMs>,
    pub finished_at_ms: Option<UnixMs>,
}

/// `GET /api/v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<RunView>,
}

/// `POST /api/v1/runs/{id}/approve` and `/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRequest {
    /// Who acts; with API tokens, the token's name is used instead.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/automation/kill-switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchRequest {
    pub on: bool,
    /// Who acts; with API tokens, the token's name is used instead.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// The kill switch: when on, no run starts and running runs stop before
/// their next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchView {
    pub on: bool,
    pub changed_at_ms: Option<UnixMs>,
    pub changed_by: Option<String>,
    pub reason: Option<String>,
}

/// A tripped circuit breaker: no run it covers starts until an operator
/// resets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerView {
    /// `fleet`, `playbook:NAME` or `playbook:NAME@HOST/APP`.
    pub key: String,
    pub reason: String,
    pub tripped_at_ms: UnixMs,
    /// The run that tripped it.
    pub run_id: Option<String>,
    /// What was done about it: the notification and the ticket.
    #[serde(default)]
    pub escalation: Value,
}

/// `POST /api/v1/automation/breakers/{key}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// Who acts; with API tokens, the token's name is used instead.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/v1/automation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutomationStatus {
    pub kill_switch: KillSwitchView,
    pub breakers: Vec<BreakerView>,
    /// Runs pending, running or awaiting approval.
    pub active_runs: u32,
    pub playbooks: Vec<PlaybookView>,
}

/// A loaded playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybookView {
    pub name: String,
    pub description: String,
    pub file: String,
    /// The trigger, in words.
    pub trigger: String,
    /// The guardrails, in words.
    pub guardrails: Vec<String>,
    pub steps: Vec<String>,
    pub mutating: bool,
}

/// `POST /api/v1/playbooks/{name}/plan`: plan against an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub incident_id: String,
}

/// `POST /api/v1/playbooks/{name}/run`: run a playbook for an incident now,
/// through all its guardrails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub incident_id: String,
    /// Plan every step, execute none.
    #[serde(default)]
    pub dry_run: bool,
    /// Who asks; with API tokens, the token's name is used instead.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// A dry-run plan: the text a person reads and the structured steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    pub text: String,
    pub plan: Value,
    /// Set when a mutating step cannot say exactly what it would do: such a
    /// playbook is refused in dry-run mode.
    #[serde(default)]
    pub refusal: Option<String>,
}

/// `POST /api/v1/playbooks/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadView {
    pub playbooks: Vec<String>,
    pub warnings: Vec<String>,
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
