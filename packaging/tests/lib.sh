# shellcheck shell=bash
# Shared helpers of the packaging checks (sourced, not run).
#
# The checks install packages and run maintainer scripts for real, but never
# on this machine's own system: each builds a throwaway root under a scratch
# directory, inside a private mount namespace, where /usr is an overlay of
# the host's /usr (writes land in the overlay, never in the host's /usr) and
# /etc is a copy of the host's /etc.

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

ok() {
    echo "ok: $*"
}

# The cargo target directory: $CARGO_TARGET_DIR, else target/ in the
# checkout ($repo, set by the calling script).
target_dir() {
    echo "${CARGO_TARGET_DIR:-$repo/target}"
}

# newest_deb PACKAGE: the newest PACKAGE_*.deb cargo deb built.
newest_deb() {
    local found
    # shellcheck disable=SC2012 # newest by mtime; cargo-deb names have no odd characters
    found=$(ls -t "$(target_dir)"/debian/"$1"_*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] || fail "no $(target_dir)/debian/$1_*.deb: build it first with \`cargo deb -p $1\`"
    echo "$found"
}

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            fail "this check needs '$tool', which is not installed here"
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || fail "this check must run as root (it uses mount namespaces, chroot and dpkg --root)"
}

# Re-runs the calling script inside a private mount namespace, with a scratch
# directory in $FINCORP_CHECK_WORK that is removed afterwards (after the
# namespace, and so every mount made in it, is gone). Call it first.
enter_private_namespace() {
    if [ "${FINCORP_CHECK_IN_NS:-}" = 1 ]; then
        return 0
    fi
    need_root
    need unshare
    local work rc=0
    work=$(mktemp -d "${TMPDIR:-/tmp}/fincorp-pkgcheck.XXXXXX")
    FINCORP_CHECK_IN_NS=1 FINCORP_CHECK_WORK=$work \
        unshare --mount --propagation private bash "$0" "$@" || rc=$?
    rm -rf "$work"
    exit "$rc"
}

# make_root DIR: a throwaway root in which dpkg --root can run maintainer
# scripts (it chroots into DIR to run them). "systemd is running" there
# (/run/systemd/system exists), so the scripts take their systemd branch,
# but `systemctl` is a stub that only logs its arguments to
# DIR/var/log/systemctl.calls (is-enabled: disabled, is-active: inactive).
# deb-systemd-helper and deb-systemd-invoke are the real ones, and no
# policy-rc.d vetoes them.
make_root() {
    local root=$1 overlay
    overlay=$(dirname "$root")/$(basename "$root").usr-overlay
    mkdir -p "$root" "$overlay/upper" "$overlay/work" "$root/usr"
    mount -t overlay overlay \
        -o "lowerdir=/usr,upperdir=$overlay/upper,workdir=$overlay/work" "$root/usr"
    local d
    for d in bin sbin lib lib32 lib64 libx32; do
        if [ -L "/$d" ]; then
            ln -s "$(readlink "/$d")" "$root/$d"
        elif [ -d "/$d" ]; then
            fail "/$d is not a symlink into /usr (not a merged-/usr system); the throwaway root does not support that"
        fi
    done
    cp -a /etc "$root/etc"
    # Whatever a previous installation left on this machine is not part of
    # the throwaway root.
    rm -rf "$root/etc/fincorp" "$root"/etc/systemd/system/fincorp-* \
        "$root"/etc/systemd/system/*.wants/fincorp-*
    local f
    for f in passwd group shadow gshadow; do
        [ -f "$root/etc/$f" ] && sed -i '/^fincorp:/d' "$root/etc/$f"
    done
    mkdir -p "$root/dev" "$root/proc" "$root/tmp" "$root/run/systemd/system" \
        "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
    chmod 1777 "$root/tmp"
    mknod -m 666 "$root/dev/null" c 1 3
    mknod -m 666 "$root/dev/zero" c 1 5
    mknod -m 666 "$root/dev/urandom" c 1 9
    : >"$root/var/lib/dpkg/status"
    : >"$root/var/log/systemctl.calls"
    rm -f "$root/usr/bin/systemctl"
    cat >"$root/usr/bin/systemctl" <<'STUB'
#!/bin/sh
# Test stub: records what the maintainer scripts ask systemd to do.
echo "$*" >>/var/log/systemctl.calls
case " $* " in
    *" is-enabled "*) echo disabled; exit 1 ;;
    *" is-active "*) exit 3 ;;
esac
exit 0
STUB
    chmod 755 "$root/usr/bin/systemctl"
    # A host's policy-rc.d (container images ship one that forbids every
    # action) would make deb-systemd-invoke skip its systemctl calls, hiding
    # what the maintainer scripts ask for: the throwaway root has none.
    rm -f "$root/usr/sbin/policy-rc.d"
}

# The systemctl calls recorded in ROOT since the last call of this function.
take_systemctl_calls() {
    local root=$1
    cat "$root/var/log/systemctl.calls"
    : >"$root/var/log/systemctl.calls"
}

# fails unless CALLS (one per line) are only `daemon-reload` and the verbs
# in ALLOWED (a regex), and names what started or enabled a service.
assert_no_start() {
    local what=$1 calls=$2 allowed=${3:-}
    local line verb
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        # The verb is the first word that is not an option.
        verb=$(printf '%s\n' "$line" | tr ' ' '\n' | grep -v '^-' | head -n 1)
        case "$verb" in
            daemon-reload | is-enabled | is-active) continue ;;
        esac
        if [ -n "$allowed" ] && printf '%s\n' "$verb" | grep -Eqx "$allowed"; then
            continue
        fi
        fail "$what: the maintainer scripts ran \`systemctl $line\`"
    done <<<"$calls"
}

# stage_systemd DIR: what `systemd-analyze verify --root=DIR` needs besides
# the units under test: the host's own unit files (sysinit.target,
# basic.target, ...) and /bin/kill (ExecReload=).
stage_systemd() {
    local root=$1
    mkdir -p "$root/usr/lib/systemd/system" "$root/usr/bin"
    cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
    cp -n "$(type -P kill)" "$root/usr/bin/kill"
    [ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
}

# http_get PORT PATH: the body of GET http://127.0.0.1:PORT/PATH on stdout
# (HTTP/1.0, headers dropped); fails (without a message) if nothing answers
# with 200. Plain bash, no curl.
http_get() {
    local port=$1 path=$2 response status
    response=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
        cat <&3
    ) || return 1
    status=$(head -n 1 <<<"$response" | tr -d '\r')
    case "$status" in
        "HTTP/1."?" 200"*) ;;
        *) return 1 ;;
    esac
    sed '1,/^\r\{0,1\}$/d' <<<"$response"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local port tries
    for tries in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    fail "no free TCP port found after $tries tries"
}

# wait_for SECONDS COMMAND...: runs COMMAND every 100 ms until it succeeds;
# fails (returns 1) after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
