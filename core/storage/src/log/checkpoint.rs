//! What the shard's commit log asks of a partition log ([`crate::commit_log::Member`]): before
//! a commit log file is retired, write what the segment lacks and fsync it. Also `close`'s
//! writes, which are the same job.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use super::{flush, Inner};
use crate::error::{Result, StorageError};

impl Inner {
    /// A commit log checkpoint's part: writes the acknowledged batches the segment lacks and
    /// makes the segment durable, so the retired commit log file holds nothing this log
    /// needs. A failed log that still holds such batches fails the checkpoint (the file is
    /// kept for recovery); one that does not is skipped.
    pub(crate) async fn checkpoint_sync(self: &Rc<Self>) -> Result<()> {
        {
            // With the write gate: a round or a close in progress finishes first, and what it
            // acknowledged is then written here (or by the close itself).
            let _gate = self.write_gate().await?;
            if let Some(why) = self.unrecoverable_in_segment() {
                return Err(StorageError::AppendAborted { reason: why });
            }
            if self.state.borrow().failed.is_some() {
                return Ok(());
            }
            flush::write_behind(self).await?;
        }
        // The fdatasync without the write gate: the partition's rounds go on meanwhile.
        if self.state.borrow().unsynced_bytes == 0 {
            return Ok(());
        }
        self.sync_now().await
    }

    /// `close`'s writes, with the write gate held.
    pub(super) async fn close_files(self: &Rc<Self>) -> Result<()> {
        if let Some(why) = self.unrecoverable_in_segment() {
            return Err(StorageError::AppendAborted { reason: why });
        }
        if self.state.borrow().failed.is_some() {
            return Ok(());
        }
        flush::write_behind(self).await?;
        flush::seal_active(self).await.map(|_| ())
    }

    /// Why this log holds acknowledged batches that only the commit log has and that it can
    /// no longer write to its segment (a failed log with a write-behind): the commit log must
    /// then be kept for recovery at the next start.
    fn unrecoverable_in_segment(&self) -> Option<String> {
        let only_in_commit_log = self.holds_batches_only_in_commit_log();
        let st = self.state.borrow();
        match &st.failed {
            Some(why) if only_in_commit_log => Some(format!(
                "the log failed ({why}) with acknowledged batches only in the commit log; restart the node to recover them from it"
            )),
            _ => None,
        }
    }
}

impl crate::commit_log::Member for Inner {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn checkpoint_sync(self: Rc<Self>) -> Pin<Box<dyn Future<Output = Result<()>>>> {
        Box::pin(async move { Inner::checkpoint_sync(&self).await })
    }

    fn holds_batches_only_in_commit_log(&self) -> bool {
        Inner::holds_batches_only_in_commit_log(self)
    }
}
