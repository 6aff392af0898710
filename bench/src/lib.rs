//! # quiver-bench: latency benchmarks
//!
//! - `bin/storage_bench.rs`: the storage engine against the raw disk, in one run (append
//!   throughput vs raw `DmaFile` writes, append+fsync latency vs raw write+fdatasync, group
//!   commit scaling, RSS bound). Results go to `perf/results/` and `docs/benchmarks.md`.
//! - `bin/node_bench.rs`: a node's produce latency and throughput against a raw QUIC echo.
//! - `bin/client_bench.rs`: the client's producer rate and consumer catch-up read.
//! - `bin/raft_bench.rs`: the Raft core on one core for 1 to 10,000 groups (committed
//!   entries per CPU-second, CPU per input, envelopes per node pair).
//! - `bin/cluster_bench.rs`: the controller's side of 100 nodes × 100,000 partitions
//!   (placement time, metadata image bytes, spread, heartbeat envelopes per node).
//! - [`failover_sim`]: a failed node's leaderships moving, in virtual time with the Raft
//!   core (`cluster_bench` runs it at 100 nodes).
//! - [`harness`]: starting a real broker process, pinning threads.
//! - [`latency`]: the OMB-style harness behind `quiver bench run`: workloads, open-loop
//!   pacing, the recorder, drivers (Quiver, the durable echo, NATS), rate search.
//! - [`floor`]: `quiver bench floor`'s QUIC echo and raw write+fdatasync.
//! - [`meters`]: what a run measures of the machine beside Quiver, through
//!   `instruments` (hiccups, CPU waits, busy CPUs, machine settings) when built with the
//!   cargo feature `instruments`; the shipped binary leaves them out.

pub mod failover_sim;
pub mod floor;
#[cfg(feature = "instruments")]
pub mod instruments;
pub mod latency;
pub mod meters;

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

    /// A base port with `count` consecutive free UDP ports on 127.0.0.1, below the kernel's
    /// ephemeral range: a socket bound to port 0 (a client's) never takes a port a node on
    /// them needs. `None` when 200 random tries found none.
    pub fn free_udp_ports(count: usize) -> Option<u16> {
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let low = 10_000u16;
        let span = u64::from(
            ephemeral_low
                .saturating_sub(low)
                .saturating_sub(count as u16)
                .max(1),
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut state = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
        for _ in 0..200 {
            // A linear congruential step is random enough to spread concurrent callers.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let base = low + ((state >> 33) % span) as u16;
            let all_free = (0..count)
                .all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i as u16)).is_ok());
            if all_free {
                return Some(base);
            }
        }
        None
    }

    /// Where a benchmark on this machine puts things, thread per core as in production: the
    /// load generator on CPU 0 and the node's shards on CPUs 1.. (`--embedded`), and the
    /// floor's echo client and server the same way. `None` on one CPU: nothing is pinned.
    /// Unpinned, the scheduler moved the node and the load generator onto each other's core
    /// and p99.9 end-to-end at 10,000 msg/s was 3-5x higher (docs/decisions/0006).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Placement {
        pub load_generator_cpu: usize,
        /// The node's shards take this CPU and every one after it.
        pub first_node_cpu: usize,
        pub cpus: usize,
    }

    impl Placement {
        pub fn of_this_machine() -> Option<Self> {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus >= 2).then_some(Self {
                load_generator_cpu: 0,
                first_node_cpu: 1,
                cpus,
            })
        }
    }

    /// The machine's online CPUs, not the calling thread's affinity (the load generator is
    /// pinned to one): what the per-CPU meters cover and the reports record.
    pub fn online_cpus() -> usize {
        // SAFETY: sysconf reads a system constant.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        usize::try_from(online).unwrap_or(1).max(1)
    }

    pub fn pin_current_thread(cpu: usize) {
        // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// Sends `records` copies of `value` to `topic` through `producer` (keyless: sticky
    /// partitions), at most 200,000 unacknowledged, then closes it; records per second.
    pub async fn produce_all(
        producer: quiver_client::Producer,
        topic: &str,
        records: u64,
        value: &bytes::Bytes,
    ) -> f64 {
        let start = std::time::Instant::now();
        let mut window = std::collections::VecDeque::new();
        for _ in 0..records {
            window.push_back(
                producer
                    .enqueue(quiver_client::ProducerRecord::new(topic, value.clone()))
                    .await
                    .expect("enqueue"),
            );
            if window.len() >= 200_000 {
                window
                    .pop_front()
                    .expect("non-empty")
                    .await
                    .expect("delivery");
            }
        }
        for f in window {
            f.await.expect("delivery");
        }
        producer.close().await;
        records as f64 / start.elapsed().as_secs_f64()
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

    /// A node started on an emptied `dir` (the one-process benches' start).
    pub fn fresh_broker(dir: &Path) -> Broker {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("bench dir");
        start_broker(dir)
    }

    /// A client of `broker`, trusting the dev certificate in its data directory `dir`.
    pub async fn local_client(broker: &Broker, dir: &Path) -> quiver_client::Client {
        let dir = std::fs::canonicalize(dir).expect("bench dir");
        let config = quiver_client::ClientConfig {
            trust: quiver_client::TlsTrust::LocalDataDir(dir),
            ..quiver_client::ClientConfig::default()
        };
        let addr = format!("127.0.0.1:{}", broker.port).parse().expect("addr");
        quiver_client::Client::connect(&[addr], config)
            .await
            .expect("connect")
    }

    /// The median of per-run figures (the upper middle one of an even count; 0 for none).
    pub fn median(mut v: Vec<f64>) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
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
