#!/usr/bin/env bash
# Checks the privileges packaging/systemd/fincorp-agent.service keeps for
# the agent (root, capability bounding set CAP_SYS_PTRACE only, no new
# privileges) are needed and enough, with the real agent binary:
#   - an app that runs as another user (nobody), selected by `exe`, is found
#     by the agent running as root with CAP_SYS_PTRACE alone
#     (fincorp_app_processes 1 on its /metrics);
#   - the same agent with an empty capability set does not find it (0): the
#     kernel lets root read another user's /proc/<pid>/exe only with
#     ptrace-read access, so the capability is needed;
#   - root with CAP_SYS_PTRACE alone rewrites a root-owned cgroup limit (the
#     `reallocate` action): no CAP_DAC_OVERRIDE is needed for that.
# setpriv(1) drops the capabilities as systemd's CapabilityBoundingSet= and
# NoNewPrivileges= do (this machine has no systemd as PID 1); the seccomp
# filter and mount sandbox of the unit are not reproduced here.
#
# Usage: packaging/tests/check-agent-privileges.sh [AGENT_BINARY]
# (default: target/release/fincorp-agent, or $CARGO_TARGET_DIR/release/).
# Runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
. "$here/lib.sh"

agent=${1:-$(target_dir)/release/fincorp-agent}
[ -x "$agent" ] || fail "no $agent: build it first (cargo build --release -p fincorp-agent) or pass its path"
agent=$(cd "$(dirname "$agent")" && pwd)/$(basename "$agent")
need_root
need setpriv sleep
grep -qx 'CapabilityBoundingSet=CAP_SYS_PTRACE' "$repo/packaging/systemd/fincorp-agent.service" ||
    fail "fincorp-agent.service no longer keeps exactly CAP_SYS_PTRACE: update this check with the unit"

work=$(mktemp -d "${TMPDIR:-/tmp}/fincorp-privcheck.XXXXXX")
pids=()
cgroup_dir=""
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ -z "$cgroup_dir" ] || rmdir "$cgroup_dir" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# The app's executable must be reachable by nobody.
chmod 0755 "$work"

# The app: a copy of sleep with a unique name, running as nobody.
app_exe=fincorp-privcheck-$$
mkdir -m 0755 "$work/bin"
cp "$(type -P sleep)" "$work/bin/$app_exe"
chmod 0755 "$work/bin/$app_exe"
setpriv --reuid=65534 --regid=65534 --clear-groups "$work/bin/$app_exe" 600 &
app_pid=$!
pids+=("$app_pid")
sleep 0.2
[ "$(stat -c %u "/proc/$app_pid")" = 65534 ] || fail "the test app does not run as nobody"

# run_agent NAME BOUNDING_SET: starts the agent as root with only the
# capabilities in BOUNDING_SET (setpriv syntax); sets $pid and $port.
run_agent() {
    local name=$1 caps=$2 config
    port=$(free_port)
    config=$work/$name.yaml
    mkdir -m 0700 "$work/$name-state"
    cat >"$config" <<YAML
version: 1
host: privcheck
sample_interval: 200ms
heartbeat_interval: 1s
discovery_interval: 200ms
state_dir: $work/$name-state
metrics:
  listen: 127.0.0.1:$port
correlator:
  # Nothing listens there: batches stay in the spool.
  url: http://127.0.0.1:9
  key_id: fleet
  secret: { env: FINCORP_AGENT_KEY }
  timeout: 1s
apps:
  - name: PRIVCHECK
    select: { exe: $app_exe }
YAML
    FINCORP_AGENT_KEY=0123456789abcdef0123456789abcdef RUST_LOG=warn \
        setpriv --bounding-set="$caps" --inh-caps=-all --no-new-privs -- \
        "$agent" --config "$config" >"$work/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
}

# is_agent PID: the process has exec'd the agent (no longer setpriv).
is_agent() {
    [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$agent" ]
}

# cap_eff PID: the process's effective capability set, in hex.
cap_eff() {
    awk '$1 == "CapEff:" {print $2}' "/proc/$1/status"
}

# app_processes PORT: the agent's fincorp_app_processes for PRIVCHECK.
app_processes() {
    http_get "$1" /metrics |
        awk '$1 ~ /^fincorp_app_processes\{/ && $1 ~ /app="PRIVCHECK"/ {print $2 + 0; found=1} END {exit !found}'
}

# --- CAP_SYS_PTRACE alone: the app is found ----------------------------------
run_agent ptrace -all,+sys_ptrace
# CAP_SYS_PTRACE is capability 19.
wait_for 5 is_agent "$pid" || fail "the agent did not start: $(cat "$work"/*.log)"
[ "$(cap_eff "$pid")" = 0000000000080000 ] ||
    fail "the agent's effective capabilities are $(cap_eff "$pid"), not CAP_SYS_PTRACE alone"
found() { [ "$(app_processes "$port" 2>/dev/null)" = 1 ]; }
if ! wait_for 15 found; then
    fail "the agent with CAP_SYS_PTRACE alone did not find the app run by nobody
(fincorp_app_processes: $(app_processes "$port" 2>/dev/null || echo none)); agent log:
$(cat "$work/ptrace.log")"
fi
ok "root with CAP_SYS_PTRACE alone finds an app run by another user (exe selector)"
kill "$pid"
wait "$pid" 2>/dev/null || true

# --- no capability: the app is not found -------------------------------------
run_agent nocap -all
wait_for 5 is_agent "$pid" || fail "the agent did not start: $(cat "$work"/*.log)"
[ "$(cap_eff "$pid")" = 0000000000000000 ] ||
    fail "the agent's effective capabilities are $(cap_eff "$pid"), not empty"
sampled() { app_processes "$port" >/dev/null 2>&1; }
wait_for 15 sampled || fail "the agent without capabilities serves no fincorp_app_processes; log:
$(cat "$work/nocap.log")"
# Many discovery rounds (every 200 ms): never found.
for _ in $(seq 10); do
    n=$(app_processes "$port")
    [ "$n" = 0 ] || fail "the agent without CAP_SYS_PTRACE found $n process(es) of an app run by nobody: the capability would not be needed"
    sleep 0.2
done
ok "without CAP_SYS_PTRACE it does not: the capability is needed"
kill "$pid"
wait "$pid" 2>/dev/null || true

# --- cgroup limits: writable without CAP_DAC_OVERRIDE ------------------------
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
        fail "cgroup v2 without the cpu controller enabled in /sys/fs/cgroup: cannot check cgroup writes"
    cgroup_dir=/sys/fs/cgroup/fincorp-privcheck-$$
    limit_file=cpu.max
    limit="50000 100000"
else
    cpu_root=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/mounts)
    [ -n "$cpu_root" ] || fail "no cgroup cpu controller mounted: cannot check cgroup writes"
    cgroup_dir=$cpu_root/fincorp-privcheck-$$
    limit_file=cpu.cfs_quota_us
    limit=50000
fi
mkdir "$cgroup_dir"
[ "$(stat -c '%u %a' "$cgroup_dir/$limit_file")" = "0 644" ] ||
    fail "$cgroup_dir/$limit_file is $(stat -c '%u %a' "$cgroup_dir/$limit_file"), expected root-owned 0644"
# shellcheck disable=SC2016 # $1 and $2 are expanded by that sh
setpriv --bounding-set=-all,+sys_ptrace --inh-caps=-all --no-new-privs -- \
    sh -c 'echo "$1" >"$2"' sh "$limit" "$cgroup_dir/$limit_file" ||
    fail "root with CAP_SYS_PTRACE alone cannot write $cgroup_dir/$limit_file"
[ "$(cat "$cgroup_dir/$limit_file")" = "$limit" ] || fail "$cgroup_dir/$limit_file was not rewritten"
ok "root with CAP_SYS_PTRACE alone rewrites a root-owned cgroup limit ($limit_file)"

echo "check-agent-privileges: all checks passed"
