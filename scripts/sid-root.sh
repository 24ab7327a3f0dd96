#!/usr/bin/env bash
# A Debian sid root with CPython 3.14 and 3.15 from Debian's binary packages, and a way to run
# a command in it with this checkout mounted at /src.
#
#   scripts/sid-root.sh               make the root (once per machine); its path is the last line
#                                     on stdout
#   scripts/sid-root.sh run CMD...    run CMD inside the root (made first if need be), in /src
#
# Why a root: the mirror serves no source package of python3.14 or python3.15 for
# scripts/build-python.sh to build, but sid's binary packages are there. They need sid's libc,
# newer than this machine's, so they run in a sid tree of their own, made by Debian's
# `debootstrap --variant=minbase` and entered with pivot_root (a chroot, less its limits).
#
# The root lives in a cache outside the repository, ${COREWORK_SID_ROOT:-$HOME/.cache/corework/sid-root}.
# A cached root whose interpreters start, with what pip, venv and the tests need, is reused at
# once; only a machine's first run pays for it (a few minutes, mostly downloads). Like
# scripts/build-python.sh it is safe to run twice at once and safe to kill: a lock makes a
# second run wait for the first and then reuse its root, and the root is made in a staging
# directory that is moved into place only once it passes its check, so a half-made root is
# never taken for a cached one. A root made for another package list is made again.
#
# `run` enters the root in a mount namespace of its own (unshare --mount): the checkout bound
# at /src, /proc, /sys, the machine's /dev and /dev/pts, a private /dev/shm, /tmp and /root
# (so that the tests' check for leftover /dev/shm segments sees only this run's, and the
# cached root gathers no litter), and the machine's /etc/resolv.conf and CA bundle so that
# pip reaches PyPI (through whatever TLS proxy the machine trusts: pip is pointed at that
# bundle). Every
# mount dies with the namespace, however the command ends, and the cached root is not
# changed. The command gets a clean environment: this machine's pip settings (indexes and
# wheel folders under /opt) mean nothing inside, where pip uses plain PyPI. Venvs made inside
# (e.g. /src/.venv-3.14, git-ignored) hold paths of the root: use them only through `run`.
#
# Environment: COREWORK_SID_ROOT (above); COREWORK_DEBIAN_MIRROR (default
# http://deb.debian.org/debian). Needs root, debootstrap (installed with apt-get when missing)
# and util-linux's unshare.
set -euo pipefail

log() { echo "sid-root: $*" >&2; }
die() { log "error: $*"; exit 1; }

root="${COREWORK_SID_ROOT:-$HOME/.cache/corework/sid-root}"
mirror="${COREWORK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")/.." && pwd)"
minors=(3.14 3.15)
# gcc and libc6-dev: for a test dependency that has no wheel for a new CPython yet.
packages=(ca-certificates gcc libc6-dev)
for minor in "${minors[@]}"; do
    packages+=("python$minor" "python$minor-venv" "python$minor-dev" "libpython$minor-testsuite")
done
stamp=.corework-sid-root   # in the root: the package list it was made with

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mounts and pivot_root)"

# Enter root $1 and run $2... there, in /src when the checkout is mounted, with the mounts
# described above; $CHECKOUT (when set) is what goes to /src.
enter() {
    local dir="$1"
    shift
    local env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
               LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
               PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    local name
    # What CI and the tests read; nothing of pip's or of the machine's Python set-up.
    for name in CI TERM PYTHONUNBUFFERED PYTHONDONTWRITEBYTECODE PIP_DEFAULT_TIMEOUT $(compgen -e COREWORK_ || true); do
        [ -n "${!name+x}" ] && env+=("$name=${!name}")
    done
    # The mounts are made by a shell inside the new namespace: none is seen outside it, and
    # all go when its last process exits, killed or not.
    unshare --mount --fork -- bash -euo pipefail -c '
        dir="$1" checkout="$2" nenv="$3"; shift 3
        env=("${@:1:nenv}"); shift "$nenv"
        mount --make-rprivate /
        mount --bind "$dir" "$dir"   # pivot_root wants the new root to be a mount point
        mount -t proc proc "$dir/proc"
        mount -t sysfs sysfs "$dir/sys"
        mount --rbind /dev "$dir/dev"
        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dir/dev/shm"
        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dir/tmp"
        mount -t tmpfs -o mode=0700 tmpfs "$dir/root"   # HOME: caches of pip, matplotlib
        [ -e "$dir/etc/resolv.conf" ] || : >"$dir/etc/resolv.conf"
        mount --bind /etc/resolv.conf "$dir/etc/resolv.conf"
        bundle=/etc/ssl/certs/ca-certificates.crt
        if [ -f "$bundle" ] && [ -f "$dir$bundle" ]; then
            mount --bind "$bundle" "$dir$bundle"
            mount -o remount,bind,ro "$dir$bundle"
        fi
        cd_to=/
        if [ -n "$checkout" ]; then
            mkdir -p "$dir/src"
            mount --bind "$checkout" "$dir/src"
            cd_to=/src
        fi
        # pivot_root, not chroot: a chrooted process may not make a user namespace (the
        # kernel refuses it), and a test does (unshare --user). From here on the commands
        # are the root'"'"'s own; the machine'"'"'s tree is detached.
        mkdir -p "$dir/.old-root"
        cd "$dir"
        pivot_root . .old-root
        umount -l /.old-root
        cd "$cd_to"
        exec /usr/bin/env -i "${env[@]}" "$@"
    ' bash "$dir" "${CHECKOUT:-}" "${#env[@]}" "${env[@]}" "$@"
}

# A root counts as made when it has this package list and each interpreter starts with what
# the tests and their set-up need. The same check gates the move into the cache.
check() {
    local dir="$1"
    [ "$(cat "$dir/$stamp" 2>/dev/null)" = "${packages[*]}" ] || { log "$dir: not made for this package list"; return 1; }
    local minor
    for minor in "${minors[@]}"; do
        CHECKOUT="" enter "$dir" "python$minor" -c '
import ensurepip, ssl, venv, sqlite3, ctypes, lzma, bz2, multiprocessing, test.support, sysconfig
assert sysconfig.get_config_var("INCLUDEPY"), "no headers"
import os; assert os.path.exists(os.path.join(sysconfig.get_config_var("INCLUDEPY"), "Python.h")), "no Python.h"
' || { log "$dir: python$minor fails its check"; return 1; }
    done
    CHECKOUT="" enter "$dir" gcc --version >/dev/null || { log "$dir: no gcc"; return 1; }
}

cached() { [ -d "$root" ] && check "$root" 2>/dev/null; }

make_root() {
    if cached; then return 0; fi
    local parent
    parent="$(dirname "$root")"
    mkdir -p "$parent"
    # One maker at a time: a second run waits here, then finds the root made.
    exec 9>"$root.lock"
    if ! flock -n 9; then
        log "another run is making $root; waiting for it"
        flock 9
    fi
    if cached; then exec 9>&-; return 0; fi

    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        { apt-get update -q && apt-get install -y -q debootstrap; } >&2 \
            || die "could not install debootstrap"
    fi

    # Staging dirs of killed runs (SIGKILL skips the trap below): ours to remove, we hold the
    # lock. Nothing is mounted in them: mounts live only in namespaces gone with their runs.
    rm -rf "$root".build.*
    local work
    work="$(mktemp -d "$root.build.XXXXXX")"   # beside $root, on its filesystem: mv is atomic
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    log "making a Debian sid root in $root (staging in $work) from $mirror"
    local start=$SECONDS
    if ! debootstrap --variant=minbase --include=ca-certificates sid "$work" "$mirror" >&2; then
        tail -n 5 "$work/debootstrap/debootstrap.log" >&2 2>/dev/null || true   # gone with $work
        die "debootstrap failed (no network to $mirror?)"
    fi
    mkdir -p "$work/src" "$work/.old-root"   # where `run` mounts the checkout, and pivots
    chmod 755 "$work"      # mktemp's 0700 would keep apt's _apt user out of the root
    # The mirror may be a frozen snapshot whose Release file is past its Valid-Until date
    # (this machine's is): apt then refuses the index. Its signature is still checked.
    echo 'Acquire::Check-Valid-Until "false";' >"$work/etc/apt/apt.conf.d/99corework"
    log "debootstrap done in $((SECONDS - start)) s; installing ${packages[*]}"
    # No recommends: what the packages need, not what is nice to have with them.
    CHECKOUT="" enter "$work" sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@" && apt-get clean' \
        sh "${packages[@]}" >&2 || die "apt-get install in the root failed"
    echo "${packages[*]}" >"$work/$stamp"
    check "$work" || die "the new root fails its check (see above)"

    # An old root (made for another package list) is renamed aside, not deleted in place,
    # so the swap is two renames; it is removed after (by the next maker, if we are killed).
    if [ -e "$root" ]; then mv "$root" "$work.old"; fi
    mv "$work" "$root"
    rm -rf "$work.old"
    trap - EXIT
    cached || die "$root fails its check after the move"
    log "made $root in $((SECONDS - start)) s"
    exec 9>&-
}

case "${1:-}" in
    "")
        make_root
        echo "$root"
        ;;
    run)
        shift
        [ $# -gt 0 ] || die "usage: $0 run CMD..."
        make_root
        CHECKOUT="$here" enter "$root" "$@"
        ;;
    *)
        die "usage: $0 [run CMD...]"
        ;;
esac
