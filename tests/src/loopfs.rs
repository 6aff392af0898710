//! A small ext4 filesystem on a loop device, for tests of a full disk: mounted on creation,
//! lazily unmounted on drop. Needs root and `mkfs.ext4` (e2fsprogs).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopFs {
    pub mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// A `size_mib` MiB ext4 (no reserved blocks) in a new directory under `parent`.
    pub fn new(parent: &Path, size_mib: u64) -> Self {
        Self::with_options(parent, size_mib, "loop")
    }

    /// [`LoopFs::new`] mounted with `mount_options` (e.g. `loop,ro`).
    pub fn with_options(parent: &Path, size_mib: u64, mount_options: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("quiver-loopfs-")
            .tempdir_in(parent)
            .expect("a directory for the loop image");
        let image = dir.path().join("fs.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("loop image");
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", &image.to_string_lossy()],
        );
        run(
            "mount",
            &[
                "-o",
                mount_options,
                &image.to_string_lossy(),
                &mount_point.to_string_lossy(),
            ],
        );
        Self {
            mount_point,
            _dir: dir,
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Lazy: a test that failed mid-way may still hold files open there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (install e2fsprogs / mount)"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// Fills the filesystem holding `dir` with a file of ones (`dir/filler`) until about
/// `leave_bytes` are free; returns the file's path (remove it to free the space).
pub fn fill(dir: &Path, leave_bytes: u64) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let filler = dir.join("filler");
    let size = free_bytes(dir)?.saturating_sub(leave_bytes);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&filler)?);
    let chunk = vec![1u8; 1 << 20];
    let mut written = 0;
    while written + (1 << 20) <= size {
        w.write_all(&chunk)?;
        written += 1 << 20;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(filler)
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid C string and an out-parameter that statvfs initialises on success.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail * s.f_frsize)
}

/// True when running as root (loop mounts and network namespaces need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
