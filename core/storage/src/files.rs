//! Filesystem helpers for the log's control plane: names, atomic small-file writes,
//! directory fsync, and the O_DIRECT capability check. Nothing here is on the data path.

use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, Directory, OpenOptions};

use crate::error::{Result, StorageError};

pub const SEGMENT_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TMP_SUFFIX: &str = ".tmp";
pub const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// The partition directory's incarnation id (decimal u64), written once when it is created.
pub const LOG_ID: &str = "log.id";

pub fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

/// The idempotent producers' state as of `offset` (written when a segment rolls there).
pub const PRODUCER_SNAPSHOT_SUFFIX: &str = ".producers";

pub fn producer_snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}{PRODUCER_SNAPSHOT_SUFFIX}"))
}

/// Offsets of the producer-state snapshots in `dir`, sorted.
pub fn list_producer_snapshots(dir: &Path) -> Result<Vec<u64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::from_io("listing", dir, e))?;
    let mut offsets: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(PRODUCER_SNAPSHOT_SUFFIX)?
                .parse()
                .ok()
        })
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

pub fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}{INDEX_SUFFIX}"))
}

/// Base offsets of the segments in `dir`, sorted; removes leftover `*.tmp` files.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::from_io("listing", dir, e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::from_io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
            if let Ok(base) = stem.parse::<u64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Refuses directories where O_DIRECT cannot work, with a remedy. glommio silently falls
/// back to buffered I/O on tmpfs, which would void every durability claim.
pub fn check_direct_io(dir: &Path) -> Result<()> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        StorageError::InvalidConfig(format!("{} contains a NUL byte", dir.display()))
    })?;
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is a plain out-parameter
    // that statfs fully initialises on success (we read it only then).
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(StorageError::from_io(
            "checking the filesystem of",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    if stat.f_type as i64 == libc::TMPFS_MAGIC || stat.f_type as i64 == RAMFS_MAGIC {
        return Err(StorageError::DirectIoUnsupported {
            path: dir.to_path_buf(),
            filesystem: "tmpfs/ramfs".into(),
        });
    }
    Ok(())
}

/// Makes glommio's one-time iopoll probe for `dir`'s device give the right answer.
///
/// glommio decides once per device whether O_DIRECT I/O may use the polled ring by reading
/// the first block of the first `DmaFile` opened there. If that file is empty (a brand-new
/// segment), the read succeeds without reaching the device, glommio concludes "iopoll
/// works", and every later read fails with EOPNOTSUPP on devices without poll queues
/// (virtio-blk, most cloud disks). Opening a file that holds a real block first makes the
/// probe reach the device. See docs/decisions/0002-glommio-iopoll-probe.md.
pub async fn prime_device_probe(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    thread_local! {
        /// Devices whose probe this thread already primed: glommio caches its verdict per
        /// device in a thread-local too, so once per thread and device is enough.
        static PRIMED: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
    }
    let device = std::fs::metadata(dir)
        .map_err(|e| StorageError::from_io("inspecting", dir, e))?
        .dev();
    if PRIMED.with(|p| p.borrow().contains(&device)) {
        return Ok(());
    }
    let probe = dir.join(format!(".iopoll-probe{TMP_SUFFIX}"));
    std::fs::write(&probe, vec![0u8; 4096])
        .map_err(|e| StorageError::from_io("writing", &probe, e))?;
    let opened = glommio::io::DmaFile::open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    let file = opened.map_err(|e| StorageError::from_glommio("opening", &probe, e))?;
    file.close()
        .await
        .map_err(|e| StorageError::from_glommio("closing", &probe, e))?;
    PRIMED.with(|p| p.borrow_mut().insert(device));
    Ok(())
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old or the new content:
/// write a temp file, fdatasync, rename over, fsync the directory.
pub async fn write_atomically(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<()> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    let io = |op: &'static str| {
        let path = tmp_path.clone();
        move |e| StorageError::from_glommio(op, &path, e)
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp_path)
        .await
        .map_err(io("creating"))?;
    write_all_at(&file, bytes, 0, &tmp_path).await?;
    file.fdatasync().await.map_err(io("syncing"))?;
    file.close().await.map_err(io("closing"))?;
    glommio::io::rename(&tmp_path, &final_path)
        .await
        .map_err(|e| StorageError::from_glommio("renaming into", &final_path, e))?;
    sync_dir(dir).await
}

/// Writes all of `bytes` at `pos` of `file` (which is at `path`); a short write is an error.
pub async fn write_all_at(
    file: &BufferedFile,
    bytes: Vec<u8>,
    pos: u64,
    path: &Path,
) -> Result<()> {
    let len = bytes.len();
    let written = file
        .write_at(bytes, pos)
        .await
        .map_err(|e| StorageError::from_glommio("writing", path, e))?;
    if written != len {
        return Err(StorageError::Io {
            op: "writing",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        });
    }
    Ok(())
}

/// Writes a file without the rename dance, for data that is checked on read (indexes):
/// a torn write is detected by its CRC and rebuilt.
pub async fn write_plain(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(|e| StorageError::from_glommio("creating", path, e))?;
    write_all_at(&file, bytes, 0, path).await?;
    file.close()
        .await
        .map_err(|e| StorageError::from_glommio("closing", path, e))
}

/// Reads a whole small file; `Ok(None)` when it does not exist.
pub async fn read_small(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new().read(true).buffered_open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e = StorageError::from_glommio("opening", path, e);
            return match &e {
                StorageError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                _ => Err(e),
            };
        }
    };
    let size = file
        .file_size()
        .await
        .map_err(|e| StorageError::from_glommio("sizing", path, e))?;
    if size > max_bytes {
        let _ = file.close().await;
        return Ok(Some(Vec::new())); // absurd size: treat as damaged, the caller rebuilds
    }
    let data = file
        .read_at(0, size as usize)
        .await
        .map_err(|e| StorageError::from_glommio("reading", path, e))?;
    let out = data.to_vec();
    let _ = file.close().await;
    Ok(Some(out))
}

/// Bytes an unprivileged writer may still use on `dir`'s filesystem; `None` if it cannot be
/// asked.
pub fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero is a valid statvfs; `path` is a NUL-terminated string that outlives
    // the call, which only writes into `st`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

pub async fn sync_dir(dir: &Path) -> Result<()> {
    let d = Directory::open(dir)
        .await
        .map_err(|e| StorageError::from_glommio("opening directory", dir, e))?;
    d.sync()
        .await
        .map_err(|e| StorageError::from_glommio("syncing directory", dir, e))?;
    d.close()
        .await
        .map_err(|e| StorageError::from_glommio("closing directory", dir, e))
}

pub async fn remove(path: &Path) -> Result<()> {
    match glommio::io::remove(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = StorageError::from_glommio("removing", path, e);
            match &e {
                StorageError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(())
                }
                _ => Err(e),
            }
        }
    }
}

/// The directory's log id; `Ok(None)` when it has none (or an unreadable one).
pub async fn read_log_id(dir: &Path) -> Result<Option<u64>> {
    Ok(read_small(&dir.join(LOG_ID), 64)
        .await?
        .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok()))
}

/// The directory's log id, made (from the clock, in nanoseconds) and written durably when it
/// has none: commit log entries name a partition by directory and id, so a deleted and
/// recreated topic never receives its predecessor's entries.
pub async fn ensure_log_id(dir: &Path) -> Result<u64> {
    if let Some(id) = read_log_id(dir).await? {
        return Ok(id);
    }
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    write_atomically(dir, LOG_ID, id.to_string().into_bytes()).await?;
    Ok(id)
}
