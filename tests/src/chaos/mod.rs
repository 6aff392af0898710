//! # The chaos harness (`quiver-chaos`): real nodes, real faults, Jepsen-style checkers
//!
//! - [`net`]: one network namespace per node on a bridge; nftables partitions and loss.
//! - [`cluster`]: `quiver serve` processes in those namespaces, each on its own loop disk.
//! - [`schedule`]: a seeded sequence of faults; [`nemesis`] applies and heals them;
//!   [`slow_disk`] throttles a node's disk writes beside a fault.
//! - Workloads: [`append`] (idempotent acks=all producers), [`group`] (a consumer group with
//!   member kills, committed offsets sampled), [`txn`] (transactions committed or aborted),
//!   [`eos`] (an exactly-once pipeline copying the append topic, its instances killed).
//! - [`history`]: every operation and fault in order; [`check`]: the checkers.
//! - [`run`]: one schedule end to end and its verdict; [`report`]: the lines printed.

pub mod append;
pub mod check;
pub mod cluster;
pub mod eos;
pub mod group;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod schedule;
pub mod slow_disk;
pub mod txn;
