#!/usr/bin/env bash
# Starts the whole FINCORP stack on this host with the shipped example config
# (packaging/etc/fincorp): the ServiceNow and vCenter simulators (the latter
# with the VMs of packaging/local/vsphere-inventory.yaml), stand-ins for the
# five apps' health endpoints, the correlator
# with its SQLite database, and an agent for this host. The API listens on
# http://127.0.0.1:9470. Ctrl-C stops everything.
#
# State (database, generated secrets, logs) goes to ./.fincorp, or to
# $FINCORP_LOCAL_STATE. Secrets are generated once, mode 0600, and handed to
# the processes through environment variables, as the shipped config expects.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state=${FINCORP_LOCAL_STATE:-$root/.fincorp}
etc=$root/packaging/etc/fincorp
bin=$root/target/release

echo "building release binaries (first time takes a few minutes)..."
(cd "$root" && cargo build --release --bins --quiet)

mkdir -p "$state/secrets" "$state/correlator" "$state/agent"
umask 077
for name in agent-hmac.key servicenow.password vsphere.password; do
    [ -s "$state/secrets/$name" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/secrets/$name"
done
export FINCORP_AGENT_KEY; FINCORP_AGENT_KEY=$(cat "$state/secrets/agent-hmac.key")
export FINCORP_SERVICENOW_PASSWORD; FINCORP_SERVICENOW_PASSWORD=$(cat "$state/secrets/servicenow.password")
export FINCORP_VSPHERE_PASSWORD; FINCORP_VSPHERE_PASSWORD=$(cat "$state/secrets/vsphere.password")

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo "stopping the FINCORP stack..."
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

prefix() { sed -u "s/^/[$1] /"; }

"$bin/fincorp-sim" servicenow --listen 127.0.0.1:9471 --username fincorp-operator \
    --password-env FINCORP_SERVICENOW_PASSWORD > >(prefix servicenow-sim) 2>&1 &
pids+=($!)

"$bin/fincorp-sim" vsphere --listen 127.0.0.1:9473 --username fincorp-automation@vsphere.local \
    --password-env FINCORP_VSPHERE_PASSWORD --inventory "$root/packaging/local/vsphere-inventory.yaml" \
    > >(prefix vsphere-sim) 2>&1 &
pids+=($!)

# Stand-ins for the five FINCORP apps' health endpoints (the ports the
# shipped agent config probes), so that this host is healthy at rest.
"$bin/fincorp-sim" apps --http 127.0.0.1:8101 --http 127.0.0.1:8102 --http 127.0.0.1:8103 \
    --tcp 127.0.0.1:8104 --http 127.0.0.1:8105 > >(prefix apps-sim) 2>&1 &
pids+=($!)

"$bin/fincorp-correlator" --config "$etc/correlator.yaml" --state-dir "$state/correlator" \
    > >(prefix correlator) 2>&1 &
pids+=($!)

up() { "$bin/fincorpctl" --url http://127.0.0.1:9470 incidents list --limit 1 >/dev/null 2>&1; }
for _ in $(seq 1 100); do up && break; sleep 0.1; done
up || { echo "the correlator did not come up on 127.0.0.1:9470; see its log above" >&2; exit 1; }

"$bin/fincorp-agent" --config "$etc/agent.yaml" --state-dir "$state/agent" > >(prefix agent) 2>&1 &
pids+=($!)

cat <<MSG

FINCORP stack running:
  API          http://127.0.0.1:9470/api/v1/incidents
  ServiceNow   http://127.0.0.1:9471 (simulator; user fincorp-operator, password in $state/secrets)
  apps         health stand-ins on 127.0.0.1:8101-8105 (POST /sim/down on 8101-8103 or 8105 rehearses an outage)
  vCenter      http://127.0.0.1:9473 (simulator; VMs at /sim/vms; core-ldn-01, CORE's London standby, is off)
  agent        http://127.0.0.1:9472/metrics (its own and this host's metrics)
  state        $state

In another shell (as root, for cgroups), rehearse the guide's CPU spike:
  $bin/fincorpctl chaos cpu-spike --app FINCORP-APP-HFT-TEST
then inspect the result:
  $bin/fincorpctl incidents list
  $bin/fincorpctl incidents show <ID>

Ctrl-C stops the stack.
MSG
wait -n "${pids[@]}"
echo "a FINCORP process exited; stopping the rest" >&2
