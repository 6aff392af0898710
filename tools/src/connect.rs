//! What every client command shares: which broker, how to trust it, JSON or tables.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use quiver_client::{Client, ClientConfig, TlsTrust};

/// How long a command waits for an answer to one request, unless it has a flag for it.
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;

/// How long the CLI waits for a QUIC handshake. Shorter than the client library's 10 s: a
/// person at a terminal, usually on the node's own machine, wants to hear soon that nothing
/// answers. (A closed port on a reachable host fails at once: the client sees the ICMP.)
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// Flags of every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Broker address, host:port (shard 0 of the node).
    #[arg(long, env = "QUIVER_BROKERS", default_value = crate::serve::DEFAULT_LISTEN, global = true)]
    pub broker: String,
    /// Print JSON (one object per line for streams) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust brokers whose certificate is signed by a CA in this PEM file.
    #[arg(long, global = true, conflicts_with = "fingerprint")]
    pub ca: Option<PathBuf>,
    /// Trust exactly the certificate with this SHA-256 fingerprint (as `quiver serve` prints it).
    #[arg(long, global = true)]
    pub fingerprint: Option<String>,
    /// Data directory of a local node, whose dev certificate is then trusted.
    #[arg(long = "node-data-dir", global = true, default_value = "./quiver-data")]
    pub node_data_dir: PathBuf,
}

impl ClientArgs {
    fn trust(&self) -> TlsTrust {
        match (&self.ca, &self.fingerprint) {
            (Some(ca), _) => TlsTrust::CaFile(ca.clone()),
            (None, Some(fp)) => TlsTrust::Fingerprint(fp.clone()),
            (None, None) => TlsTrust::LocalDataDir(self.local_node_dir()),
        }
    }

    /// The local node's data directory: `--node-data-dir`, or in a dev cluster's folder its
    /// first node's (all share its certificate).
    fn local_node_dir(&self) -> PathBuf {
        let dev_node = self.node_data_dir.join("node-1");
        if !self.node_data_dir.join("tls").exists() && dev_node.join("tls").exists() {
            return dev_node;
        }
        self.node_data_dir.clone()
    }

    /// The brokers to try: `--broker`; left at its default in a dev cluster's folder, every
    /// node of that cluster (`quiver dev cluster` lists them).
    fn broker_list(&self) -> String {
        if self.broker == crate::serve::DEFAULT_LISTEN {
            let file = self.node_data_dir.join(crate::dev_cluster::BROKERS_FILE);
            if let Ok(list) = std::fs::read_to_string(file) {
                if !list.trim().is_empty() {
                    return list.trim().to_string();
                }
            }
        }
        self.broker.clone()
    }

    fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let mut out = Vec::new();
        let brokers = self.broker_list();
        for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let addrs = b
                .to_socket_addrs()
                .map_err(|e| format!("broker address {b:?}: {e} (expected host:port)"))?;
            out.extend(addrs);
        }
        if out.is_empty() {
            return Err("no broker address given (--broker or QUIVER_BROKERS)".into());
        }
        Ok(out)
    }

    /// Connects, with an error that says what to check when nothing answers.
    pub async fn connect(&self) -> Result<Client, String> {
        self.connect_with_request_timeout(REQUEST_TIMEOUT_MS).await
    }

    /// [`ClientArgs::connect`], each request waiting at most `request_timeout_ms` for its
    /// answer.
    pub async fn connect_with_request_timeout(
        &self,
        request_timeout_ms: u64,
    ) -> Result<Client, String> {
        let addrs = self.addresses()?;
        let config = ClientConfig {
            trust: self.trust(),
            request_timeout_ms,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            ..ClientConfig::default()
        };
        Client::connect(&addrs, config).await.map_err(|e| {
            let e = e.to_string();
            let ask = if e.contains("quiver serve") {
                ""
            } else {
                "is `quiver serve` running? "
            };
            format!(
                "cannot reach a Quiver broker at {}: {e}\n  {ask}(--broker HOST:PORT or QUIVER_BROKERS to point elsewhere)",
                self.broker
            )
        })
    }
}

/// Prints rows as an aligned table (first row = header).
pub fn print_table(rows: &[Vec<String>]) {
    let Some(first) = rows.first() else { return };
    let widths: Vec<usize> = (0..first.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        // A closed pipe (`| head`) ends the table quietly.
        if writeln!(out, "{}", line.join("  ").trim_end()).is_err() {
            return;
        }
    }
}
