//! A slow disk: the block layer throttles one node's writes to its loop device, in bytes and
//! operations per second, through the node's own cgroup (`blkio.throttle.write_*_device` on
//! cgroup v1, `io.max` on v2). The node's segments and commit log are written with direct
//! I/O, which the throttle sees (buffered writeback would escape it); fsyncs wait behind the
//! throttled writes. Lifted by moving the node back to the cgroup it came from.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const V1_ROOT: &str = "/sys/fs/cgroup/blkio";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup interface throttles block I/O here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interface {
    V1,
    V2,
}

fn interface() -> Option<Interface> {
    if Path::new(V1_ROOT)
        .join("blkio.throttle.write_bps_device")
        .exists()
    {
        return Some(Interface::V1);
    }
    let controllers =
        std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "io")
        .then_some(Interface::V2)
}

/// Whether this machine can slow a disk down (root, and a block I/O cgroup controller).
pub fn available() -> bool {
    interface().is_some()
}

/// A node's writes being throttled; [`Throttle::lift`] ends it.
#[derive(Debug)]
pub struct Throttle {
    /// Where the node was (its `cgroup.procs` file), to go back to.
    home: PathBuf,
    dir: PathBuf,
    pid: u32,
}

/// The cgroup directory of `pid` in this interface's hierarchy (from `/proc/<pid>/cgroup`).
fn cgroup_of(pid: u32, interface: Interface) -> Result<PathBuf, String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let relative = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, at) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = match interface {
                Interface::V1 => controllers.split(',').any(|c| c == "blkio"),
                Interface::V2 => controllers.is_empty(),
            };
            matches.then_some(at)
        })
        .next()
        .ok_or_else(|| format!("{path} names no {interface:?} block I/O cgroup"))?;
    Ok(Path::new(root_of(interface)).join(relative.trim_start_matches('/')))
}

fn root_of(interface: Interface) -> &'static str {
    match interface {
        Interface::V1 => V1_ROOT,
        Interface::V2 => V2_ROOT,
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

/// Throttles the writes of process `pid` to the block device holding `disk` (a mount point)
/// to `write_bps` bytes and `write_iops` operations per second, in cgroup `name`.
pub fn throttle(
    pid: u32,
    disk: &Path,
    write_bps: u64,
    write_iops: u64,
    name: &str,
) -> Result<Throttle, String> {
    let interface = interface().ok_or("no block I/O cgroup controller on this machine")?;
    let dev = std::fs::metadata(disk)
        .map_err(|e| format!("{}: {e}", disk.display()))?
        .dev();
    let device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let home = cgroup_of(pid, interface)?;
    let dir = Path::new(root_of(interface)).join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let t = Throttle { home, dir, pid };
    let limits = match interface {
        Interface::V1 => write(
            &t.dir.join("blkio.throttle.write_bps_device"),
            &format!("{device} {write_bps}"),
        )
        .and_then(|()| {
            write(
                &t.dir.join("blkio.throttle.write_iops_device"),
                &format!("{device} {write_iops}"),
            )
        }),
        Interface::V2 => {
            // The root's children get the io controller (idempotent).
            let _ = write(&Path::new(V2_ROOT).join("cgroup.subtree_control"), "+io");
            write(
                &t.dir.join("io.max"),
                &format!("{device} wbps={write_bps} wiops={write_iops}"),
            )
        }
    };
    // All of the node's threads move with its pid.
    match limits.and_then(|()| write(&t.dir.join("cgroup.procs"), &pid.to_string())) {
        Ok(()) => Ok(t),
        Err(e) => {
            let _ = t.lift();
            Err(e)
        }
    }
}

impl Throttle {
    /// Moves the node back to the cgroup it came from (if it still runs) and removes the
    /// throttling one.
    pub fn lift(self) -> Result<(), String> {
        // A node killed meanwhile has left the cgroup already.
        let _ = write(&self.home.join("cgroup.procs"), &self.pid.to_string());
        std::fs::remove_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}
