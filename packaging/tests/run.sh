#!/usr/bin/env bash
# The packaging step of CI (.ci/run), also runnable by hand (as root):
# installs the tools the checks need when missing (systemd's tools, strace,
# cargo-deb), builds the release binaries once, packages them with
# `cargo deb --no-build`, then runs every check in packaging/tests/:
#   check-units.sh            systemd-analyze verify and security (exposure)
#   check-debs.sh             the .deb files, conffiles, maintainer scripts
#   check-install-sh.sh       packaging/install.sh
#   check-agent-privileges.sh the agent's one capability is needed and enough
#   check-syscalls.sh         both daemons stay within their SystemCallFilter=
#   check-local-stack.sh      the README's up.sh and chaos rehearsal, as written
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

# Tools: systemd-analyze and systemd-sysusers (systemd), deb-systemd-helper
# and deb-systemd-invoke (init-system-helpers), strace; setpriv, unshare
# (util-linux), dpkg and useradd (passwd) are in every Debian.
missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v deb-systemd-helper >/dev/null 2>&1 || missing="$missing init-system-helpers"
command -v strace >/dev/null 2>&1 || missing="$missing strace"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0

# Every binary: the packages take three, the local stack (up.sh) all four.
cargo build --release --bins
agent_deb=$(cargo deb --no-build -p fincorp-agent)
correlator_deb=$(cargo deb --no-build -p fincorp-correlator)
bins=${CARGO_TARGET_DIR:-$repo/target}/release

"$here/check-units.sh" "$agent_deb" "$correlator_deb"
"$here/check-debs.sh" "$agent_deb" "$correlator_deb"
"$here/check-install-sh.sh" "$bins"
"$here/check-agent-privileges.sh" "$bins/fincorp-agent"
"$here/check-syscalls.sh" "$bins"
"$here/check-local-stack.sh"
echo "packaging: all checks passed"
