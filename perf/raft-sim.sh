#!/usr/bin/env bash
# The long sweep of the Raft simulator (docs/reliability.md): SEEDS seeds (default 80,000,
# over a million crashes and partitions besides message loss, duplication and reordering),
# each checked after every step. Prints the totals; a failing seed prints its replay command.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-80000}"
start=$(date +%s)
QUIVER_SIM_SEEDS="$SEEDS" cargo test -q --release -p quiver-raft --test simulation \
  every_seed_keeps_raft_safe_and_live -- --nocapture 2>&1 | grep -E "seeds:|failed at|replay|panicked" || true
echo "elapsed: $(( $(date +%s) - start )) s"
