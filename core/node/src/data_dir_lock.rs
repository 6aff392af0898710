//! [`DataDirLock`]: one node per data directory.
//!
//! Two nodes on one directory both append to the same segment files and overwrite each
//! other's acknowledged records. A node therefore takes an exclusive `flock` on
//! `<data_dir>/.lock` before it reads or writes anything else there, and holds it for the life
//! of the process. The kernel releases a `flock` when the process dies, kill -9 included, so a
//! crashed node never leaves a stale lock behind; the file itself stays (it only holds the PID
//! of the last holder, for the message a second node prints).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Why a node could not take its data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another live process holds the lock.
    #[error("the data directory {} is in use by another quiver node ({}); stop that node, or give this one its own --data-dir", dir.display(), holder_text(*pid))]
    Held {
        /// The data directory (absolute when it could be resolved).
        dir: PathBuf,
        /// PID of the holder, as it wrote it in the lock file (`None`: not yet written).
        pid: Option<u32>,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock the data directory {}: {source}; check that it exists and is writable by this user", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("PID {pid}"),
        None => "PID not yet recorded".into(),
    }
}

/// An exclusive lock on a data directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    // Holds the lock: closing the file releases it.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed, then locks it; fails at once (no waiting) when another process
    /// holds it, naming the directory and that process's PID.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirLockError> {
        let io = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |source| DataDirLockError::Io { dir, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io(&dir))?;
        // SAFETY: flock on an fd owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = read_pid(&mut file);
                return Err(DataDirLockError::Held { dir, pid });
            }
            return Err(io(&dir)(err));
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
            .map_err(io(&dir))?;
        Ok(Self { _file: file, dir })
    }

    /// The locked directory, absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The PID the holder wrote, if it has written one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    parse_pid(&text)
}

fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        // flock conflicts between two open files even inside one process.
        match DataDirLock::acquire(dir.path()) {
            Err(DataDirLockError::Held { dir: held, pid }) => {
                assert_eq!(held, first.dir());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        let message = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains(&first.dir().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("PID {}", std::process::id())),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn a_missing_directory_is_created_and_a_stale_pid_file_is_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        drop(DataDirLock::acquire(&data).expect("creates the directory"));
        std::fs::write(data.join(LOCK_FILE), "999999\n").unwrap();
        let lock = DataDirLock::acquire(&data).unwrap();
        let text = std::fs::read_to_string(lock.dir().join(LOCK_FILE)).unwrap();
        assert_eq!(parse_pid(&text), Some(std::process::id()));
        assert_eq!(parse_pid(""), None);
    }
}
