//! [`StorageError`]: everything the storage engine can refuse or fail at, typed, with a
//! message that says what happened and what to do about it.

use std::io;
use std::path::PathBuf;

use quiver_batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    #[error("{0}")]
    Producer(#[from] crate::producer_state::ProducerError),

    #[error("disk full while {op} {path}: free space on that filesystem (delete data or lower retention_bytes / retention_ms) and retry; acknowledged data is intact")]
    DiskFull { op: &'static str, path: PathBuf },

    #[error("permission denied while {op} {path}: make the data directory readable and writable by the user running quiver")]
    PermissionDenied { op: &'static str, path: PathBuf },

    #[error("{path} is on a filesystem without O_DIRECT support ({filesystem}); put the data directory on ext4 or xfs (tmpfs and some overlay/network filesystems cannot do direct I/O)")]
    DirectIoUnsupported { path: PathBuf, filesystem: String },

    #[error("offset {requested} is out of range: this partition holds offsets [{log_start_offset}, {log_end_offset}); seek to an offset inside that range")]
    OffsetOutOfRange {
        requested: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },

    #[error("corrupt data in {path} at byte {position}: {detail}; the segment cannot be served, restore the partition from a replica")]
    Corrupt {
        path: PathBuf,
        position: u64,
        detail: String,
    },

    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),

    #[error("the log in {path} is closed; reopen it")]
    Closed { path: PathBuf },

    #[error("this append was not written: {reason}; retry it (nothing after the last acknowledged offset was kept)")]
    AppendAborted { reason: String },

    #[error("I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Classifies an I/O error by its errno so that the cases a user can act on (full disk,
    /// permissions, no O_DIRECT) get their own variant.
    pub fn from_io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match (source.raw_os_error(), source.kind()) {
            (Some(libc::ENOSPC), _) | (_, io::ErrorKind::StorageFull) => {
                Self::DiskFull { op, path }
            }
            (Some(libc::EDQUOT), _) | (_, io::ErrorKind::QuotaExceeded) => {
                Self::DiskFull { op, path }
            }
            (Some(libc::EACCES | libc::EPERM | libc::EROFS), _)
            | (_, io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem) => {
                Self::PermissionDenied { op, path }
            }
            _ => Self::Io { op, path, source },
        }
    }

    /// Same as [`StorageError::from_io`] for glommio's error type, keeping the OS error code.
    pub fn from_glommio<T>(
        op: &'static str,
        path: impl Into<PathBuf>,
        err: glommio::GlommioError<T>,
    ) -> Self {
        let source = match err {
            glommio::GlommioError::IoError(e) => e,
            glommio::GlommioError::EnhancedIoError { source, .. } => source,
            other => io::Error::from(other),
        };
        Self::from_io(op, path, source)
    }

    /// The same failure for another waiter of a failed group commit (I/O errors cannot be
    /// cloned; the kinds a user acts on keep their variant).
    pub fn for_another_waiter(&self) -> Self {
        match self {
            Self::DiskFull { op, path } => Self::DiskFull {
                op,
                path: path.clone(),
            },
            Self::PermissionDenied { op, path } => Self::PermissionDenied {
                op,
                path: path.clone(),
            },
            other => Self::AppendAborted {
                reason: other.to_string(),
            },
        }
    }

    /// True for failures that may pass once the operator acts (space freed) or on retry.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Self::DiskFull { .. } | Self::AppendAborted { .. } | Self::Io { .. }
        )
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
