//! # quiver-bench: latency benchmarks
//!
//! - `bin/storage_bench.rs`: the storage engine against the raw disk, in one run (append
//!   throughput vs raw `DmaFile` writes, append+fsync latency vs raw write+fdatasync, group
//!   commit scaling, RSS bound). Results go to `perf/results/` and `docs/benchmarks.md`.
//! - `bin/node_bench.rs`: a node's produce latency and throughput against a raw QUIC echo.
//! - `bin/client_bench.rs`: the client's producer rate and consumer catch-up read.
//! - [`harness`]: starting a real broker process, pinning threads.
//! - Later (issue "The latency benchmark harness"): open-loop OMB-style workloads against a
//!   node, with coordinated omission shown.

pub mod floor;
pub mod latency;

pub mod harness {
    //! What the benchmarks share: a real `quiver serve` process, CPU pinning, the JSON report.

    /// Writes `report` as pretty JSON to `path` (creating its directory) and says so.
    pub fn write_report(path: &Path, report: &serde_json::Value) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("results dir");
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(report).expect("json") + "\n",
        )
        .expect("write report");
        eprintln!("wrote {}", path.display());
    }

    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    pub fn pin_current_thread(cpu: usize) {
        // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// A `quiver serve --cores 0` process, killed on drop.
    pub struct Broker {
        pub child: Child,
        pub port: u16,
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub fn start_broker(data_dir: &Path) -> Broker {
        let exe = std::env::current_exe().expect("own path");
        let bin = exe.parent().expect("target dir").join("quiver");
        let port = 27_000 + (std::process::id() % 1000) as u16 * 2;
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--cores",
                "0",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warn",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; build it with cargo build --release -p quiver",
                    bin.display()
                )
            });
        let stdout = child.stdout.take().expect("stdout");
        for line in BufReader::new(stdout).lines() {
            if line.expect("banner") == "ready" {
                break;
            }
        }
        Broker { child, port }
    }
}
