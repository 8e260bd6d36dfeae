#!/usr/bin/env bash
# Runs every benchmark that BENCHMARKS.md reports, in the order it reports them, and keeps
# their output (not part of CI; about 35 minutes on 2 cores; the cluster part needs
# nats-server).
#
#   scripts/benchmarks.sh                 # everything, output in target/benchmarks/
#   OUT=/tmp/bench scripts/benchmarks.sh
#   ONLY="criterion harness" scripts/benchmarks.sh
#                                         # some parts: machine criterion memory embedded
#                                         # players round cluster
#
# Each part writes `<part>.txt` (and JSON reports) in OUT; criterion keeps its own reports in
# target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-$PWD/target/benchmarks}
only=${ONLY:-"machine criterion memory embedded players round cluster"}
mkdir -p "$out"

part() {
    [[ " $only " == *" $1 "* ]]
}

if part machine; then
    {
        date -u +%Y-%m-%dT%H:%MZ
        lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core)'
        grep MemTotal /proc/meminfo
        uname -sr
        rustc --version
    } | tee "$out/machine.txt"
fi

if part criterion; then
    for bench in enqueue lookup wave persistence; do
        cargo bench --bench "$bench" 2>&1 | grep -vE '^(Gnuplot|Benchmarking|Warning)' \
            | tee "$out/criterion-$bench.txt"
    done
    cargo bench -p matchwell-snapshots --bench journal 2>&1 \
        | grep -vE '^(Gnuplot|Benchmarking|Warning)' | tee "$out/criterion-journal.txt"
fi

if part memory; then
    cargo run --release --quiet --example memory 2>&1 | tee "$out/memory.txt"
fi

cargo build --release --quiet --bin matchwell --example loadtest --example http_floor
harness=$PWD/target/release/examples/loadtest

if part embedded; then
    "$harness" --embedded --rate 5000 --duration 60s --quiet --json "$out/embedded-memory.json" \
        | tee "$out/embedded.txt"
    data=$(mktemp -d)
    "$harness" --embedded --data-dir "$data" --fsync batch --rate 5000 --duration 60s --quiet \
        --json "$out/embedded-batch.json" | tee -a "$out/embedded.txt"
    rm -rf "$data"
fi

if part players; then
    # Every mode at 5,000 players a second for 60 s; the charts beside BENCHMARKS.md are the
    # batch run's.
    RUNS=1 DURATION=60s SCENARIO=players RATE=5000 REPORTS=$out/players CHARTS=$out/charts \
        scripts/harness-compare.sh | tee "$out/players.txt"
    rm -rf benchmarks/charts
    mkdir -p benchmarks
    cp -r "$out/charts/matchwell-batch-1" benchmarks/charts
fi

if part round; then
    RUNS=3 DURATION=20s REPORTS=$out/round scripts/harness-compare.sh | tee "$out/round.txt"
fi

if part cluster; then
    # Five load runs beside the JetStream probe, then ten kills of a node.
    cargo build --release --quiet -p matchwell-cluster --example jetstream_probe
    for run in 1 2 3 4 5; do
        echo "== cluster load, run $run"
        scripts/cluster-loadtest.sh 220 30s
    done 2>&1 | tee "$out/cluster-load.txt"
    scripts/cluster-failover.sh 10 2>&1 | tee "$out/cluster-failover.txt"
fi
