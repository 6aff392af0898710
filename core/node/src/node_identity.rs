//! Which node a data directory belongs to: `<data>/node.json` holds the node id and cluster
//! id it was first started with. A node started with another id, or pointed at another
//! cluster, is refused with a message saying why (a copied or misconfigured data directory
//! would otherwise pose as another replica and break the quorum's arithmetic).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `<data>/node.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: i32,
    pub cluster_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The directory belongs to another node.
    OtherNode {
        path: PathBuf,
        found: i32,
        configured: i32,
    },
    /// The directory belongs to another cluster.
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    Damaged {
        path: PathBuf,
        reason: String,
    },
    Io {
        path: PathBuf,
        reason: String,
    },
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherNode {
                path,
                found,
                configured,
            } => write!(
                f,
                "{} says this data directory belongs to node {found}, but this node is configured as node {configured}: start it with --node-id {found}, or give node {configured} its own --data-dir",
                path.display()
            ),
            Self::OtherCluster {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} says this data directory belongs to cluster {found}, not {expected}: give this node an empty --data-dir to join {expected}",
                path.display()
            ),
            Self::Damaged { path, reason } => write!(
                f,
                "{} is damaged ({reason}): restore it, or remove it if this directory really is node's own",
                path.display()
            ),
            Self::Io { path, reason } => write!(f, "cannot use {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for IdentityError {}

pub const FILE_NAME: &str = "node.json";

/// Reads `<data_dir>/node.json` and checks it against `node_id` and `cluster_id`; writes it
/// (durably) on a directory's first start.
pub fn check_or_create(
    data_dir: &Path,
    node_id: i32,
    cluster_id: &str,
) -> Result<NodeIdentity, IdentityError> {
    let path = data_dir.join(FILE_NAME);
    let io = |e: std::io::Error| IdentityError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: NodeIdentity =
                serde_json::from_slice(&bytes).map_err(|e| IdentityError::Damaged {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if found.node_id != node_id {
                return Err(IdentityError::OtherNode {
                    path,
                    found: found.node_id,
                    configured: node_id,
                });
            }
            if found.cluster_id != cluster_id {
                return Err(IdentityError::OtherCluster {
                    path,
                    found: found.cluster_id,
                    expected: cluster_id.to_string(),
                });
            }
            Ok(found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = NodeIdentity {
                node_id,
                cluster_id: cluster_id.to_string(),
            };
            let mut bytes =
                serde_json::to_vec_pretty(&identity).map_err(|e| IdentityError::Io {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            bytes.push(b'\n');
            write_durably(&path, &bytes).map_err(io)?;
            Ok(identity)
        }
        Err(e) => Err(io(e)),
    }
}

/// Write a temporary file, fsync, rename over `path`, fsync the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_keeps_its_node_and_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = check_or_create(dir.path(), 2, "c1").expect("created");
        assert_eq!(first.node_id, 2);
        assert_eq!(check_or_create(dir.path(), 2, "c1"), Ok(first));
        let other = check_or_create(dir.path(), 3, "c1").expect_err("another node");
        assert!(other.to_string().contains("--node-id 2"), "{other}");
        let cluster = check_or_create(dir.path(), 2, "c2").expect_err("another cluster");
        assert!(
            matches!(cluster, IdentityError::OtherCluster { .. }),
            "{cluster}"
        );
        std::fs::write(dir.path().join(FILE_NAME), b"{").expect("write");
        assert!(matches!(
            check_or_create(dir.path(), 2, "c1"),
            Err(IdentityError::Damaged { .. })
        ));
    }
}
