//! One QUIC connection to one shard. Each request opens its own bidirectional stream, sends
//! one frame and reads one frame back, so requests never block each other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_schema::frame::{parse_frame, DEFAULT_MAX_FRAME_BYTES};
use quiver_schema::wire::Envelope;

use crate::error::ClientError;
use crate::trust::TlsTrust;

/// Largest UDP payload the client accepts (the broker advertises the same).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 16_384;

/// Upper bound of MTU discovery (the broker uses the same): datagrams grow from 1,452 bytes
/// to this where the path allows (loopback, jumbo frames). quinn sends up to ten datagrams
/// in one GSO call and the kernel refuses (and quinn then loses) a call over UDP's 65,507
/// payload bytes: with an 8,952-byte bound no request got through at all.
pub const MTU_UPPER_BOUND_BYTES: u16 = 6_550;
const _: () = assert!(MTU_UPPER_BOUND_BYTES as u32 * 10 <= 65_507);

/// ALPN of the wire protocol; must match the broker's.
pub const ALPN: &[u8] = b"quiver/0";

/// How long a QUIC handshake may take before the connect fails (Kafka's
/// `socket.connection.setup.timeout.ms` is the same 10 s).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// A connection that hears nothing from its broker for this long is closed and its requests
/// fail (retried elsewhere once metadata names a new leader): QUIC ignores ICMP errors, so a
/// node killed mid-request is found only by its silence. Keep-alives every third of it keep
/// an idle connection to a live broker open.
pub const PEER_SILENCE_MS: u64 = 1_500;

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

    /// The whole frame as received, length prefix included.
    pub fn bytes(&self) -> &Bytes {
        &self.frame
    }
}

/// One QUIC connection to one shard; concurrent requests each use their own stream.
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
        Self::connect_within(
            addr,
            server_name,
            trust,
            client_cert,
            DEFAULT_CONNECT_TIMEOUT_MS,
        )
        .await
    }

    /// As [`Connection::connect_with_cert`], failing with `Connect` when the handshake has
    /// not finished within `connect_timeout_ms` (an address where nothing answers).
    pub async fn connect_within(
        addr: SocketAddr,
        server_name: &str,
        trust: &TlsTrust,
        client_cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
        connect_timeout_ms: u64,
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
            .max_idle_timeout(Some(quinn::VarInt::from_u32(PEER_SILENCE_MS as u32).into()))
            .keep_alive_interval(Some(Duration::from_millis(PEER_SILENCE_MS / 3)));
        // Ask the broker to acknowledge every 8th packet instead of every 2nd: at disk speed
        // its ACK datagrams would otherwise cost it a send syscall per 3 KB received.
        let mut ack_frequency = quinn::AckFrequencyConfig::default();
        ack_frequency.ack_eliciting_threshold(7u32.into());
        transport.ack_frequency_config(Some(ack_frequency));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(MTU_UPPER_BOUND_BYTES);
        transport.mtu_discovery_config(Some(mtu));
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
        let socket = std::net::UdpSocket::bind(bind).map_err(|e| ClientError::Connect {
            addr,
            reason: e.to_string(),
        })?;
        enlarge_socket_buffers(&socket, 8 << 20);
        let mut endpoint_config = quinn::EndpointConfig::default();
        // Accept datagrams up to MAX_UDP_PAYLOAD_BYTES.
        let _ = endpoint_config.max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES);
        let runtime = quinn::default_runtime().ok_or_else(|| ClientError::Connect {
            addr,
            reason: "no async runtime: call from inside a tokio runtime".into(),
        })?;
        let mut endpoint =
            quinn::Endpoint::new(endpoint_config, None, socket, runtime).map_err(|e| {
                ClientError::Connect {
                    addr,
                    reason: e.to_string(),
                }
            })?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let handshake = tokio::time::timeout(Duration::from_millis(connect_timeout_ms), connecting);
        let conn = tokio::select! {
            result = handshake => result
                .map_err(|_| ClientError::Connect {
                    addr,
                    reason: format!("no answer within {connect_timeout_ms} ms"),
                })?
                .map_err(|e| ClientError::Connect {
                    addr,
                    reason: e.to_string(),
                })?,
            refused = port_unreachable(addr, bind) => {
                return Err(ClientError::Connect {
                    addr,
                    reason: format!("nothing listens on that UDP port ({refused})"),
                });
            }
        };
        Ok(Self {
            endpoint,
            conn,
            next_request_id: AtomicU64::new(1),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        })
    }

    /// The UDP payload size the connection currently uses (after MTU discovery).
    pub fn path_mtu_bytes(&self) -> u16 {
        self.conn.stats().path.current_mtu
    }

    /// Transport statistics (for benchmarks and diagnosis).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// True once the connection is closed (by either side, or lost).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
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

    /// Closes the connection and waits until the endpoint has finished shutting it down.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

/// Resolves when the OS reports `addr`'s port unreachable, and never otherwise.
///
/// quinn's socket is not connected, so the kernel cannot hand it the ICMP "port unreachable"
/// a closed port answers with, and a handshake to a stopped node waits its whole connect
/// timeout. A connected probe socket beside it sends one byte (a datagram too short to be a
/// QUIC packet, which a QUIC server drops) and sees `ECONNREFUSED` at once where the ICMP
/// comes back (always on loopback). It runs beside the handshake, so it costs a live
/// connection no time.
async fn port_unreachable(addr: SocketAddr, bind: SocketAddr) -> std::io::Error {
    let probe = async {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(addr).await?;
        socket.send(&[0]).await?;
        let mut buf = [0u8; 64];
        loop {
            socket.recv(&mut buf).await?; // an answer (not a QUIC server): keep listening
        }
    };
    let result: std::io::Result<()> = probe.await;
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => e,
        // The probe itself failed (no socket, say): the handshake's timeout decides.
        _ => std::future::pending().await,
    }
}

/// Asks for large kernel buffers on the client's UDP socket (bursts of 64 KiB batches);
/// falls back silently to what `net.core.{r,w}mem_max` allows.
fn enlarge_socket_buffers(socket: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for option in [force, plain] {
            // SAFETY: the fd is the open socket borrowed from `socket`; the value is a c_int
            // that lives across the call, and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&bytes as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}
