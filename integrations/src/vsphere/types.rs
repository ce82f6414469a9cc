//! The vSphere client's configuration and the values it takes and returns,
//! in the vSphere Automation API's JSON shapes (`/api`, vSphere 7.0 U2+).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fincorp_api::config::Secret;
use serde::{Deserialize, Serialize};

use super::error::VsphereError;

/// Where vCenter is and who logs in. `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct VsphereConfig {
    /// vCenter's base URL, e.g. `https://vcenter.ny.fincorp.example`. A path
    /// prefix (behind a proxy) is kept.
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// The limit for one HTTP request, connection included.
    pub timeout: Duration,
}

/// A VM's power state (`Power.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Suspended,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::PoweredOn => "POWERED_ON",
            PowerState::PoweredOff => "POWERED_OFF",
            PowerState::Suspended => "SUSPENDED",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power operation: `POST /api/vcenter/vm/{vm}/power?action=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// Powers on a powered-off or suspended VM.
    Start,
    /// Powers off (hard) a powered-on or suspended VM.
    Stop,
    /// Resets a powered-on VM.
    Reset,
    /// Suspends a powered-on VM.
    Suspend,
}

impl PowerAction {
    /// The `action` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Reset => "reset",
            PowerAction::Suspend => "suspend",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PowerAction {
    type Err = VsphereError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "start" => PowerAction::Start,
            "stop" => PowerAction::Stop,
            "reset" => PowerAction::Reset,
            "suspend" => PowerAction::Suspend,
            _ => {
                return Err(VsphereError::InvalidInput {
                    field: "action",
                    reason: format!("{s:?} is not start, stop, reset or suspend"),
                });
            }
        })
    }
}

/// What a power operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerOutcome {
    /// vCenter performed it (204).
    Done,
    /// vCenter answered `ALREADY_IN_DESIRED_STATE`: nothing to do, success.
    AlreadyInDesiredState,
}

/// One row of `GET /api/vcenter/vm` (`VM.Summary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// The VM's identifier, e.g. `vm-1001`.
    pub vm: String,
    pub name: String,
    pub power_state: PowerState,
    /// Unset when the VM's configuration is not available.
    #[serde(default)]
    pub cpu_count: Option<u32>,
    #[serde(rename = "memory_size_MiB", default)]
    pub memory_size_mib: Option<u64>,
}

/// `cpu` of `GET /api/vcenter/vm/{vm}` (`Hardware.Cpu.Info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub count: u32,
    pub cores_per_socket: u32,
    pub hot_add_enabled: bool,
    pub hot_remove_enabled: bool,
}

/// `memory` of `GET /api/vcenter/vm/{vm}` (`Hardware.Memory.Info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    #[serde(rename = "size_MiB")]
    pub size_mib: u64,
    pub hot_add_enabled: bool,
    /// Only set while the VM runs with hot-add enabled: the memory added
    /// must be at least this much, and the new size a multiple of it.
    #[serde(rename = "hot_add_increment_size_MiB", default)]
    pub hot_add_increment_size_mib: Option<u64>,
    /// Only set while the VM runs with hot-add enabled: the most memory the
    /// running VM can have.
    #[serde(rename = "hot_add_limit_MiB", default)]
    pub hot_add_limit_mib: Option<u64>,
}

/// What the hardware rules need of `GET /api/vcenter/vm/{vm}` (`VM.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VM's identifier (not in the response body; the client fills it
    /// in from the request).
    #[serde(default)]
    pub vm: String,
    pub name: String,
    pub power_state: PowerState,
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
}

/// Which hardware a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU cores (`count`).
    Cpu,
    /// Memory in MiB (`size_MiB`).
    Memory,
}

/// The result of a CPU or memory change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareChange {
    pub vm: String,
    pub resource: Resource,
    /// CPU cores or MiB before the change.
    pub before: u64,
    /// CPU cores or MiB after it.
    pub after: u64,
    /// False when the VM already had the requested size (nothing was sent).
    pub applied: bool,
}
