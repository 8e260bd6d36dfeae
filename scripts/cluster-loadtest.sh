#!/usr/bin/env bash
# Cluster mode under load (not part of CI): three clustered NATS servers with JetStream,
# three matchwell nodes (release build), and one loadtest per node, each on a tenant of its
# own (so most requests are forwarded to another node). Prints each harness's report, the
# first node's cluster metrics and the CPU time of each server. Players still waiting 2 s
# after arrivals end cancel (a match takes well under a second here).
# Beside the load, the JetStream probe (cluster/examples/jetstream_probe.rs) times appends to a
# stream of three replicas of its own, 100 a second: the floor of a write's latency on this
# machine under this load, to compare the enqueue percentiles with.
#   cargo build --release --bin matchwell --example loadtest -p matchwell-cluster --example jetstream_probe
#   scripts/cluster-loadtest.sh [PLAYERS_PER_S_PER_NODE] [DURATION]   # default 250 20s
set -u
cd "$(dirname "$0")/.."
source scripts/lib.sh
RATE=${1:-250}; DUR=${2:-20s}
TARGET=${CARGO_TARGET_DIR:-target}
B=$TARGET/release/matchwell
LT=$TARGET/release/examples/loadtest
PROBE=$TARGET/release/examples/jetstream_probe
D=$(mktemp -d); PIDS=""
# Waits for every process to exit, so that the next run finds its ports free.
trap 'kill $PIDS 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
start_nats_cluster "$D" 22
for n in 1 2 3; do
  serve_until_ready $D/node$n.log env MATCHWELL_NODE_ID=m$n $B serve --listen 127.0.0.1:1808$n
  PIDS="$PIDS $server_pid"
done
# Until the map has settled (nodes join one by one and hand partitions over).
sleep 3
LTS=""
for n in 1 2 3; do
  $LT --url http://127.0.0.1:1808$n --secret $MATCHWELL_JWT_SECRET --tenant t$n --rate $RATE \
    --watch poll --duration $DUR --drain 2s --quiet > $D/lt$n.txt 2>&1 &
  LTS="$LTS $!"
done
$PROBE --nats "$MATCHWELL_CLUSTER_NATS" \
  --rate 100 --seconds "${DUR%s}" > $D/probe.txt 2>&1 &
PROBE_PID=$!
wait $LTS
wait $PROBE_PID
for n in 1 2 3; do echo "== through node $n"; cat $D/lt$n.txt; done
echo "== control"; cat $D/probe.txt
echo "== CPU seconds of each process since it started"
for p in $PIDS; do ps -o comm=,args=,times= -p $p | awk '{print $1, $NF}'; done
curl -s localhost:18081/metrics | grep -E "^matchwell_cluster_"
