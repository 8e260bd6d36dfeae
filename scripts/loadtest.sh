#!/usr/bin/env bash
# Load test of the HTTP API over loopback (not part of CI).
#
# Builds the release binary, mints tokens for many users with `matchwell token`, and for each
# run starts a fresh server on a temporary data directory and drives it with wrk. Two mixes:
# `round` (the default): every user goes round enqueue → status → cancel → status
# (scripts/loadtest.lua); `status`: every user enqueues once with curl before the run, then
# wrk only reads their entries (scripts/loadtest-status.lua). Prints each run's wrk report,
# then the median throughput and p99 latency over the runs.
#
#   scripts/loadtest.sh                        # fsync always (the server's default)
#   MATCHWELL_FSYNC=batch scripts/loadtest.sh  # or none: what persistence costs
#   MIX=status scripts/loadtest.sh             # status reads only
#   SERVER=floor scripts/loadtest.sh           # the same load on examples/http_floor.rs
#
# SERVER=floor runs an actix-web server that answers the same routes with a fixed entry and
# does nothing else: what the load generator, loopback TCP and actix-web cost on this machine.
#
# Settings (environment): SERVER (matchwell|floor), MIX (round|status),
# MATCHWELL_FSYNC (always|batch|none), LOG (the server's MATCHWELL_LOG; by default
# warn,matchwell::cli=info, which leaves the access log out), RUNS (3),
# DURATION (20s), CONNECTIONS (64), THREADS (1: one wrk thread drives 64 connections at
# 60,000 requests/s, and on a 2-core machine a second one only takes turns with the server's
# two workers), USERS (3000; each user writes at most 20 times a second and reads at most
# 200 times a second, the server's default per-user limits, so enough users keep 429s out of
# the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

fsync=${MATCHWELL_FSYNC:-always}
log_filter=${LOG:-warn,matchwell::cli=info}
server=${SERVER:-matchwell}
mix=${MIX:-round}
runs=${RUNS:-3}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-64}
threads=${THREADS:-1}
users=${USERS:-3000}

case $mix in
    round) script=scripts/loadtest.lua ;;
    status) script=scripts/loadtest-status.lua ;;
    *) echo "MIX must be round or status, not $mix" >&2; exit 2 ;;
esac
for tool in wrk curl; do
    if ! command -v $tool >/dev/null; then
        apt-get update && apt-get install -y $tool
    fi
done
cargo build --release --quiet
bin=$PWD/target/release/matchwell
case $server in
    matchwell) serve=("$bin" serve) ;;
    floor)
        cargo build --release --quiet --example http_floor
        serve=("$PWD/target/release/examples/http_floor" 127.0.0.1:0)
        ;;
    *) echo "SERVER must be matchwell or floor, not $server" >&2; exit 2 ;;
esac

work=$(mktemp -d)
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

# Only these variables configure the server and the token command.
clear_matchwell_env
export MATCHWELL_JWT_SECRET
MATCHWELL_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

echo "minting tokens for $users users"
seq 0 $((users - 1)) | xargs -P "$(nproc)" -I{} sh -c \
    'echo "load-{} $("$1" token --user load-{} --ttl-s 86400 --log warn)"' _ "$bin" > "$work/tokens"

# "3.06ms" / "812.00us" / "1.20s" → milliseconds.
to_ms() {
    awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v += 0; else if ($1 ~ /s$/) v *= 1000; printf "%.3f\n", v }'
}

command=(wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$script")
echo "server $server, fsync $fsync; ${command[*]} http://ADDRESS"
: > "$work/rates"
: > "$work/p99s"
for run in $(seq 1 "$runs"); do
    serve_until_ready "$work/server-$run.log" env MATCHWELL_LISTEN=127.0.0.1:0 \
        MATCHWELL_DATA_DIR="$work/data-$run" MATCHWELL_FSYNC="$fsync" MATCHWELL_LOG="$log_filter" \
        "${serve[@]}"
    if [[ $mix == status ]]; then
        # One entry per user, created over HTTP; wrk reads them (matched or still searching).
        xargs -P "$(nproc)" -L1 sh -c 'entry=$(curl -sf -X POST -H "Authorization: Bearer $2" \
            -H "Content-Type: application/json" \
            -d "{\"time_control\":\"5+3\",\"variant\":\"standard\",\"rated\":true,\"rating\":1500}" \
            "http://$0/v1/matchmaking/queue" | grep -o "\"id\":\"q_[0-9a-f]*" | cut -d\" -f4) \
            && echo "$1 $2 $entry"' "$address" < "$work/tokens" > "$work/entries"
    fi
    # Other work on the machine takes cores from both sides; the load says whether there was any.
    echo "--- run $run of $runs: http://$address (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    WRK_THREADS=$threads MATCHWELL_TOKENS=$work/tokens MATCHWELL_ENTRIES=$work/entries \
        "${command[@]}" "http://$address" \
        | tee "$work/wrk-$run.txt"
    stop_server
    awk '/^Requests\/sec:/ { print $2 }' "$work/wrk-$run.txt" >> "$work/rates"
    awk '$1 == "99%" { print $2 }' "$work/wrk-$run.txt" | to_ms >> "$work/p99s"
done

echo "--- server $server, mix $mix, fsync $fsync, $runs runs of ${command[*]}"
echo "requests/s per run: $(tr '\n' ' ' < "$work/rates")"
echo "p99 ms per run:     $(tr '\n' ' ' < "$work/p99s")"
echo "median: $(median < "$work/rates") requests/s, p99 $(median < "$work/p99s") ms"
