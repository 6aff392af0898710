//! Start-up checks: what makes io_uring/O_DIRECT brokers fail in the wild, each explained with
//! a remedy before the node starts (exit status 2 when any fails).

use std::net::{IpAddr, UdpSocket};
use std::path::Path;

/// One thing that will stop the node, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub remedy: String,
}

fn problem(what: impl Into<String>, remedy: impl Into<String>) -> Problem {
    Problem {
        what: what.into(),
        remedy: remedy.into(),
    }
}

/// io_uring must be usable: not compiled out, not disabled by sysctl, not blocked by seccomp.
pub fn io_uring() -> Option<Problem> {
    // struct io_uring_params is 120 bytes of plain data; all zero asks for the defaults.
    let mut params: [u8; 120] = [0; 120];
    // SAFETY: io_uring_setup(entries, params*) with a buffer as large as struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closing the fd the kernel just gave us.
        unsafe { libc::close(fd as i32) };
        return None;
    }
    let err = std::io::Error::last_os_error();
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Some(match err.raw_os_error() {
        Some(libc::ENOSYS) => problem("this kernel has no io_uring", "run on Linux 5.8 or newer with CONFIG_IO_URING=y"),
        Some(libc::EPERM) | Some(libc::EACCES) if sysctl != "0" && !sysctl.is_empty() => problem(
            format!("io_uring is disabled by sysctl (kernel.io_uring_disabled = {sysctl})"),
            "run `sysctl -w kernel.io_uring_disabled=0` (or add the quiver user to kernel.io_uring_group)",
        ),
        _ => problem(
            format!("io_uring_setup failed: {err}"),
            "a seccomp profile blocks io_uring (typical in containers): allow io_uring_setup/io_uring_enter/io_uring_register, e.g. docker run --security-opt seccomp=unconfined",
        ),
    })
}

/// glommio registers I/O memory with every ring; below 512 KiB of locked memory it cannot start.
pub fn memlock() -> Option<Problem> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return None; // root is not bound by RLIMIT_MEMLOCK
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    const NEEDED: u64 = 512 << 10;
    (lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < NEEDED).then(|| {
        problem(
            format!("locked-memory limit is {} KiB; io_uring needs at least 512 KiB per shard", lim.rlim_cur >> 10),
            "raise it: `ulimit -l unlimited` in this shell, LimitMEMLOCK=infinity in the systemd unit, or memlock in /etc/security/limits.conf",
        )
    })
}

/// The data directory must exist (or be creatable), be writable, and support O_DIRECT.
pub fn data_dir(dir: &Path) -> Option<Problem> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Some(problem(
            format!("cannot create the data directory {}: {e}", dir.display()),
            "create it and give the quiver user write access, or pass --data-dir",
        ));
    }
    let probe = dir.join(".quiver-startup-probe.tmp");
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match direct {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Some(problem(
            format!("{} is on a filesystem without O_DIRECT", dir.display()),
            "put the data directory on ext4 or xfs (not tmpfs, overlayfs or a network filesystem)",
        )),
        Err(e) => {
            return Some(problem(
                format!("cannot write in the data directory {}: {e}", dir.display()),
                "give the quiver user write access, or pass --data-dir",
            ))
        }
    }
    quiver_storage::files::check_direct_io(dir)
        .err()
        .map(|e| problem(e.to_string(), "put the data directory on ext4 or xfs"))
}

/// Binds `host:port`, retrying for up to 2 s: right after a node on these ports died, the
/// kernel may still be tearing down its io_uring rings, which hold the sockets a moment longer.
fn bind_soon(host: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match UdpSocket::bind((host, port)) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Every shard's UDP port must be free.
pub fn ports(host: IpAddr, base_port: u16, shards: usize) -> Option<Problem> {
    for i in 0..shards {
        let Some(port) = base_port.checked_add(i as u16) else {
            return Some(problem(
                format!(
                    "shard {i} would need port {} (> 65535)",
                    base_port as usize + i
                ),
                "lower the port in --listen",
            ));
        };
        if let Err(e) = bind_soon(host, port) {
            return Some(problem(
                format!("UDP port {host}:{port} (shard {i}) is not available: {e}"),
                "another process (another quiver?) uses it: stop it, or pick other ports with --listen",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_and_a_tmpfs_dir_are_explained() {
        let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let p = ports("127.0.0.1".parse().unwrap(), port, 1).unwrap();
        assert!(
            p.what.contains(&port.to_string()) && p.remedy.contains("--listen"),
            "{p:?}"
        );
        if Path::new("/dev/shm").exists() {
            let d = tempfile::tempdir_in("/dev/shm").unwrap();
            let p = data_dir(d.path()).expect("tmpfs has no O_DIRECT");
            assert!(p.remedy.contains("ext4"), "{p:?}");
        }
        assert_eq!(io_uring(), None, "io_uring works on this machine");
    }
}
