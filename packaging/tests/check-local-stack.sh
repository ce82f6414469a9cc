#!/usr/bin/env bash
# Checks the README's first command as written: packaging/local/up.sh starts
# the whole stack with the shipped config and playbooks (simulators, app
# stand-ins, correlator, agent); at rest the host is healthy (no incident);
# the README's chaos rehearsal then runs the whole chain (alert, incident,
# reallocation read back from the kernel, ticket, resolution) and exits 0;
# SIGTERM (what up.sh handles like Ctrl-C) stops every process it started.
#
# Usage: packaging/tests/check-local-stack.sh. Runs as root (cgroups), with
# the ports up.sh uses (8101-8105, 9470-9473) free. up.sh builds the release
# binaries itself (a no-op when they are built).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
. "$here/lib.sh"

need curl setsid
scratch=$(mktemp -d)
log=$scratch/up.log
ctl=$(target_dir)/release/fincorpctl
url=http://127.0.0.1:9470

for port in 8101 8102 8103 8104 8105 9470 9471 9472 9473; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is already in use; up.sh needs it"
    fi
done

FINCORP_LOCAL_STATE=$scratch/state setsid "$repo/packaging/local/up.sh" >"$log" 2>&1 &
up=$!
stop_stack() {
    kill -TERM -- "-$up" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 -- "-$up" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$up" 2>/dev/null || true
    return 1
}
trap 'stop_stack; rm -rf "$scratch"' EXIT

# The first start builds the release binaries when they are missing.
for _ in $(seq 1 1800); do
    grep -q "FINCORP stack running" "$log" && break
    kill -0 "$up" 2>/dev/null || { cat "$log" >&2; fail "up.sh exited before the stack ran"; }
    sleep 0.5
done
grep -q "FINCORP stack running" "$log" || { tail -50 "$log" >&2; fail "the stack did not start"; }
ok "up.sh started the stack"

# Longer than every app rule's `for` in the shipped agent config but the
# host rules' 1m: a healthy demo host opens no incident.
sleep 12
for port in 8101 8102 8103 8105; do
    curl -fsS "http://127.0.0.1:$port/health" | grep -qx UP || fail "the stand-in on $port is not healthy"
done
incidents=$(curl -fsS "$url/api/v1/incidents")
echo "$incidents" | grep -q '"incidents":\[\]' ||
    { grep -E "WARN|ERROR" "$log" | tail -20 >&2; fail "incidents open at rest: $incidents"; }
ok "at rest: every app probe healthy, no incident"

chaos=$scratch/chaos.out
if ! "$ctl" --url "$url" chaos cpu-spike --app FINCORP-APP-HFT-TEST --step 1s --hold 5s >"$chaos" 2>&1; then
    cat "$chaos" >&2
    tail -40 "$log" >&2
    fail "the chaos rehearsal did not observe the whole chain"
fi
grep -q "chain complete:    yes" "$chaos" || { cat "$chaos" >&2; fail "no complete chain in the summary"; }
grep -E "time to (detect|remediate)" "$chaos"
ok "chaos rehearsal: the whole chain observed"

stop_stack || fail "up.sh did not stop its processes within 10s of SIGTERM"
grep -q "stopping the FINCORP stack" "$log" || fail "up.sh did not clean up on SIGTERM"
ok "SIGTERM stopped the stack and every process it started"
