#!/usr/bin/env bash
# Checks that the system calls the agent and the correlator make are all
# allowed by the SystemCallFilter= lines of their units in
# packaging/systemd/ (a call outside the filter fails with EPERM under
# systemd: SystemCallErrorNumber=EPERM). This machine has no systemd as
# PID 1 to apply the filter, so both binaries run under strace(1) instead,
# each as its unit runs it (the correlator as an unprivileged user, the
# agent as root with CAP_SYS_PTRACE alone), through one working session:
# the agent samples an app run by another user, probes the correlator over
# HTTP and TCP, fires an alert and ships it; the correlator ingests it into
# SQLite and opens an incident; the agent reloads its config on SIGHUP; both
# serve /metrics and stop on SIGTERM. Every traced call of either process
# (and its threads and children) after it starts is checked against its
# unit's filter, expanded with `systemd-analyze syscall-filter`.
#
# Usage: packaging/tests/check-syscalls.sh [BIN_DIR]
# (default: target/release, or $CARGO_TARGET_DIR/release, with
# fincorp-agent and fincorp-correlator built). Runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
. "$here/lib.sh"

bins=$(cd "${1:-$(target_dir)/release}" && pwd)
for b in fincorp-agent fincorp-correlator; do
    [ -x "$bins/$b" ] || fail "no $bins/$b: build it first (cargo build --release -p fincorp-agent -p fincorp-correlator) or pass BIN_DIR"
done
need_root
need strace setpriv systemd-analyze sleep

work=$(mktemp -d "${TMPDIR:-/tmp}/fincorp-syscalls.XXXXXX")
chmod 0755 "$work"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
key=0123456789abcdef0123456789abcdef

# allowed UNIT: the system calls UNIT's SystemCallFilter= lines allow, one a
# line: the union of the lines without `~`, less the union of those with.
expand() {
    local item
    for item in "$@"; do
        case "$item" in
            @*)
                systemd-analyze syscall-filter --no-pager "$item" | sed '1d' |
                    awk 'NF && $1 !~ /^#/ {print $1}' | while read -r sub; do expand "$sub"; done
                ;;
            *) echo "$item" ;;
        esac
    done
}
allowed() {
    local unit=$repo/packaging/systemd/$1 allow="" deny="" value
    while IFS= read -r value; do
        case "$value" in
            "~"*) deny="$deny ${value#\~}" ;;
            *) allow="$allow $value" ;;
        esac
    done < <(sed -n 's/^SystemCallFilter=//p' "$unit")
    [ -n "$allow" ] || fail "$1 has no allow-list SystemCallFilter="
    # shellcheck disable=SC2086
    comm -23 <(expand $allow | sort -u) <(expand $deny | sort -u)
}

# used TRACE BINARY: the names of the calls in an `strace -f` TRACE made by
# the process that exec'd BINARY (from its successful execve on, so not
# strace's own set-up) and by every thread or child it created.
used() {
    awk -v bin="$2" '
        function rest(line) { sub(/^[0-9]+ +/, "", line); return line }
        # pass 1: where BINARY was exec-ed, and who created whom
        NR == FNR {
            r = rest($0)
            if (index(r, "execve(\"" bin "\"") == 1 && r ~ /= 0$/ && !($1 in exec_at)) exec_at[$1] = FNR
            if ((r ~ /^(clone|clone3|fork|vfork)\(/ || r ~ /^<\.\.\. (clone|clone3|fork|vfork) resumed>/) &&
                match(r, /= [0-9]+$/)) parent[substr(r, RSTART + 2) + 0] = $1
            next
        }
        # pass 2: the calls of those processes
        {
            r = rest($0)
            if (!match(r, /^[a-z_0-9]+\(/)) next
            p = $1
            if (p in exec_at) { if (FNR <= exec_at[p]) next }
            else {
                while ((p in parent) && !(p in exec_at)) p = parent[p]
                if (!(p in exec_at)) next
            }
            print substr(r, 1, RLENGTH - 1)
        }' "$1" "$1" | sort -u
}

# --- the session ----------------------------------------------------------------
cport=$(free_port)
mkdir -p "$work/correlator/playbooks" "$work/correlator/state"
chown -R 65534:65534 "$work/correlator/state"
: >"$work/correlator.trace"
chown 65534 "$work/correlator.trace"
cat >"$work/correlator/correlator.yaml" <<YAML
version: 1
listen: 127.0.0.1:$cport
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { env: FINCORP_AGENT_KEY }
playbooks_dir: playbooks
YAML
# As the unit: an unprivileged user, no capability, no new privileges.
(cd "$work/correlator" && exec env FINCORP_AGENT_KEY=$key RUST_LOG=info \
    setpriv --reuid=65534 --regid=65534 --clear-groups --bounding-set=-all --inh-caps=-all --no-new-privs -- \
    strace -f -qq -o "$work/correlator.trace" "$bins/fincorp-correlator" --config correlator.yaml \
    >"$work/correlator.log" 2>&1) &
pids+=("$!")
correlator_up() { http_get "$cport" /healthz >/dev/null; }
wait_for 30 correlator_up || fail "the correlator did not start; log:
$(cat "$work/correlator.log")"

# The app: a copy of sleep with a unique name, run by nobody.
app_exe=fincorp-syscalls-$$
cp "$(type -P sleep)" "$work/$app_exe"
chmod 0755 "$work/$app_exe"
setpriv --reuid=65534 --regid=65534 --clear-groups "$work/$app_exe" 600 &
pids+=("$!")

aport=$(free_port)
mkdir -m 0700 "$work/agent-state"
write_agent_config() { # SAMPLE_INTERVAL
    cat >"$work/agent.yaml" <<YAML
version: 1
host: syscalls
sample_interval: $1
heartbeat_interval: 1s
discovery_interval: 200ms
state_dir: $work/agent-state
metrics:
  listen: 127.0.0.1:$aport
correlator:
  url: http://127.0.0.1:$cport
  key_id: fleet
  secret: { env: FINCORP_AGENT_KEY }
  timeout: 2s
apps:
  - name: SYSCALLS-APP
    select: { exe: $app_exe }
    probe:
      http:
        url: http://127.0.0.1:$cport/healthz
    rules:
      - name: running
        when: processes >= 1
        for: 200ms
        severity: warning
  - name: SYSCALLS-TCP
    select: { cmdline: "no-such-process-$$" }
    probe:
      tcp:
        address: 127.0.0.1:$cport
YAML
}
write_agent_config 200ms
# As the unit: root with CAP_SYS_PTRACE alone, no new privileges.
env FINCORP_AGENT_KEY=$key RUST_LOG=info \
    setpriv --bounding-set=-all,+sys_ptrace --inh-caps=-all --no-new-privs -- \
    strace -f -qq -o "$work/agent.trace" "$bins/fincorp-agent" --config "$work/agent.yaml" \
    >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")

agent_metric() { # NAME: its value on the agent's /metrics
    http_get "$aport" /metrics | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {print $2 + 0; exit}'
}
incident_opened() {
    http_get "$cport" /api/v1/incidents | grep -q '"app":"SYSCALLS-APP"'
}
wait_for 30 incident_opened || fail "no incident for SYSCALLS-APP at the correlator; agent log:
$(tail -n 20 "$work/agent.log")
correlator log:
$(tail -n 20 "$work/correlator.log")"
ok "the agent sampled, probed and shipped an alert; the correlator stored it and opened an incident"

# SIGHUP to the agent (strace's child, the agent itself).
agent=$(pgrep -P "$agent_pid" || true)
[ -n "$agent" ] || fail "cannot find the agent process under strace"
write_agent_config 300ms
kill -HUP "$agent"
reloaded() { [ "$(agent_metric fincorp_agent_sample_interval_seconds 2>/dev/null)" = 0.3 ]; }
wait_for 15 reloaded || fail "the agent did not reload its config on SIGHUP; log:
$(tail -n 20 "$work/agent.log")"
http_get "$cport" /metrics >/dev/null || fail "the correlator's /metrics does not answer"
ok "the agent reloaded its config on SIGHUP; both serve /metrics"

correlator=$(pgrep -P "${pids[0]}" || true)
[ -n "$correlator" ] || fail "cannot find the correlator process under strace"
kill -TERM "$agent" "$correlator"
wait "$agent_pid" "${pids[0]}" 2>/dev/null || true

# --- the calls --------------------------------------------------------------------
# check_calls UNIT TRACE BINARY
check_calls() {
    local unit=$1 trace=$2 binary=$3 calls outside
    calls=$(used "$trace" "$binary")
    [ "$(wc -l <<<"$calls")" -ge 20 ] || fail "$unit: only $(wc -l <<<"$calls") system calls traced; the trace is broken:
$calls"
    outside=$(comm -23 <(echo "$calls") <(allowed "$unit"))
    [ -z "$outside" ] || fail "$unit: $(basename "$binary") made system calls its SystemCallFilter= denies (EPERM under systemd):
$outside"
    ok "$unit: all $(wc -l <<<"$calls") system calls $(basename "$binary") made are allowed by its SystemCallFilter="
}
check_calls fincorp-agent.service "$work/agent.trace" "$bins/fincorp-agent"
check_calls fincorp-correlator.service "$work/correlator.trace" "$bins/fincorp-correlator"

# The expansion itself: common calls in, the denied groups out.
for unit in fincorp-agent.service fincorp-correlator.service; do
    list=$(allowed "$unit")
    for call in read write openat epoll_wait futex; do
        grep -qx "$call" <<<"$list" || fail "self-check: $unit's expanded filter lacks $call; the expansion is broken"
    done
    for call in ptrace capset setresuid mount init_module reboot settimeofday; do
        grep -qx "$call" <<<"$list" && fail "self-check: $unit's expanded filter allows $call; the expansion is broken"
    done
done
ok "self-check: the expanded filters allow read, write, futex... and deny ptrace, capset, mount..."

echo "check-syscalls: all checks passed"
