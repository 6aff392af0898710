//! The controller member's log on disk (`<data>/controller.log`), the glommio driver of
//! `quiver_cluster::controller_log`: opening replays the file and cuts off a torn or damaged
//! tail; each round of the controller's persists is one append and one fdatasync; a grown
//! file is rewritten (temp file, fsync, rename, fsync directory) as snapshot, hard state and
//! the entries after it.

use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};
use quiver_cluster::controller_log::{encode, replay, rewrite, Record, Recovered};
use quiver_raft::log::RaftLog;
use quiver_raft::types::HardState;
use quiver_storage::{files, StorageError};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "controller.log";
/// Largest file read at start (a metadata image and its log fit many times over).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

pub struct ControllerStore {
    dir: PathBuf,
    path: PathBuf,
    file: BufferedFile,
    len_bytes: u64,
}

async fn open_for_append(path: &Path) -> Result<BufferedFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(|e| StorageError::from_glommio("opening", path, e))
}

impl ControllerStore {
    /// Opens (or creates) `<dir>/controller.log` and replays it; a torn or damaged tail is
    /// cut off (the returned `stopped` says why).
    pub async fn open(dir: &Path) -> Result<(Self, Recovered), StorageError> {
        let path = dir.join(FILE_NAME);
        let bytes = files::read_small(&path, MAX_FILE_BYTES)
            .await?
            .unwrap_or_default();
        let recovered = replay(&bytes);
        let file = open_for_append(&path).await?;
        let len_bytes = recovered.valid_bytes as u64;
        if len_bytes < bytes.len() as u64 {
            file.truncate(len_bytes)
                .await
                .map_err(|e| StorageError::from_glommio("truncating", &path, e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::from_glommio("syncing", &path, e))?;
        }
        let store = Self {
            dir: dir.to_path_buf(),
            path,
            file,
            len_bytes,
        };
        Ok((store, recovered))
    }

    /// Closes the file (everything appended is already durable).
    pub async fn close(self) -> Result<(), StorageError> {
        self.file
            .close()
            .await
            .map_err(|e| StorageError::from_glommio("closing", &self.path, e))
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Appends `records` and makes them durable (one write, one fdatasync).
    pub async fn append(&mut self, records: &[Record]) -> Result<(), StorageError> {
        let bytes: Vec<u8> = records.iter().flat_map(encode).collect();
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len();
        files::write_all_at(&self.file, bytes, self.len_bytes, &self.path).await?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::from_glommio("syncing", &self.path, e))?;
        self.len_bytes += len as u64;
        Ok(())
    }

    /// Replaces the file with the snapshot, `hard` and the entries of `log` after it.
    pub async fn rewrite(&mut self, hard: HardState, log: &RaftLog) -> Result<(), StorageError> {
        let bytes = rewrite(hard, log);
        let len = bytes.len() as u64;
        files::write_atomically(&self.dir, FILE_NAME, bytes).await?;
        let fresh = open_for_append(&self.path).await?;
        let old = std::mem::replace(&mut self.file, fresh);
        let _ = old.close().await;
        self.len_bytes = len;
        Ok(())
    }
}
