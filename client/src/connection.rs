//! One QUIC connection to one shard. Each request opens its own bidirectional stream, sends
//! one frame and reads one frame back, so requests never block each other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_schema::frame::{parse_frame, DEFAULT_MAX_FRAME_BYTES};
use quiver_schema::wire::Envelope;

use crate::trust::TlsTrust;
use crate::ClientError;

/// ALPN of the wire protocol; must match the broker's.
pub const ALPN: &[u8] = b"quiver/0";

/// A response frame, verified once on arrival.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    frame: Bytes,
}

impl ResponseFrame {
    /// The envelope (re-borrowed from the verified buffer; cheap).
    pub fn envelope(&self) -> Envelope<'_> {
        // SAFETY: `frame` passed `parse_frame` (the FlatBuffers verifier) when this value was
        // made, and it is immutable since.
        unsafe { quiver_schema::wire::size_prefixed_root_as_envelope_unchecked(&self.frame) }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.frame
    }
}

pub struct Connection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    next_request_id: AtomicU64,
    max_frame_bytes: usize,
}

impl Connection {
    /// Connects to the shard at `addr`; `server_name` must be in the node's certificate
    /// (`localhost` for a dev certificate).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust: &TlsTrust,
    ) -> Result<Self, ClientError> {
        Self::connect_with_cert(addr, server_name, trust, None).await
    }

    /// As [`Connection::connect`], presenting a client certificate (PEM chain, PEM key) to a
    /// node that requires mTLS.
    pub async fn connect_with_cert(
        addr: SocketAddr,
        server_name: &str,
        trust: &TlsTrust,
        client_cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    ) -> Result<Self, ClientError> {
        let tls = trust.client_config(ALPN, client_cert)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ClientError::Trust(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window((16u32 << 20).into())
            .receive_window((64u32 << 20).into())
            .send_window(64 << 20)
            .keep_alive_interval(Some(Duration::from_secs(10)));
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|e| ClientError::Connect {
            addr,
            reason: format!("{e}"),
        })?;
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect {
            addr,
            reason: e.to_string(),
        })?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| ClientError::Connect {
                addr,
                reason: "no answer within 10 s".into(),
            })?
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        Ok(Self {
            endpoint,
            conn,
            next_request_id: AtomicU64::new(1),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        })
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request frame and returns the verified response frame.
    pub async fn request(&self, frame: Bytes) -> Result<ResponseFrame, ClientError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        send.write_chunk(frame)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        send.finish()
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let bytes = recv
            .read_to_end(self.max_frame_bytes + quiver_schema::frame::LENGTH_PREFIX_BYTES)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let frame = Bytes::from(bytes);
        parse_frame(&frame, self.max_frame_bytes)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(ResponseFrame { frame })
    }

    /// Sends raw bytes on a new stream and returns whatever comes back (for tests of the
    /// broker's handling of malformed input).
    pub async fn raw_exchange(&self, bytes: Bytes) -> Result<Bytes, ClientError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        send.write_chunk(bytes)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        send.finish()
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let out = recv
            .read_to_end(self.max_frame_bytes + 4)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        Ok(Bytes::from(out))
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}
