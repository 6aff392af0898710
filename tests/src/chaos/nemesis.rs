//! Applies a schedule's faults to the cluster and heals them: kill -9 and restart, nftables
//! partitions and loss, SIGSTOP/SIGCONT, a disk filled with one `fallocate`.

use std::path::PathBuf;

use quiver_client::{Admin, Client};

use super::cluster::ChaosCluster;
use super::schedule::Fault;

/// What a fault left behind that its heal undoes.
pub enum Applied {
    Killed(usize),
    Network,
    Paused(usize),
    DiskFilled(PathBuf),
    /// Nothing was done (the partition's leader was unknown, say).
    Nothing,
}

/// Applies `fault`; returns what was done (for the history) and what to heal.
pub fn apply(
    cluster: &mut ChaosCluster,
    fault: &Fault,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    append_topic: &str,
) -> Result<(String, Applied), String> {
    let lab = &cluster.lab;
    let all: Vec<usize> = (1..=cluster.nodes()).collect();
    let others = |n: usize| all.iter().copied().filter(|m| *m != n).collect::<Vec<_>>();
    Ok(match fault {
        Fault::Kill { node } => {
            cluster.kill(*node);
            (format!("kill -9 n{node}"), Applied::Killed(*node))
        }
        Fault::KillLeader { partition } => {
            let admin = Admin::new(client.clone());
            let leader = runtime.block_on(async {
                let d = tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    admin.describe_topic(append_topic),
                )
                .await;
                match d {
                    Ok(Ok(d)) => d
                        .partitions
                        .iter()
                        .find(|p| p.partition == *partition)
                        .map(|p| p.leader),
                    _ => None,
                }
            });
            match leader {
                Some(l) if l >= 1 && (l as usize) <= cluster.nodes() => {
                    let n = l as usize;
                    cluster.kill(n);
                    (
                        format!("kill -9 n{n} (leader of partition {partition})"),
                        Applied::Killed(n),
                    )
                }
                _ => (
                    format!("leader of partition {partition} unknown: nothing killed"),
                    Applied::Nothing,
                ),
            }
        }
        Fault::Isolate { node } => {
            lab.drop_from(*node, &others(*node))?;
            for m in others(*node) {
                lab.drop_from(m, &[*node])?;
            }
            (format!("isolate n{node}"), Applied::Network)
        }
        Fault::Split { minority } => {
            let majority: Vec<usize> = all
                .iter()
                .copied()
                .filter(|n| !minority.contains(n))
                .collect();
            for n in minority {
                lab.drop_from(*n, &majority)?;
            }
            for n in &majority {
                lab.drop_from(*n, minority)?;
            }
            (
                format!("split {minority:?} | {majority:?}"),
                Applied::Network,
            )
        }
        Fault::Bridge {
            middle,
            left,
            right,
        } => {
            for n in left {
                lab.drop_from(*n, right)?;
            }
            for n in right {
                lab.drop_from(*n, left)?;
            }
            (
                format!("bridge {left:?} - n{middle} - {right:?}"),
                Applied::Network,
            )
        }
        Fault::Loss { node, percent } => {
            lab.lossy(*node, *percent)?;
            (
                format!("n{node} loses {percent}% of what nodes send it"),
                Applied::Network,
            )
        }
        Fault::Pause { node } => {
            cluster.pause(*node, true);
            (format!("SIGSTOP n{node}"), Applied::Paused(*node))
        }
        Fault::DiskFull { node } => {
            let path = fill_disk(cluster.disk(*node).to_path_buf())?;
            (format!("disk of n{node} full"), Applied::DiskFilled(path))
        }
    })
}

/// Undoes what `apply` did.
pub fn heal(cluster: &mut ChaosCluster, applied: Applied) -> Result<String, String> {
    Ok(match applied {
        // One that does not come back stays down; the heal after the schedule tries again
        // and reports it (`unavailable`).
        Applied::Killed(n) => match cluster.start_node(n) {
            Ok(()) => format!("n{n} restarted"),
            Err(e) => e,
        },
        Applied::Network => {
            cluster.lab.heal()?;
            "network healed".into()
        }
        Applied::Paused(n) => {
            cluster.pause(n, false);
            format!("SIGCONT n{n}")
        }
        Applied::DiskFilled(path) => {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            "disk space freed".into()
        }
        Applied::Nothing => "nothing to heal".into(),
    })
}

/// Reserves all of the filesystem's free space in one file (`fallocate`: instant, no
/// writes), then smaller files until not even a block is left.
fn fill_disk(mount: PathBuf) -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd;
    let path = mount.join("chaos-filler");
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut offset: i64 = 0;
    let mut chunk = crate::loopfs::free_bytes(&mount).map_err(|e| e.to_string())? as i64;
    while chunk >= 4096 {
        // SAFETY: fallocate(2) on a file we own, mode 0 (allocate), a valid range.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, chunk) };
        if rc == 0 {
            offset += chunk;
        } else {
            chunk /= 2;
        }
    }
    Ok(path)
}
