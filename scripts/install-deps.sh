#!/usr/bin/env bash
# Installs the Debian packages building and testing redis-fence needs, only those missing,
# then checks that what the build uses really works. Debian and Ubuntu only.
#
#   scripts/install-deps.sh              redis-server, redis-tools, libclang-dev
#   scripts/install-deps.sh valgrind     the same, plus the packages named (make bench, make leak)
#   scripts/install-deps.sh --check      install nothing: exit 1 naming what is missing
#
# A package counts as installed when dpkg says so (`dpkg-query -W -f='${Status}'` is
# "install ok installed"), never because some file of a similar name exists: Debian images ship
# libclang-cpp14 (/usr/lib/llvm-14/lib/libclang-cpp.so.14), which is not the libclang bindgen
# loads.
set -euo pipefail

BASE_PACKAGES=(redis-server redis-tools libclang-dev)

say() { echo "install-deps: $*"; }
die() {
    echo "install-deps: ERROR: $*" >&2
    exit 1
}

check_only=0
extra=()
for arg in "$@"; do
    case "$arg" in
        --check) check_only=1 ;;
        -*) die "unknown option $arg" ;;
        *) extra+=("$arg") ;;
    esac
done

command -v dpkg-query >/dev/null 2>&1 ||
    die "this is not a Debian or Ubuntu system (no dpkg-query); install by hand: ${BASE_PACKAGES[*]} ${extra[*]:-} (Redis 7.0+, libclang for bindgen)"

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for pkg in "${BASE_PACKAGES[@]}" "${extra[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$check_only" = 1 ]; then
        die "missing Debian packages: ${missing[*]} (run scripts/install-deps.sh)"
    fi
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install ${missing[*]} by hand"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${missing[*]} as root"
        sudo=(sudo)
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! "${sudo[@]}" apt-get update -qq >"$log" 2>&1; then
        cat "$log" >&2
        die "apt-get update failed (needed for ${missing[*]})"
    fi
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$log"
    for pkg in "${missing[@]}"; do
        installed "$pkg" || die "package $pkg is still not installed after apt-get install"
    done
fi

# What the build and the tests really use, checked by using it.

# redis-server and redis-cli (packages redis-server and redis-tools) must run.
redis-server --version >/dev/null 2>&1 || die "redis-server does not run (package redis-server)"
redis-cli --version >/dev/null 2>&1 || die "redis-cli does not run (package redis-tools)"
redis-benchmark --version >/dev/null 2>&1 || die "redis-benchmark does not run (package redis-tools)"

# bindgen (clang-sys) loads libclang at build time. libclang-dev brings it through a versioned
# runtime package (libclang1-14 on bookworm); the check asks dpkg which libclang shared
# libraries those packages installed and loads one, as bindgen will.
libclang_ok=0
libclang_tried=()
while read -r pkg; do
    [ -n "$pkg" ] && installed "$pkg" || continue
    while read -r file; do
        libclang_tried+=("$file")
        if python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]).clang_createIndex' "$file" \
            >/dev/null 2>&1; then
            libclang_ok=1
            break 2
        fi
    done < <(dpkg-query -L "$pkg" | grep -E '/libclang(-[0-9.]+)?\.so(\.[0-9.]+)?$' || true)
done < <(dpkg-query -W -f='${Package}\n' 'libclang1-*' 'libclang1' 2>/dev/null || true)
if [ "$libclang_ok" != 1 ]; then
    if [ ${#libclang_tried[@]} -eq 0 ]; then
        die "no libclang shared library is installed, which bindgen needs (package libclang-dev)"
    fi
    die "bindgen cannot load libclang (tried ${libclang_tried[*]}; package libclang-dev)"
fi

for pkg in "${extra[@]}"; do
    case "$pkg" in
        valgrind) valgrind --version >/dev/null 2>&1 || die "valgrind does not run (package valgrind)" ;;
    esac
done
