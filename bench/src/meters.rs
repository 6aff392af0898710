//! What a benchmark run or `bench floor` measures of the machine beside Quiver, when this
//! build has the machine instruments (cargo feature `instruments`, see [`crate::instruments`]).
//! Without them, reports carry none of those fields, and the printed summary says how to
//! build them in. The harness calls only this module, never the instruments directly.

/// A process whose busy threads are watched (their waits for a CPU), under a label.
#[derive(Debug, Clone)]
pub struct Watch {
    pub label: String,
    pub pid: u32,
}

/// True when this build measures the machine.
pub const BUILT_IN: bool = cfg!(feature = "instruments");

/// How to build them in.
pub const BUILD_WITH: &str = "cargo build --release -p quiver --features instruments";

/// The line printed when they are not built in.
pub const NOT_BUILT_IN: &str = "machine instruments (hiccups, CPU waits, busy CPUs, machine settings) are not in this build: cargo build --release -p quiver --features instruments";

/// A heading and the lines under it, for the printed summary.
pub type Block = (String, Vec<String>);

#[cfg(feature = "instruments")]
mod built_in {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::{Block, Watch};
    use crate::instruments::{busy_cpu, cpu_wait, hiccup, machine};

    /// The meters running over one measured window.
    pub struct RunMeters {
        hiccups: hiccup::Meters,
        waits: cpu_wait::CpuWaits,
        stop_lag: Arc<AtomicBool>,
        lag: tokio::task::JoinHandle<Option<hdrhistogram::Histogram<u64>>>,
    }

    impl RunMeters {
        /// Starts the platform's hiccup meters, the CPU-wait sampler of `watch` and the load
        /// generator's event-loop lag, counting from `measure_from` (after the warm-up). Call
        /// inside the load generator's tokio runtime.
        pub fn start(measure_from: Instant, watch: &[Watch]) -> Self {
            let stop_lag = Arc::new(AtomicBool::new(false));
            Self {
                hiccups: hiccup::Meters::start(measure_from),
                waits: cpu_wait::CpuWaits::start(watch.to_vec(), measure_from),
                lag: tokio::spawn(hiccup::event_loop_lag(measure_from, stop_lag.clone())),
                stop_lag,
            }
        }

        /// Stops them and puts their figures in `report`: `hiccups`, `cpu_waits`,
        /// `event_loop_lag` and `machine`.
        pub async fn stop(self, report: &mut Value) {
            let hiccups = self.hiccups.stop();
            let waits = self.waits.stop();
            self.stop_lag.store(true, Ordering::Release);
            let lag = self.lag.await.ok().flatten();
            report["hiccups"] = hiccup::summary(&hiccups);
            report["cpu_waits"] = cpu_wait::summary(&waits);
            report["machine"] = machine::settings();
            if let Some(lag) = lag {
                report["event_loop_lag"] = hiccup::lag_summary(&lag);
            }
        }
    }

    /// `bench floor`'s part: the machine's settings, `hiccup_s` seconds of the idle
    /// machine's hiccups and `busy_s` seconds of what busy CPUs lose (0: skip).
    pub fn measure_floor(hiccup_s: u64, busy_s: u64, report: &mut Value) {
        if hiccup_s > 0 {
            let mut s = hiccup::summary(&hiccup::measure_idle(Duration::from_secs(hiccup_s)));
            s["seconds"] = json!(hiccup_s);
            report["hiccups_idle"] = s;
        }
        if busy_s > 0 {
            let cpus = busy_cpu::measure(Duration::from_secs(busy_s));
            report["busy_cpus"] = busy_cpu::summary(&cpus, busy_s as f64);
        }
        report["machine"] = machine::settings();
    }

    /// What a run's summary prints of them.
    pub fn run_blocks(report: &Value) -> Vec<Block> {
        let mut out = vec![(
            format!("machine: {}", machine::describe(&report["machine"])),
            Vec::new(),
        )];
        let lag = &report["event_loop_lag"];
        if lag.is_object() {
            out.push((format!(
                "load generator's own lag (a task waking every 1 ms on its runtime): p99 {} µs, p99.9 {} µs, max {} µs, {:.2} % of the time > 1 ms",
                lag["p99_us"], lag["p999_us"], lag["max_us"],
                100.0 * lag["share_over_1ms"].as_f64().unwrap_or(0.0)
            ), Vec::new()));
        }
        out.push((
            "platform hiccups during the measurement (a thread per CPU sleeping 1 ms):".into(),
            hiccup::lines(&report["hiccups"]),
        ));
        out.push((
            "busy threads kept from a CPU while runnable (other processes on their CPUs):".into(),
            cpu_wait::lines(&report["cpu_waits"]),
        ));
        out
    }

    /// What `bench floor` prints of them.
    pub fn floor_blocks(report: &Value) -> Vec<Block> {
        let mut out = vec![(
            format!("machine: {}", machine::describe(&report["machine"])),
            Vec::new(),
        )];
        let h = &report["hiccups_idle"];
        if h.is_object() {
            out.push((
                format!(
                    "hiccups of the idle machine over {} s (a thread per CPU sleeping 1 ms):",
                    h["seconds"]
                ),
                hiccup::lines(h),
            ));
        }
        let b = &report["busy_cpus"];
        if b.is_object() {
            out.push((
                format!(
                    "what busy CPUs lose over {} s (a thread per CPU spinning, all at once):",
                    b["seconds"]
                ),
                busy_cpu::lines(b),
            ));
        }
        out
    }
}

#[cfg(not(feature = "instruments"))]
mod built_in {
    use std::time::Instant;

    use serde_json::Value;

    use super::{Block, Watch, NOT_BUILT_IN};

    /// Nothing runs: this build has no machine instruments.
    pub struct RunMeters;

    impl RunMeters {
        pub fn start(_measure_from: Instant, _watch: &[Watch]) -> Self {
            Self
        }

        pub async fn stop(self, _report: &mut Value) {}
    }

    pub fn measure_floor(_hiccup_s: u64, _busy_s: u64, _report: &mut Value) {}

    pub fn run_blocks(_report: &Value) -> Vec<Block> {
        vec![(NOT_BUILT_IN.to_string(), Vec::new())]
    }

    pub fn floor_blocks(_report: &Value) -> Vec<Block> {
        vec![(NOT_BUILT_IN.to_string(), Vec::new())]
    }
}

pub use built_in::{floor_blocks, measure_floor, run_blocks, RunMeters};
