#!/usr/bin/env bash
# A cross-check of the benchmark's "many sessions" row on RAM with wrk, a
# load generator that is not ours: bare axum, sessions and tower-sessions,
# each served by `sessions-bench __serve` in a process of its own, 2,000
# sessions (cookies fetched first, then sent in turn over 32 connections,
# the setting of the first wrk measurement, kept so that runs compare; bare
# axum is sent cookies of the same shape), systems alternated round by
# round. Prints each round and the medians with their ratios.
#
#   ROUNDS=3 SECONDS_PER_ROUND=8 benches/wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
secs=${SECONDS_PER_ROUND:-8}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
cargo build --release -p sessions-bench --locked >&2
bin=target/release/sessions-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# One round of one system: its requests/s, or the failure.
round() {
    local system=$1 dir=$work/$1
    mkdir -p "$dir"
    rm -f "$dir/in" && mkfifo "$dir/in"
    "$bin" __serve "$system" ram "wrk$$" 0 2 < "$dir/in" > "$dir/addr" &
    local server=$!
    exec {keep}> "$dir/in"   # the server serves until its stdin closes
    for _ in $(seq 100); do [ -s "$dir/addr" ] && break; sleep 0.1; done
    [ -s "$dir/addr" ] || { echo "$system: the server did not start" >&2; exit 1; }
    local addr
    addr=$(tr -d '"\n' < "$dir/addr")
    # Bare axum gets cookies of the same shape, which it ignores: every
    # system's client then does the same work per request, and the ratios
    # tell the servers apart.
    od -An -v -tx1 -N40000 /dev/urandom | tr -d ' \n' | fold -w40 |
        sed 's/^/session_id=/' > "$dir/cookies"
    if [ "$system" != bare ]; then
        curl -s -D - "http://$addr/?visitor=[1-2000]" |
            sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' > "$dir/cookies"
        [ "$(wc -l < "$dir/cookies")" -eq 2000 ] || { echo "$system: did not hand out 2,000 cookies" >&2; exit 1; }
    fi
    cat > "$dir/load.lua" <<LUA
local cookies = {}
for line in io.lines("$dir/cookies") do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", { ["Cookie"] = cookies[i % #cookies + 1] })
end
LUA
    local out
    out=$(wrk -t2 -c32 -d"${secs}s" -s "$dir/load.lua" "http://$addr/")
    exec {keep}>&-
    wait "$server" || true
    if grep -q "Non-2xx" <<<"$out"; then
        echo "$system: $(grep Non-2xx <<<"$out")" >&2
        exit 1
    fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

echo "wrk -t2 -c32 -d${secs}s, 2,000 sessions, $rounds rounds, $(nproc) cores; server: sessions-bench __serve (2 threads)"
for r in $(seq "$rounds"); do
    for system in bare ours tower-sessions; do
        rps=$(round "$system")
        echo "$rps" >> "$work/$system.rps"
        echo "round $r $system $rps"
    done
done
median() { sort -n "$work/$1.rps" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
bare=$(median bare); ours=$(median ours); tower=$(median tower-sessions)
awk -v b="$bare" -v o="$ours" -v t="$tower" 'BEGIN {
    printf "median requests/s: bare axum %.0f, sessions %.0f (%.2fx bare), tower-sessions %.0f (%.2fx bare); sessions / tower-sessions %.2fx\n", b, o, o / b, t, t / b, o / t
}'
