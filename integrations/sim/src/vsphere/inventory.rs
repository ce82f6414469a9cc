//! The simulated vCenter's VMs: the file format (`--inventory FILE`, YAML or
//! JSON), its checks, and the default inventory for the bank's scenarios.
//!
//! ```yaml
//! vms:
//!   - vm: vm-1001                  # optional; vm-N in order when absent
//!     name: core-primary-ny
//!     host: esx-ny-01
//!     power_state: POWERED_ON      # POWERED_ON | POWERED_OFF | SUSPENDED
//!     cpu_count: 8
//!     cores_per_socket: 4          # default 1
//!     cpu_hot_add_enabled: true    # default false
//!     cpu_hot_remove_enabled: false
//!     memory_mib: 32768            # a multiple of 4
//!     memory_hot_add_enabled: true # default false
//!     memory_hot_add_increment_mib: 128   # optional
//!     memory_hot_add_limit_mib: 131072    # optional
//!     guest_os: RHEL_8_64          # default OTHER_LINUX_64
//! ```
//!
//! Names need not be unique (vCenter allows the same name in different
//! folders); ids must be.

use std::collections::HashSet;
use std::path::Path;

use fincorp_api::yaml::{Diagnostics, Document};
use serde::{Deserialize, Serialize};

/// The most vCPUs and MiB a simulated VM may have (vSphere 8 maxima).
pub const MAX_CPU_COUNT: u32 = 768;
pub const MAX_MEMORY_MIB: u64 = 24 * 1024 * 1024;

/// A VM's power state, as the API spells it.
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

fn default_cores_per_socket() -> u32 {
    1
}

fn default_guest_os() -> String {
    "OTHER_LINUX_64".into()
}

/// One simulated VM: its configuration and current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// The identifier, e.g. `vm-1001`.
    #[serde(default)]
    pub vm: String,
    pub name: String,
    /// The ESXi host it runs on; a host marked failed (faults) makes its VMs
    /// inaccessible.
    pub host: String,
    pub power_state: PowerState,
    pub cpu_count: u32,
    #[serde(default = "default_cores_per_socket")]
    pub cores_per_socket: u32,
    #[serde(default)]
    pub cpu_hot_add_enabled: bool,
    #[serde(default)]
    pub cpu_hot_remove_enabled: bool,
    pub memory_mib: u64,
    #[serde(default)]
    pub memory_hot_add_enabled: bool,
    #[serde(default)]
    pub memory_hot_add_increment_mib: Option<u64>,
    #[serde(default)]
    pub memory_hot_add_limit_mib: Option<u64>,
    #[serde(default = "default_guest_os")]
    pub guest_os: String,
}

/// The VMs a simulator starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub vms: Vec<Vm>,
}

#[allow(clippy::too_many_arguments)]
fn vm(
    id: &str,
    name: &str,
    host: &str,
    power_state: PowerState,
    cpu: (u32, u32, bool, bool),
    memory: (u64, bool, Option<u64>, Option<u64>),
    guest_os: &str,
) -> Vm {
    Vm {
        vm: id.into(),
        name: name.into(),
        host: host.into(),
        power_state,
        cpu_count: cpu.0,
        cores_per_socket: cpu.1,
        cpu_hot_add_enabled: cpu.2,
        cpu_hot_remove_enabled: cpu.3,
        memory_mib: memory.0,
        memory_hot_add_enabled: memory.1,
        memory_hot_add_increment_mib: memory.2,
        memory_hot_add_limit_mib: memory.3,
        guest_os: guest_os.into(),
    }
}

impl Default for Inventory {
    /// The bank's scenarios: core banking's primary in New York (on) and its
    /// standby in London (off, for S3's failover), and one VM per other app,
    /// with a mix of hot-add settings.
    fn default() -> Self {
        use PowerState::{PoweredOff, PoweredOn};
        Self {
            vms: vec![
                vm(
                    "vm-1001",
                    "core-primary-ny",
                    "esx-ny-01",
                    PoweredOn,
                    (8, 4, true, false),
                    (32768, true, Some(128), Some(131072)),
                    "RHEL_8_64",
                ),
                vm(
                    "vm-2001",
                    "core-standby-london",
                    "esx-ldn-01",
                    PoweredOff,
                    (8, 4, true, false),
                    (32768, true, Some(128), Some(131072)),
                    "RHEL_8_64",
                ),
                vm(
                    "vm-1002",
                    "hft-engine-ny-01",
                    "esx-ny-02",
                    PoweredOn,
                    (4, 2, true, false),
                    (16384, true, Some(128), Some(65536)),
                    "RHEL_9_64",
                ),
                vm(
                    "vm-1003",
                    "transproc-app-ny-01",
                    "esx-ny-01",
                    PoweredOn,
                    (4, 1, false, false),
                    (8192, false, None, None),
                    "RHEL_8_64",
                ),
                vm(
                    "vm-1004",
                    "crm-web-ny-01",
                    "esx-ny-02",
                    PoweredOn,
                    (2, 1, true, true),
                    (4096, true, Some(4), Some(16384)),
                    "UBUNTU_64",
                ),
                vm(
                    "vm-1005",
                    "insurance-claims-ny-01",
                    "esx-ny-02",
                    PoweredOff,
                    (2, 2, false, false),
                    (8192, false, None, None),
                    "WINDOWS_SERVER_2021",
                ),
            ],
        }
    }
}

impl Inventory {
    /// Reads and checks an inventory file (YAML, of which JSON is a
    /// subset). Every problem is reported with file:line:col.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let doc = Document::read(path)?;
        let inventory: Inventory = doc.parse()?;
        let problems = inventory.problems();
        if problems.is_empty() {
            Ok(inventory.with_ids())
        } else {
            Err(Diagnostics(
                problems
                    .into_iter()
                    .map(|(key_path, message)| doc.error(&key_path, message))
                    .collect(),
            ))
        }
    }

    /// Every problem, as (key path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut ids = HashSet::new();
        for (i, v) in self.vms.iter().enumerate() {
            let mut problem = |field: &str, message: String| {
                problems.push((format!("vms[{i}].{field}"), message));
            };
            if !v.vm.is_empty() && !ids.insert(v.vm.clone()) {
                problem("vm", format!("duplicate vm id {:?}", v.vm));
            }
            if v.vm.contains('/') || v.vm.trim() != v.vm {
                problem("vm", format!("{:?} is not a usable vm id", v.vm));
            }
            if v.name.trim().is_empty() {
                problem("name", "name must not be empty".into());
            }
            if v.host.trim().is_empty() {
                problem("host", "host must not be empty".into());
            }
            if v.cores_per_socket == 0 {
                problem(
                    "cores_per_socket",
                    "cores_per_socket must be at least 1".into(),
                );
            }
            if v.cpu_count == 0 || v.cpu_count > MAX_CPU_COUNT {
                problem(
                    "cpu_count",
                    format!("cpu_count must be 1..={MAX_CPU_COUNT}"),
                );
            } else if v.cores_per_socket > 0 && v.cpu_count % v.cores_per_socket != 0 {
                problem(
                    "cpu_count",
                    format!(
                        "cpu_count {} is not a multiple of cores_per_socket {}",
                        v.cpu_count, v.cores_per_socket
                    ),
                );
            }
            if v.memory_mib == 0 || v.memory_mib > MAX_MEMORY_MIB || v.memory_mib % 4 != 0 {
                problem(
                    "memory_mib",
                    format!("memory_mib must be a multiple of 4 in 4..={MAX_MEMORY_MIB}"),
                );
            }
            if v.memory_hot_add_increment_mib == Some(0) {
                problem(
                    "memory_hot_add_increment_mib",
                    "the increment must be above 0".into(),
                );
            }
        }
        // Ids given later could collide with ids assigned to earlier VMs.
        for (i, v) in self.vms.iter().enumerate() {
            let assigned = format!("vm-{}", i + 1);
            if v.vm.is_empty() && ids.contains(&assigned) {
                problems.push((
                    format!("vms[{i}].vm"),
                    format!("give an id: the assigned id {assigned} is taken"),
                ));
            }
        }
        problems
    }

    /// VMs without an id get `vm-<position>` (1-based).
    pub fn with_ids(mut self) -> Self {
        for (i, v) in self.vms.iter_mut().enumerate() {
            if v.vm.is_empty() {
                v.vm = format!("vm-{}", i + 1);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_inventory_is_valid_and_has_the_failover_pair() {
        let inv = Inventory::default();
        assert!(inv.problems().is_empty(), "{:?}", inv.problems());
        let by_name = |n: &str| inv.vms.iter().find(|v| v.name == n).unwrap();
        assert_eq!(
            by_name("core-primary-ny").power_state,
            PowerState::PoweredOn
        );
        assert_eq!(
            by_name("core-standby-london").power_state,
            PowerState::PoweredOff
        );
    }

    #[test]
    fn files_are_checked_with_every_problem_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(
            &path,
            "vms:\n  - name: a\n    host: h\n    power_state: POWERED_ON\n    cpu_count: 3\n    cores_per_socket: 2\n    memory_mib: 1026\n  - vm: vm-9\n    name: ''\n    host: h\n    power_state: POWERED_OFF\n    cpu_count: 2\n    memory_mib: 2048\n",
        )
        .unwrap();
        let err = Inventory::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("inventory.yaml:5:"), "{text}");
        assert!(
            text.contains("not a multiple of cores_per_socket"),
            "{text}"
        );
        assert!(text.contains("(at vms[0].memory_mib)"), "{text}");
        assert!(text.contains("name must not be empty"), "{text}");

        std::fs::write(&path, r#"{"vms": [{"name": "a", "host": "h", "power_state": "POWERED_ON", "cpu_count": 2, "memory_mib": 2048, "colour": "red"}]}"#).unwrap();
        let err = Inventory::load(&path).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        std::fs::write(&path, r#"{"vms": [{"name": "a", "host": "h", "power_state": "POWERED_ON", "cpu_count": 2, "memory_mib": 2048}, {"vm": "vm-7", "name": "a", "host": "h2", "power_state": "SUSPENDED", "cpu_count": 1, "memory_mib": 1024}]}"#).unwrap();
        let inv = Inventory::load(&path).unwrap();
        assert_eq!(inv.vms[0].vm, "vm-1");
        assert_eq!(inv.vms[0].cores_per_socket, 1);
        assert_eq!(inv.vms[0].guest_os, "OTHER_LINUX_64");
        assert_eq!(inv.vms[1].vm, "vm-7");
        assert_eq!(inv.vms[1].power_state, PowerState::Suspended);
    }

    #[test]
    fn the_shipped_local_inventory_is_valid_and_has_cores_failover_pair() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../packaging/local/vsphere-inventory.yaml");
        let inv = Inventory::load(&path).unwrap_or_else(|d| panic!("{d}"));
        let by_name = |n: &str| inv.vms.iter().find(|v| v.name == n).unwrap();
        assert_eq!(by_name("core-ny-01").power_state, PowerState::PoweredOn);
        assert_eq!(by_name("core-ldn-01").power_state, PowerState::PoweredOff);
        assert_eq!(by_name("core-ldn-01").vm, "vm-2001");
        assert_ne!(by_name("core-ny-01").host, by_name("core-ldn-01").host);
    }

    #[test]
    fn duplicate_and_colliding_ids_are_refused() {
        let mut inv = Inventory::default();
        inv.vms[1].vm = inv.vms[0].vm.clone();
        assert!(
            inv.problems()
                .iter()
                .any(|(k, m)| k == "vms[1].vm" && m.contains("duplicate"))
        );
        let mut inv = Inventory::default();
        inv.vms[0].vm = String::new();
        inv.vms[1].vm = "vm-1".into();
        assert!(
            inv.problems()
                .iter()
                .any(|(k, m)| k == "vms[0].vm" && m.contains("taken"))
        );
    }
}
