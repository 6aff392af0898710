//! # quiver-bench: latency benchmarks
//!
//! - `bin/storage_bench.rs`: the storage engine against the raw disk, in one run (append
//!   throughput vs raw `DmaFile` writes, append+fsync latency vs raw write+fdatasync, group
//!   commit scaling, RSS bound). Results go to `perf/results/` and `docs/benchmarks.md`.
//! - Later (issue "The latency benchmark harness"): open-loop OMB-style workloads against a
//!   node, with coordinated omission shown.
