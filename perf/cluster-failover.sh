#!/usr/bin/env bash
# Failover of a replicated partition, measured on real processes: a 3-node local cluster
# (`quiver dev cluster`, release build), one topic of 1 partition and 3 replicas, a producer
# (acks=all, idempotent) fed one record every 5 ms; kill -9 the partition's leader node, and
# measure the longest gap between two consecutive acknowledgements (the produce pause the
# failover costs: detection by election timeout, election, SetLeader in the controller,
# the client's metadata refresh and retry). Then the node is restarted and the next round
# kills the new leader. Prints each round and the median; records perf/results/cluster-failover.json.
#   perf/cluster-failover.sh [ROUNDS=20]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-20}"
cargo build --release -q -p quiver
Q="$PWD/target/release/quiver"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "seeds 1@127.0.0.1:17600" 2>/dev/null || true; sleep 1; rm -rf "$work" || true' EXIT
base=17600
brokers="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
( cd "$work" && exec "$Q" dev cluster --nodes 3 --base-port "$base" ) > "$work/dev.log" 2>&1 &
for _ in $(seq 1 600); do grep -q "Ctrl-C stops" "$work/dev.log" && break; sleep 0.1; done
cli() { (cd "$work" && "$Q" "$@"); }
for _ in $(seq 1 100); do cli topic create failover --partitions 1 --replication-factor 3 >/dev/null 2>&1 && break; sleep 0.2; done
# The leader, once it is the preferred replica again (a restarted node gets its leadership
# back a few seconds after it caught up): each round kills a settled leader.
leader() { cli topic describe failover --json | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitions"][0]; print(p["leader"] if p["leader"] == p["replicas"][0] and p["leader_epoch"] >= 1 else 0)'; }
gaps=()
for round in $(seq 1 "$ROUNDS"); do
  for _ in $(seq 1 300); do l=$(leader 2>/dev/null || echo 0); [ "$l" -ge 1 ] && break; sleep 0.2; done
  sleep 1
  acks="$work/acks-$round"
  # One record every 5 ms; each acknowledgement's arrival time (ns) on its own line.
  ( for i in $(seq 1 1200); do echo "k:r$round-$i"; sleep 0.005; done ) \
    | cli produce failover --key-separator : --print-offsets 2>/dev/null \
    | while read -r _; do date +%s%N; done > "$acks" &
  producer=$!
  sleep 2
  pid=$(pgrep -f "serve --node-id $l " | head -1)
  kill -9 "$pid"
  wait "$producer" || true
  gap_ms=$(python3 -c 'import sys; t=[int(x) for x in open(sys.argv[1])]; print(max((b-a for a,b in zip(t,t[1:])), default=0)//1000000)' "$acks")
  echo "round $round: killed node $l (leader); acknowledged $(wc -l < "$acks")/1200; longest pause $gap_ms ms"
  gaps+=("$gap_ms")
  # Bring it back as `dev cluster` started it.
  ( cd "$work" && exec "$Q" serve --node-id "$l" --seeds "1@127.0.0.1:$base,2@127.0.0.1:$((base + 10)),3@127.0.0.1:$((base + 20))" \
      --data-dir "quiver-data/node-$l" --listen "127.0.0.1:$((base + 10 * (l - 1)))" --shards 1 --log-level warn ) > /dev/null 2>&1 &
  sleep 3
done
python3 - "$ROUNDS" "${gaps[@]}" <<'EOF'
import json, statistics, subprocess, sys, datetime
gaps = [int(g) for g in sys.argv[2:]]
ranked = sorted(gaps)
p99 = ranked[max(0, -(-99 * len(ranked) // 100) - 1)]  # nearest rank
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {"what": "produce pause when the leader of a 3-replica partition is killed (-9)", "rounds": len(gaps),
       "pauses_ms": gaps, "median_ms": statistics.median(gaps), "p99_ms": p99, "max_ms": max(gaps),
       "election_timeout_ms": "1000-2000 (10-20 ticks of 100 ms)", "date": datetime.date.today().isoformat(), "commit": commit}
json.dump(out, open("perf/results/cluster-failover.json", "w"), indent=2)
print(f"pause p50 {out['median_ms']} ms, p99 {p99} ms, max {out['max_ms']} ms over {len(gaps)} kills -> perf/results/cluster-failover.json")
EOF
