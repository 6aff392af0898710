#!/usr/bin/env bash
# Catch-up of a restarted follower, measured on real processes against the raw disk in the
# same run: a 3-node local cluster (`quiver dev cluster`, release build), one partition of 3
# replicas. One follower is stopped (kill -9) while MB megabytes are produced (acks=all, the
# leader and the other follower form the quorum); then the other follower is stopped too, the
# first restarted, and one more record produced with acks=all: it can commit only once the
# restarted follower holds the leader's whole log. Catch-up rate = bytes produced / (time
# from the restarted node answering to that commit). The raw disk: `dd` of the same bytes
# with O_DIRECT and a final fsync, on the same filesystem, in the same run.
# Records perf/results/cluster-catchup.json.
#   perf/cluster-catchup.sh [MB=512]
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-512}"
cargo build --release -q -p quiver
Q="$PWD/target/release/quiver"
work=$(mktemp -d -p "$PWD/target")
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "seeds 1@127.0.0.1:17900" 2>/dev/null || true; sleep 1; rm -rf "$work" || true' EXIT
base=17900
seeds="1@127.0.0.1:$base,2@127.0.0.1:$((base + 10)),3@127.0.0.1:$((base + 20))"
( cd "$work" && exec "$Q" dev cluster --nodes 3 --base-port "$base" ) > "$work/dev.log" 2>&1 &
for _ in $(seq 1 600); do grep -q "Ctrl-C stops" "$work/dev.log" && break; sleep 0.1; done
cli() { (cd "$work" && "$Q" "$@"); }
now() { date +%s.%N; }
for _ in $(seq 1 100); do cli topic create catchup --partitions 1 --replication-factor 3 >/dev/null 2>&1 && break; sleep 0.2; done
leader=0
for _ in $(seq 1 100); do
  leader=$(cli topic describe catchup --json 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitions"][0]; print(p["leader"] if p["leader_epoch"] >= 1 else 0)' || echo 0)
  [ "$leader" -ge 1 ] && break; sleep 0.2
done
follower=$(( leader % 3 + 1 ))
other=$(( follower % 3 + 1 ))
[ "$other" = "$leader" ] && other=$(( other % 3 + 1 ))
stop() { pkill -9 -f "serve --node-id $1 " || true; }
start() {
  ( cd "$work" && exec "$Q" serve --node-id "$1" --seeds "$seeds" --data-dir "quiver-data/node-$1" \
      --listen "127.0.0.1:$((base + 10 * ($1 - 1)))" --shards 1 --log-level warn ) > "$work/node-$1.log" 2>&1 &
}
stop "$follower"
# MB megabytes of 1 KiB values.
records=$(( MB * 1024 ))
t0=$(now)
python3 -c "
import sys
v = 'x' * 1020
w = sys.stdout.write
for i in range($records):
    w('%d:%s\n' % (i % 64, v[:1020 - len(str(i % 64))]))
" | cli produce catchup --key-separator : > /dev/null 2> "$work/produce.err"
t1=$(now)
stop "$other"
start "$follower"
for _ in $(seq 1 600); do cli cluster info --broker "127.0.0.1:$((base + 10 * (follower - 1)))" >/dev/null 2>&1 && break; sleep 0.05; done
t_ready=$(now)
echo "k:one more" | cli produce catchup --key-separator : --delivery-timeout-ms 300000 > /dev/null 2>> "$work/produce.err"
t_caught=$(now)
# The raw disk, same bytes, same filesystem.
dd if=/dev/zero of="$work/raw" bs=1M count="$MB" oflag=direct conv=fsync 2> "$work/dd.err"
raw_mb_s=$(grep -oE '[0-9.,]+ [MG]B/s' "$work/dd.err" | tail -1)
python3 - "$MB" "$t0" "$t1" "$t_ready" "$t_caught" "$raw_mb_s" "$leader" "$follower" <<'PY'
import datetime, json, subprocess, sys
mb, t0, t1, ready, caught = int(sys.argv[1]), *map(float, sys.argv[2:6])
raw = sys.argv[6].replace(",", ".")
raw_mb_s = float(raw.split()[0]) * (1000 if "GB" in raw else 1)  # dd reports decimal MB/s
mib = mb * 1024 * 1024
catch_s = caught - ready
out = {
    "what": "a restarted follower catching up with its leader (1 partition, 3 replicas, 3 local nodes)",
    "megabytes_behind": mb,
    "produce_s": round(t1 - t0, 2),
    "catch_up_s": round(catch_s, 2),
    "catch_up_mb_s": round(mib / 1e6 / catch_s, 1),
    "raw_disk_mb_s": raw_mb_s,
    "ratio_vs_raw_disk": round(mib / 1e6 / catch_s / raw_mb_s, 2),
    "leader": int(sys.argv[7]), "follower": int(sys.argv[8]),
    "date": datetime.date.today().isoformat(),
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
}
json.dump(out, open("perf/results/cluster-catchup.json", "w"), indent=2)
print(f"{mb} MiB behind: caught up in {out['catch_up_s']} s = {out['catch_up_mb_s']} MB/s; raw disk {raw_mb_s} MB/s; ratio {out['ratio_vs_raw_disk']} -> perf/results/cluster-catchup.json")
PY
