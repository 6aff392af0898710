//! The latency harness behind `quiver bench`: OMB-shaped workloads, open-loop producers, three
//! hdrhistograms (publish latency, publish delay, end-to-end) at µs resolution, progress lines,
//! a JSON report, `.hgrm` files and an SVG latency-by-percentile plot.
//!
//! - [`workload`]: the workload files (`bench/workloads/*.toml`).
//! - [`driver`]: what a system under test provides; [`quiver`] is Quiver's, `nats` (feature
//!   `nats`) NATS JetStream's, [`durable_echo`] the design's floor under load (a server that
//!   only makes each request durable and sends it back).
//! - [`runner`]: the open loop; [`pacer`]: when it wakes; [`recorder`]: the histograms and
//!   their outputs.

pub mod driver;
pub mod durable_echo;
#[cfg(feature = "nats")]
pub mod nats;
pub mod pacer;
pub mod quiver;
pub mod rate_search;
pub mod recorder;
pub mod runner;
pub mod workload;
