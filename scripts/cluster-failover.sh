#!/usr/bin/env bash
# Failover after kill -9 (not part of CI): three clustered NATS servers with JetStream (R=3)
# and three matchwell nodes (release build, default lease settings). Each run kills one node
# with SIGKILL, then enqueues a player of each of 16 tenants through a surviving node, over and
# over, until every tenant's enqueue is acknowledged (201): the tenants whose partitions the
# killed node owned are refused until another node has taken them over. The run's figure is
# the time from the kill to the last tenant's first acknowledged write. The killed node is then
# started again, and the next run waits until every node is ready and owns partitions again.
# Prints each run's failover and their median.
#   cargo build --release --bin matchwell
#   scripts/cluster-failover.sh [RUNS]   # default 5
set -u
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUNS=${1:-5}
B=${CARGO_TARGET_DIR:-target}/release/matchwell
D=$(mktemp -d); PIDS=""
trap 'kill $PIDS $NODE_PIDS 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
clear_matchwell_env
start_nats_cluster "$D" 24

declare -A NODE_PID
NODE_PIDS=""
start_node() {
  serve_until_ready $D/node$1.log env MATCHWELL_NODE_ID=f$1 $B serve --listen 127.0.0.1:1809$1
  NODE_PID[$1]=$server_pid
  NODE_PIDS="${NODE_PID[*]}"
}
for n in 1 2 3; do start_node $n; done

TENANTS=$(seq -f 'f%g' 1 16)
declare -A TOKEN
for t in $TENANTS; do
  TOKEN[$t]=$($B token --user svc --role service --tenant $t 2>/dev/null)
done

# Whether node $1 is healthy (every partition owned and served), sees three live nodes and
# owns partitions itself.
settled() {
  local ready
  ready=$(curl -sf "http://127.0.0.1:1809$1/health/ready") &&
    grep -q '^{"status":"healthy"' <<< "$ready" &&
    grep -q '"live_nodes":\["f1","f2","f3"\]' <<< "$ready" &&
    grep -q '"owned":[1-9]' <<< "$ready"
}

# Enqueues one player of tenant $1 through node $2; prints the HTTP status.
enqueue() {
  curl -s -o /dev/null -w '%{http_code}' -m 2 -X POST \
    -H "Authorization: Bearer ${TOKEN[$1]}" -H 'content-type: application/json' \
    -d "{\"time_control\":\"5+3\",\"variant\":\"standard\",\"rated\":true,\"rating\":900,\"user_id\":\"probe-$RANDOM$RANDOM\"}" \
    "http://127.0.0.1:1809$2/v1/matchmaking/queue"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

FIGURES=()
for run in $(seq 1 "$RUNS"); do
  waited=0
  until settled 1 && settled 2 && settled 3; do
    if (( waited++ >= 600 )); then
      echo "the cluster did not settle within 60 s; readiness of each node:" >&2
      for n in 1 2 3; do curl -s "http://127.0.0.1:1809$n/health/ready" >&2; echo >&2; done
      exit 1
    fi
    sleep 0.1
  done
  victim=$(( (run - 1) % 3 + 1 )); survivor=$(( victim % 3 + 1 ))
  for t in $TENANTS; do
    [[ $(enqueue $t $survivor) == 201 ]] || { echo "tenant $t refused before the kill" >&2; exit 1; }
  done
  killed=$(now_ms)
  kill -9 "${NODE_PID[$victim]}"
  wait "${NODE_PID[$victim]}" 2>/dev/null
  pending=$TENANTS
  while [[ -n $pending ]]; do
    (( $(now_ms) - killed < 60000 )) || { echo "run $run: no failover within 60 s" >&2; exit 1; }
    still=""
    for t in $pending; do
      [[ $(enqueue $t $survivor) == 201 ]] || still="$still $t"
    done
    pending=$still
  done
  took=$(( $(now_ms) - killed ))
  FIGURES+=("$took")
  echo "run $run: kill -9 of node f$victim, every tenant's writes acknowledged through f$survivor after $took ms"
  start_node $victim
done
median=$(printf '%s\n' "${FIGURES[@]}" | median)
echo "failover after kill -9, median of $RUNS runs: $median ms (runs: ${FIGURES[*]})"
