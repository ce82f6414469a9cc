#!/usr/bin/env bash
# Checks the systemd units as the .deb packages install them:
#   - `systemd-analyze verify` is clean (no error, no warning) for both;
#   - `systemd-analyze security --offline=yes` gives an overall exposure of
#     at most 3.0 for fincorp-agent.service and 2.0 for
#     fincorp-correlator.service, and prints what is left exposed.
# The packages are unpacked (dpkg -x) into a staging root, so verify finds
# the ExecStart binaries at the units' own paths (/usr/bin/...) and checks
# the shipped units unmodified; the host's unit files are copied beside them
# for the targets they reference.
#
# Usage: packaging/tests/check-units.sh [AGENT_DEB CORRELATOR_DEB]
# (default: the newest fincorp-{agent,correlator}_*.deb in target/debian/,
# or in $CARGO_TARGET_DIR/debian/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
. "$here/lib.sh"

AGENT_MAX=3.0
CORRELATOR_MAX=2.0

if [ $# -eq 2 ]; then
    debs=("$1" "$2")
elif [ $# -eq 0 ]; then
    # (one by one: set -e ignores a failed $(...) inside an array)
    agent_deb=$(newest_deb fincorp-agent)
    correlator_deb=$(newest_deb fincorp-correlator)
    debs=("$agent_deb" "$correlator_deb")
else
    echo "usage: $0 [AGENT_DEB CORRELATOR_DEB]" >&2
    exit 2
fi
need systemd-analyze dpkg-deb
work=$(mktemp -d "${TMPDIR:-/tmp}/fincorp-unitcheck.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
mkdir -p "$stage"
for deb in "${debs[@]}"; do
    dpkg-deb -x "$deb" "$stage"
done
stage_systemd "$stage"
units=(fincorp-agent.service fincorp-correlator.service)
for unit in "${units[@]}"; do
    [ -f "$stage/usr/lib/systemd/system/$unit" ] || fail "the packages do not install $unit"
done

# verify: a non-zero exit, and also any message (unknown keys are only
# warnings), is a failure.
if ! out=$(cd "$stage" && systemd-analyze verify --root="$stage" "${units[@]}" 2>&1) || [ -n "$out" ]; then
    fail "systemd-analyze verify:
$out"
fi
ok "systemd-analyze verify: clean for ${units[*]}"

# The overall exposure, as a number, from the last line of the report.
exposure() {
    local report=$1 unit=$2 value
    value=$(sed -n "s/^.*Overall exposure level for $unit: \([0-9][0-9.]*\) .*$/\1/p" <<<"$report")
    [ -n "$value" ] || fail "cannot find the overall exposure of $unit in:
$report"
    echo "$value"
}
# check_exposure UNIT MAX: prints the exposure and the items still exposed.
check_exposure() {
    local unit=$1 max=$2 report value
    report=$(systemd-analyze security --offline=yes --root="$stage" --no-pager "$unit" 2>&1) ||
        fail "systemd-analyze security $unit failed:
$report"
    value=$(exposure "$report" "$unit")
    echo "$unit: exposure $value (at most $max); still exposed:"
    grep '✗' <<<"$report" | sed 's/^/    /'
    awk -v v="$value" -v m="$max" 'BEGIN { exit !(v + 0 <= m + 0) }' ||
        fail "$unit: overall exposure $value is above $max"
    ok "$unit: overall exposure $value <= $max"
}
check_exposure fincorp-agent.service "$AGENT_MAX"
check_exposure fincorp-correlator.service "$CORRELATOR_MAX"

# The check itself can fail: the same unit without its [Service] hardening
# scores above the limit (so a report the parser misreads cannot pass).
bare=$work/bare/usr/lib/systemd/system
mkdir -p "$bare"
awk '/^\[Service\]/ {print; s=1; next} /^\[/ {s=0} !s || /^(Type|ExecStart|ExecStartPre|ExecReload|EnvironmentFile|Environment)=/' \
    "$stage/usr/lib/systemd/system/fincorp-correlator.service" >"$bare/fincorp-correlator.service"
report=$(systemd-analyze security --offline=yes --root="$work/bare" --no-pager fincorp-correlator.service 2>&1 || true)
value=$(exposure "$report" fincorp-correlator.service)
awk -v v="$value" -v m="$CORRELATOR_MAX" 'BEGIN { exit !(v + 0 > m + 0) }' ||
    fail "self-check: the unhardened correlator unit scores $value, not above $CORRELATOR_MAX; the check is broken"
ok "self-check: the same unit without hardening scores $value (> $CORRELATOR_MAX)"

# ExecReload= sends SIGHUP, whose default action ends a process (and a
# "clean" signal death is not restarted by Restart=on-failure): a unit may
# have it only if its binary survives SIGHUP, and should have it if it
# does. Each installed binary is started with a minimal config, sent SIGHUP,
# and must still serve HTTP one second later exactly when its unit has
# `ExecReload=/bin/kill -HUP $MAINPID`.
key=0123456789abcdef0123456789abcdef
daemon=""
stop_daemon() {
    if [ -n "$daemon" ]; then
        kill -TERM "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
        daemon=""
    fi
}
trap 'stop_daemon; rm -rf "$work"' EXIT
# sighup_check UNIT PORT PATH COMMAND...: starts COMMAND (serving
# http://127.0.0.1:PORT/PATH), sends SIGHUP once it answers.
sighup_check() {
    local unit=$1 port=$2 path=$3 expect survived name=${1%.service}
    shift 3
    # shellcheck disable=SC2016 # the unit's own $MAINPID
    if grep -qxF 'ExecReload=/bin/kill -HUP $MAINPID' "$stage/usr/lib/systemd/system/$unit"; then
        expect=1
    elif grep -q '^ExecReload=' "$stage/usr/lib/systemd/system/$unit"; then
        fail "$unit: an ExecReload= this check does not know; update it"
    else
        expect=0
    fi
    "$@" >"$work/$unit.log" 2>&1 &
    daemon=$!
    up() { http_get "$port" "$path" >/dev/null; }
    wait_for 20 up || fail "$unit: $name did not answer on 127.0.0.1:$port$path; log:
$(cat "$work/$unit.log")"
    # (bash's own "Hangup" notice for the job is not wanted: its stderr is
    # off until the daemon is reaped)
    exec 4>&2 2>/dev/null
    kill -HUP "$daemon"
    sleep 1
    survived=0
    if kill -0 "$daemon" && up; then
        survived=1
    fi
    stop_daemon
    exec 2>&4 4>&-
    case "$expect$survived" in
        11) ok "$unit: ExecReload= sends SIGHUP, and $name reloads on it (still serving)" ;;
        00) ok "$unit: no ExecReload=, and $name does not survive SIGHUP (systemctl reload is refused, not fatal)" ;;
        10) fail "$unit has ExecReload=/bin/kill -HUP, but $name does not survive SIGHUP: \`systemctl reload\` would stop it; log:
$(cat "$work/$unit.log")" ;;
        01) fail "$name survives SIGHUP now: give $unit \`ExecReload=/bin/kill -HUP \$MAINPID\`" ;;
    esac
}

port=$(free_port)
mkdir -p "$work/agent/state"
cat >"$work/agent/agent.yaml" <<YAML
version: 1
host: unitcheck
sample_interval: 200ms
state_dir: state
metrics:
  listen: 127.0.0.1:$port
correlator:
  url: http://127.0.0.1:9
  key_id: fleet
  secret: { env: FINCORP_AGENT_KEY }
apps: []
YAML
sighup_check fincorp-agent.service "$port" /metrics \
    env FINCORP_AGENT_KEY=$key "$stage/usr/bin/fincorp-agent" --config "$work/agent/agent.yaml"

port=$(free_port)
mkdir -p "$work/correlator/playbooks"
cat >"$work/correlator/correlator.yaml" <<YAML
version: 1
listen: 127.0.0.1:$port
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { env: FINCORP_AGENT_KEY }
playbooks_dir: playbooks
YAML
sighup_check fincorp-correlator.service "$port" /healthz \
    env FINCORP_AGENT_KEY=$key "$stage/usr/bin/fincorp-correlator" --config "$work/correlator/correlator.yaml"

echo "check-units: all checks passed"
