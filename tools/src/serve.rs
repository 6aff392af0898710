//! `quiver serve`: the node's configuration (TOML file < `QUIVER_*` environment < flags, unknown
//! keys refused by name), start-up checks, the banner.

use std::net::SocketAddr;
use std::path::PathBuf;

use quiver_broker::shard::NodeSettings;
use quiver_node::data_dir_lock::{DataDirLock, DataDirLockError};
use quiver_node::run::{run_node, Banner, NodeConfig};
use quiver_storage::LogConfig;
use serde::{Deserialize, Serialize};

use quiver_node::startup_checks as diagnose;

/// Default address of a local node: shard i listens on port 7420 + i.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// Every key of the serve configuration: name, default, meaning. The file, the environment
/// (`QUIVER_<KEY>`) and the flags (`--<key-with-dashes>`) all use these names;
/// docs/operations.md's reference is generated from this table (a test checks it).
pub const CONFIG_KEYS: &[(&str, &str, &str)] = &[
    (
        "node_id",
        "0",
        "This node's id in the cluster; recorded in the data directory (node.json), which then refuses any other id.",
    ),
    (
        "seeds",
        "none: this node alone",
        "The controller's voters, the same list on every node: id@host:port of each one's shard 0, comma-separated (1@10.0.0.1:7420,2@10.0.0.2:7420,3@10.0.0.3:7420); this node's id must be one of them.",
    ),
    (
        "rack",
        "none",
        "This node's rack (or zone), registered with the controller: a partition's replicas go to distinct racks where nodes name one.",
    ),
    (
        "data_dir",
        "./quiver-data",
        "Where partitions, the controller log (metadata) and the dev certificate live.",
    ),
    (
        "listen",
        DEFAULT_LISTEN,
        "Address of shard 0; shard i listens on the same IP at port + i.",
    ),
    (
        "advertised_host",
        "the listen IP",
        "Host name or IP clients are told to use in metadata.",
    ),
    (
        "shards",
        "one per CPU",
        "Number of shards, unpinned (tests, laptops). Conflicts with cores.",
    ),
    (
        "cores",
        "every CPU",
        "CPUs to pin one shard each to, e.g. \"0-3\" or \"0,2,4\".",
    ),
    (
        "tls_cert",
        "dev certificate",
        "PEM certificate chain; with tls_key, replaces the dev certificate.",
    ),
    ("tls_key", "dev key", "PEM private key for tls_cert."),
    (
        "tls_client_ca",
        "none",
        "PEM CAs whose client certificates are required (mTLS).",
    ),
    (
        "max_frame_bytes",
        "16842752",
        "Largest request frame accepted (16 MiB + 64 KiB).",
    ),
    (
        "retention_check_interval_ms",
        "300000",
        "How often each partition applies retention and, for compacted topics, checks whether a compaction is due.",
    ),
    (
        "shard_commit_log",
        "true",
        "acks=all appends are made durable by one commit log per shard: one O_DSYNC write per round for all its partitions (false: a write + fdatasync per partition per round).",
    ),
    (
        "offsets_topic_partitions",
        "16",
        "Partitions of __consumer_offsets when it is created on first use (a group's coordinator is the shard owning hash(group) % N).",
    ),
    (
        "group_session_timeout_ms",
        "45000",
        "A consumer group member not heard from for this long is removed and its partitions reassigned (new groups' default).",
    ),
    (
        "group_heartbeat_interval_ms",
        "5000",
        "How often consumer group members heartbeat (new groups' default; below the session timeout).",
    ),
    (
        "log_level",
        "info",
        "Log filter (tracing syntax); RUST_LOG overrides it.",
    ),
];

/// The configuration as the file, the environment or the flags give it; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// This node's id in the cluster [default: 0].
    #[arg(long)]
    pub node_id: Option<i32>,
    /// The controller's voters: id@host:port of each one's shard 0, comma-separated.
    #[arg(long)]
    pub seeds: Option<String>,
    /// This node's rack or zone: a partition's replicas go to distinct racks.
    #[arg(long)]
    pub rack: Option<String>,
    /// Where partitions, metadata and the dev certificate live [default: ./quiver-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of shard 0; shard i listens on port + i [default: 127.0.0.1:7420].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Host name clients should use (in metadata) [default: the listen IP].
    #[arg(long)]
    pub advertised_host: Option<String>,
    /// Number of shards, unpinned (tests, laptops) [default: one pinned shard per CPU].
    #[arg(long, conflicts_with = "cores")]
    pub shards: Option<usize>,
    /// CPUs to pin one shard each to, e.g. 0-3 or 0,2,4.
    #[arg(long)]
    pub cores: Option<String>,
    /// PEM certificate chain (with --tls-key) instead of the dev certificate.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mTLS).
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// Largest request frame accepted.
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// How often each partition applies retention, in ms.
    #[arg(long)]
    pub retention_check_interval_ms: Option<u64>,
    /// Make acks=all appends durable through one commit log per shard (true) or an fdatasync
    /// per partition (false).
    #[arg(long)]
    pub shard_commit_log: Option<bool>,
    /// Partitions of __consumer_offsets when it is created.
    #[arg(long)]
    pub offsets_topic_partitions: Option<u32>,
    /// Consumer group session timeout (new groups' default), ms.
    #[arg(long)]
    pub group_session_timeout_ms: Option<u32>,
    /// Consumer group heartbeat interval (new groups' default), ms.
    #[arg(long)]
    pub group_heartbeat_interval_ms: Option<u32>,
    /// Log filter (tracing syntax), e.g. info or quiver_storage=debug.
    #[arg(long)]
    pub log_level: Option<String>,
}

impl ServeConfig {
    /// `self`, with every key it lacks taken from `lower`.
    pub fn over(self, lower: ServeConfig) -> ServeConfig {
        ServeConfig {
            node_id: self.node_id.or(lower.node_id),
            seeds: self.seeds.or(lower.seeds),
            rack: self.rack.or(lower.rack),
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            advertised_host: self.advertised_host.or(lower.advertised_host),
            shards: self.shards.or(lower.shards),
            cores: self.cores.or(lower.cores),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            retention_check_interval_ms: self
                .retention_check_interval_ms
                .or(lower.retention_check_interval_ms),
            shard_commit_log: self.shard_commit_log.or(lower.shard_commit_log),
            offsets_topic_partitions: self
                .offsets_topic_partitions
                .or(lower.offsets_topic_partitions),
            group_session_timeout_ms: self
                .group_session_timeout_ms
                .or(lower.group_session_timeout_ms),
            group_heartbeat_interval_ms: self
                .group_heartbeat_interval_ms
                .or(lower.group_heartbeat_interval_ms),
            log_level: self.log_level.or(lower.log_level),
        }
    }

    /// Parses a TOML file; an unknown key is an error that names it.
    pub fn from_toml(text: &str, path: &str) -> Result<ServeConfig, String> {
        toml::from_str(text).map_err(|e| format!("config file {path}: {e}"))
    }

    /// The `QUIVER_<KEY>` environment variables.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ServeConfig, String> {
        let mut table = toml::Table::new();
        for (key, _, _) in CONFIG_KEYS {
            let var = format!("QUIVER_{}", key.to_uppercase());
            if let Some(value) = get(&var) {
                let v = match *key {
                    "node_id"
                    | "shards"
                    | "max_frame_bytes"
                    | "retention_check_interval_ms"
                    | "offsets_topic_partitions"
                    | "group_session_timeout_ms"
                    | "group_heartbeat_interval_ms" => toml::Value::Integer(
                        value
                            .trim()
                            .parse()
                            .map_err(|_| format!("{var}={value:?} is not a whole number"))?,
                    ),
                    "shard_commit_log" => toml::Value::Boolean(match value.trim() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("{var}={value:?} is not true or false")),
                    }),
                    _ => toml::Value::String(value),
                };
                table.insert((*key).to_string(), v);
            }
        }
        ServeConfig::deserialize(table).map_err(|e| format!("environment: {e}"))
    }
}

/// The controller voters of `seeds` (`id@host:port,...`), which must name `me`.
pub fn parse_seeds(
    text: &str,
    me: i32,
) -> Result<std::collections::BTreeMap<i32, SocketAddr>, String> {
    let mut voters = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("seed {item:?} is not id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| format!("seed {item:?}: {id:?} is not a node id"))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(addr.trim())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("seed {item:?}: cannot resolve {addr:?}"))?;
        if voters.insert(id, addr).is_some() {
            return Err(format!("seeds name node {id} twice"));
        }
    }
    if !voters.is_empty() && !voters.contains_key(&me) {
        tracing::info!(
            node_id = me,
            "this node is not among the seeds (the controller's voters): it joins as a broker, following the controller's log as a learner"
        );
    }
    if voters.len() % 2 == 0 && !voters.is_empty() {
        tracing::warn!(
            voters = voters.len(),
            "an even number of controller voters tolerates no more failures than one fewer"
        );
    }
    Ok(voters)
}

/// Consumer group settings from the configuration, checked against the node's bounds.
fn group_settings(
    cfg: &ServeConfig,
) -> Result<quiver_broker::groups::GroupSettings, (i32, String)> {
    let mut g = quiver_broker::groups::GroupSettings::default();
    if let Some(n) = cfg.offsets_topic_partitions {
        if n == 0 || n > quiver_broker::MAX_PARTITIONS_PER_TOPIC as u32 {
            return Err((
                2,
                format!(
                    "offsets_topic_partitions = {n}: use 1 to {}",
                    quiver_broker::MAX_PARTITIONS_PER_TOPIC
                ),
            ));
        }
        g.offsets_topic_partitions = n;
    }
    if let Some(ms) = cfg.group_session_timeout_ms {
        g.defaults.session_timeout_ms = ms;
    }
    if let Some(ms) = cfg.group_heartbeat_interval_ms {
        g.defaults.heartbeat_interval_ms = ms;
    }
    let l = &g.limits;
    let d = &g.defaults;
    if !(l.min_session_timeout_ms..=l.max_session_timeout_ms).contains(&d.session_timeout_ms)
        || !(l.min_heartbeat_interval_ms..=l.max_heartbeat_interval_ms)
            .contains(&d.heartbeat_interval_ms)
        || d.heartbeat_interval_ms >= d.session_timeout_ms
    {
        return Err((2, format!(
            "group_session_timeout_ms = {} and group_heartbeat_interval_ms = {}: the session must be {}..={} ms, the heartbeat {}..={} ms and below the session",
            d.session_timeout_ms, d.heartbeat_interval_ms, l.min_session_timeout_ms, l.max_session_timeout_ms, l.min_heartbeat_interval_ms, l.max_heartbeat_interval_ms
        )));
    }
    Ok(g)
}

/// The configuration reference of docs/operations.md, generated from [`CONFIG_KEYS`].
pub fn config_reference_markdown() -> String {
    let mut out = String::from("| key | env | flag | default | meaning |\n|---|---|---|---|---|\n");
    for (key, default, meaning) in CONFIG_KEYS {
        out.push_str(&format!(
            "| `{key}` | `QUIVER_{}` | `--{}` | {default} | {meaning} |\n",
            key.to_uppercase(),
            key.replace('_', "-")
        ));
    }
    out
}

fn parse_cores(list: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("cores {list:?}: {part:?} is not a CPU number or a range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("cores needs at least one CPU".into());
    }
    Ok(out)
}

fn print_banner(b: &Banner) {
    println!("quiver {} serving", env!("CARGO_PKG_VERSION"));
    println!("  cluster id     {}", b.cluster_id);
    println!("  data dir       {}", b.data_dir.display());
    for (i, a) in b.shard_addresses.iter().enumerate() {
        println!("  shard {i:<3}      quic://{a}");
    }
    let made = if b.cert_created {
        " (dev certificate, made now)"
    } else {
        ""
    };
    println!("  certificate    {}{made}", b.cert_path.display());
    println!("  sha256         {}", b.cert_fingerprint_sha256);
    println!("  topics         {}", b.topics);
    println!("ready");
}

/// Runs the node described by `cfg` (already merged), after the start-up checks.
pub fn serve(cfg: ServeConfig) -> Result<(), (i32, String)> {
    let usage = |m: String| (2, m);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg.shards.is_some() && cfg.cores.is_some() {
        return Err(usage(
            "shards and cores exclude each other: give one".into(),
        ));
    }
    if cfg.node_id.is_some_and(|n| n < 0) {
        return Err(usage("node_id must be 0 or more".into()));
    }
    let cores = cfg
        .cores
        .as_deref()
        .map(parse_cores)
        .transpose()
        .map_err(usage)?;
    if let Some(missing) = cores.iter().flatten().find(|c| **c >= cpus) {
        return Err(usage(format!(
            "cores asks for CPU {missing} but this machine has {cpus} CPUs (0-{})",
            cpus - 1
        )));
    }
    let shard_count = match (&cores, cfg.shards) {
        (Some(c), _) => c.len(),
        (None, Some(0)) => return Err(usage("shards must be at least 1".into())),
        (None, Some(n)) => n,
        (None, None) => cpus,
    };
    let cores = cores.or_else(|| cfg.shards.is_none().then(|| (0..cpus).collect()));
    let groups = group_settings(&cfg)?;
    let voters =
        parse_seeds(cfg.seeds.as_deref().unwrap_or(""), cfg.node_id.unwrap_or(0)).map_err(usage)?;
    let listen = cfg
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default address"));
    if let Some(seed) = voters.get(&cfg.node_id.unwrap_or(0)) {
        // A node id names one node: a second process claiming it elsewhere is refused here
        // (at its seed's address, its ports are taken).
        if seed.port() != listen.port() {
            return Err(usage(format!(
                "the seeds say node {} listens at {seed}, but this node is to listen on port {}: is node {} already running elsewhere? Give this node its own id (and seed), or listen at its seed's port",
                cfg.node_id.unwrap_or(0),
                listen.port(),
                cfg.node_id.unwrap_or(0)
            )));
        }
    }
    let data_dir = cfg
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./quiver-data"));
    let tls_pem = match (cfg.tls_cert, cfg.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(usage(
                "tls_cert and tls_key go together: give both or neither".into(),
            ))
        }
    };
    // First, before any check writes a probe file there: one node per data directory.
    let data_dir_lock = match DataDirLock::acquire(&data_dir) {
        Ok(lock) => Some(std::sync::Arc::new(lock)),
        Err(e @ DataDirLockError::Held { .. }) => return Err((2, e.to_string())),
        // The data directory check below says what is wrong with the directory.
        Err(DataDirLockError::Io { .. }) => None,
    };
    let problems: Vec<diagnose::Problem> = [
        diagnose::io_uring(),
        diagnose::memlock(),
        diagnose::data_dir(&data_dir),
        diagnose::ports(listen.ip(), listen.port(), shard_count),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("  - {}\n    fix: {}", p.what, p.remedy))
            .collect();
        return Err((2, format!("the node cannot start:\n{}", text.join("\n"))));
    }
    let config = NodeConfig {
        settings: NodeSettings {
            node_id: cfg.node_id.unwrap_or(0),
            data_dir,
            advertised_host: cfg
                .advertised_host
                .unwrap_or_else(|| listen.ip().to_string()),
            base_port: listen.port(),
            shard_count,
            max_frame_bytes: cfg.max_frame_bytes.unwrap_or((16 << 20) + (64 << 10)),
            default_log: LogConfig::default(),
            retention_check_interval_ms: cfg.retention_check_interval_ms.unwrap_or(300_000),
            shard_commit_log: cfg.shard_commit_log.unwrap_or(true),
            groups,
            txn: Default::default(),
            cluster: quiver_broker::controller_runtime::ClusterSettings {
                voters,
                rack: cfg.rack.filter(|r| !r.trim().is_empty()),
                ..Default::default()
            },
        },
        bind_host: listen.ip(),
        cores,
        tls_pem,
        tls_client_ca: cfg.tls_client_ca,
        quic: Default::default(),
        data_dir_lock,
    };
    run_node(config, print_banner).map_err(|e| (1, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_env_and_flags_merge_in_that_order_and_unknown_keys_are_named() {
        let file = ServeConfig::from_toml(
            "data_dir = \"/file\"\nshards = 3\nlog_level = \"warn\"\n",
            "q.toml",
        )
        .unwrap();
        let env =
            ServeConfig::from_env(|k| (k == "QUIVER_SHARDS").then(|| "5".to_string())).unwrap();
        let flags = ServeConfig {
            data_dir: Some("/flag".into()),
            ..ServeConfig::default()
        };
        let merged = flags.over(env.over(file));
        assert_eq!(merged.data_dir, Some(PathBuf::from("/flag")));
        assert_eq!(merged.shards, Some(5));
        assert_eq!(merged.log_level.as_deref(), Some("warn"));
        let err = ServeConfig::from_toml("data_dirr = \"/x\"\n", "q.toml").unwrap_err();
        assert!(err.contains("data_dirr"), "{err}");
        assert!(
            ServeConfig::from_env(|k| (k == "QUIVER_SHARDS").then(|| "many".to_string())).is_err()
        );
    }

    #[test]
    fn every_config_key_is_in_the_reference_and_the_docs_are_current() {
        let all = ServeConfig {
            node_id: Some(1),
            seeds: Some("1@127.0.0.1:7420".into()),
            rack: Some("r1".into()),
            data_dir: Some("/d".into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            advertised_host: Some("h".into()),
            shards: Some(1),
            cores: Some("0".into()),
            tls_cert: Some("/c".into()),
            tls_key: Some("/k".into()),
            tls_client_ca: Some("/ca".into()),
            max_frame_bytes: Some(1),
            retention_check_interval_ms: Some(1),
            shard_commit_log: Some(true),
            offsets_topic_partitions: Some(1),
            group_session_timeout_ms: Some(1),
            group_heartbeat_interval_ms: Some(1),
            log_level: Some("info".into()),
        };
        let fields: Vec<String> = serde_json::to_value(&all)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut keys: Vec<String> = CONFIG_KEYS.iter().map(|(k, _, _)| k.to_string()).collect();
        let mut fields = fields;
        fields.sort();
        keys.sort();
        assert_eq!(
            fields, keys,
            "CONFIG_KEYS must list every ServeConfig field"
        );
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ))
        .unwrap();
        let start = docs
            .find("<!-- config-reference:start -->")
            .expect("start marker")
            + "<!-- config-reference:start -->".len();
        let end = docs
            .find("<!-- config-reference:end -->")
            .expect("end marker");
        assert_eq!(
            docs[start..end].trim(),
            config_reference_markdown().trim(),
            "docs/operations.md is stale: paste the output of `quiver config-reference`"
        );
    }
}
