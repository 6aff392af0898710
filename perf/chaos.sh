#!/usr/bin/env bash
# The long chaos sweep (docs/reliability.md): SCHEDULES seeded fault schedules (default
# 1,000) against real 3-node clusters in network namespaces, each a fresh cluster with the
# append, group and transaction workloads and their checkers. Needs root. Release builds.
# Usage: perf/chaos.sh [SCHEDULES] [FIRST_SEED] [DURATION_MS] [NODES]
# Writes perf/results/chaos-<date>-<commit>.json; failing schedules' histories and node logs
# go to perf/results/chaos-histories/. Prints a verdict line per schedule and the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEDULES="${1:-1000}"
FIRST_SEED="${2:-1000}"
DURATION_MS="${3:-15000}"
NODES="${4:-3}"
# Two builds: `--bin` would apply to both packages and leave the node binary stale.
cargo build -q --release -p quiver --bin quiver
cargo build -q --release -p quiver-tests --bin quiver-chaos
commit=$(git rev-parse --short HEAD)
out="perf/results/chaos-$(date +%F)-$commit.json"
start=$(date +%s)
status=0
target/release/quiver-chaos --seed "$FIRST_SEED" --schedules "$SCHEDULES" \
  --duration-ms "$DURATION_MS" --nodes "$NODES" --json "$out" \
  --history-dir perf/results/chaos-histories || status=$?
echo "elapsed: $(( $(date +%s) - start )) s; summary in $out (commit $commit)"
exit "$status"
