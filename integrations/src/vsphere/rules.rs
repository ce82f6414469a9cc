//! The CPU and memory change rules, checked before any change is sent.
//! Pure: a VM's state in, a refusal reason or nothing out.
//!
//! Followed (vSphere Automation API, `Vm.Hardware.Cpu.UpdateSpec` and
//! `Vm.Hardware.Memory.UpdateSpec` / `Memory.Info`):
//!
//! - "The number of CPU cores in the virtual machine must be a multiple of
//!   the number of cores per socket" (any power state).
//! - "If the virtual machine is running, the number of CPU cores may only be
//!   increased if `hot_add_enabled` is true, and may only be decreased if
//!   `hot_remove_enabled` is true."
//! - Memory: "If the virtual machine is running, this value may only be
//!   changed if `hot_add_enabled` is true, and the new memory size must
//!   satisfy the constraints specified by `hot_add_increment_size_MiB` and
//!   `hot_add_limit_MiB`": the memory added must be at least the increment
//!   and the new size a multiple of it; the limit is the most memory the
//!   running VM can have.
//! - Memory sizes are whole multiples of 4 MiB (vSphere Virtual Machine
//!   Administration, "Change the Memory Configuration"). This is the only
//!   granularity enforced when the VM is off or reports no increment.
//!
//! FINCORP is stricter than vSphere in two places:
//!
//! - **No online decrease at all**, CPU or memory, even with
//!   `hot_remove_enabled`: few guests release CPUs cleanly and none release
//!   memory, and automation that shrinks a running production VM is not a
//!   first response. Shrink a powered-off VM instead.
//! - **No change to a suspended VM**: its memory image is tied to its
//!   hardware; resume or power it off first.
//!
//! Absolute limits are vSphere 8's per-VM maxima (768 vCPUs, 24 TiB).

use super::types::{PowerState, VmInfo};

/// The most vCPUs a VM can have (vSphere 8, hardware version 20).
pub const MAX_CPU_COUNT: u32 = 768;
/// The most memory a VM can have, in MiB (24 TiB, vSphere 8).
pub const MAX_MEMORY_MIB: u64 = 24 * 1024 * 1024;
/// Memory sizes are multiples of this many MiB.
pub const MEMORY_GRANULARITY_MIB: u64 = 4;

/// Checks a CPU count on its own (no VM needed).
pub fn validate_cpu_count(count: u32) -> Result<(), String> {
    if count == 0 || count > MAX_CPU_COUNT {
        return Err(format!(
            "a VM has 1 to {MAX_CPU_COUNT} CPU cores, not {count}"
        ));
    }
    Ok(())
}

/// Checks a memory size on its own (no VM needed).
pub fn validate_memory_mib(size_mib: u64) -> Result<(), String> {
    if size_mib == 0 || size_mib > MAX_MEMORY_MIB {
        return Err(format!(
            "a VM has 4 MiB to {MAX_MEMORY_MIB} MiB of memory, not {size_mib} MiB"
        ));
    }
    if size_mib % MEMORY_GRANULARITY_MIB != 0 {
        return Err(format!(
            "memory must be a multiple of {MEMORY_GRANULARITY_MIB} MiB, not {size_mib} MiB"
        ));
    }
    Ok(())
}

/// Whether `vm` may go to `count` CPU cores now.
pub fn check_cpu(vm: &VmInfo, count: u32) -> Result<(), String> {
    validate_cpu_count(count)?;
    let per_socket = vm.cpu.cores_per_socket.max(1);
    if count % per_socket != 0 {
        return Err(format!(
            "{count} is not a multiple of the VM's {per_socket} cores per socket"
        ));
    }
    let current = vm.cpu.count;
    match vm.power_state {
        PowerState::PoweredOff => Ok(()),
        PowerState::Suspended => Err("the VM is suspended; resume or power it off first".into()),
        PowerState::PoweredOn if count > current && !vm.cpu.hot_add_enabled => Err(format!(
            "the VM is powered on and CPU hot-add is disabled (cpu.hot_add_enabled is false), so it cannot go from {current} to {count} cores while running"
        )),
        PowerState::PoweredOn if count < current => Err(if vm.cpu.hot_remove_enabled {
            format!(
                "the VM is powered on; FINCORP does not remove CPUs from a running VM (from {current} to {count}), even with cpu.hot_remove_enabled; power it off first"
            )
        } else {
            format!(
                "the VM is powered on and CPU hot-remove is disabled (cpu.hot_remove_enabled is false), so it cannot go from {current} to {count} cores while running"
            )
        }),
        PowerState::PoweredOn => Ok(()),
    }
}

/// Whether `vm` may go to `size_mib` of memory now.
pub fn check_memory(vm: &VmInfo, size_mib: u64) -> Result<(), String> {
    validate_memory_mib(size_mib)?;
    let current = vm.memory.size_mib;
    match vm.power_state {
        PowerState::PoweredOff => Ok(()),
        PowerState::Suspended => Err("the VM is suspended; resume or power it off first".into()),
        PowerState::PoweredOn => {
            if size_mib == current {
                return Ok(());
            }
            if !vm.memory.hot_add_enabled {
                return Err(format!(
                    "the VM is powered on and memory hot-add is disabled (memory.hot_add_enabled is false), so it cannot go from {current} to {size_mib} MiB while running"
                ));
            }
            if size_mib < current {
                return Err(format!(
                    "the VM is powered on and memory cannot be removed from a running VM (from {current} to {size_mib} MiB); power it off first"
                ));
            }
            if let Some(step) = vm.memory.hot_add_increment_size_mib.filter(|s| *s > 0) {
                if size_mib - current < step {
                    return Err(format!(
                        "memory is hot-added in steps of at least {step} MiB (memory.hot_add_increment_size_MiB); {current} to {size_mib} MiB adds only {} MiB",
                        size_mib - current
                    ));
                }
                if size_mib % step != 0 {
                    return Err(format!(
                        "while running, the memory size must be a multiple of {step} MiB (memory.hot_add_increment_size_MiB), not {size_mib} MiB"
                    ));
                }
            }
            if let Some(limit) = vm.memory.hot_add_limit_mib.filter(|l| size_mib > *l) {
                return Err(format!(
                    "while running, the VM can have at most {limit} MiB (memory.hot_add_limit_MiB), not {size_mib} MiB"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::types::{CpuInfo, MemoryInfo};

    fn vm(power: PowerState) -> VmInfo {
        VmInfo {
            vm: "vm-1".into(),
            name: "core-primary-ny".into(),
            power_state: power,
            cpu: CpuInfo {
                count: 4,
                cores_per_socket: 2,
                hot_add_enabled: true,
                hot_remove_enabled: false,
            },
            memory: MemoryInfo {
                size_mib: 8192,
                hot_add_enabled: true,
                hot_add_increment_size_mib: Some(128),
                hot_add_limit_mib: Some(65536),
            },
        }
    }

    #[test]
    fn cpu_rules_follow_the_hot_add_flags_and_cores_per_socket() {
        let on = vm(PowerState::PoweredOn);
        assert!(check_cpu(&on, 6).is_ok());
        assert!(check_cpu(&on, 4).is_ok(), "no change is allowed");
        assert!(check_cpu(&on, 5).unwrap_err().contains("cores per socket"));
        assert!(
            check_cpu(&on, 2)
                .unwrap_err()
                .contains("hot-remove is disabled")
        );
        let mut removable = on.clone();
        removable.cpu.hot_remove_enabled = true;
        assert!(
            check_cpu(&removable, 2)
                .unwrap_err()
                .contains("does not remove CPUs from a running VM")
        );
        let mut no_hot_add = on.clone();
        no_hot_add.cpu.hot_add_enabled = false;
        assert!(
            check_cpu(&no_hot_add, 6)
                .unwrap_err()
                .contains("hot-add is disabled")
        );

        let off = VmInfo {
            cpu: no_hot_add.cpu,
            ..vm(PowerState::PoweredOff)
        };
        assert!(check_cpu(&off, 2).is_ok(), "off: decrease is fine");
        assert!(check_cpu(&off, 8).is_ok(), "off: no hot-add needed");
        assert!(check_cpu(&off, 3).unwrap_err().contains("cores per socket"));
        assert!(
            check_cpu(&vm(PowerState::Suspended), 6)
                .unwrap_err()
                .contains("suspended")
        );
        assert!(check_cpu(&off, 0).is_err());
        assert!(check_cpu(&off, MAX_CPU_COUNT + 1).is_err());
        let mut zero_per_socket = off.clone();
        zero_per_socket.cpu.cores_per_socket = 0;
        assert!(check_cpu(&zero_per_socket, 3).is_ok(), "0 is read as 1");
    }

    #[test]
    fn memory_rules_follow_hot_add_increment_and_limit() {
        let on = vm(PowerState::PoweredOn);
        assert!(check_memory(&on, 8192 + 128).is_ok());
        assert!(check_memory(&on, 16384).is_ok());
        assert!(check_memory(&on, 8192).is_ok());
        assert!(
            check_memory(&on, 8192 + 64)
                .unwrap_err()
                .contains("steps of at least 128")
        );
        assert!(
            check_memory(&on, 8192 + 132)
                .unwrap_err()
                .contains("multiple of 128")
        );
        assert!(
            check_memory(&on, 65536 + 128)
                .unwrap_err()
                .contains("at most 65536")
        );
        assert!(
            check_memory(&on, 4096)
                .unwrap_err()
                .contains("cannot be removed")
        );
        assert!(
            check_memory(&on, 8194)
                .unwrap_err()
                .contains("multiple of 4 MiB")
        );
        let mut no_hot_add = on.clone();
        no_hot_add.memory.hot_add_enabled = false;
        assert!(
            check_memory(&no_hot_add, 16384)
                .unwrap_err()
                .contains("hot-add is disabled")
        );
        let mut no_increment = on.clone();
        no_increment.memory.hot_add_increment_size_mib = None;
        no_increment.memory.hot_add_limit_mib = None;
        assert!(
            check_memory(&no_increment, 8196).is_ok(),
            "4 MiB granularity only"
        );

        let off = vm(PowerState::PoweredOff);
        assert!(check_memory(&off, 4096).is_ok());
        assert!(check_memory(&off, 8196).is_ok());
        assert!(check_memory(&off, 0).is_err());
        assert!(check_memory(&off, MAX_MEMORY_MIB + 4).is_err());
        assert!(
            check_memory(&vm(PowerState::Suspended), 16384)
                .unwrap_err()
                .contains("suspended")
        );
    }
}
