#!/usr/bin/env bash
# The round (enqueue → status → cancel → status) under the same load on matchwell, in each
# fsync mode, and on examples/http_floor.rs (an actix-web server that does nothing), driven by
# the load-test harness (examples/loadtest.rs), taking turns: what the server costs per request
# against what an empty server costs (not part of CI).
#
#   scripts/harness-compare.sh                       # 3 turns of 20 s each, 64 connections
#   RUNS=5 DURATION=30s CONNECTIONS=32 scripts/harness-compare.sh
#   MODES="batch" scripts/harness-compare.sh         # only some fsync modes
#   SCENARIO=players RATE=5000 DURATION=60s scripts/harness-compare.sh
#                                                    # arriving players instead (no floor),
#                                                    # WATCH=poll: polling instead of events
#
# Prints, per server and turn, requests/s, p99 latency of each route, and the CPU time per
# request of the server and of the harness (from /proc), then the median server CPU per
# request of each server and its ratio to the floor's. In the players scenario, which the
# floor cannot serve (it pairs nobody), it prints time to match, rating gap and players
# instead of the ratio. REPORTS=DIR keeps every JSON report there, CHARTS=DIR every run's
# charts in DIR/<server>-<turn>/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

runs=${RUNS:-3}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-64}
modes=${MODES:-"none batch always"}
scenario=${SCENARIO:-round}
rate=${RATE:-5000}

cargo build --release --quiet --bin matchwell --example loadtest --example http_floor
bin=$PWD/target/release/matchwell
harness=$PWD/target/release/examples/loadtest
floor=$PWD/target/release/examples/http_floor

work=$(mktemp -d)
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

clear_matchwell_env
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

servers=()
for mode in $modes; do servers+=("matchwell-$mode"); done
if [[ $scenario == round ]]; then
    servers+=(floor)
    load=(--scenario round)
else
    load=(--scenario players --rate "$rate" --watch "${WATCH:-sse}")
fi

for run in $(seq "$runs"); do
    for server in "${servers[@]}"; do
        case $server in
            floor) serve_until_ready "$work/log" "$floor" 127.0.0.1:0 ;;
            matchwell-*)
                rm -rf "$work/data"
                serve_until_ready "$work/log" env MATCHWELL_JWT_SECRET="$secret" \
                    MATCHWELL_FSYNC="${server#matchwell-}" MATCHWELL_DATA_DIR="$work/data" \
                    MATCHWELL_LISTEN=127.0.0.1:0 MATCHWELL_LOG="${SERVER_LOG:-warn,matchwell=info}" \
                    "$bin" serve
                ;;
        esac
        "$harness" --url "http://$address" --secret "$secret" "${load[@]}" --connections "$connections" \
            --duration "$duration" --seed "$run" --server-pid "$server_pid" --quiet \
            --json "$work/$server-$run.json" ${CHARTS:+--charts "$CHARTS/$server-$run"} \
            > "$work/$server-$run.txt"
        stop_server
        python3 - "$work/$server-$run.json" "$server" "$run" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
p99 = ", ".join(f"{route.split()[0]} {figures['p99']:.2f}" for route, figures in sorted(report["latency_ms"].items()))
print(f"{sys.argv[2]:<16} run {sys.argv[3]}: {report['requests_per_s']:8.0f} req/s  p99 ms ({p99})  "
      f"server {report['server_cpu_us_per_request']:5.1f} µs/req  harness {report['harness_cpu_us_per_request']:5.1f} µs/req  "
      f"errors {report['errors'] or 'none'}")
if report["players"]["arrived"]:
    ttm, gap, players = report["time_to_match_ms"], report["rating_gap"], report["players"]
    print(f"{'':<16}        time to match ms p50 {ttm['p50']:.0f} p95 {ttm['p95']:.0f} p99 {ttm['p99']:.0f}  "
          f"rating gap mean {gap['mean']:.1f} p95 {gap['p95']:.0f}  players {players}")
EOF
        if [[ -n ${REPORTS:-} ]]; then
            mkdir -p "$REPORTS"
            cp "$work/$server-$run.json" "$REPORTS/"
        fi
    done
done

[[ $scenario == round ]] || exit 0
python3 - "$work" "$runs" "${servers[@]}" <<'EOF'
import json, statistics, sys
work, runs, servers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cpu = {s: [json.load(open(f"{work}/{s}-{r}.json"))["server_cpu_us_per_request"] for r in range(1, runs + 1)] for s in servers}
floor = cpu["floor"]
print()
print(f"{'server':<16} {'median µs/req':>14} {'ratio to floor (median of turns)':>34}")
for server in servers:
    ratios = [a / b for a, b in zip(cpu[server], floor)]
    print(f"{server:<16} {statistics.median(cpu[server]):>14.1f} {statistics.median(ratios):>34.2f}")
EOF
