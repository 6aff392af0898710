//! What a busy CPU loses: a thread per CPU spins on the clock for a while, all CPUs at once,
//! and adds up the gaps in which it did not run.
//!
//! The hiccup meters ([`crate::instruments::hiccup`]) sleep between samples, so they see what stops a
//! thread that wakes: they miss what only happens to a CPU that stays busy, as a benchmark's
//! node and load generator do. On a virtual machine whose host is short of cores, the host
//! takes a busy vCPU away for milliseconds at a time and gives an idle one back at once: on
//! the benchmark VM one afternoon the sleeping meters saw 0.02–0.04 % of the time in hiccups
//! over 1 ms while spinning threads lost 20–35 ms of every second, in gaps of up to 8 ms.
//!
//! Each spinner also reads its own run-queue wait (`/proc/thread-self/schedstat`): the part
//! of its lost time the guest's scheduler gave to another thread (a kernel thread such as
//! kdamond, the VM's agent). The rest was taken where the guest cannot see it: interrupts
//! and softirqs on that CPU, or the host running something else on the core under it.
//!
//! The spinners run at normal priority, as the node's shards do: a real-time spinner would
//! starve the kernel's work on its CPU and be throttled after 950 ms of every second.

use std::time::{Duration, Instant};

/// Gaps shorter than this are the clock read and the timer tick, not lost time.
pub const GAP_THRESHOLD: Duration = Duration::from_micros(50);

/// What one CPU's spinner saw.
#[derive(Debug, Clone, PartialEq)]
pub struct BusyCpu {
    pub cpu: usize,
    pub gaps: Gaps,
    /// Time the guest's scheduler kept the spinner waiting for its CPU (another thread ran).
    pub guest_wait: Duration,
}

/// Gaps in a spinning thread's view of the clock (sans-IO: fed by [`measure`] and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gaps {
    /// How long the thread spun, gaps included.
    pub elapsed: Duration,
    /// Sum of the gaps of at least [`GAP_THRESHOLD`].
    pub lost: Duration,
    /// How many gaps were longer than 1 ms.
    pub over_1ms: u64,
    pub longest: Duration,
}

impl Gaps {
    /// Counts the time between two consecutive clock reads.
    pub fn observe(&mut self, between_reads: Duration) {
        self.elapsed += between_reads;
        if between_reads < GAP_THRESHOLD {
            return;
        }
        self.lost += between_reads;
        if between_reads > Duration::from_millis(1) {
            self.over_1ms += 1;
        }
        self.longest = self.longest.max(between_reads);
    }

    /// Lost time per second of spinning, in ms.
    pub fn lost_ms_per_s(&self) -> f64 {
        per_second_ms(self.lost, self.elapsed)
    }
}

fn per_second_ms(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        return 0.0;
    }
    1000.0 * part.as_secs_f64() / whole.as_secs_f64()
}

/// Spins a thread on every online CPU at once for `duration` and returns what each lost.
/// CPUs whose thread could not start are left out.
pub fn measure(duration: Duration) -> Vec<BusyCpu> {
    let cpus = crate::harness::online_cpus();
    let start_at = Instant::now() + Duration::from_millis(20); // all spinners start together
    let threads: Vec<_> = (0..cpus)
        .filter_map(|cpu| {
            std::thread::Builder::new()
                .name(format!("busy-{cpu}"))
                .spawn(move || spin(cpu, start_at, duration))
                .ok()
        })
        .collect();
    threads.into_iter().filter_map(|t| t.join().ok()).collect()
}

fn spin(cpu: usize, start_at: Instant, duration: Duration) -> BusyCpu {
    crate::harness::pin_current_thread(cpu);
    while Instant::now() < start_at {
        std::hint::spin_loop();
    }
    let wait_before = run_queue_wait();
    let mut gaps = Gaps::default();
    let mut previous = Instant::now();
    let end = previous + duration;
    while previous < end {
        let now = Instant::now();
        gaps.observe(now - previous);
        previous = now;
    }
    let guest_wait = run_queue_wait().saturating_sub(wait_before);
    BusyCpu {
        cpu,
        gaps,
        guest_wait,
    }
}

/// This thread's total wait on the run queue so far (`schedstat`'s second field, ns); zero
/// where the kernel does not keep it.
fn run_queue_wait() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let wait_ns = crate::instruments::cpu_wait::parse_schedstat(&text).map_or(0, |(_, wait)| wait);
    Duration::from_nanos(wait_ns)
}

/// JSON for a report: per CPU the lost time per second, split into what the guest's
/// scheduler gave to other threads and what it could not see.
pub fn summary(cpus: &[BusyCpu], seconds: f64) -> serde_json::Value {
    let per_cpu: Vec<serde_json::Value> = cpus
        .iter()
        .map(|c| {
            let lost = c.gaps.lost_ms_per_s();
            let guest = per_second_ms(c.guest_wait.min(c.gaps.lost), c.gaps.elapsed);
            serde_json::json!({
                "cpu": c.cpu,
                "lost_ms_per_s": round2(lost),
                "other_threads_ms_per_s": round2(guest),
                "unseen_by_guest_ms_per_s": round2((lost - guest).max(0.0)),
                "gaps_over_1ms": c.gaps.over_1ms,
                "longest_us": c.gaps.longest.as_micros() as u64,
            })
        })
        .collect();
    serde_json::json!({
        "method": "a thread per CPU, all at once, spins on the clock at normal priority and sums the gaps of 50 µs or more; other_threads: the part its run-queue wait accounts for (the guest scheduler ran another thread); unseen_by_guest: the rest (interrupts, or the host taking the vCPU)",
        "seconds": seconds,
        "per_cpu": per_cpu,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One line per CPU of a [`summary`], for people.
pub fn lines(summary: &serde_json::Value) -> Vec<String> {
    crate::instruments::hiccup::per_cpu_lines(summary, |c| {
        format!(
            "cpu {}: lost {:.1} ms/s ({:.1} to other threads, {:.1} unseen by the guest: interrupts or the host), {} gaps > 1 ms, longest {:.2} ms",
            c["cpu"],
            c["lost_ms_per_s"].as_f64().unwrap_or(0.0),
            c["other_threads_ms_per_s"].as_f64().unwrap_or(0.0),
            c["unseen_by_guest_ms_per_s"].as_f64().unwrap_or(0.0),
            c["gaps_over_1ms"],
            c["longest_us"].as_u64().unwrap_or(0) as f64 / 1000.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_only_what_passes_the_threshold() {
        let mut g = Gaps::default();
        for _ in 0..1000 {
            g.observe(Duration::from_micros(1));
        }
        g.observe(Duration::from_micros(49)); // a tick, not lost
        g.observe(Duration::from_micros(300));
        g.observe(Duration::from_millis(4));
        assert_eq!(g.lost, Duration::from_micros(4300));
        assert_eq!(g.over_1ms, 1);
        assert_eq!(g.longest, Duration::from_millis(4));
        assert_eq!(g.elapsed, Duration::from_micros(1000 + 49 + 300 + 4000));
        // 4.3 ms lost in 5.349 ms of spinning.
        assert!((g.lost_ms_per_s() - 1000.0 * 4.3 / 5.349).abs() < 1e-6);
    }

    #[test]
    fn splits_lost_time_between_other_threads_and_the_unseen() {
        let mut gaps = Gaps::default();
        gaps.observe(Duration::from_millis(990));
        gaps.observe(Duration::from_millis(10));
        let cpu = BusyCpu {
            cpu: 1,
            gaps,
            guest_wait: Duration::from_millis(4),
        };
        let s = summary(&[cpu], 1.0);
        let c = &s["per_cpu"][0];
        // The 990 ms "gap" is one long read here: what matters is the arithmetic.
        assert_eq!(c["lost_ms_per_s"], 1000.0);
        assert_eq!(c["other_threads_ms_per_s"], 4.0);
        assert_eq!(c["unseen_by_guest_ms_per_s"], 996.0);
        assert_eq!(c["gaps_over_1ms"], 2);
        let line = &lines(&s)[0];
        assert!(line.contains("4.0 to other threads"), "{line}");
        assert!(line.contains("996.0 unseen by the guest"), "{line}");
    }

    #[test]
    fn spins_every_cpu_for_the_time_asked() {
        let cpus = measure(Duration::from_millis(100));
        assert!(!cpus.is_empty());
        for c in &cpus {
            assert!(
                c.gaps.elapsed >= Duration::from_millis(100),
                "cpu {}: spun {:?}",
                c.cpu,
                c.gaps.elapsed
            );
            assert!(c.gaps.lost <= c.gaps.elapsed);
        }
        let s = summary(&cpus, 0.1);
        assert_eq!(lines(&s).len(), cpus.len());
    }
}
