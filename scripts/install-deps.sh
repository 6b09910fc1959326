#!/usr/bin/env bash
# Installs what building and testing redis-fence needs, only when it is missing:
# redis-server and redis-cli (Debian's redis-server and redis-tools) and libclang-dev
# (bindgen, used by the redis-module crate). Debian and Ubuntu only.
# Extra tools named as arguments (`valgrind` for `make bench` and `make leak`) are installed
# too, when missing: each is a command of the Debian package of the same name.
set -euo pipefail

missing=()
for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
if ! dpkg -s libclang-dev >/dev/null 2>&1 && ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    missing+=(libclang-dev)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
# De-duplicate.
readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install ${missing[*]} by hand" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
