#!/usr/bin/env bash
# Runs the fuzz targets for a fixed time each (FUZZ_SECS, default 600),
# at most two at a time and at the lowest CPU priority, and prints the
# executions and the outcome of each. Needs cargo-fuzz
# (`cargo install cargo-fuzz`); the stable toolchain is enough, through
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags to rustc).
#
#   fuzz/run.sh                          # every target, 10 minutes each
#   FUZZ_SECS=60 fuzz/run.sh cookie_header session_id
set -uo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECS:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cookie_header record_decode record_request config_ini config_toml session_id signed_id signed_cookie key_file sealed_data sealed_cookie)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    cargo fuzz build -O "$t" || exit 1
done
mkdir -p logs

run() {
    local t=$1 status=0
    mkdir -p "corpus/$t"
    nice -n 19 cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"logs/$t.log" 2>&1 || status=$?
    local runs
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "logs/$t.log" | grep -oE '[0-9]+$')
    if [ "$status" -eq 0 ]; then
        echo "$t: ${runs:-?} executions in ${secs}s, no crash (log: fuzz/logs/$t.log)"
    else
        echo "$t: FAILED (exit $status) after ${runs:-?} executions; see fuzz/logs/$t.log and fuzz/artifacts/$t/"
    fi
    return "$status"
}

failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    run "${targets[$i]}" &
    pids+=($!)
    if ((i + 1 < ${#targets[@]})); then
        run "${targets[$((i + 1))]}" &
        pids+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
done
exit "$failed"
