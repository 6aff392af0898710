//! The shard's commit log: one O_DIRECT + O_DSYNC write per round for all the shard's
//! partitions, instead of one `fdatasync` per partition per round.
//!
//! With a commit log, a partition's flusher hands a round's batches to [`CommitLog::append`],
//! which resolves once a round of the commit log holding them is on disk; only then are the
//! appends acknowledged. The segment gets them later, in bulk and without fsync
//! (write-behind, `crate::log`).
//! Rounds are group commits across partitions: what the flushers hand over while a round is
//! in flight goes out together in the next one (ScyllaDB's per-shard commitlog; Kafka has no
//! fsync on its path at all). docs/decisions/0009-shard-commit-log.md has the measurements.
//!
//! - Files: `<data>/commitlog/shard-<id>/<seq>.wal`, frames as in [`format`]. After
//!   [`ROTATE_AT_BYTES`] the writer moves to the next file and a **checkpoint** has every
//!   registered partition log (and every closed one whose close failed, kept by
//!   [`CommitLog::pin`]) write its write-behind and fsync its segment; then the old file is kept as
//!   the spare for a later rotation (its blocks are allocated, so writes into it need no
//!   metadata update) or deleted.
//! - Recovery (`crate::recovery::replay_all`) runs once per node start, before the shards
//!   open their partitions: it reads every shard's files ([`read_all`]), folds them into
//!   per-partition chains ([`replay`]), appends to each partition what its recovered segments
//!   lack (fsynced), and removes the commit log. The shards then start with empty ones.
//! - The commit log knows the partition logs only as [`Member`]s: what a checkpoint needs of
//!   them. It depends on nothing of the partition log.

pub mod format;
pub mod replay;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};
use glommio::TaskQueueHandle;

use self::format::{encode_frame, frame_len, Entry};
use crate::error::{Result, StorageError};
use crate::files;
use crate::segment::write_whole;
use crate::signal::{oneshot, Doorbell, Receiver, Sender};

/// A partition log, as the commit log's checkpoints see it.
pub trait Member {
    /// The log's directory (to find a closed predecessor when a log reopens there).
    fn dir(&self) -> &Path;
    /// Writes what the log holds only in the commit log to its segment, and fsyncs it.
    fn checkpoint_sync(self: Rc<Self>) -> Pin<Box<dyn Future<Output = Result<()>>>>;
    /// True while acknowledged batches are durable only in the commit log.
    fn holds_batches_only_in_commit_log(&self) -> bool;
}

/// The writer moves to a new file once a file holds this much.
pub const ROTATE_AT_BYTES: u64 = 32 << 20;
/// Most bytes of entries in one round (a bigger single entry goes alone).
const ROUND_MAX_BYTES: usize = 8 << 20;
/// A round slower than this is logged: every acks=all produce of the shard waited for it.
const SLOW_ROUND: Duration = Duration::from_millis(100);
/// At most one slow-round warning per this interval (a failing disk is slow every round).
const SLOW_ROUND_WARN_EVERY: Duration = Duration::from_secs(10);
/// Name of the recycled file waiting for the next rotation.
const SPARE_NAME: &str = "spare.wal";
/// Directory under the data directory that holds every shard's commit log.
pub const COMMIT_LOG_DIR: &str = "commitlog";

/// Counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitLogStats {
    pub rounds: u64,
    pub entries: u64,
    pub bytes_written: u64,
    pub rotations: u64,
    pub checkpoints: u64,
    /// Rotations that found no checkpointed spare and created a file that was not pre-written
    /// (the checkpoints did not keep up with the write rate).
    pub rotations_without_spare: u64,
}

struct Queued {
    entry: Entry,
    ack: Sender<Result<()>>,
}

struct ActiveFile {
    seq: u64,
    path: PathBuf,
    file: Rc<DmaFile>,
    /// Its blocks were written ahead (a spare, or the first file): a write overwrites
    /// initialised blocks and needs no journal commit. A file created when no spare was ready
    /// extends with every write, and each O_DSYNC write waits for the filesystem's journal.
    prewritten: bool,
}

struct State {
    queue: VecDeque<Queued>,
    active: ActiveFile,
    /// Next write position in the active file (page aligned).
    position: u64,
    spare: Option<(PathBuf, Rc<DmaFile>)>,
    /// A checkpoint is renaming its file to the spare's name.
    spare_claimed: bool,
    /// Set by a failed round or rotation: the next round goes to a new file first.
    must_rotate: bool,
    closing: bool,
    stats: CommitLogStats,
    /// When a slow round was last logged (at most one warning per [`SLOW_ROUND_WARN_EVERY`]).
    slow_round_warned: Option<Instant>,
}

struct Inner {
    dir: PathBuf,
    /// The data directory: entry keys are partition directories relative to it.
    root: PathBuf,
    state: RefCell<State>,
    doorbell: Doorbell,
    logs: RefCell<Vec<Weak<dyn Member>>>,
    /// Closed logs whose close failed with acknowledged batches only here: kept alive so
    /// checkpoints retry their writes (and keep the files until then).
    pinned: RefCell<Vec<Rc<dyn Member>>>,
    background: Option<TaskQueueHandle>,
    writer_exit: RefCell<Option<Receiver<()>>>,
}

/// One shard's commit log. Cloning gives another handle.
#[derive(Clone)]
pub struct CommitLog {
    inner: Rc<Inner>,
}

/// Where shard `shard`'s commit log lives.
pub fn shard_dir(root: &Path, shard: usize) -> PathBuf {
    root.join(COMMIT_LOG_DIR).join(format!("shard-{shard}"))
}

fn wal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq}.wal"))
}

/// Bytes a commit log file is written through with zeros when it is created at open: a file
/// reaches [`ROTATE_AT_BYTES`] plus at most one round before the writer moves on.
const PREWRITTEN_BYTES: u64 = ROTATE_AT_BYTES + ROUND_MAX_BYTES as u64;

/// Zeros per write while pre-writing a file.
const PREWRITE_CHUNK_BYTES: usize = 4 << 20;

/// Files are pre-written only on a filesystem with this much free: on a small or nearly
/// full one the zeros would take the space appends need.
const PREWRITE_MIN_FREE_BYTES: u64 = 1 << 30;

/// Writes `file` through with zeros up to `bytes`. An O_DSYNC write that extends a file (or
/// fills a block allocated but never written) also commits the filesystem's journal; into a
/// file written once it is the data and a cache flush only. Files reused as the spare after
/// a checkpoint have been written once; this makes the first two files of a node's run (the
/// active one and the first spare) like them. Measured here (50,000 msg/s from a cold
/// start, two runs each): rounds on the first two files p50 185 / 245 µs before, 133–141 µs
/// after, as on every later file; ~40 MiB per file, ~50 ms at open.
async fn prewrite(file: &DmaFile, path: &Path, bytes: u64) -> Result<()> {
    let mut zeros = file.alloc_dma_buffer(PREWRITE_CHUNK_BYTES);
    zeros.as_bytes_mut().fill(0);
    let zeros = Rc::new(zeros);
    let mut position = 0u64;
    while position < bytes {
        let op = "pre-writing a commit log file";
        write_whole(file, zeros.clone(), position, op, path).await?;
        position += PREWRITE_CHUNK_BYTES as u64;
    }
    Ok(())
}

/// Pre-writes the first active file and creates the first spare, pre-written too.
async fn prewrite_first_files(
    active: &DmaFile,
    active_path: &Path,
    spare_path: &Path,
) -> Result<Rc<DmaFile>> {
    prewrite(active, active_path, PREWRITTEN_BYTES).await?;
    let spare = create_file(spare_path).await?;
    prewrite(&spare, spare_path, PREWRITTEN_BYTES).await?;
    Ok(spare)
}

/// Commit log files are opened `O_DSYNC`: each round's write returns once it is durable, in
/// one I/O request, instead of a write followed by an `fdatasync` (which io_uring hands to a
/// worker thread): round p50 331 → 277 µs here (docs/decisions/0011).
async fn create_file(path: &Path) -> Result<Rc<DmaFile>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DSYNC)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::from_glommio("creating commit log file", path, e))?;
    Ok(Rc::new(file))
}

impl CommitLog {
    /// Starts an empty commit log in `dir` (recovery must have run: leftover files are an
    /// error). `root` is the data directory the partition directories live under. The writer
    /// runs on `queue`, checkpoints on `background`.
    pub async fn open(
        dir: &Path,
        root: &Path,
        queue: Option<TaskQueueHandle>,
        background: Option<TaskQueueHandle>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::from_io("creating directory", dir, e))?;
        let dir =
            std::fs::canonicalize(dir).map_err(|e| StorageError::from_io("resolving", dir, e))?;
        let root =
            std::fs::canonicalize(root).map_err(|e| StorageError::from_io("resolving", root, e))?;
        if !list_files(&dir)?.is_empty() {
            return Err(StorageError::InvalidConfig(format!(
                "{} holds commit log files that were not replayed; start the node normally (it replays them) instead of opening the commit log directly",
                dir.display()
            )));
        }
        files::check_direct_io(&dir)?;
        // Before the first (empty) DmaFile of this thread: see prime_device_probe.
        files::prime_device_probe(&dir).await?;
        files::remove(&dir.join(SPARE_NAME)).await?;
        let path = wal_path(&dir, 1);
        let file = create_file(&path).await?;
        let spare_path = dir.join(SPARE_NAME);
        let spare = match files::available_bytes(&dir) {
            Some(free) if free >= PREWRITE_MIN_FREE_BYTES => {
                match prewrite_first_files(&file, &path, &spare_path).await {
                    Ok(f) => Some((spare_path, f)),
                    Err(e) => {
                        // Best effort: without it the first two files are only slower.
                        tracing::warn!(dir = %dir.display(), "commit log files not pre-written (the first ones are slower to write): {e}");
                        files::remove(&spare_path).await?;
                        None
                    }
                }
            }
            _ => None,
        };
        files::sync_dir(&dir).await?;
        let inner = Rc::new(Inner {
            dir,
            root,
            state: RefCell::new(State {
                queue: VecDeque::new(),
                active: ActiveFile {
                    seq: 1,
                    path,
                    file,
                    prewritten: spare.is_some(),
                },
                position: 0,
                spare,
                spare_claimed: false,
                must_rotate: false,
                closing: false,
                stats: CommitLogStats::default(),
                slow_round_warned: None,
            }),
            doorbell: Doorbell::default(),
            logs: RefCell::new(Vec::new()),
            pinned: RefCell::new(Vec::new()),
            background,
            writer_exit: RefCell::new(None),
        });
        let (exit_tx, exit_rx) = oneshot();
        *inner.writer_exit.borrow_mut() = Some(exit_rx);
        let task = {
            let inner = inner.clone();
            async move {
                writer(inner).await;
                exit_tx.send(());
            }
        };
        crate::spawn_detached(
            task,
            queue,
            "spawning the commit log writer for",
            &inner.dir,
        )?;
        Ok(Self { inner })
    }

    pub fn stats(&self) -> CommitLogStats {
        self.inner.state.borrow().stats
    }

    /// The key entries of the log in `dir` carry: its path relative to the data directory.
    pub(crate) fn key_of(&self, dir: &Path) -> Rc<str> {
        Rc::from(
            dir.strip_prefix(&self.inner.root)
                .unwrap_or(dir)
                .to_string_lossy(),
        )
    }

    /// Registers a partition log for checkpoints.
    pub(crate) fn register(&self, log: Weak<dyn Member>) {
        let mut logs = self.inner.logs.borrow_mut();
        logs.retain(|l| l.strong_count() > 0);
        logs.push(log);
    }

    /// Keeps `log` (closed, its close failed) until a checkpoint or a reopen of its directory
    /// has written what it holds only here.
    pub(crate) fn pin(&self, log: Rc<dyn Member>) {
        self.inner.pinned.borrow_mut().push(log);
    }

    /// Before a log is opened in `dir`: writes out a closed predecessor kept by [`Self::pin`],
    /// failing (the directory must not be opened) when that still does not work.
    pub(crate) async fn write_out_closed(&self, dir: &Path) -> Result<()> {
        let pinned: Vec<Rc<dyn Member>> = self
            .inner
            .pinned
            .borrow()
            .iter()
            .filter(|l| l.dir() == dir)
            .cloned()
            .collect();
        for log in pinned {
            // The checkpoint's part writes and fsyncs what the segment lacks.
            log.clone().checkpoint_sync().await?;
            self.inner
                .pinned
                .borrow_mut()
                .retain(|l| !Rc::ptr_eq(l, &log));
        }
        Ok(())
    }

    /// Resolves once `entry` is on disk (written with O_DSYNC).
    pub(crate) async fn append(&self, entry: Entry) -> Result<()> {
        let rx = {
            let mut st = self.inner.state.borrow_mut();
            if st.closing {
                return Err(StorageError::Closed {
                    path: self.inner.dir.clone(),
                });
            }
            let (tx, rx) = oneshot();
            st.queue.push_back(Queued { entry, ack: tx });
            rx
        };
        self.inner.doorbell.ring();
        match rx.await {
            Some(result) => result,
            None => Err(StorageError::Closed {
                path: self.inner.dir.clone(),
            }),
        }
    }

    /// Writes what is queued and stops the writer. Call after every partition log using it
    /// is closed; then [`CommitLog::remove_files`] if they all closed cleanly.
    pub async fn close(&self) {
        self.inner.state.borrow_mut().closing = true;
        self.inner.doorbell.ring();
        let exit = self.inner.writer_exit.borrow_mut().take();
        if let Some(exit) = exit {
            exit.await;
        }
    }

    /// Deletes this commit log's files: every partition log was closed (fsynced), so nothing
    /// in them is needed.
    pub async fn remove_files(&self) -> Result<()> {
        for (_, path) in list_files(&self.inner.dir)? {
            files::remove(&path).await?;
        }
        files::remove(&self.inner.dir.join(SPARE_NAME)).await?;
        files::sync_dir(&self.inner.dir).await
    }
}

/// `(seq, path)` of the `<seq>.wal` files in `dir`, by sequence number.
fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StorageError::from_io("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::from_io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

async fn writer(inner: Rc<Inner>) {
    loop {
        let round: Vec<Queued> = {
            let mut st = inner.state.borrow_mut();
            let mut bytes = 0usize;
            let mut round = Vec::new();
            while let Some(q) = st.queue.front() {
                let len = q.entry.encoded_len();
                if !round.is_empty() && bytes + len > ROUND_MAX_BYTES {
                    break;
                }
                bytes += len;
                if let Some(q) = st.queue.pop_front() {
                    round.push(q);
                }
            }
            if round.is_empty() && st.closing {
                return;
            }
            round
        };
        if round.is_empty() {
            inner.doorbell.wait().await;
            continue;
        }
        // After a failed round the file may end in a torn frame, which would hide every later
        // frame from recovery: write on only in a new file.
        let must_rotate = inner.state.borrow().must_rotate;
        let result = match must_rotate {
            true => match rotate(&inner).await {
                Ok(()) => write_round(&inner, &round).await,
                Err(e) => Err(e),
            },
            false => write_round(&inner, &round).await,
        };
        inner.state.borrow_mut().must_rotate = result.is_err();
        for q in round {
            q.ack.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.for_another_waiter()),
            });
        }
        if let Err(e) = &result {
            tracing::warn!(dir = %inner.dir.display(), "commit log write failed; its appends fail and roll back: {e}");
        }
        let full = {
            let st = inner.state.borrow();
            st.position >= ROTATE_AT_BYTES && !st.must_rotate
        };
        if full {
            if let Err(e) = rotate(&inner).await {
                tracing::warn!(dir = %inner.dir.display(), "commit log rotation failed; the next round tries again: {e}");
                inner.state.borrow_mut().must_rotate = true;
            }
        }
    }
}

async fn write_round(inner: &Rc<Inner>, round: &[Queued]) -> Result<()> {
    let (file, path, seq, position, prewritten) = {
        let st = inner.state.borrow();
        (
            st.active.file.clone(),
            st.active.path.clone(),
            st.active.seq,
            st.position,
            st.active.prewritten,
        )
    };
    let entries: Vec<&Entry> = round.iter().map(|q| &q.entry).collect();
    let len = frame_len(&entries);
    let mut buf = file.alloc_dma_buffer(len);
    encode_frame(seq, &entries, buf.as_bytes_mut());
    // O_DSYNC (see `create_file`): durable when the write completes.
    let started = Instant::now();
    write_whole(&file, Rc::new(buf), position, "writing commit log", &path).await?;
    let took = started.elapsed();
    let mut st = inner.state.borrow_mut();
    if took >= SLOW_ROUND
        && st
            .slow_round_warned
            .is_none_or(|at| at.elapsed() >= SLOW_ROUND_WARN_EVERY)
    {
        st.slow_round_warned = Some(Instant::now());
        tracing::warn!(
            file = %path.display(),
            took_ms = took.as_millis() as u64,
            bytes = len,
            position,
            prewritten,
            rotations_without_spare = st.stats.rotations_without_spare,
            "a commit log write took {} ms: acks=all produce requests of this shard waited for it; \
             the disk (or the filesystem's journal) stalled",
            took.as_millis()
        );
    }
    st.position += len as u64;
    st.stats.rounds += 1;
    st.stats.entries += round.len() as u64;
    st.stats.bytes_written += len as u64;
    Ok(())
}

/// Moves the writer to file `seq + 1` (the spare, renamed, when there is one) and starts the
/// checkpoint that retires the full file. An error after the switch (the directory fsync)
/// leaves the writer to rotate again before its next round: frames must not go into a file
/// whose name may not survive a crash.
async fn rotate(inner: &Rc<Inner>) -> Result<()> {
    let seq = inner.state.borrow().active.seq + 1;
    let path = wal_path(&inner.dir, seq);
    let spare = inner.state.borrow_mut().spare.take();
    let (file, prewritten) = match spare {
        Some((spare_path, file)) => match glommio::io::rename(&spare_path, &path).await {
            Ok(()) => (file, true),
            Err(e) => {
                inner.state.borrow_mut().spare = Some((spare_path, file));
                return Err(StorageError::from_glommio(
                    "renaming the spare commit log file to",
                    &path,
                    e,
                ));
            }
        },
        None => (create_file(&path).await?, false),
    };
    let full = {
        let mut st = inner.state.borrow_mut();
        st.position = 0;
        st.stats.rotations += 1;
        st.stats.rotations_without_spare += u64::from(!prewritten);
        let next = ActiveFile {
            seq,
            path,
            file,
            prewritten,
        };
        std::mem::replace(&mut st.active, next)
    };
    crate::spawn_detached(
        checkpoint(inner.clone(), full),
        inner.background,
        "spawning a commit log checkpoint for",
        &inner.dir,
    )?;
    files::sync_dir(&inner.dir).await
}

/// Has every partition log write what its segment lacks and fsync it, after which the full file
/// `full` holds nothing recovery needs: it becomes the spare, or is deleted.
async fn checkpoint(inner: Rc<Inner>, full: ActiveFile) {
    let mut logs: Vec<Rc<dyn Member>> = inner
        .logs
        .borrow()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let pinned: Vec<Rc<dyn Member>> = inner.pinned.borrow().clone();
    for log in pinned {
        if !logs.iter().any(|l| Rc::ptr_eq(l, &log)) {
            logs.push(log);
        }
    }
    for log in &logs {
        if let Err(e) = log.clone().checkpoint_sync().await {
            tracing::warn!(file = %full.path.display(), "commit log checkpoint failed; keeping the file for recovery: {e}");
            return;
        }
    }
    inner
        .pinned
        .borrow_mut()
        .retain(|l| l.holds_batches_only_in_commit_log());
    // Claimed before the rename is awaited: two checkpoints must not both rename onto
    // spare.wal, or the handle kept could be the one whose name was replaced.
    let keep_as_spare = {
        let mut st = inner.state.borrow_mut();
        let keep = st.spare.is_none() && !st.spare_claimed && !st.closing;
        st.spare_claimed |= keep;
        keep
    };
    let spare_path = inner.dir.join(SPARE_NAME);
    let retired = if keep_as_spare {
        glommio::io::rename(&full.path, &spare_path).await.is_ok()
    } else {
        files::remove(&full.path).await.is_ok()
    };
    let mut st = inner.state.borrow_mut();
    if keep_as_spare {
        st.spare_claimed = false;
    }
    if !retired {
        tracing::warn!(file = %full.path.display(), "could not retire a checkpointed commit log file");
        return;
    }
    st.stats.checkpoints += 1;
    if keep_as_spare {
        st.spare = Some((spare_path, full.file));
    }
}

/// Every entry of every shard's commit log under `root`, in log order, and how many files
/// held them (recovery's input; see `crate::recovery`).
pub fn read_all(root: &Path) -> Result<(Vec<Entry>, usize)> {
    let wal_root = root.join(COMMIT_LOG_DIR);
    let shard_dirs = match std::fs::read_dir(&wal_root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StorageError::from_io("listing", &wal_root, e)),
    };
    let mut entries = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for d in shard_dirs {
        let d = d.map_err(|e| StorageError::from_io("listing", &wal_root, e))?;
        if d.path().is_dir() {
            dirs.push(d.path());
        }
    }
    dirs.sort();
    let mut files_read = 0;
    for dir in &dirs {
        for (seq, path) in list_files(dir)? {
            let bytes =
                std::fs::read(&path).map_err(|e| StorageError::from_io("reading", &path, e))?;
            let (mut decoded, end) = format::decode_file(seq, &bytes);
            if let format::End::Torn(why) = end {
                tracing::info!(file = %path.display(), "commit log ends in a torn round (never acknowledged): {why}");
            }
            entries.append(&mut decoded);
            files_read += 1;
        }
    }
    Ok((entries, files_read))
}
