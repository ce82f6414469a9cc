#!/usr/bin/env bash
# Installs FINCORP AI Operator on a systemd host without Debian packages:
# the binaries, the hardened systemd units, the example configuration (never
# overwriting a file that exists) and, for the correlator, the system user
# `fincorp`. Like the .deb packages it never enables or starts a service:
# configure first, then `systemctl enable --now fincorp-agent` (or
# fincorp-correlator). Re-running it upgrades the binaries and units and
# try-restarts the services that are running; it is idempotent.
#
# Usage: packaging/install.sh [OPTIONS] [agent] [correlator]
#   (no component named: both)
#   --from DIR      where the built binaries are (default: target/release of
#                   this checkout, or $CARGO_TARGET_DIR/release; build them with
#                   `cargo build --release -p fincorp-agent -p fincorp-correlator -p fincorpctl`)
#   --prefix DIR    binaries go to DIR/bin (default /usr/local); the units'
#                   ExecStart= lines point there
#   --unitdir DIR   where the units go (default /etc/systemd/system)
#   --root DIR      install below DIR instead of / (staging an image or a
#                   test); nothing is asked of the running systemd then
# Run as root (or with --root into a directory you own).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
from=${CARGO_TARGET_DIR:-$repo/target}/release
prefix=/usr/local
unitdir=/etc/systemd/system
root=/
agent=0
correlator=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        --from=*) from=${1#*=}; shift ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --unitdir) unitdir=${2:?--unitdir needs a directory}; shift 2 ;;
        --unitdir=*) unitdir=${1#*=}; shift ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --root=*) root=${1#*=}; shift ;;
        agent) agent=1; shift ;;
        correlator) correlator=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
if [ "$agent" = 0 ] && [ "$correlator" = 0 ]; then
    agent=1
    correlator=1
fi
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path: $prefix" ;; esac
case "$unitdir" in /*) ;; *) die "--unitdir must be an absolute path: $unitdir" ;; esac
[ -d "$root" ] || die "--root $root is not a directory"
root=$(cd "$root" && pwd)
dest() { # the path below the root
    if [ "$root" = / ]; then echo "$1"; else echo "$root$1"; fi
}
live=0
[ "$root" = / ] && live=1

binaries=()
[ "$agent" = 1 ] && binaries+=(fincorp-agent)
[ "$correlator" = 1 ] && binaries+=(fincorp-correlator fincorpctl)
for b in "${binaries[@]}"; do
    [ -x "$from/$b" ] || die "no $from/$b: build it first (cargo build --release -p fincorp-agent -p fincorp-correlator -p fincorpctl) or pass --from"
done
command -v systemd-sysusers >/dev/null 2>&1 || [ "$correlator" = 0 ] ||
    die "systemd-sysusers is needed to create the fincorp user (the units need systemd anyway)"

umask 022

# Binaries: replaced atomically, so a running service keeps its old file.
install -d -m 0755 "$(dest "$prefix/bin")"
for b in "${binaries[@]}"; do
    install -m 0755 "$from/$b" "$(dest "$prefix/bin")/.$b.new"
    mv -f "$(dest "$prefix/bin")/.$b.new" "$(dest "$prefix/bin")/$b"
    echo "installed $prefix/bin/$b"
done

# Units: not configuration (change them with drop-ins), so always replaced;
# ExecStart= and ExecStartPre= point at $prefix/bin.
install -d -m 0755 "$(dest "$unitdir")"
units=()
[ "$agent" = 1 ] && units+=(fincorp-agent.service)
[ "$correlator" = 1 ] && units+=(fincorp-correlator.service)
for u in "${units[@]}"; do
    sed "s#=/usr/bin/fincorp-#=$prefix/bin/fincorp-#" "$here/systemd/$u" >"$(dest "$unitdir")/.$u.new"
    chmod 0644 "$(dest "$unitdir")/.$u.new"
    mv -f "$(dest "$unitdir")/.$u.new" "$(dest "$unitdir")/$u"
    echo "installed $unitdir/$u"
done

# Configuration: the shipped examples, only where no file exists yet.
config() { # SOURCE TARGET
    local target
    target=$(dest "$2")
    if [ -e "$target" ]; then
        echo "kept existing $2"
    else
        install -d -m 0755 "$(dirname "$target")"
        install -m 0644 "$1" "$target"
        echo "installed $2 (example: edit it)"
    fi
}
etc=$here/etc/fincorp
[ "$agent" = 1 ] && config "$etc/agent.yaml" /etc/fincorp/agent.yaml
if [ "$correlator" = 1 ]; then
    config "$etc/correlator.yaml" /etc/fincorp/correlator.yaml
    config "$etc/topology.yaml" /etc/fincorp/topology.yaml
    for p in "$etc"/playbooks/*.yaml; do
        config "$p" "/etc/fincorp/playbooks/$(basename "$p")"
    done
fi

# Secrets: root only, whatever the directory was before.
install -d -m 0700 "$(dest /etc/fincorp/secrets)"
chmod 0700 "$(dest /etc/fincorp/secrets)"
chown 0:0 "$(dest /etc/fincorp/secrets)"

# The correlator's system user: no shell, home = its state directory (which
# systemd creates at start). systemd-sysusers leaves an existing user alone.
if [ "$correlator" = 1 ]; then
    systemd-sysusers --root="$root" --inline \
        'u fincorp - "FINCORP AI Operator correlator" /var/lib/fincorp /usr/sbin/nologin'
    echo "system user fincorp is present"
fi

# systemd: learn about the new units; restart only what already runs (an
# upgrade). Never enable or start anything.
if [ "$live" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    for u in "${units[@]}"; do
        systemctl try-restart "$u"
    done
fi

echo
echo "Installed, not enabled and not started. Next:"
for u in "${units[@]}"; do
    name=${u%.service}
    short=${name#fincorp-}
    echo "  $name: edit /etc/fincorp/$short.yaml, put the secrets it names as"
    echo "    { env: NAME } in /etc/fincorp/secrets/$short.env (NAME=value, mode 0600),"
    echo "    then: systemctl enable --now $u"
done
