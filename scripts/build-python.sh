#!/usr/bin/env bash
# Build a CPython that this machine lacks (3.14, or the free-threaded 3.14t, 3.13t, ...) from
# Debian's source package, into a cache directory outside the repository.
#
#   scripts/build-python.sh 3.14     ->  $CACHE/3.14/bin/python3.14
#   scripts/build-python.sh 3.14t    ->  $CACHE/3.14t/bin/python3.14t   (./configure --disable-gil)
#
# CACHE is ${COREWORK_PYTHON_CACHE:-$HOME/.cache/corework/pythons}. The interpreter's path is the
# last line on stdout; everything else goes to stderr, so CI can do
# `python="$(scripts/build-python.sh 3.14t)"`. A cached interpreter that runs is reused at once,
# so only a machine's first run pays for the build (about 2-3 minutes with `make -j2`).
#
# Safe to run twice at once and safe to kill: a lock makes a second run wait for the first
# build and then reuse it, and the build is installed into a staging directory that is moved
# into place only once the interpreter runs and has its modules, so a half-built prefix is
# never mistaken for a cached one.
#
# Where the source comes from: Debian's source packages (python3.14, python3.13, ...), through
# apt with a private sources list and lists directory (deb-src lines only, Debian's own
# archive key), so the machine's apt setup is neither read for packages nor changed. apt
# checks each file against the signed index. We build the *.orig.tar.xz only: it is the
# plain upstream CPython release. Debian's patches (debian/patches) adapt CPython to being
# the system Python in /usr (dist-packages, multiarch paths, a patched-out ensurepip), which
# is not what a private --prefix build that creates venvs and runs pip wants.
#
# Environment: COREWORK_PYTHON_CACHE (above); COREWORK_DEBIAN_MIRROR (default: the machine's
# Debian mirror, read from its apt sources); COREWORK_DEBIAN_SUITES (default "sid forky
# trixie": where python3.14 and python3.13 live); COREWORK_BUILD_JOBS (default: nproc).
set -euo pipefail

log() { echo "build-python: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] && [[ $1 =~ ^3\.[0-9]+t?$ ]] || die "usage: $0 3.14|3.14t (any 3.X or 3.Xt)"
spec="$1"
minor="${spec%t}"             # 3.14
ft="${spec#"$minor"}"         # "t" for a free-threaded build, else ""
cache="${COREWORK_PYTHON_CACHE:-$HOME/.cache/corework/pythons}"
prefix="$cache/$spec"
exe_name="python$minor$ft"    # what `make install` names it: python3.14 or python3.14t

# An interpreter counts as built when it starts, has what pip and the tests need, and is
# (or is not) free-threaded as asked. The same check gates the move into the cache.
check() {
    "$1" - "$ft" <<'EOF'
import sys, sysconfig
missing = []
for name in ("ssl", "zlib", "_ctypes", "sqlite3", "bz2", "lzma", "_hashlib", "pyexpat", "ensurepip", "venv"):
    try:
        __import__(name)
    except ImportError as e:
        missing.append(f"{name} ({e})")
if missing:
    sys.exit("missing modules: " + ", ".join(missing))
want_ft = sys.argv[1] == "t"
if bool(sysconfig.get_config_var("Py_GIL_DISABLED")) != want_ft:
    sys.exit(f"Py_GIL_DISABLED is {sysconfig.get_config_var('Py_GIL_DISABLED')!r}")
if want_ft and sys._is_gil_enabled():
    sys.exit("free-threaded build, but the GIL is enabled")
EOF
}

cached() { [ -x "$prefix/bin/$exe_name" ] && check "$prefix/bin/$exe_name" 2>/dev/null; }

if cached; then echo "$prefix/bin/$exe_name"; exit 0; fi

mkdir -p "$cache"
# One build per spec at a time: a second CI run waits here, then finds the cached one.
exec 9>"$cache/.$spec.lock"
if ! flock -n 9; then
    log "another build of $spec is running; waiting for it"
    flock 9
fi
if cached; then echo "$prefix/bin/$exe_name"; exit 0; fi

# Work dirs of killed builds (SIGKILL skips the trap below): ours to remove, we hold the lock.
rm -rf "$cache/.build-$spec".*
work="$(mktemp -d "$cache/.build-$spec.XXXXXX")"   # same filesystem as $prefix: mv is atomic
trap 'rm -rf "$work"' EXIT
log "building CPython $spec into $prefix (work dir $work)"
start=$SECONDS

# --- fetch the source ------------------------------------------------------------------
mirror="${COREWORK_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # The first Debian archive URI of the machine's own apt sources (deb822 or one-line).
    mirror="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v '^[[:space:]]*#' | grep -o -E 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
        | head -n 1 | tr -d '[:space:]' || true)"
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt; set COREWORK_DEBIAN_MIRROR"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring is missing (Debian's debian-archive-keyring package)"

apt_dir="$work/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/dl"
for suite in ${COREWORK_DEBIAN_SUITES:-sid forky trixie}; do
    echo "deb-src [signed-by=$keyring] $mirror $suite main"
done >"$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -q
)
# As root, apt would hand downloads to the _apt user, who may not write into $work.
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o "APT::Sandbox::User=root")

log "reading the source index of $mirror (${COREWORK_DEBIAN_SUITES:-sid forky trixie})"
apt-get "${apt_opts[@]}" update >&2 || die "apt-get update failed (no network to $mirror?)"
mapfile -t versions < <(apt-cache "${apt_opts[@]}" showsrc --only-source "python$minor" 2>/dev/null \
    | sed -n 's/^Version: //p' | sort -u -r -V)
[ ${#versions[@]} -gt 0 ] || die "no source package python$minor in those suites"

# Newest first; a mirror may lack some versions' files (404), so fall back to older ones.
orig=""
for version in "${versions[@]}"; do
    log "fetching python$minor=$version"
    if (cd "$work/dl" && apt-get "${apt_opts[@]}" source --download-only "python$minor=$version" >&2); then
        for f in "$work"/dl/python"$minor"_*.orig.tar.*; do
            [[ $f == *.asc ]] || orig="$f"   # the upstream tarball, not its signature
        done
        [ -n "$orig" ] && break
    fi
    log "python$minor=$version could not be fetched; trying an older version"
    rm -f "$work"/dl/*
done
[ -n "$orig" ] || die "no version of python$minor could be downloaded (${versions[*]})"

mkdir "$work/src"
tar -xf "$orig" -C "$work/src" --strip-components=1

# --- build -----------------------------------------------------------------------------
# No PGO/LTO and no test run: a plain optimised build is what the tests need, in minutes.
# --with-ensurepip (the default) puts pip in, so `python -m venv` gives venvs with pip.
configure_opts=(--prefix="$prefix")
[ "$ft" = t ] && configure_opts+=(--disable-gil)
jobs="${COREWORK_BUILD_JOBS:-$(nproc)}"
cd "$work/src"
log "configure ${configure_opts[*]}"
nice -n 19 ./configure -q "${configure_opts[@]}" >&2
log "make -j$jobs"
nice -n 19 make -s -j"$jobs" >&2
# DESTDIR stages the install; the prefix compiled into it (sysconfig) stays the real one.
log "make install (staged)"
nice -n 19 make -s install DESTDIR="$work/stage" >&2

staged="$work/stage$prefix"
check "$staged/bin/$exe_name" >&2 || die "the built interpreter failed its check (missing -dev packages? see above)"

rm -rf "$prefix"
mv "$staged" "$prefix"
cached || die "$prefix/bin/$exe_name does not run after the move"
log "built $("$prefix/bin/$exe_name" -VV | head -n 1) in $((SECONDS - start)) s"
echo "$prefix/bin/$exe_name"
