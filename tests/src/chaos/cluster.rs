//! The cluster under test: `quiver serve` processes, each in its own network namespace
//! (`net::Lab`) with its data directory on its own small loop-mounted ext4 (so one node's
//! disk can be filled); kill -9, restart, SIGSTOP/SIGCONT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use quiver_client::{Client, ClientConfig, TlsTrust};

use super::net::{Lab, NODE_PORT};
use crate::loopfs::LoopFs;
use crate::node::{quiver_binary, try_spawn_until_ready};

/// Shards per node: two, so requests cross shards on a node too.
pub const SHARDS: usize = 2;
/// Each node's filesystem.
const DISK_MIB: u64 = 512;
/// Members that stop heartbeating are removed after this (quick rebalances after a kill).
const GROUP_SESSION_TIMEOUT_MS: &str = "6000";

pub struct ChaosCluster {
    pub lab: Lab,
    disks: Vec<LoopFs>,
    procs: Vec<Option<Child>>,
    paused: Vec<bool>,
    seeds: String,
    /// Where node n's log goes (`node-<n>.log`, appended across restarts).
    log_dir: PathBuf,
    log_level: String,
}

impl ChaosCluster {
    /// The network, one disk per node, a certificate, then every node started.
    pub fn start(nodes: usize, work_dir: &Path, log_level: &str) -> Result<Self, String> {
        let lab = Lab::create(nodes)?;
        let disks = (0..nodes)
            .map(|_| LoopFs::new(work_dir, DISK_MIB))
            .collect();
        let seeds = (1..=nodes)
            .map(|n| format!("{n}@{}:{NODE_PORT}", lab.node_ip(n)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            lab,
            disks,
            procs: (0..nodes).map(|_| None).collect(),
            paused: vec![false; nodes],
            seeds,
            log_dir: work_dir.to_path_buf(),
            log_level: log_level.to_string(),
        };
        // Node links verify that a peer's certificate names its address: one certificate
        // naming every node's address, shared as the nodes' "dev" identity (and trusted by
        // the clients through node 1's data directory).
        let mut names = vec!["localhost".to_string()];
        names.extend((1..=nodes).map(|n| cluster.lab.node_ip(n).to_string()));
        let cert = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("making the cluster certificate: {e}"))?;
        for n in 1..=nodes {
            let tls = cluster.data_dir(n).join("tls");
            std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
            std::fs::write(tls.join("dev-cert.pem"), cert.cert.pem())
                .and_then(|()| {
                    std::fs::write(tls.join("dev-key.pem"), cert.key_pair.serialize_pem())
                })
                .map_err(|e| format!("{}: {e}", tls.display()))?;
        }
        for n in 1..=nodes {
            cluster.start_node(n)?;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> usize {
        self.procs.len()
    }

    /// Node `n`'s data directory (its disk's mount point).
    pub fn data_dir(&self, n: usize) -> PathBuf {
        self.disks[n - 1].mount_point.join("data")
    }

    pub fn disk(&self, n: usize) -> &Path {
        &self.disks[n - 1].mount_point
    }

    /// Starts node `n` (again) and waits for its `ready` line; an error when it is not ready
    /// within 60 s (it is killed and stays down).
    pub fn start_node(&mut self, n: usize) -> Result<(), String> {
        let mut cmd = Command::new("ip");
        cmd.args(self.lab.launcher(n))
            .arg(quiver_binary())
            .args(["serve", "--data-dir"])
            .arg(self.data_dir(n))
            .args([
                "--shards",
                &SHARDS.to_string(),
                "--listen",
                &format!("{}:{NODE_PORT}", self.lab.node_ip(n)),
                "--node-id",
                &n.to_string(),
                "--seeds",
                &self.seeds,
                "--group-session-timeout-ms",
                GROUP_SESSION_TIMEOUT_MS,
                "--group-heartbeat-interval-ms",
                "1000",
                "--log-level",
                &self.log_level,
            ]);
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(n))
        {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(std::process::Stdio::inherit()),
        };
        let (child, _banner) =
            try_spawn_until_ready(&mut cmd).map_err(|e| format!("n{n} did not start: {e}"))?;
        self.procs[n - 1] = Some(child);
        self.paused[n - 1] = false;
        Ok(())
    }

    /// Node `n`'s log file.
    pub fn log_path(&self, n: usize) -> PathBuf {
        self.log_dir.join(format!("node-{n}.log"))
    }

    /// Whether node `n`'s process runs (one that exited by itself is forgotten here: the
    /// next `revive_all` starts it again).
    pub fn is_running(&mut self, n: usize) -> bool {
        let exited = match &mut self.procs[n - 1] {
            Some(child) => child.try_wait().ok().flatten(),
            None => return false,
        };
        if exited.is_some() {
            self.procs[n - 1] = None;
            return false;
        }
        true
    }

    /// Nodes whose process exited by itself since they were started (with their status).
    pub fn exited(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for n in 1..=self.nodes() {
            if let Some(child) = &mut self.procs[n - 1] {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((n, status));
                }
            }
        }
        out
    }

    /// kill -9 of node `n` (`ip netns exec` execs the node, so the child is the node).
    pub fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.procs[n - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[n - 1] = false;
    }

    /// The process id of node `n`, while it runs.
    pub fn pid(&self, n: usize) -> Option<u32> {
        self.procs[n - 1].as_ref().map(|c| c.id())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `n`.
    pub fn pause(&mut self, n: usize, paused: bool) {
        if let Some(child) = &self.procs[n - 1] {
            let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            self.paused[n - 1] = paused;
        }
    }

    /// Every node running and thawed (killed ones restarted); the nodes that would not start.
    pub fn revive_all(&mut self) -> Vec<(usize, String)> {
        let mut failed = Vec::new();
        for n in 1..=self.nodes() {
            if self.paused[n - 1] {
                self.pause(n, false);
            }
            if !self.is_running(n) {
                if let Err(e) = self.start_node(n) {
                    failed.push((n, e));
                }
            }
        }
        failed
    }

    /// Shard 0 of every node: a client's bootstrap list.
    pub fn bootstrap(&self) -> Vec<SocketAddr> {
        (1..=self.nodes())
            .map(|n| SocketAddr::from((self.lab.node_ip(n), NODE_PORT)))
            .collect()
    }

    /// A client of the cluster whose requests give up after `request_timeout_ms`.
    pub async fn client(&self, request_timeout_ms: u64) -> Result<Client, String> {
        let config = ClientConfig {
            trust: TlsTrust::LocalDataDir(self.data_dir(1)),
            request_timeout_ms,
            connect_timeout_ms: 2_000,
            ..ClientConfig::default()
        };
        Client::connect(&self.bootstrap(), config)
            .await
            .map_err(|e| format!("client: {e}"))
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for n in 1..=self.nodes() {
            self.pause(n, false);
            self.kill(n);
        }
    }
}
