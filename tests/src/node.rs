//! A real `quiver serve` process for end-to-end tests: started on free ports with its own data
//! directory, waited for by its `ready` line (not by sleeping), killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quiver_client::{Connection, TlsTrust};

/// Path of the `quiver` binary cargo built next to this test executable.
pub fn quiver_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Test executables live in target/<profile>/deps, binaries (quiver-chaos) beside quiver.
    let beside = exe.parent().expect("the executable's directory");
    let dir = if beside.ends_with("deps") {
        beside.parent().expect("target/<profile>/ directory")
    } else {
        beside
    };
    let bin = dir.join("quiver");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p quiver` (./tools/test does)",
        bin.display()
    );
    bin
}

/// A base port with `count` consecutive free UDP ports (see
/// `quiver_bench::harness::free_udp_ports`).
pub fn free_ports(count: usize) -> u16 {
    quiver_bench::harness::free_udp_ports(count)
        .unwrap_or_else(|| panic!("no {count} consecutive free UDP ports found"))
}

/// Waits (up to 10 s) until the ports are free: after a kill -9 the kernel releases a node's
/// sockets only once it has torn down its io_uring rings, a moment after the process is gone.
/// There is no event to wait on, so this checks every 10 ms.
fn wait_for_free_ports(base_port: u16, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(0..count).all(|i| UdpSocket::bind(("127.0.0.1", base_port + i as u16)).is_ok()) {
        assert!(
            std::time::Instant::now() < deadline,
            "ports {base_port}.. still busy after 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `cmd` (a `quiver serve`, perhaps behind a launcher such as `ip netns exec`; its
/// stderr as the caller set it) with its stdout piped and waits (up to 60 s) for its `ready` line; returns the child and the
/// banner lines before it.
pub fn spawn_until_ready(cmd: &mut Command) -> (Child, Vec<String>) {
    try_spawn_until_ready(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// [`spawn_until_ready`], with a node that cannot start or is not ready within 60 s as an
/// error (it is killed).
pub fn try_spawn_until_ready(cmd: &mut Command) -> Result<(Child, Vec<String>), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn quiver serve: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err("quiver serve has no stdout".into());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut banner = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line == "ready" => return Ok((child, banner)),
            Ok(line) => banner.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "quiver serve did not print `ready` within 60 s; output so far: {banner:?}"
                ));
            }
        }
    }
}

pub struct Node {
    child: Child,
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub shards: usize,
    pub banner: Vec<String>,
}

impl Node {
    /// Starts a node with `shards` unpinned shards in `data_dir` and waits until it is ready.
    pub fn start(data_dir: &Path, shards: usize) -> Self {
        Self::start_on(data_dir, shards, free_ports(shards))
    }

    pub fn start_on(data_dir: &Path, shards: usize, base_port: u16) -> Self {
        Self::start_with(data_dir, shards, base_port, &[])
    }

    /// [`Node::start_on`] with more `serve` flags.
    pub fn start_with(data_dir: &Path, shards: usize, base_port: u16, extra: &[&str]) -> Self {
        wait_for_free_ports(base_port, shards);
        let mut cmd = Command::new(quiver_binary());
        cmd.args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--shards",
                &shards.to_string(),
                "--listen",
                &format!("127.0.0.1:{base_port}"),
                "--log-level",
                "warn",
            ])
            .args(extra)
            .stderr(Stdio::inherit());
        let (child, banner) = spawn_until_ready(&mut cmd);
        Self {
            child,
            data_dir: data_dir.to_path_buf(),
            base_port,
            shards,
            banner,
        }
    }

    /// The node process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn shard_addr(&self, shard: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + shard as u16))
    }

    /// A client connection to `shard`, trusting the node's dev certificate from its data dir.
    pub async fn connect(&self, shard: usize) -> Connection {
        Connection::connect(
            self.shard_addr(shard),
            "localhost",
            &TlsTrust::LocalDataDir(self.data_dir.clone()),
        )
        .await
        .expect("connect to the node")
    }

    /// SIGTERM, then the exit status once the node stopped (within 60 s).
    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the node's process: requests sent meanwhile
    /// wait, unanswered, in its socket buffer.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "signalling the node: {}",
            std::io::Error::last_os_error()
        );
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for quiver") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "quiver did not stop within 60 s of SIGTERM"
            );
            // Waiting for a process to exit has no event to block on with a timeout here;
            // a short pause between checks bounds the cost.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A `quiver_client::Client` for this node, trusting its dev certificate, whose requests
    /// give up after `request_timeout_ms` (a killed node never says goodbye: requests on its
    /// old connection wait for this timeout before they are retried).
    pub async fn client(&self, request_timeout_ms: u64) -> quiver_client::Client {
        let config = quiver_client::ClientConfig {
            trust: TlsTrust::LocalDataDir(self.data_dir.clone()),
            request_timeout_ms,
            ..quiver_client::ClientConfig::default()
        };
        quiver_client::Client::connect(&[self.shard_addr(0)], config)
            .await
            .expect("client connects")
    }

    /// [`Node::client`] after creating `topic` with `partitions` partitions through it.
    pub async fn client_with_topic(
        &self,
        request_timeout_ms: u64,
        topic: &str,
        partitions: i32,
    ) -> quiver_client::Client {
        let client = self.client(request_timeout_ms).await;
        quiver_client::Admin::new(client.clone())
            .create_topic(topic, partitions, &[])
            .await
            .expect("topic created");
        client
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
