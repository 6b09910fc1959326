#!/usr/bin/env bash
# The Python client's checks (`make python-client`; part of `make test`):
#   1. a virtual environment in target/python-venv (python3 -m venv), made again only when
#      clients/python/pyproject.toml or clients/python/requirements-dev.txt (or the python3)
#      changed: the pinned tools and redis-py of requirements-dev.txt, then the package
#      (clients/python, installed from a copy, so nothing is written into clients/python);
#   2. ruff check, ruff format --check (clients/python/ruff.toml), mypy --strict on the package
#      and on its tests (clients/python/mypy.ini);
#   3. pytest clients/python/tests against real servers with the module;
#   4. the examples (examples/python/run.sh) with the venv's python.
#
#   scripts/python-client.sh               all four
#   scripts/python-client.sh --tests-only  1 and 3 (another server: make test-redis8)
#   scripts/python-client.sh --no-lint     1, 3 and 4 (make test-valkey9)
#   scripts/python-client.sh --venv-only   1 (make bench-python)
#   Extra arguments after -- go to pytest (e.g. -- -k cart -x).
#
#   REDIS_SERVER  the server binary (default redis-server on PATH)
#   FENCE_MODULE  the module (default <repo>/target/debug/libredis_fence.so: cargo build first)
#   PYTHON3       the interpreter the venv is made from (default python3)
#   FENCE_PYTHON_VENV  where the venv is (default <repo>/target/python-venv)
#
# Needs network access to PyPI the first time (and whenever the requirements change). Nothing is
# installed outside target/python-venv, except Debian's python3-venv (through
# scripts/install-deps.sh) when `python3 -m venv` fails for lack of ensurepip. No step is ever
# skipped: a step that cannot run fails the script.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg_dir="$root/clients/python"
venv="${FENCE_PYTHON_VENV:-$root/target/python-venv}"
stamp="$venv/.fence-requirements.sha256"
pkg_stamp="$venv/.fence-package.sha256"
server="${REDIS_SERVER:-redis-server}"
module="${FENCE_MODULE:-$root/target/debug/libredis_fence.so}"
python3="${PYTHON3:-python3}"

lint=1
examples=1
venv_only=0
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tests-only) lint=0 examples=0 ;;
        --no-lint) lint=0 ;;
        --venv-only) venv_only=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "python-client: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "python-client: $*"; }
die() {
    {
        echo
        echo "################################################################################"
        echo "## python-client: FAILED: $*"
        echo "################################################################################"
    } >&2
    exit 1
}
started_all=$SECONDS
timings=()
failed=()
# Runs one step, timing it. A failed step is reported at once and again at the end, with its
# hint; the later steps still run (one run shows every problem), and the script then fails.
step() {
    local name="$1" hint="$2"
    shift 2
    say "== $name"
    local t0=$SECONDS rc=0
    "$@" || rc=$?
    local result=ok
    if [ "$rc" -ne 0 ]; then
        result="FAILED (exit $rc)"
        failed+=("$name: exit $rc. $hint")
        echo "python-client: ** $name FAILED (exit $rc). $hint" >&2
    fi
    timings+=("$(printf '%-34s %4d s  %s' "$name" $((SECONDS - t0)) "$result")")
}
summary() {
    say "wall time per step (server $server):"
    local t
    for t in "${timings[@]}"; do say "  $t"; done
    say "  $(printf '%-34s %4d s' total $((SECONDS - started_all)))"
}

# -- prerequisites -------------------------------------------------------------------------

[ -f "$pkg_dir/pyproject.toml" ] || die "no $pkg_dir/pyproject.toml"
[ -f "$pkg_dir/requirements-dev.txt" ] || die "no $pkg_dir/requirements-dev.txt"
command -v "$python3" >/dev/null 2>&1 ||
    die "$python3 not found: install Python 3.9 or newer (or set PYTHON3)"
"$python3" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "$python3 is Python $("$python3" -c 'import platform; print(platform.python_version())'); the client needs 3.9 or newer (set PYTHON3)"
[ -f "$module" ] ||
    die "the fence module is not at $module: run 'cargo build' at the repository root (or set FENCE_MODULE)"
"$server" --version >/dev/null 2>&1 ||
    die "the server $server does not run: install redis-server (make deps) or set REDIS_SERVER"

# -- the virtual environment ---------------------------------------------------------------

requirements_hash() {
    {
        cat "$pkg_dir/pyproject.toml" "$pkg_dir/requirements-dev.txt"
        "$python3" -c 'import sys; print(sys.version, sys.executable)'
    } | sha256sum | cut -d' ' -f1
}

# Files of the package, tests and caches left out (a change reinstalls the package only).
package_files() {
    (cd "$pkg_dir" && find . -type f \
        -not -path './tests/*' -not -path '*/__pycache__/*' -not -path '*/.*_cache/*' \
        -not -path './build/*' -not -path '*.egg-info/*' -not -name '*.pyc' -print0 |
        sort -z)
}
package_hash() {
    (cd "$pkg_dir" && package_files | xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

# python3 -m venv, and when it fails because ensurepip is missing (Debian's system Python
# without python3-venv), Debian's python3-venv packages through scripts/install-deps.sh.
make_venv() {
    local log="$venv.log"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if "$python3" -m venv "$venv" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    if ! grep -q -i -E 'ensurepip|python3.*-venv' "$log"; then
        cat "$log" >&2
        return 1
    fi
    cat "$log" >&2
    local exe ver owner
    exe="$("$python3" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    ver="$("$python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    # Only a Python Debian installed can be given ensurepip by a Debian package.
    if ! command -v dpkg-query >/dev/null 2>&1 ||
        ! owner="$(dpkg-query -S "$exe" 2>/dev/null)"; then
        say "$exe has no ensurepip and is not a Debian package: install a Python with venv" \
            "support (e.g. from python.org or pyenv), or set PYTHON3" >&2
        return 1
    fi
    say "$exe (Debian package ${owner%%:*}) cannot make a venv: installing python3-venv" \
        "python$ver-venv"
    "$root/scripts/install-deps.sh" python3-venv "python$ver-venv" || return 1
    rm -rf "$venv"
    if ! "$python3" -m venv "$venv" >"$log" 2>&1; then
        cat "$log" >&2
        return 1
    fi
    rm -f "$log"
}

# pip, quiet unless it fails; PIP_* settings of the environment (PIP_FIND_LINKS, an index)
# apply. Never pip's user site: the venv only.
venv_pip() {
    local log
    log="$(mktemp)"
    if PIP_USER=0 PIP_REQUIRE_VIRTUALENV=1 "$venv/bin/python" -m pip --disable-pip-version-check \
        "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    cat "$log" >&2
    rm -f "$log"
    echo "python-client: pip $* failed (is PyPI reachable? proxy settings?)" >&2
    return 1
}

# The package is installed from a copy in the venv (a build in clients/python would leave
# build/ and src/*.egg-info there), non-editable: a changed file is reinstalled next run.
copy_package() {
    local copy="$venv/package-src"
    rm -rf "$copy"
    mkdir -p "$copy"
    (cd "$pkg_dir" && package_files | tar --null -T - -cf -) | tar -C "$copy" -xf -
}

setup_venv() {
    local want have_pkg
    want="$(requirements_hash)"
    have_pkg="$(package_hash)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$venv/bin/python" -c 'import pytest, mypy, redis' 2>/dev/null; then
        say "reusing $venv (requirements unchanged)"
        if [ "$(cat "$pkg_stamp" 2>/dev/null)" != "$have_pkg" ]; then
            say "reinstalling the package (clients/python changed)"
            rm -f "$pkg_stamp"
            copy_package
            # Its dependencies can only change with pyproject.toml, which makes a new venv.
            venv_pip install --quiet --no-deps --force-reinstall "$venv/package-src" || return 1
            echo "$have_pkg" >"$pkg_stamp"
        fi
    else
        say "making $venv (requirements changed or no venv yet; needs PyPI)"
        make_venv || {
            echo "python-client: $python3 -m venv $venv failed" >&2
            return 1
        }
        copy_package
        # The tools and the package in one resolution: the package's dependencies must agree
        # with the pins.
        venv_pip install --quiet -r "$pkg_dir/requirements-dev.txt" "$venv/package-src" ||
            return 1
        echo "$have_pkg" >"$pkg_stamp"
        echo "$want" >"$stamp"
    fi
    # What the tests and examples import is the installed copy, not clients/python/src.
    (cd / && "$venv/bin/python" -c 'import redis_fence, redis; print("python-client: redis_fence from", redis_fence.__file__, "on redis-py", redis.__version__)') || {
        echo "python-client: the installed package redis_fence does not import (above)" >&2
        return 1
    }
}

# Caches under target/, never in the source tree.
export RUFF_CACHE_DIR="$root/target/python-cache/ruff"
export MYPY_CACHE_DIR="$root/target/python-cache/mypy"
export PYTHONDONTWRITEBYTECODE=1
export REDIS_SERVER="$server" FENCE_MODULE="$module"

server_version="$("$server" --version | head -n 1 | sed -n 's/^\([A-Za-z]*\) server v=\([0-9.]*\).*/\1 \2/p')"
say "server: $server (${server_version:-unknown version}); module: $module"
# Two runs at once (two shells, two servers) make or update the venv one after the other.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    say "waiting for another run that is making $venv"
    flock 9
fi
step "virtual environment" \
    "It is $venv; delete it to start over. Run: make python-client" setup_venv
exec 9>&-
if [ ${#failed[@]} -gt 0 ]; then
    summary
    die "${failed[0]}"
fi
if [ "$venv_only" = 1 ]; then
    exit 0
fi

cd "$root"
if [ "$lint" = 1 ]; then
    step "ruff check" "Fix the findings (many with: $venv/bin/ruff check --fix clients/python)." \
        "$venv/bin/ruff" check clients/python
    step "ruff format --check" "Format with: $venv/bin/ruff format clients/python" \
        "$venv/bin/ruff" format --check clients/python
    step "mypy --strict (package)" "Settings: clients/python/mypy.ini." \
        bash -c "cd clients/python && '$venv/bin/mypy' --config-file mypy.ini --strict"
    # The tests call redis-py's execute_command (not annotated) everywhere: allowed there.
    step "mypy --strict (tests)" "Settings: clients/python/mypy.ini." \
        bash -c "cd clients/python && '$venv/bin/mypy' --config-file mypy.ini --strict \
            --allow-untyped-calls tests"
fi

step "pytest on ${server_version:-$(basename "$server")}" \
    "Rerun one test with: $venv/bin/pytest clients/python/tests -k NAME (REDIS_SERVER=$server)" \
    "$venv/bin/pytest" clients/python/tests -p no:cacheprovider --strict-markers -ra \
    ${pytest_args[@]+"${pytest_args[@]}"}

if [ "$examples" = 1 ]; then
    step "examples/python/run.sh" "The examples ran with PYTHON=$venv/bin/python." \
        env PYTHON="$venv/bin/python" "$root/examples/python/run.sh"
fi

summary
if [ ${#failed[@]} -gt 0 ]; then
    {
        echo
        echo "################################################################################"
        echo "## python-client: FAILED on $server:"
        for f in "${failed[@]}"; do echo "##   $f"; done
        echo "################################################################################"
    } >&2
    exit 1
fi
say "passed on $server"
