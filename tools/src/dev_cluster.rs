//! `quiver dev cluster --nodes 3`: a local cluster of real node processes for trying things
//! out. Node N keeps its data in `<dir>/node-N` and listens at port base + 10 × (N − 1)
//! (base 7420 by default); all
//! share node 1's dev certificate and are the controller's voters. The addresses are written
//! to `<dir>/dev-cluster.brokers`, so client commands run from the same folder find every
//! node (and the certificate) by themselves. Ctrl-C stops them all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The file listing the dev cluster's addresses, in its data folder.
pub const BROKERS_FILE: &str = "dev-cluster.brokers";
/// Node N's shard 0 listens 10 ports further per node (room for 10 shards each).
const PORTS_PER_NODE: u16 = 10;
/// Most nodes of a dev cluster (its ports stay below 7420 + 10 × 9).
pub const MAX_NODES: usize = 9;

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Starts node `id` and waits for its `ready` line (it prints its banner before).
fn start_node(
    exe: &Path,
    dir: &Path,
    id: usize,
    seeds: &str,
    port: u16,
    shards: usize,
) -> Result<Child, String> {
    let mut child = Command::new(exe)
        .args(["serve", "--node-id", &id.to_string(), "--seeds", seeds])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            &shards.to_string(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start node {id}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from the node")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line == "ready" => return Ok(child),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                return Err(format!(
                    "node {id} did not start within 120 s (see its messages above)"
                ));
            }
        }
    }
}

fn stop_all(children: &mut [(usize, Child)], verbose: bool) {
    for (_, c) in children.iter() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (id, c) in children.iter_mut() {
        let waited = c.wait();
        if !verbose {
            continue;
        }
        match waited {
            Ok(status) if status.success() => println!("node {id} stopped"),
            Ok(status) => println!("node {id} stopped: {status}"),
            Err(e) => println!("node {id}: {e}"),
        }
    }
}

/// Node processes of a local cluster, stopped (SIGTERM, then waited for) on drop.
pub struct LocalCluster {
    children: Vec<(usize, Child)>,
    /// Each node's shard-0 address, node 1 first.
    pub addresses: Vec<String>,
    /// Node 1's data directory (its certificate is everyone's).
    pub first_node_dir: PathBuf,
    /// Print a line per node stopped.
    verbose: bool,
}

impl LocalCluster {
    /// Starts `nodes` nodes of `shards` shards under `dir` (node N in `node-N`, at port
    /// `base_port` + 10 × (N − 1)), each waited for until it is ready.
    pub fn start(
        nodes: usize,
        shards: usize,
        base_port: u16,
        dir: &Path,
        verbose: bool,
    ) -> Result<Self, String> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(format!("--nodes {nodes}: use 1 to {MAX_NODES}"));
        }
        if shards == 0 || shards > PORTS_PER_NODE as usize {
            return Err(format!("--shards {shards}: use 1 to {PORTS_PER_NODE}"));
        }
        let port_of = |id: usize| {
            base_port
                .checked_add(PORTS_PER_NODE * (id as u16 - 1))
                .ok_or_else(|| format!("--base-port {base_port} leaves no room for {nodes} nodes"))
        };
        port_of(nodes)?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let addresses: Vec<String> = (1..=nodes)
            .map(|i| port_of(i).map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_, _>>()?;
        let seeds = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            children: Vec::new(),
            addresses,
            first_node_dir: dir.join("node-1"),
            verbose,
        };
        for id in 1..=nodes {
            if id > 1 {
                // One certificate for all: nodes trust peers that present it.
                let tls = dir.join(format!("node-{id}")).join("tls");
                if !tls.exists() {
                    copy_dir(&dir.join("node-1").join("tls"), &tls)
                        .map_err(|e| format!("cannot copy node 1's certificate: {e}"))?;
                }
            }
            // On an error, `cluster` drops here and stops the nodes already started.
            let child = start_node(&exe, dir, id, &seeds, port_of(id)?, shards)?;
            cluster.children.push((id, child));
        }
        Ok(cluster)
    }

    /// The nodes' process ids, node 1 first.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        stop_all(&mut self.children, self.verbose);
    }
}

pub fn run(nodes: usize, shards: usize, base_port: u16, dir: PathBuf) -> Result<(), String> {
    // Ctrl-C reaches this process (and the nodes, in the same process group): wait for it
    // with sigwait, then make sure every node stops.
    let set = termination_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let cluster = LocalCluster::start(nodes, shards, base_port, &dir, true)?;
    let addresses = &cluster.addresses;
    let list = addresses.join(",");
    std::fs::write(dir.join(BROKERS_FILE), &list)
        .map_err(|e| format!("cannot write {}: {e}", dir.join(BROKERS_FILE).display()))?;
    println!("quiver dev cluster: {nodes} nodes, {shards} shards each");
    for (i, a) in addresses.iter().enumerate() {
        println!(
            "  node {}  quic://{a}  data {}",
            i + 1,
            dir.join(format!("node-{}", i + 1)).display()
        );
    }
    println!("from this folder, client commands find the nodes by themselves:");
    println!("  quiver cluster status");
    println!("  quiver topic create readings --partitions 6");
    println!(
        "elsewhere: --broker {list} --node-data-dir {}",
        dir.join("node-1").display()
    );
    println!("Ctrl-C stops every node");
    let mut sig = 0;
    // SAFETY: `set` is initialised and blocked in this thread.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    println!("stopping {nodes} nodes");
    drop(cluster);
    let _ = std::fs::remove_file(dir.join(BROKERS_FILE));
    Ok(())
}
