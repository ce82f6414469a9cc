#!/usr/bin/env bash
# Checks packaging/install.sh:
#   - into a staging root (--root, --prefix /usr/local): binaries, units
#     pointing at /usr/local/bin and otherwise identical to
#     packaging/systemd/, configs identical to the examples, a root-only
#     secrets directory, the fincorp system user; no systemctl call at all;
#     the staged units pass `systemd-analyze verify` against the staged
#     binaries;
#   - idempotent: a second run changes nothing and keeps an edited config;
#   - `agent` alone installs only the agent;
#   - as on a live host (--root /, run chrooted in a throwaway root where
#     "systemd runs" and systemctl is a logging stub): daemon-reload and
#     try-restart only, nothing enabled or started.
#
# Usage: packaging/tests/check-install-sh.sh [BIN_DIR]
# (default: target/release, or $CARGO_TARGET_DIR/release, with
# fincorp-agent, fincorp-correlator and fincorpctl built). Runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/tests/lib.sh
. "$here/lib.sh"

bins=$(cd "${1:-$(target_dir)/release}" && pwd)
for b in fincorp-agent fincorp-correlator fincorpctl; do
    [ -x "$bins/$b" ] || fail "no $bins/$b: build it first (cargo build --release -p fincorp-agent -p fincorp-correlator -p fincorpctl)"
done
need systemd-analyze systemd-sysusers chroot mknod
enter_private_namespace "$bins"
work=$FINCORP_CHECK_WORK
install_sh=$repo/packaging/install.sh

# A PATH where systemctl only records that it was called.
stubs=$work/stubs
mkdir -p "$stubs"
cat >"$stubs/systemctl" <<STUB
#!/bin/sh
echo "\$*" >>"$work/host-systemctl.calls"
exit 0
STUB
chmod 755 "$stubs/systemctl"
: >"$work/host-systemctl.calls"

# A staging root with this machine's users, less any fincorp.
new_stage() {
    local stage=$1 f
    mkdir -p "$stage/etc"
    for f in passwd group shadow gshadow; do
        [ -f "/etc/$f" ] && cp -p "/etc/$f" "$stage/etc/$f" && sed -i '/^fincorp:/d' "$stage/etc/$f"
    done
    return 0
}
# Every file and directory below the stage with its mode and checksum.
tree_state() {
    (cd "$1" && find . -path ./usr/lib/systemd/system -prune -o -printf '%p %m %u\n' | sort &&
        find . -type f -path './etc/*' ! -name '.pwd.lock' -exec sha256sum {} + | sort)
}

# --- staged install ----------------------------------------------------------
stage=$work/stage
new_stage "$stage"
PATH=$stubs:$PATH "$install_sh" --root "$stage" --prefix /usr/local --from "$bins" >"$work/install1.log" ||
    { cat "$work/install1.log" >&2; fail "install.sh --root failed (output above)"; }
[ ! -s "$work/host-systemctl.calls" ] ||
    fail "install.sh --root called systemctl: $(cat "$work/host-systemctl.calls")"
ok "install.sh --root: no systemctl call"

for b in fincorp-agent fincorp-correlator fincorpctl; do
    [ "$(stat -c %a "$stage/usr/local/bin/$b")" = 755 ] || fail "/usr/local/bin/$b is not installed 0755"
    cmp -s "$bins/$b" "$stage/usr/local/bin/$b" || fail "/usr/local/bin/$b is not the built binary"
done
ok "binaries in /usr/local/bin, 0755"
for u in fincorp-agent.service fincorp-correlator.service; do
    f=$stage/etc/systemd/system/$u
    [ "$(stat -c %a "$f")" = 644 ] || fail "$u is not installed 0644"
    grep -q '^ExecStart=/usr/local/bin/fincorp-' "$f" || fail "$u's ExecStart= does not point at /usr/local/bin"
    grep -q '/usr/bin/fincorp-' "$f" && fail "$u still names /usr/bin/fincorp-*"
    sed 's#=/usr/local/bin/fincorp-#=/usr/bin/fincorp-#' "$f" | cmp -s - "$repo/packaging/systemd/$u" ||
        fail "$u differs from packaging/systemd/$u beyond the binary paths"
done
ok "units in /etc/systemd/system: packaging/systemd/ with ExecStart= in /usr/local/bin"
configs="agent.yaml correlator.yaml topology.yaml"
for p in "$repo"/packaging/etc/fincorp/playbooks/*.yaml; do configs="$configs playbooks/$(basename "$p")"; done
for c in $configs; do
    cmp -s "$repo/packaging/etc/fincorp/$c" "$stage/etc/fincorp/$c" || fail "/etc/fincorp/$c is not the example"
    [ "$(stat -c %a "$stage/etc/fincorp/$c")" = 644 ] || fail "/etc/fincorp/$c is not 0644"
done
ok "example configs in /etc/fincorp: $configs"
[ "$(stat -c '%a %u %g' "$stage/etc/fincorp/secrets")" = "700 0 0" ] ||
    fail "/etc/fincorp/secrets is $(stat -c '%a %u %g' "$stage/etc/fincorp/secrets"), expected 700 0 0"
ok "/etc/fincorp/secrets is 0700 root:root"
user=$(grep '^fincorp:' "$stage/etc/passwd" || true)
[ -n "$user" ] || fail "install.sh did not create the fincorp user in the staging root"
IFS=: read -r _ _ uid _ _ home shell <<<"$user"
[ "$uid" -lt 1000 ] || fail "fincorp has uid $uid, not a system uid"
[ "$home:$shell" = /var/lib/fincorp:/usr/sbin/nologin ] || fail "fincorp is $user"
grep -q '^fincorp:' "$stage/etc/group" || fail "no fincorp group"
[ ! -e "$stage/var/lib/fincorp" ] || fail "install.sh created /var/lib/fincorp (systemd's StateDirectory= does)"
ok "system user fincorp: uid $uid, home /var/lib/fincorp (not created), no shell"

# The staged units verify against the staged binaries.
stage_systemd "$stage"
cp "$stage"/etc/systemd/system/fincorp-*.service "$stage/usr/lib/systemd/system/"
if ! out=$(cd "$stage" && systemd-analyze verify --root="$stage" fincorp-agent.service fincorp-correlator.service 2>&1) ||
    [ -n "$out" ]; then
    fail "systemd-analyze verify of the staged units:
$out"
fi
rm -f "$stage"/usr/lib/systemd/system/fincorp-*.service
ok "systemd-analyze verify: the staged units are clean"

# --- idempotent ----------------------------------------------------------------
echo "# edited by the operator" >>"$stage/etc/fincorp/agent.yaml"
chmod 0755 "$stage/etc/fincorp/secrets"
chmod 0700 "$stage/etc/fincorp/secrets" # an operator's change, then put back
before=$(tree_state "$stage")
PATH=$stubs:$PATH "$install_sh" --root "$stage" --prefix /usr/local --from "$bins" >"$work/install2.log" ||
    { cat "$work/install2.log" >&2; fail "the second install.sh run failed"; }
after=$(tree_state "$stage")
[ "$before" = "$after" ] || fail "a second install.sh run changed the staging root:
$(diff <(echo "$before") <(echo "$after") || true)"
grep -q "kept existing /etc/fincorp/agent.yaml" "$work/install2.log" || fail "the second run did not report keeping agent.yaml"
[ "$(grep -c '^fincorp:' "$stage/etc/passwd")" = 1 ] || fail "the second run added another fincorp user"
ok "idempotent: a second run changes nothing and keeps the edited agent.yaml"

# --- one component -----------------------------------------------------------
only=$work/only-agent
new_stage "$only"
PATH=$stubs:$PATH "$install_sh" --root "$only" --from "$bins" agent >"$work/install3.log" ||
    { cat "$work/install3.log" >&2; fail "install.sh agent failed"; }
[ -x "$only/usr/local/bin/fincorp-agent" ] || fail "install.sh agent did not install fincorp-agent"
for absent in usr/local/bin/fincorp-correlator usr/local/bin/fincorpctl etc/systemd/system/fincorp-correlator.service \
    etc/fincorp/correlator.yaml; do
    [ ! -e "$only/$absent" ] || fail "install.sh agent installed /$absent"
done
grep -q '^fincorp:' "$only/etc/passwd" && fail "install.sh agent created the fincorp user (only the correlator needs it)"
ok "install.sh agent: the agent only, no user"

# --- live host (chrooted) ------------------------------------------------------
root=$work/root
make_root "$root"
mkdir -p "$root/opt/fincorp-src/bin"
cp -a "$repo/packaging" "$root/opt/fincorp-src/"
cp "$bins"/fincorp-agent "$bins"/fincorp-correlator "$bins"/fincorpctl "$root/opt/fincorp-src/bin/"
chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /opt/fincorp-src/packaging/install.sh --from /opt/fincorp-src/bin >"$work/install4.log" 2>&1 ||
    { cat "$work/install4.log" >&2; fail "install.sh on the (chrooted) live root failed"; }
calls=$(take_systemctl_calls "$root")
assert_no_start "install.sh on a live host" "$calls" "try-restart"
grep -qx "daemon-reload" <<<"$calls" || fail "install.sh on a live host did not daemon-reload (calls: $calls)"
for u in fincorp-agent.service fincorp-correlator.service; do
    grep -qx "try-restart $u" <<<"$calls" || fail "install.sh did not try-restart $u (calls: $calls)"
done
if ls "$root"/etc/systemd/system/*.wants/fincorp-* >/dev/null 2>&1; then
    fail "install.sh enabled a unit"
fi
grep -q '^fincorp:' "$root/etc/passwd" || fail "install.sh on a live host did not create the fincorp user"
ok "install.sh on a live host: daemon-reload and try-restart only; not enabled, not started"

echo "check-install-sh: all checks passed"
