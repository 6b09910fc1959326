#!/usr/bin/env bash
# The release module of an earlier commit, for the "before" column of make bench's Big ledger
# section: built once into target/bench-before/<commit>/ (from `git archive`, so the work tree
# is not touched), then reused. Prints the module's path on stdout; prints nothing, saying why
# on stderr, when no commit is given or this clone does not have it (the section then runs
# without a before column).
#
#   scripts/bench-before.sh e13593e
set -euo pipefail

rev="${1:-}"
if [ -z "$rev" ]; then
    exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! commit="$(git -C "$root" rev-parse --verify --quiet "$rev^{commit}")"; then
    echo "bench-before: commit $rev is not in this clone: no before column" >&2
    exit 0
fi
dir="$root/target/bench-before/${commit:0:12}"
so="$dir/target/release/libredis_fence.so"
if [ ! -f "$so" ]; then
    echo "bench-before: building the module of $rev in $dir (once)" >&2
    rm -rf "$dir/tree"
    mkdir -p "$dir/tree"
    git -C "$root" archive "$commit" | tar -x -C "$dir/tree"
    (cd "$dir/tree" && "${CARGO:-cargo}" build --release --lib --target-dir "$dir/target") >&2
fi
echo "$so"
