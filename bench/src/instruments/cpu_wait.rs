//! How long the benchmark's own busy threads — the load generator's and the node's — were
//! kept from a CPU while they had work: each thread's run-queue wait, read from the kernel's
//! `/proc/<pid>/task/<tid>/schedstat` (ns run, ns runnable but waiting, sched_info) every
//! [`INTERVAL`] by a sampler thread of its own.
//!
//! The hiccup meters ([`crate::instruments::hiccup`]) run `SCHED_FIFO`, so a normal-priority neighbour
//! never delays them: they show the hypervisor and non-preemptible kernel work, not another
//! process taking a CPU. That is what this shows. On the 2-vCPU VMs the published figures come
//! from, the VM's own agent (a process at nice −10) runs 2–5 ms about once a second on one of
//! the two CPUs; both are busy with the benchmark, so it always stops one of the two
//! processes, and at 50,000 msg/s each such wait leaves ~400 messages late (docs/benchmarks.md).
//! A wait here is any time runnable and not running: behind a neighbour, behind a
//! non-preemptible kernel thread, or behind the other benchmark process on the same CPU.
//!
//! Sampling every 1 ms, a "wait" is a run of consecutive intervals in which the thread waited
//! for at least half the interval; its length is the wait time summed over them (±1 ms).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between two readings of every watched thread's counters.
pub const INTERVAL: Duration = Duration::from_millis(1);

/// Readings taken before deciding which threads to keep watching: those that ran at least
/// [`BUSY_SHARE`] of this window. The others are helpers that mostly sleep — io_uring's
/// workers, the harness's own meters and this sampler (~2 % each) — and reading them every
/// millisecond would cost more than it tells.
const SETTLE_SAMPLES: u32 = 200;

/// Share of the settle window a thread must have run to stay watched.
const BUSY_SHARE: f64 = 0.05;

pub use crate::meters::Watch;

/// The waits one thread had over the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadWaits {
    pub process: String,
    pub thread: String,
    pub tid: u32,
    /// How long it was watched.
    pub window: Duration,
    pub ran: Duration,
    /// Runnable but not running, in total.
    pub waited: Duration,
    /// Waits ([module documentation](self)) of 1 ms or more.
    pub waits_over_1ms: u64,
    pub longest_wait: Duration,
}

/// Folds one thread's cumulative counters, read once per interval, into its waits. Sans-IO:
/// fed by the sampler, tested with made-up readings.
#[derive(Debug, Default)]
struct Tracker {
    last: Option<(u64, u64)>,
    window_ns: u64,
    ran_ns: u64,
    waited_ns: u64,
    /// The wait in progress (intervals so far in which it waited at least half).
    open_wait_ns: u64,
    waits_over_1ms: u64,
    longest_wait_ns: u64,
}

impl Tracker {
    /// One reading: `interval_ns` since the previous one, the cumulative run and wait counters.
    fn sample(&mut self, interval_ns: u64, run_ns: u64, wait_ns: u64) {
        let Some((last_run, last_wait)) = self.last.replace((run_ns, wait_ns)) else {
            return; // the first reading is the baseline
        };
        let ran = run_ns.saturating_sub(last_run);
        let waited = wait_ns.saturating_sub(last_wait);
        self.window_ns += interval_ns;
        self.ran_ns += ran;
        self.waited_ns += waited;
        if waited > 0 && waited.saturating_mul(2) >= interval_ns {
            self.open_wait_ns += waited;
        } else {
            self.close_wait();
        }
    }

    fn close_wait(&mut self) {
        if self.open_wait_ns >= 1_000_000 {
            self.waits_over_1ms += 1;
        }
        self.longest_wait_ns = self.longest_wait_ns.max(self.open_wait_ns);
        self.open_wait_ns = 0;
    }

    fn finish(mut self, process: String, thread: String, tid: u32) -> ThreadWaits {
        self.close_wait();
        ThreadWaits {
            process,
            thread,
            tid,
            window: Duration::from_nanos(self.window_ns),
            ran: Duration::from_nanos(self.ran_ns),
            waited: Duration::from_nanos(self.waited_ns),
            waits_over_1ms: self.waits_over_1ms,
            longest_wait: Duration::from_nanos(self.longest_wait_ns),
        }
    }
}

/// One watched thread: its counters file, kept open and re-read with `pread`.
struct Watched {
    process: String,
    thread: String,
    tid: u32,
    file: File,
    tracker: Tracker,
}

impl Watched {
    /// `(run_ns, wait_ns)`; `None` once the thread is gone.
    fn read(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 96];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        parse_schedstat(std::str::from_utf8(buf.get(..n)?).ok()?)
    }
}

/// A `schedstat` file's `(ns on the CPU, ns runnable but waiting for it)`; its third field,
/// the timeslice count, is not needed.
pub(crate) fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// The threads of each process in `watch` when the measurement starts, but the calling one
/// (the sampler: reading every thread's counters in the settle window can make it look busy).
fn list_threads(watch: &[Watch]) -> Vec<Watched> {
    // SAFETY: gettid has no preconditions.
    let own_tid = unsafe { libc::gettid() } as u32;
    let mut out = Vec::new();
    for w in watch {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", w.pid)) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if tid == own_tid {
                continue;
            }
            let Ok(file) = File::open(task.path().join("schedstat")) else {
                continue;
            };
            let thread = std::fs::read_to_string(task.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            out.push(Watched {
                process: w.label.clone(),
                thread,
                tid,
                file,
                tracker: Tracker::default(),
            });
        }
    }
    out
}

/// The sampler thread, running until [`CpuWaits::stop`].
pub struct CpuWaits {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<ThreadWaits>>>,
}

impl CpuWaits {
    /// Watches the busy threads of `watch` from `measure_from` (after a warm-up) on.
    pub fn start(watch: Vec<Watch>, measure_from: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cpu-waits".into())
            .spawn(move || sample(&watch, measure_from, &flag))
            .ok();
        Self { stop, thread }
    }

    /// Stops sampling; the busy threads' waits, most waited first.
    pub fn stop(self) -> Vec<ThreadWaits> {
        self.stop.store(true, Ordering::Release);
        let mut out = self.thread.and_then(|t| t.join().ok()).unwrap_or_default();
        out.sort_by_key(|t| std::cmp::Reverse(t.waited));
        out
    }
}

fn sample(watch: &[Watch], measure_from: Instant, stop: &AtomicBool) -> Vec<ThreadWaits> {
    // Real-time where allowed, as the hiccup meters: a late sampler only blurs the ±1 ms, but
    // it should not itself wait behind what it measures.
    crate::instruments::hiccup::measuring_thread();
    while Instant::now() < measure_from {
        if stop.load(Ordering::Acquire) {
            return Vec::new();
        }
        let left = measure_from.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    let mut threads = list_threads(watch);
    let mut last = Instant::now();
    let mut samples = 0u32;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let interval_ns = now.duration_since(last).as_nanos() as u64;
        last = now;
        threads.retain_mut(|t| match t.read() {
            Some((run, wait)) => {
                t.tracker.sample(interval_ns, run, wait);
                true
            }
            None => false, // exited
        });
        samples += 1;
        if samples == SETTLE_SAMPLES {
            threads.retain(|t| {
                let window = t.tracker.window_ns.max(1) as f64;
                t.tracker.ran_ns as f64 / window >= BUSY_SHARE
            });
        }
        std::thread::sleep(INTERVAL);
    }
    threads
        .into_iter()
        .map(|t| t.tracker.finish(t.process, t.thread, t.tid))
        .collect()
}

/// JSON for a report: per busy thread, the shares of the window it ran and waited, its waits
/// over 1 ms and the longest.
pub fn summary(threads: &[ThreadWaits]) -> serde_json::Value {
    let per_thread: Vec<serde_json::Value> = threads
        .iter()
        .map(|t| {
            let window = t.window.as_secs_f64().max(1e-9);
            serde_json::json!({
                "process": t.process,
                "thread": t.thread,
                "tid": t.tid,
                "window_s": t.window.as_secs_f64(),
                "ran_share": t.ran.as_secs_f64() / window,
                "waited_share": t.waited.as_secs_f64() / window,
                "waits_over_1ms": t.waits_over_1ms,
                "longest_wait_us": t.longest_wait.as_micros() as u64,
            })
        })
        .collect();
    serde_json::json!({
        "method": "each busy thread's run-queue wait (runnable, not running) from /proc/<pid>/task/<tid>/schedstat, read every 1 ms; a wait is a run of intervals in which it waited at least half (±1 ms)",
        "threads": per_thread,
    })
}

/// One line per thread of a [`summary`], for people.
pub fn lines(summary: &serde_json::Value) -> Vec<String> {
    let Some(threads) = summary["threads"].as_array() else {
        return Vec::new();
    };
    threads
        .iter()
        .map(|t| {
            format!(
                "{} thread {} ({}): ran {:.1} % of the time, waited for a CPU {:.2} %, {} waits > 1 ms, longest {:.1} ms",
                t["process"].as_str().unwrap_or("?"),
                t["thread"].as_str().unwrap_or("?"),
                t["tid"],
                100.0 * t["ran_share"].as_f64().unwrap_or(0.0),
                100.0 * t["waited_share"].as_f64().unwrap_or(0.0),
                t["waits_over_1ms"],
                t["longest_wait_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_run_and_wait_fields_of_schedstat() {
        assert_eq!(parse_schedstat("414171 2500 1\n"), Some((414171, 2500)));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("1 x 1"), None);
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn waits_are_runs_of_intervals_waited_at_least_half() {
        let mut t = Tracker::default();
        let (mut run, mut wait) = (0, 0);
        t.sample(MS, run, wait); // the baseline
                                 // 10 intervals running, then 3 waited whole, 1 running, 1 waited a quarter.
        for _ in 0..10 {
            run += MS;
            t.sample(MS, run, wait);
        }
        for _ in 0..3 {
            wait += MS;
            t.sample(MS, run, wait);
        }
        run += MS;
        t.sample(MS, run, wait);
        wait += MS / 4;
        run += 3 * MS / 4;
        t.sample(MS, run, wait);
        let w = t.finish("p".into(), "t".into(), 1);
        assert_eq!(w.window, Duration::from_millis(15));
        assert_eq!(w.ran, Duration::from_micros(11_750));
        assert_eq!(w.waited, Duration::from_micros(3_250));
        assert_eq!(w.waits_over_1ms, 1);
        assert_eq!(w.longest_wait, Duration::from_millis(3));
    }

    #[test]
    fn a_wait_still_open_at_the_end_counts() {
        let mut t = Tracker::default();
        t.sample(MS, 0, 0);
        t.sample(2 * MS, 0, 2 * MS);
        let w = t.finish("p".into(), "t".into(), 1);
        assert_eq!(
            (w.waits_over_1ms, w.longest_wait),
            (1, Duration::from_millis(2))
        );
    }

    /// Two threads spinning on one CPU: each waits about half the time for the other, and
    /// the sampler sees it in the real kernel counters.
    #[test]
    fn two_spinners_on_one_cpu_each_wait_about_half() {
        let stop = Arc::new(AtomicBool::new(false));
        // The sampler reads thread names when it starts: a thread sets its own name once it
        // runs, so the sampler starts after both spinners are running.
        let started = Arc::new(std::sync::Barrier::new(3));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (stop, started) = (stop.clone(), started.clone());
                std::thread::Builder::new()
                    .name("spinner".into())
                    .spawn(move || {
                        started.wait();
                        crate::harness::pin_current_thread(0);
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                    .unwrap()
            })
            .collect();
        started.wait();
        let waits = CpuWaits::start(
            vec![Watch {
                label: "test".into(),
                pid: std::process::id(),
            }],
            Instant::now(),
        );
        // Long enough for the settle window and a few of the scheduler's slices after it.
        std::thread::sleep(Duration::from_millis(600));
        let seen = waits.stop();
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        let spinning: Vec<_> = seen.iter().filter(|t| t.thread == "spinner").collect();
        assert_eq!(
            spinning.len(),
            2,
            "both spinners are busy threads: {seen:?}"
        );
        for t in spinning {
            let share = t.waited.as_secs_f64() / t.window.as_secs_f64();
            assert!(
                (0.25..=0.75).contains(&share),
                "waited {share:.2} of the time: {t:?}"
            );
        }
    }
}
