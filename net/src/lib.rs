//! # quiver-net: QUIC on a glommio shard
//!
//! - [`tls`]: the node's TLS identity — a dev certificate made on first start and kept in the
//!   data directory, or PEM files for production — and the rustls/QUIC server config.
//! - [`frame_reader`]: reassembles one request frame from a stream's chunks, enforcing
//!   `max_frame_bytes` (sans-IO).
//! - `driver`: the endpoint as a sans-IO state machine (quinn-proto's endpoint and
//!   connections, frame readers, response writers): datagrams and responses in, datagrams
//!   and request frames out. Unit-tested against an in-memory quinn-proto client.
//! - [`server`]: the shard's QUIC endpoint: the driver run by glommio's own UDP socket and
//!   timers on the shard's io_uring, no extra thread. One bidirectional stream per request;
//!   a bounded number of streams per connection. The handler learns each request's
//!   [`server::Peer`] (address, client certificate).
//!   The same endpoint opens links to other nodes' endpoints ([`INTERNAL_ALPN`]): one-way
//!   frames on unidirectional streams, in both directions of a shard pair.
//! - [`udp`]: non-blocking GSO sends and draining receives on the shard's socket.

mod driver;
pub use driver::{LinkError, MAX_QUEUED_FRAMES_PER_LINK};
pub mod frame_reader;
pub mod server;
pub mod socket_buffers;
pub mod tls;
pub mod udp;

/// ALPN protocol id of Quiver's wire protocol, version 0.
pub const ALPN: &[u8] = b"quiver/0";
/// ALPN protocol id of node-to-node traffic (Raft envelopes, controller requests): one-way
/// frames, each on its own unidirectional stream, on a link each node opens to the other.
pub const INTERNAL_ALPN: &[u8] = b"quiver-internal/0";

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bind {addr}: {source}; is another process (another quiver?) using that port? pick another with --listen")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Re-exported so the broker names the same quinn-proto types.
pub use quinn_proto;
