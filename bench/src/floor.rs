//! The machine's floor, measured so results can be quoted as ratios: a raw QUIC echo of the
//! message size (the same server code on one glommio shard) and a raw O_DIRECT 4 KiB write +
//! fdatasync on the data disk.
//!
//! Both run their server side on `server_cpu`, the CPU the benchmark's node runs on, so the
//! floor pays the same scheduling as the messages it is compared with (on a VM whose idle
//! CPUs halt, where the io_uring worker doing the fdatasync runs moves the disk floor's p50 by
//! ~90 µs: docs/decisions/0015).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use quiver_net::server::{Handler, QuicServer};
use quiver_net::tls;

/// Answers each request with a frame of the same size: the transport's floor.
struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        _peer: Rc<quiver_net::server::Peer>,
        request: BytesMut,
    ) -> Pin<Box<dyn std::future::Future<Output = Bytes>>> {
        Box::pin(async move { request.freeze() })
    }
}

/// Starts the echo server (the transport's floor) on a glommio thread on `server_cpu`.
pub fn start_echo(data_dir: PathBuf, server_cpu: Option<usize>) -> Result<SocketAddr, String> {
    // In the executor's default task queue: a node's latency-sensitive queue added ~6 µs to
    // the echo's p50 (95–99 → 102–105 µs, three interleaved pairs), and this is the floor.
    start_quic_server(data_dir, server_cpu, false, |_| async {
        Ok(Rc::new(Echo) as Rc<dyn Handler>)
    })
}

/// Serves the handler `make` builds with Quiver's QUIC server code, on a glommio thread of its
/// own on `server_cpu` (unpinned: `None`), with a dev certificate in `data_dir` (where
/// clients find it with `TlsTrust::LocalDataDir`). Returns the server's address once it
/// listens, or why it could not start (`make`'s error, the certificate, the bind). With
/// `as_a_shard`, the server runs in a latency-sensitive task queue, as a node's shard serves.
pub fn start_quic_server<F, Fut>(
    data_dir: PathBuf,
    server_cpu: Option<usize>,
    as_a_shard: bool,
    make: F,
) -> Result<SocketAddr, String>
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Rc<dyn Handler>, String>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let executor = match glommio::LocalExecutorBuilder::new(placement(server_cpu)).make() {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.send(Err(format!("starting the server's executor: {e}")));
                return;
            }
        };
        executor.run(async move {
            let started = async {
                let handler = make(data_dir.clone()).await?;
                let (identity, _) = tls::load_or_create_dev_identity(&data_dir)
                    .map_err(|e| format!("the server's dev certificate: {e}"))?;
                let config = tls::server_config(&identity, &tls::QuicLimits::default(), None)
                    .map_err(|e| format!("the server's TLS settings: {e}"))?;
                let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
                let server = QuicServer::bind(any_port, config, 32 << 20, 16)
                    .map_err(|e| format!("binding the server's socket: {e}"))?;
                Ok::<_, String>((server, handler))
            };
            match started.await {
                Ok((server, handler)) => {
                    let _ = tx.send(Ok(server.local_addr()));
                    if !as_a_shard {
                        let _ = server.run(handler, std::future::pending()).await;
                        return;
                    }
                    let queue = glommio::executor().create_task_queue(
                        glommio::Shares::Static(1000),
                        glommio::Latency::Matters(std::time::Duration::from_millis(1)),
                        "serve",
                    );
                    let serve = server.run(handler, std::future::pending());
                    match glommio::spawn_local_into(serve, queue) {
                        Ok(task) => {
                            let _ = task.await;
                        }
                        Err(e) => tracing::error!("the server did not start: {e}"),
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
    });
    rx.recv()
        .map_err(|_| "the server's thread ended before it listened".to_string())?
}

fn placement(cpu: Option<usize>) -> glommio::Placement {
    match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    }
}

/// Raw 4 KiB overwrite + fdatasync p99 on the same disk (the storage floor).
pub fn raw_fsync_p99(dir: &Path, samples: usize, server_cpu: Option<usize>) -> Result<u64, String> {
    Ok(raw_fsync_histogram(dir, samples, server_cpu)?.value_at_quantile(0.99))
}

/// Raw write+fdatasync latencies as a histogram (µs), for `quiver bench floor`. On a thread
/// of its own pinned to `server_cpu` (its io_uring workers, which run the fdatasync, inherit
/// that CPU as the node's shards' do); the caller's affinity is left alone. A disk error
/// (full, read-only, no O_DIRECT) comes back as a message naming the file.
pub fn raw_fsync_histogram(
    dir: &Path,
    samples: usize,
    server_cpu: Option<usize>,
) -> Result<Histogram<u64>, String> {
    let path = dir.join("floor-fsync.bin");
    let run = move || {
        let executor = glommio::LocalExecutorBuilder::new(placement(server_cpu))
            .make()
            .map_err(|e| format!("starting the disk floor's executor: {e}"))?;
        executor.run(async move {
            let failed = |what: &str, e: glommio::GlommioError<()>| {
                format!("{what} {} for the disk floor: {e}", path.display())
            };
            let f = glommio::io::OpenOptions::new()
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .map_err(|e| failed("opening", e))?;
            let result = async {
                let mut prefill = f.alloc_dma_buffer(samples * 4096);
                prefill.as_bytes_mut().fill(1);
                f.write_at(prefill, 0)
                    .await
                    .map_err(|e| failed("writing", e))?;
                f.fdatasync().await.map_err(|e| failed("syncing", e))?;
                let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
                for i in 0..samples {
                    let mut buf = f.alloc_dma_buffer(4096);
                    buf.as_bytes_mut().fill(2);
                    let t = Instant::now();
                    f.write_at(buf, (i * 4096) as u64)
                        .await
                        .map_err(|e| failed("writing", e))?;
                    f.fdatasync().await.map_err(|e| failed("syncing", e))?;
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
                Ok(h)
            }
            .await;
            let _ = f.close().await;
            let _ = std::fs::remove_file(&path);
            result
        })
    };
    std::thread::spawn(run)
        .join()
        .map_err(|_| "the disk floor's thread panicked".to_string())?
}

/// Round trips of `size`-byte frames to an echo server, as a histogram (µs).
pub async fn echo_histogram(
    addr: SocketAddr,
    data_dir: PathBuf,
    size: usize,
    samples: usize,
) -> Histogram<u64> {
    let conn = quiver_client::Connection::connect(
        addr,
        "localhost",
        &quiver_client::TlsTrust::LocalDataDir(data_dir),
    )
    .await
    .expect("echo connection");
    let payload = vec![7u8; size];
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..samples + samples / 10 {
        let frame = quiver_schema::requests::produce(
            conn.next_request_id(),
            "floor",
            0,
            quiver_schema::wire::Acks::Leader,
            1000,
            &payload,
        );
        let t = Instant::now();
        conn.request(frame).await.expect("echo");
        if i >= samples / 10 {
            h.record(t.elapsed().as_micros() as u64).expect("record");
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity_of_this_thread() -> Vec<usize> {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    #[test]
    fn disk_floor_records_every_sample_and_leaves_the_callers_cpus_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = affinity_of_this_thread();
        let h = raw_fsync_histogram(dir.path(), 20, Some(0)).expect("disk floor");
        assert_eq!(h.len(), 20);
        assert!(h.min() > 0, "a durable write takes time");
        assert_eq!(affinity_of_this_thread(), before);
        assert!(
            !dir.path().join("floor-fsync.bin").exists(),
            "the scratch file is removed"
        );
    }
}
