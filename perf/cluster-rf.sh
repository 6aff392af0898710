#!/usr/bin/env bash
# Replication factor 3 against 1 on one 3-node local cluster (`quiver dev cluster`, release
# build, one shard per node: the 2-core machine is shared by all three nodes and the load
# generator), acks=all, in the same run, alternating: e2e latency at a fixed rate and the
# maximum rate. Writes perf/results/<workload>-cluster-rf{1,3}.json and prints the ratios.
#   perf/cluster-rf.sh [RATE=10000] [DURATION_S=20]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-10000}"
DURATION_S="${2:-20}"
cargo build --release -q -p quiver
Q="$PWD/target/release/quiver"
work=$(mktemp -d -p "$PWD/target")
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "seeds 1@127.0.0.1:17700" 2>/dev/null || true; sleep 1; rm -rf "$work" || true' EXIT
base=17700
brokers="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
( cd "$work" && exec "$Q" dev cluster --nodes 3 --base-port "$base" ) > "$work/dev.log" 2>&1 &
for _ in $(seq 1 600); do grep -q "Ctrl-C stops" "$work/dev.log" && break; sleep 0.1; done
# Once the controller has a leader and every node registered.
for _ in $(seq 1 100); do (cd "$work" && "$Q" topic create rf-probe --replication-factor 3) >/dev/null 2>&1 && break; sleep 0.2; done
for rf in 1 3; do
  "$Q" bench run bench/workloads/1-topic-16-partitions-1kb.toml --broker "$brokers" \
    --node-data-dir "$work/quiver-data/node-1" --replication-factor "$rf" --rate "$RATE" \
    --duration-s "$DURATION_S" --report-as "cluster-rf$rf" --label "3 local nodes, RF $rf, acks=all"
  "$Q" bench run bench/workloads/max-rate-1-topic-16-partitions-1kb.toml --broker "$brokers" \
    --node-data-dir "$work/quiver-data/node-1" --replication-factor "$rf" \
    --duration-s "$DURATION_S" --report-as "cluster-rf$rf" --label "3 local nodes, RF $rf, acks=all"
done
python3 - <<'PY'
import json
def load(w, rf):
    return json.load(open(f"perf/results/{w}-cluster-rf{rf}.json"))
for w in ["1-topic-16-partitions-1kb", "max-rate-1-topic-16-partitions-1kb"]:
    a, b = load(w, 1), load(w, 3)
    row = []
    for name, get in [("msgs/s", lambda d: d["published_msgs_per_s"]),
                      ("e2e p50 us", lambda d: d["latency_us"]["end_to_end"]["p50_us"]),
                      ("e2e p99 us", lambda d: d["latency_us"]["end_to_end"]["p99_us"])]:
        x, y = get(a), get(b)
        row.append(f"{name}: RF1 {x:.0f}, RF3 {y:.0f} (x{y / x:.2f})" if x else f"{name}: RF1 {x}, RF3 {y}")
    print(w + ": " + "; ".join(row))
PY
