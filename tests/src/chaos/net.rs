//! The test network: one network namespace per node, each with a veth whose other end is on
//! a bridge in the harness's namespace; addresses in 198.18.0.0/15 (RFC 2544's range for
//! benchmark tests), so nothing leaves the machine. Faults are nftables rules inside the
//! node namespaces (this kernel has no `tc netem`): dropping what a node receives from given
//! peers makes partitions, a random share of it makes loss.
//!
//! Everything created here is named after the harness's pid and removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

/// Port of each node's shard 0 (the same inside every namespace).
pub const NODE_PORT: u16 = 7420;

pub struct Lab {
    prefix: String,
    subnet: u8,
    nodes: usize,
    bridge: String,
}

/// Runs a command; its error (exit status and stderr) as text.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e} (install iproute2 and nftables)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Creates the bridge, one namespace per node (1..=nodes) and the nftables table each
    /// node's faults go in.
    pub fn create(nodes: usize) -> Result<Self, String> {
        remove_leftovers();
        let pid = std::process::id();
        let used = sh("ip", &["-o", "-4", "addr", "show"])?;
        // Starting from the pid's own: two harnesses at once rarely probe the same one.
        let first = pid % 250;
        let subnet = (0..250u32)
            .map(|i| ((first + i) % 250 + 1) as u8)
            .find(|x| !used.contains(&format!("198.18.{x}.")))
            .ok_or("no free 198.18.x.0/24 subnet for the test network")?;
        let lab = Self {
            prefix: format!("qc{pid}"),
            subnet,
            nodes,
            bridge: format!("qc{pid}b"),
        };
        sh("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.host_ip()),
                "dev",
                &lab.bridge,
            ],
        )?;
        sh("ip", &["link", "set", &lab.bridge, "up"])?;
        for n in 1..=nodes {
            let ns = lab.ns(n);
            let host_end = format!("{}h{n}", lab.prefix);
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &host_end, "master", &lab.bridge])?;
            sh("ip", &["link", "set", &host_end, "up"])?;
            let addr = format!("{}/24", lab.node_ip(n));
            lab.exec(n, "ip", &["addr", "add", &addr, "dev", "eth0"])?;
            lab.exec(n, "ip", &["link", "set", "eth0", "up"])?;
            lab.exec(n, "ip", &["link", "set", "lo", "up"])?;
            lab.exec(n, "nft", &["add", "table", "inet", "chaos"])?;
            lab.exec(
                n,
                "nft",
                &[
                    "add",
                    "chain",
                    "inet",
                    "chaos",
                    "input",
                    "{ type filter hook input priority 0; policy accept; }",
                ],
            )?;
        }
        Ok(lab)
    }

    /// Node `n`'s namespace.
    pub fn ns(&self, n: usize) -> String {
        format!("{}n{n}", self.prefix)
    }

    pub fn node_ip(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, n as u8)
    }

    /// The harness's (clients') address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 254)
    }

    fn exec(&self, n: usize, program: &str, args: &[&str]) -> Result<String, String> {
        let ns = self.ns(n);
        let mut all = vec!["netns", "exec", ns.as_str(), program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Node `n` drops everything it receives from the nodes `from`.
    pub fn drop_from(&self, n: usize, from: &[usize]) -> Result<(), String> {
        if from.is_empty() {
            return Ok(());
        }
        let set = from
            .iter()
            .map(|p| self.node_ip(*p).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rule = format!("ip saddr {{ {set} }} drop");
        self.exec(n, "nft", &["add", "rule", "inet", "chaos", "input", &rule])
            .map(drop)
    }

    /// Node `n` drops `percent` % of what it receives from the other nodes (not from
    /// clients): loss in one direction only.
    pub fn lossy(&self, n: usize, percent: u8) -> Result<(), String> {
        let rule = format!(
            "ip saddr != {} numgen random mod 100 < {percent} drop",
            self.host_ip()
        );
        self.exec(n, "nft", &["add", "rule", "inet", "chaos", "input", &rule])
            .map(drop)
    }

    /// Removes every partition and loss rule.
    pub fn heal(&self) -> Result<(), String> {
        for n in 1..=self.nodes {
            self.exec(n, "nft", &["flush", "chain", "inet", "chaos", "input"])?;
        }
        Ok(())
    }

    /// `ip netns exec <ns of n>`: the launcher of node `n`'s process.
    pub fn launcher(&self, n: usize) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.ns(n)]
    }
}

/// Removes the namespaces and links of harnesses that died without cleaning up (killed, or
/// interrupted): named `qc<pid>...` after a pid that no longer runs.
fn remove_leftovers() {
    let dead = |name: &str| -> Option<String> {
        let digits: String = name
            .strip_prefix("qc")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let alive = std::path::Path::new(&format!("/proc/{digits}")).exists();
        (!digits.is_empty() && !alive).then_some(digits)
    };
    if let Ok(list) = sh("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if dead(ns).is_some() {
                let _ = sh("ip", &["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = sh("ip", &["-o", "link", "show"]) {
        for l in links.lines() {
            let Some(name) = l
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            if dead(name).is_some() {
                let _ = sh("ip", &["link", "del", name]);
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in 1..=self.nodes {
            // Deleting the namespace deletes its veth end, and with it the pair.
            let _ = sh("ip", &["netns", "del", &self.ns(n)]);
            let _ = sh("ip", &["link", "del", &format!("{}h{n}", self.prefix)]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge]);
    }
}
