//! Platform hiccups, measured as jHiccup does: a thread per CPU sleeps 1 ms at a time and
//! records how much later than asked it got to run again.
//!
//! A hiccup stops whatever wanted that CPU: a hypervisor taking the vCPU away, the kernel
//! running something else, an interrupt storm. An open-loop benchmark counts every message
//! whose intended send time falls inside one (coordinated omission shown), so a machine that
//! loses a CPU for 5 ms a few times a second has that in its p99 at any rate high enough to
//! put hundreds of messages in each gap — whatever the system under test does. Reporting the
//! hiccups measured during the run lets a reader tell the two apart.
//!
//! Each sample is recorded with hdrhistogram's coordinated-omission correction for the 1 ms
//! interval, so a percentile reads as "a thread that became runnable at a random moment
//! waited this long at most, that share of the time".
//!
//! The meters run `SCHED_FIFO` (priority 1) where allowed, as cyclictest does: they then
//! preempt the benchmark's own threads at once, and what they record is what even a
//! real-time thread could not get — the hypervisor, interrupts, non-preemptible kernel work —
//! not the load the benchmark puts on the CPU. Without the privilege they run as normal
//! threads and the report says so (`policy`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How long each meter thread sleeps between two looks at the clock.
pub const INTERVAL: Duration = Duration::from_millis(1);

/// Largest hiccup the histograms hold (longer ones are recorded as this).
const MAX_HICCUP_US: u64 = 60_000_000;

/// One meter thread per CPU, pinned, running until [`Meters::stop`].
pub struct Meters {
    stop: Arc<AtomicBool>,
    threads: Vec<(usize, JoinHandle<Option<Measured>>)>,
}

/// One meter thread's histogram and the scheduling policy it ran with.
type Measured = (Histogram<u64>, &'static str);

/// What one CPU's meter saw.
pub struct CpuHiccups {
    pub cpu: usize,
    /// `fifo` (real-time, see the module documentation) or `normal`.
    pub policy: &'static str,
    /// Hiccups in µs beyond [`INTERVAL`], with coordinated-omission correction.
    pub histogram: Histogram<u64>,
}

impl Meters {
    /// Starts a meter on every online CPU (not only those the calling thread is pinned to);
    /// samples before `measure_from` (a warm-up) are not recorded.
    pub fn start(measure_from: Instant) -> Self {
        let cpus = crate::harness::online_cpus();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cpus)
            .filter_map(|cpu| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("hiccup-{cpu}"))
                    .spawn(move || meter(cpu, measure_from, &stop))
                    .ok()
                    .map(|t| (cpu, t))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the meters and returns what each saw.
    pub fn stop(self) -> Vec<CpuHiccups> {
        self.stop.store(true, Ordering::Release);
        self.threads
            .into_iter()
            .filter_map(|(cpu, t)| {
                let (histogram, policy) = t.join().ok().flatten()?;
                Some(CpuHiccups {
                    cpu,
                    policy,
                    histogram,
                })
            })
            .collect()
    }
}

/// Measures for `duration` with nothing else running (for `quiver bench floor`).
pub fn measure_idle(duration: Duration) -> Vec<CpuHiccups> {
    let meters = Meters::start(Instant::now());
    std::thread::sleep(duration);
    meters.stop()
}

/// Makes the calling thread a measuring one: `SCHED_FIFO` priority 1 where allowed (see the
/// module documentation) and a 1 ns timer slack (the default 50 µs would show up in every
/// sample). Returns the policy it got, `fifo` or `normal`.
pub(crate) fn measuring_thread() -> &'static str {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param; the call affects only this thread.
    let policy = match unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } {
        0 => "fifo",
        _ => "normal",
    };
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    policy
}

fn meter(cpu: usize, measure_from: Instant, stop: &AtomicBool) -> Option<Measured> {
    crate::harness::pin_current_thread(cpu);
    let policy = measuring_thread();
    let mut lateness = Lateness::new(measure_from)?;
    while !stop.load(Ordering::Acquire) {
        let due = Instant::now() + INTERVAL;
        std::thread::sleep(INTERVAL);
        lateness.woke(due);
    }
    Some((lateness.histogram, policy))
}

/// How late something that wants to wake every [`INTERVAL`] got to run: µs, coordinated-
/// omission corrected, wake-ups due before `measure_from` (a warm-up) left out. Shared by the
/// per-CPU meters and [`event_loop_lag`] so both count alike.
struct Lateness {
    histogram: Histogram<u64>,
    measure_from: Instant,
}

impl Lateness {
    fn new(measure_from: Instant) -> Option<Self> {
        Some(Self {
            histogram: Histogram::new_with_bounds(1, MAX_HICCUP_US, 3).ok()?,
            measure_from,
        })
    }

    /// Records a wake-up that was due at `due`, now.
    fn woke(&mut self, due: Instant) {
        if due < self.measure_from {
            return;
        }
        let late_us = due.elapsed().as_micros() as u64;
        // Within the bounds by the clamp, so recording cannot fail.
        let _ = self
            .histogram
            .record_correct(late_us.clamp(1, MAX_HICCUP_US), INTERVAL.as_micros() as u64);
    }
}

/// How late the calling tokio runtime runs a task that wants to wake every [`INTERVAL`]
/// (a timerfd, so not tokio's 1 ms wheel), until `stop`: the load generator's own queueing
/// (its producer, consumer and connections share the runtime), beside what the per-CPU
/// meters say about the machine. Coordinated-omission corrected, µs; `None` without a
/// timerfd.
pub async fn event_loop_lag(
    measure_from: Instant,
    stop: Arc<AtomicBool>,
) -> Option<Histogram<u64>> {
    let mut timer = quiver_client::timer::PreciseTimer::new().ok()?;
    let mut lateness = Lateness::new(measure_from)?;
    while !stop.load(Ordering::Acquire) {
        let due = Instant::now() + INTERVAL;
        timer.sleep_until(due).await;
        lateness.woke(due);
    }
    Some(lateness.histogram)
}

/// Samples, p50/p99/p99.9/max (µs) and the share of samples over 1 ms.
fn figures(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "samples": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "share_over_1ms": share_over(h, 1000),
    })
}

/// [`event_loop_lag`]'s figures, for a report.
pub fn lag_summary(h: &Histogram<u64>) -> serde_json::Value {
    let mut v = figures(h);
    v["method"] = serde_json::json!("a task on the load generator's runtime waking every 1 ms on a timerfd: how late it ran, coordinated-omission corrected");
    v
}

/// JSON for a report: per CPU p50/p99/p99.9/max in µs and the share of time spent in
/// hiccups longer than 1 ms.
pub fn summary(cpus: &[CpuHiccups]) -> serde_json::Value {
    let per_cpu: Vec<serde_json::Value> = cpus
        .iter()
        .map(|c| {
            let mut v = figures(&c.histogram);
            v["cpu"] = serde_json::json!(c.cpu);
            v["policy"] = serde_json::json!(c.policy);
            v
        })
        .collect();
    serde_json::json!({
        "method": "a thread per CPU (SCHED_FIFO where allowed: see policy) sleeps 1 ms and records how late it wakes (jHiccup, cyclictest), coordinated-omission corrected",
        "per_cpu": per_cpu,
    })
}

/// Share of samples above `us`.
fn share_over(h: &Histogram<u64>, us: u64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let below = h.count_between(0, us);
    (h.len() - below) as f64 / h.len() as f64
}

/// One line per CPU of a [`summary`], for people: `cpu 0: p99 120 µs, p99.9 4100 µs, max
/// 8700 µs, 0.31 % of the time in hiccups > 1 ms`.
pub fn lines(summary: &serde_json::Value) -> Vec<String> {
    per_cpu_lines(summary, |c| {
        format!(
            "cpu {} ({}): p99 {} µs, p99.9 {} µs, max {} µs, {:.2} % of the time in hiccups > 1 ms",
            c["cpu"],
            c["policy"].as_str().unwrap_or("?"),
            c["p99_us"],
            c["p999_us"],
            c["max_us"],
            100.0 * c["share_over_1ms"].as_f64().unwrap_or(0.0)
        )
    })
}

/// A line per entry of a summary's `per_cpu` array; none without one.
pub(crate) fn per_cpu_lines(
    summary: &serde_json::Value,
    line: impl Fn(&serde_json::Value) -> String,
) -> Vec<String> {
    summary["per_cpu"]
        .as_array()
        .map(|cpus| cpus.iter().map(line).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_interval_records_samples_and_a_summary() {
        let cpus = measure_idle(Duration::from_millis(200));
        assert!(!cpus.is_empty());
        for c in &cpus {
            // ~200 sleeps of 1 ms (fewer on a busy machine; corrections add samples).
            assert!(
                c.histogram.len() >= 20,
                "cpu {}: {} samples",
                c.cpu,
                c.histogram.len()
            );
        }
        let s = summary(&cpus);
        assert_eq!(s["per_cpu"].as_array().map(Vec::len), Some(cpus.len()));
        assert_eq!(lines(&s).len(), cpus.len());
    }

    #[test]
    fn share_over_counts_only_longer_samples() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_HICCUP_US, 3).unwrap();
        for _ in 0..98 {
            h.record(50).unwrap();
        }
        h.record(5000).unwrap();
        h.record(8000).unwrap();
        assert!((share_over(&h, 1000) - 0.02).abs() < 1e-9);
    }
}
