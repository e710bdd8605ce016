#!/usr/bin/env bash
# Instructions and heap allocations per request inside the server
# (benches/src/bin/per_request.rs), for bare axum and for sessions on the
# RAM store: each measured at two request counts under valgrind, the
# difference divided by the difference of the counts. Deterministic, so a
# change of a few percent shows, unlike in the load benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sessions-bench --bin per-request --locked
bin=${CARGO_TARGET_DIR:-target}/release/per-request
small=${SMALL:-2000}
large=${LARGE:-6000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>/dev/null >/dev/null
    callgrind_annotate "$out/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
allocations() {
    valgrind --tool=dhat --dhat-out-file="$out/dh" "$bin" "$1" "$2" 2>&1 >/dev/null |
        awk '/Total:/ {gsub(",", "", $6); print $6}'
}
# SYSTEMS="sessions signed sealed" measures what sign_ids and seal_records add.
for system in ${SYSTEMS:-bare sessions}; do
    i1=$(instructions "$system" "$small"); i2=$(instructions "$system" "$large")
    a1=$(allocations "$system" "$small"); a2=$(allocations "$system" "$large")
    n=$((large - small))
    echo "$system: $(( (i2 - i1) / n )) instructions and $(awk "BEGIN {printf \"%.1f\", ($a2 - $a1) / $n}") allocations per request"
done
