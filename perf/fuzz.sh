#!/usr/bin/env bash
# Runs every cargo-fuzz target of core/fuzz for RUNS executions each (default 10 million,
# the goal in docs/reliability.md), one after another, from its seed corpus, and records the
# executions, seconds and crashes of each in perf/results/fuzz-<date>.json.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); this machine's one toolchain is stable, so
# cargo-fuzz's sanitizer flags are allowed with RUSTC_BOOTSTRAP=1.
# MAX_SECONDS (environment) caps each target's time as well (default: no cap).
# Usage: perf/fuzz.sh [RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10000000}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list --fuzz-dir core/fuzz)
fi
# Build every target first: the seconds below are fuzzing time only.
RUSTC_BOOTSTRAP=1 cargo fuzz build -O --fuzz-dir core/fuzz
out="perf/results/fuzz-$(date +%F).json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "{" > "$work/json"
echo "  \"date\": \"$(date +%F)\", \"commit\": \"$(git rev-parse --short HEAD)\", \"runs_per_target\": $RUNS," >> "$work/json"
echo "  \"machine\": \"$(nproc)-core VM, $(rustc --version | cut -d' ' -f1-2), RUSTC_BOOTSTRAP=1\"," >> "$work/json"
echo "  \"targets\": {" >> "$work/json"
first=1
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus-$t"
  seeds="core/fuzz/seeds/$t"
  [ -d "$seeds" ] || seeds=""
  start=$(date +%s)
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O --fuzz-dir core/fuzz "$t" "$work/corpus-$t" $seeds -- \
    -runs="$RUNS" -max_total_time="${MAX_SECONDS:-0}" -max_len=65536 -print_final_stats=1 > "$work/$t.log" 2>&1 || status=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' | tail -1)
  crashes=0
  [ "$status" -ne 0 ] && crashes=1
  echo "$t: ${execs:-0} executions in ${secs} s, exit $status"
  [ "$status" -ne 0 ] && tail -30 "$work/$t.log"
  [ $first -eq 1 ] || echo "," >> "$work/json"
  first=0
  printf '    "%s": {"executions": %s, "seconds": %s, "crashes": %s}' "$t" "${execs:-0}" "$secs" "$crashes" >> "$work/json"
done
printf '\n  }\n}\n' >> "$work/json"
cp "$work/json" "$out"
echo "recorded in $out"
