//! The machine's floor, measured so results can be quoted as ratios: a raw QUIC echo of the
//! message size (the same server code on one glommio shard) and a raw O_DIRECT 4 KiB write +
//! fdatasync on the data disk.

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
    fn handle(&self, request: BytesMut) -> Pin<Box<dyn std::future::Future<Output = Bytes>>> {
        Box::pin(async move { request.freeze() })
    }
}

pub fn start_echo(data_dir: PathBuf) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::new(placement())
            .make()
            .expect("executor")
            .run(async move {
                let (identity, _) = tls::load_or_create_dev_identity(&data_dir).expect("identity");
                let config = tls::server_config(&identity, &tls::QuicLimits::default(), None)
                    .expect("config");
                let server =
                    QuicServer::bind("127.0.0.1:0".parse().expect("addr"), config, 32 << 20, 16)
                        .expect("bind");
                tx.send(server.local_addr()).expect("send addr");
                let _ = server.run(Rc::new(Echo), std::future::pending()).await;
            })
    });
    rx.recv().expect("echo server address")
}

/// Pinned to CPU 0 where it exists (benchmarks put the server there), else unpinned.
fn placement() -> glommio::Placement {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        glommio::Placement::Fixed(0)
    } else {
        glommio::Placement::Unbound
    }
}

/// Raw 4 KiB overwrite + fdatasync p99 on the same disk (the storage floor).
pub fn raw_fsync_p99(dir: &Path, samples: usize) -> u64 {
    raw_fsync_histogram(dir, samples).value_at_quantile(0.99)
}

/// Raw write+fdatasync latencies as a histogram (µs), for `quiver bench floor`.
pub fn raw_fsync_histogram(dir: &Path, samples: usize) -> Histogram<u64> {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::new(placement())
        .make()
        .expect("executor")
        .run(async move {
            let path = dir.join("floor-fsync.bin");
            let f = glommio::io::OpenOptions::new()
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .expect("file");
            let mut prefill = f.alloc_dma_buffer(samples * 4096);
            prefill.as_bytes_mut().fill(1);
            f.write_at(prefill, 0).await.expect("prefill");
            f.fdatasync().await.expect("sync");
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..samples {
                let mut buf = f.alloc_dma_buffer(4096);
                buf.as_bytes_mut().fill(2);
                let t = Instant::now();
                f.write_at(buf, (i * 4096) as u64).await.expect("write");
                f.fdatasync().await.expect("sync");
                h.record(t.elapsed().as_micros() as u64).expect("record");
            }
            let _ = f.close().await;
            let _ = std::fs::remove_file(&path);
            h
        })
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
