//! The shard's QUIC endpoint as a sans-IO state machine: quinn-proto's endpoint and
//! connections, the per-stream frame readers and response writers. Each step takes what
//! happened (a datagram, a timeout, a response) and returns [`Effects`] — datagrams to send
//! and whole request frames to dispatch — for `crate::server` to perform on the shard's
//! socket. Unit-tested below against an in-memory quinn-proto client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, ReadError, ServerConfig, StreamEvent, StreamId, VarInt, WriteError,
};
use quiver_schema::frame::{error_frame, FrameError};
use quiver_schema::wire::ApiKey;

use crate::frame_reader::FrameReader;
use crate::server::Peer;
use crate::udp;

/// Largest UDP payload read at once.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 65_535;

/// Application error code used when the server stops reading a stream it refused.
const STOP_REFUSED: VarInt = VarInt::from_u32(1);

/// One or more datagrams for one destination: `segment_size` set means `data` holds several
/// of that size (the last may be shorter), for one GSO send.
pub(crate) struct Outgoing {
    pub(crate) data: Bytes,
    pub(crate) to: SocketAddr,
    pub(crate) segment_size: Option<usize>,
}

impl Outgoing {
    fn one(buf: &[u8], t: &quinn_proto::Transmit) -> Self {
        Self {
            data: Bytes::copy_from_slice(&buf[..t.size]),
            to: t.destination,
            segment_size: t.segment_size,
        }
    }
}

/// What a synchronous driver step asks the caller to do.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) sends: Vec<Outgoing>,
    pub(crate) requests: Vec<(ConnectionHandle, StreamId, Rc<Peer>, BytesMut)>,
    /// Whole frames another node sent on the internal ALPN (one-way, no answer).
    pub(crate) internal: Vec<(Rc<Peer>, BytesMut)>,
    /// Links to other nodes that closed, with how many frames queued on them were dropped.
    pub(crate) lost_links: Vec<(SocketAddr, usize)>,
}

struct Conn {
    inner: Connection,
    /// Known once the handshake is done (set by the first request).
    peer: Option<Rc<Peer>>,
    readers: HashMap<StreamId, FrameReader>,
    /// Response bytes not yet accepted by the stream (flow control).
    writers: HashMap<StreamId, Bytes>,
    /// An internal link this node opened: the address it is keyed by in `Driver::links`.
    link_to: Option<SocketAddr>,
    /// Frames waiting for a stream on an internal link (the peer's stream limit).
    queued: VecDeque<Bytes>,
}

impl Conn {
    fn new(inner: Connection, link_to: Option<SocketAddr>) -> Self {
        Self {
            inner,
            peer: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            link_to,
            queued: VecDeque::new(),
        }
    }

    /// Whether the handshake agreed on the internal (node-to-node) protocol.
    fn is_internal(&self) -> bool {
        self.inner
            .crypto_session()
            .handshake_data()
            .and_then(|d| {
                d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                    .ok()
            })
            .and_then(|d| d.protocol)
            .is_some_and(|p| p == crate::INTERNAL_ALPN)
    }
}

/// Why a frame could not be queued for another node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this endpoint has no client configuration for links to other nodes")]
    NoClientConfig,
    #[error("cannot connect to {to}: {reason}")]
    Connect { to: SocketAddr, reason: String },
    #[error("{queued} frames already wait for {to} (the peer is slow or unreachable); dropped")]
    Backlog { to: SocketAddr, queued: usize },
}

/// Frames queued per link while the peer grants no stream.
pub const MAX_QUEUED_FRAMES_PER_LINK: usize = 1024;

/// The sans-IO core plus per-stream bookkeeping. Never held across an `.await`.
pub(crate) struct Driver {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    max_frame_bytes: usize,
    max_connections: usize,
    /// How this endpoint connects to other nodes (internal ALPN); `None`: it does not.
    client_config: Option<ClientConfig>,
    /// This node's open links to other nodes' endpoints, by address.
    links: HashMap<SocketAddr, ConnectionHandle>,
    /// The latest internal connection each other node's endpoint opened to this one.
    inbound_links: HashMap<SocketAddr, ConnectionHandle>,
    /// Datagrams per transmit: [`udp::MAX_GSO_SEGMENTS`] with GSO, else 1 (also once the
    /// kernel refused a GSO send, e.g. on a device without checksum offload).
    pub(crate) max_segments: usize,
    buf: Vec<u8>,
}

impl Driver {
    /// A server endpoint with `config`, refusing frames over `max_frame_bytes` and
    /// connections past `max_connections`, sending up to `max_segments` datagrams per GSO call.
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        max_frame_bytes: usize,
        max_connections: usize,
        max_segments: usize,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(Arc::new(endpoint_config()), Some(config), true, None),
            conns: HashMap::new(),
            max_frame_bytes,
            max_connections,
            client_config: None,
            links: HashMap::new(),
            inbound_links: HashMap::new(),
            max_segments,
            buf: Vec::with_capacity(MAX_DATAGRAM_BYTES),
        }
    }

    /// Lets this endpoint open links to other nodes with `config` (internal ALPN).
    pub(crate) fn set_client_config(&mut self, config: ClientConfig) {
        self.client_config = Some(config);
    }

    /// Queues one whole frame for the node endpoint at `to`, on a new unidirectional stream
    /// of this node's link to it (connected on first use). Delivery is best effort: a lost
    /// link reports the frames it dropped in [`Effects::lost_links`].
    pub(crate) fn send_internal(
        &mut self,
        now: Instant,
        to: SocketAddr,
        frame: Bytes,
        fx: &mut Effects,
    ) -> Result<(), LinkError> {
        let ch = match self.links.get(&to) {
            Some(ch) if self.conns.contains_key(ch) => *ch,
            _ => {
                let config = self
                    .client_config
                    .clone()
                    .ok_or(LinkError::NoClientConfig)?;
                // Node certificates name their address (the dev certificate: 127.0.0.1).
                let server_name = to.ip().to_string();
                let (ch, conn) = self
                    .endpoint
                    .connect(now, config, to, &server_name)
                    .map_err(|e| LinkError::Connect {
                        to,
                        reason: e.to_string(),
                    })?;
                self.conns.insert(ch, Conn::new(conn, Some(to)));
                self.links.insert(to, ch);
                ch
            }
        };
        let Some(c) = self.conns.get_mut(&ch) else {
            return Err(LinkError::Connect {
                to,
                reason: "the link closed".into(),
            });
        };
        if c.queued.len() >= MAX_QUEUED_FRAMES_PER_LINK {
            return Err(LinkError::Backlog {
                to,
                queued: c.queued.len(),
            });
        }
        c.queued.push_back(frame);
        open_queued(c);
        self.drive(ch, now, fx);
        Ok(())
    }

    /// Open links to other nodes (for tests and status).
    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Feeds one datagram to the endpoint. Returns the connection it concerns, to be driven
    /// once the whole receive batch is in.
    pub(crate) fn on_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: BytesMut,
        fx: &mut Effects,
    ) -> Option<ConnectionHandle> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut to_drive = None;
        match self
            .endpoint
            .handle(now, remote, None, None, data, &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.conns.len() >= self.max_connections {
                    tracing::warn!(%remote, max = self.max_connections, "refusing a connection: max_connections reached");
                    let t = self.endpoint.refuse(incoming, &mut buf);
                    fx.sends.push(Outgoing::one(&buf, &t));
                } else {
                    match self.endpoint.accept(incoming, now, &mut buf, None) {
                        Ok((ch, conn)) => {
                            self.conns.insert(ch, Conn::new(conn, None));
                            to_drive = Some(ch);
                        }
                        Err(e) => {
                            if let Some(t) = e.response {
                                fx.sends.push(Outgoing::one(&buf, &t));
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                to_drive = self
                    .step_contained(ch, fx, |c| c.handle_event(event))
                    .then_some(ch);
            }
            Some(DatagramEvent::Response(t)) => fx.sends.push(Outgoing::one(&buf, &t)),
            None => {}
        }
        buf.clear();
        self.buf = buf;
        to_drive
    }

    /// Runs `step` on connection `ch`'s state machine; a panic inside it (a library bug)
    /// drops that connection ([`Driver::abandon`]) instead of unwinding through the shard.
    /// False when the connection is gone.
    fn step_contained(
        &mut self,
        ch: ConnectionHandle,
        fx: &mut Effects,
        step: impl FnOnce(&mut quinn_proto::Connection),
    ) -> bool {
        let Some(c) = self.conns.get_mut(&ch) else {
            return false;
        };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut c.inner)));
        let Err(panic) = caught else {
            return true;
        };
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        self.abandon(ch, &why, fx);
        false
    }

    /// Drops a connection whose QUIC state machine panicked (a bug in it, met under loss
    /// and reordering: an arithmetic underflow in quinn-proto's stream accounting was seen
    /// by the chaos harness): the peer sees it time out and reconnects; the shard, its other
    /// connections and every partition on it carry on.
    fn abandon(&mut self, ch: ConnectionHandle, why: &str, fx: &mut Effects) {
        let Some(mut c) = self.conns.remove(&ch) else {
            return;
        };
        tracing::error!(?ch, "a QUIC connection's state machine failed ({why}); the connection is dropped and its peer reconnects");
        self.inbound_links.retain(|_, h| *h != ch);
        if let Some(to) = c.link_to.take() {
            if self.links.get(&to) == Some(&ch) {
                self.links.remove(&to);
            }
            fx.lost_links.push((to, c.queued.len()));
        }
        let _ = self
            .endpoint
            .handle_event(ch, quinn_proto::EndpointEvent::drained());
    }

    pub(crate) fn on_timeouts(&mut self, now: Instant, fx: &mut Effects) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter_mut()
            .filter_map(|(ch, c)| {
                c.inner
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                    .then_some(*ch)
            })
            .collect();
        for ch in due {
            if self.step_contained(ch, fx, |c| c.handle_timeout(now)) {
                self.drive(ch, now, fx);
            }
        }
    }

    pub(crate) fn close_all(&mut self, now: Instant, fx: &mut Effects) {
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in handles {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.inner.close(
                    now,
                    VarInt::from_u32(0),
                    Bytes::from_static(b"node shutting down"),
                );
            }
            self.drive(ch, now, fx);
        }
    }

    pub(crate) fn next_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.inner.poll_timeout())
            .min()
    }

    pub(crate) fn on_response(
        &mut self,
        ch: ConnectionHandle,
        id: StreamId,
        response: Bytes,
        now: Instant,
        fx: &mut Effects,
    ) {
        if let Some(c) = self.conns.get_mut(&ch) {
            c.writers.insert(id, response);
            write_pending(c, id);
        }
        self.drive(ch, now, fx);
    }

    /// Runs one connection's state machine to quiescence: application events, endpoint
    /// events, then every datagram it wants to send.
    pub(crate) fn drive(&mut self, ch: ConnectionHandle, now: Instant, fx: &mut Effects) {
        let mut restarted: Option<(SocketAddr, ConnectionHandle)> = None;
        let Self {
            endpoint,
            conns,
            links,
            inbound_links,
            max_frame_bytes,
            max_segments,
            buf,
            ..
        } = self;
        let Some(c) = conns.get_mut(&ch) else { return };
        while let Some(event) = c.inner.poll() {
            match event {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = c.inner.streams().accept(Dir::Bi) {
                        c.readers.insert(id, FrameReader::new(*max_frame_bytes));
                        read_stream(c, ch, id, fx);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    let internal = c.is_internal();
                    while let Some(id) = c.inner.streams().accept(Dir::Uni) {
                        if internal {
                            c.readers.insert(id, FrameReader::new(*max_frame_bytes));
                            read_stream(c, ch, id, fx);
                        } else {
                            // Clients speak request/response only: refuse one-way streams.
                            let _ = c.inner.recv_stream(id).stop(STOP_REFUSED);
                        }
                    }
                }
                Event::Stream(StreamEvent::Available { dir: Dir::Uni }) => open_queued(c),
                Event::Stream(StreamEvent::Readable { id }) => read_stream(c, ch, id, fx),
                Event::Stream(StreamEvent::Writable { id }) => write_pending(c, id),
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    c.writers.remove(&id);
                }
                Event::Connected => {
                    open_queued(c);
                    // A second link from the same peer endpoint: that node restarted. What
                    // this node holds towards its old process (a link that would black-hole
                    // until its idle timeout) is closed, and the next send reconnects.
                    if c.link_to.is_none() && c.is_internal() {
                        let remote = c.inner.remote_address();
                        if let Some(old) = inbound_links.insert(remote, ch) {
                            if old != ch {
                                restarted = Some((remote, old));
                            }
                        }
                    }
                }
                Event::ConnectionLost { reason } => {
                    tracing::debug!(?ch, "connection closed: {reason}");
                    if let Some(to) = c.link_to.take() {
                        if links.get(&to) == Some(&ch) {
                            links.remove(&to);
                        }
                        fx.lost_links.push((to, c.queued.len()));
                        c.queued.clear();
                    }
                }
                _ => {}
            }
        }
        while let Some(event) = c.inner.poll_endpoint_events() {
            if let Some(back) = endpoint.handle_event(ch, event) {
                c.inner.handle_event(back);
            }
        }
        loop {
            buf.clear();
            // Ten datagrams of a discovered MTU may pass UDP's 64 KiB: fewer per send then.
            let segments = (*max_segments).min(udp::segments_per_send(c.inner.current_mtu()));
            let Some(t) = c.inner.poll_transmit(now, segments, buf) else {
                break;
            };
            fx.sends.push(Outgoing::one(buf, &t));
        }
        let drained = c.inner.is_drained();
        if drained {
            if inbound_links.get(&c.inner.remote_address()) == Some(&ch) {
                inbound_links.remove(&c.inner.remote_address());
            }
            if let Some(to) = c.link_to.take() {
                if links.get(&to) == Some(&ch) {
                    links.remove(&to);
                }
                fx.lost_links.push((to, c.queued.len()));
            }
            conns.remove(&ch);
        }
        if let Some((remote, old)) = restarted {
            tracing::info!(%remote, "a node restarted: closing the links to its old process");
            let stale: Vec<ConnectionHandle> = [Some(old), self.links.get(&remote).copied()]
                .into_iter()
                .flatten()
                .collect();
            for stale_ch in stale {
                if let Some(c) = self.conns.get_mut(&stale_ch) {
                    c.inner.close(
                        now,
                        VarInt::from_u32(0),
                        Bytes::from_static(b"peer restarted"),
                    );
                }
                self.links.retain(|_, v| *v != stale_ch);
                self.drive(stale_ch, now, fx);
            }
        }
    }
}

/// Sends queued internal frames, one new unidirectional stream each, while the peer grants
/// streams (and once the handshake is done: before it, frames stay queued).
fn open_queued(c: &mut Conn) {
    if c.inner.is_handshaking() {
        return;
    }
    while !c.queued.is_empty() {
        let Some(id) = c.inner.streams().open(Dir::Uni) else {
            return; // `Available` comes when the peer grants more
        };
        if let Some(frame) = c.queued.pop_front() {
            c.writers.insert(id, frame);
            write_pending(c, id);
        }
    }
}

/// Reads what arrived on a request stream; dispatches the frame once whole, or answers a bad
/// one with a typed error frame and stops the stream.
fn read_stream(c: &mut Conn, ch: ConnectionHandle, id: StreamId, fx: &mut Effects) {
    let Some(reader) = c.readers.get_mut(&id) else {
        return;
    };
    let mut recv = c.inner.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        c.readers.remove(&id);
        return;
    };
    let mut failure: Option<FrameError> = None;
    let mut finished = false;
    loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                if let Err(e) = reader.push(&chunk.bytes) {
                    failure = Some(e);
                    break;
                }
            }
            Ok(None) => {
                finished = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(_)) => {
                let _ = chunks.finalize(); // transmits are polled right after
                c.readers.remove(&id);
                return;
            }
        }
    }
    let _ = chunks.finalize(); // flow-control credit goes out with the next poll_transmit
    let complete = failure.is_none() && reader.is_complete();
    if !complete && failure.is_none() && !finished {
        return; // more to come
    }
    let Some(reader) = c.readers.remove(&id) else {
        return;
    };
    let result = match failure {
        Some(e) => Err(e),
        None => reader.finish(),
    };
    match result {
        Ok(frame) if id.dir() == Dir::Uni => fx.internal.push((peer_of(c), frame)),
        Ok(frame) => fx.requests.push((ch, id, peer_of(c), frame)),
        Err(_) if id.dir() == Dir::Uni => {
            tracing::debug!(?ch, "refusing a malformed internal frame");
            let _ = c.inner.recv_stream(id).stop(STOP_REFUSED);
        }
        Err(e) => {
            let _ = c.inner.recv_stream(id).stop(STOP_REFUSED);
            c.writers.insert(
                id,
                error_frame(0, ApiKey::Handshake, e.code(), &e.to_string()),
            );
            write_pending(c, id);
        }
    }
}

/// The connection's peer: its address and the client certificate TLS verified.
fn peer_of(c: &mut Conn) -> Rc<Peer> {
    if let Some(p) = &c.peer {
        return p.clone();
    }
    let client_certificate = c
        .inner
        .crypto_session()
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().map(|c| Bytes::copy_from_slice(c.as_ref())));
    let peer = Rc::new(Peer {
        remote: c.inner.remote_address(),
        client_certificate,
    });
    c.peer = Some(peer.clone());
    peer
}

/// Writes as much of a pending response as flow control allows; finishes the stream once all
/// of it is accepted.
fn write_pending(c: &mut Conn, id: StreamId) {
    let Some(data) = c.writers.get_mut(&id) else {
        return;
    };
    let mut send = c.inner.send_stream(id);
    let mut chunks = [std::mem::take(data)];
    match send.write_chunks(&mut chunks) {
        Ok(_) | Err(WriteError::Blocked) => {}
        Err(WriteError::Stopped(_) | WriteError::ClosedStream) => {
            c.writers.remove(&id);
            return;
        }
    }
    let [rest] = chunks;
    if rest.is_empty() {
        let _ = send.finish();
        c.writers.remove(&id);
    } else {
        *data = rest;
    }
}

/// Endpoint settings: accept datagrams up to `MAX_UDP_PAYLOAD_BYTES`.
fn endpoint_config() -> EndpointConfig {
    let mut c = EndpointConfig::default();
    // The bound is a valid payload size (1200..=65527), so this cannot fail.
    let _ = c.max_udp_payload_size(crate::tls::MAX_UDP_PAYLOAD_BYTES);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::crypto::rustls::QuicClientConfig;
    use quinn_proto::{ClientConfig, DatagramEvent};
    use quiver_schema::frame::parse_frame;
    use quiver_schema::wire::ErrorCode;

    /// The server driver and a quinn-proto client endpoint in memory: datagrams move between
    /// them by hand, no socket, no clock (time stands still; nothing here waits on a timer).
    struct Pair {
        server: Driver,
        client: Endpoint,
        conn: Connection,
        ch: ConnectionHandle,
        now: Instant,
        server_addr: SocketAddr,
        client_addr: SocketAddr,
        _dir: tempfile::TempDir,
    }

    impl Pair {
        fn new(max_frame_bytes: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (identity, _) = crate::tls::load_or_create_dev_identity(dir.path()).unwrap();
            let server_config =
                crate::tls::server_config(&identity, &Default::default(), None).unwrap();
            let trust = quiver_client::TlsTrust::LocalDataDir(dir.path().to_path_buf());
            let tls = trust.client_config(crate::ALPN, None).unwrap();
            let client_config =
                ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
            let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
            let now = Instant::now();
            let server_addr: SocketAddr = "127.0.0.1:7420".parse().unwrap();
            let (ch, conn) = client
                .connect(now, client_config, server_addr, "localhost")
                .unwrap();
            let mut pair = Self {
                server: Driver::new(server_config, max_frame_bytes, 16, 1),
                client,
                conn,
                ch,
                now,
                server_addr,
                client_addr: "127.0.0.1:50000".parse().unwrap(),
                _dir: dir,
            };
            assert!(pair.pump().is_empty());
            assert!(
                !pair.conn.is_handshaking(),
                "the handshake completes in memory"
            );
            pair
        }

        /// Moves datagrams both ways until neither side sends; returns the requests the
        /// server dispatched meanwhile.
        fn pump(&mut self) -> Vec<(ConnectionHandle, StreamId, Rc<Peer>, BytesMut)> {
            let mut dispatched = Vec::new();
            let mut buf = Vec::new();
            for _ in 0..100 {
                let mut moved = false;
                let mut fx = Effects::default();
                let mut touched = Vec::new();
                buf.clear();
                while let Some(t) = self.conn.poll_transmit(self.now, 1, &mut buf) {
                    moved = true;
                    let data = BytesMut::from(&buf[..t.size]);
                    if let Some(ch) =
                        self.server
                            .on_datagram(self.now, self.client_addr, data, &mut fx)
                    {
                        touched.push(ch);
                    }
                    buf.clear();
                }
                for ch in touched {
                    self.server.drive(ch, self.now, &mut fx);
                }
                dispatched.append(&mut fx.requests);
                moved |= !fx.sends.is_empty();
                self.deliver_to_client(fx.sends);
                while let Some(e) = self.conn.poll_endpoint_events() {
                    if let Some(back) = self.client.handle_event(self.ch, e) {
                        self.conn.handle_event(back);
                    }
                }
                while self.conn.poll().is_some() {}
                if !moved {
                    return dispatched;
                }
            }
            panic!("the pair kept exchanging datagrams for 100 rounds");
        }

        /// Hands the server's datagrams to the client.
        fn deliver_to_client(&mut self, sends: Vec<Outgoing>) {
            for out in sends {
                let event = self.client.handle(
                    self.now,
                    self.server_addr,
                    None,
                    None,
                    BytesMut::from(&out.data[..]),
                    &mut Vec::new(),
                );
                if let Some(DatagramEvent::ConnectionEvent(_, e)) = event {
                    self.conn.handle_event(e);
                }
            }
        }

        /// Opens a request stream and sends `frame` on it, finished.
        fn send(&mut self, frame: &[u8]) -> StreamId {
            let id = self.conn.streams().open(Dir::Bi).unwrap();
            let mut send = self.conn.send_stream(id);
            assert_eq!(send.write(frame).unwrap(), frame.len());
            send.finish().unwrap();
            id
        }

        /// Everything the server wrote back on stream `id`.
        fn response(&mut self, id: StreamId) -> Vec<u8> {
            let mut out = Vec::new();
            let mut recv = self.conn.recv_stream(id);
            let mut chunks = recv.read(true).unwrap();
            while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                out.extend_from_slice(&chunk.bytes);
            }
            let _ = chunks.finalize();
            out
        }
    }

    /// Two node endpoints in memory, A linking to B: datagrams move between them by hand.
    struct Nodes {
        a: Driver,
        b: Driver,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
        now: Instant,
        _dir: tempfile::TempDir,
    }

    impl Nodes {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (identity, _) = crate::tls::load_or_create_dev_identity(dir.path()).unwrap();
            let limits = crate::tls::QuicLimits::default();
            let server = crate::tls::server_config(&identity, &limits, None).unwrap();
            let mut a = Driver::new(server.clone(), 1 << 20, 16, 1);
            a.set_client_config(
                crate::tls::internal_client_config(&identity, &limits, None).unwrap(),
            );
            Self {
                a,
                b: Driver::new(server, 1 << 20, 16, 1),
                a_addr: "127.0.0.1:7420".parse().unwrap(),
                b_addr: "127.0.0.1:7520".parse().unwrap(),
                now: Instant::now(),
                _dir: dir,
            }
        }

        /// Delivers `sends` both ways until quiet; returns what each side received as
        /// internal frames, and the links A lost.
        fn pump(&mut self, mut fx_a: Effects) -> (Vec<BytesMut>, Vec<(SocketAddr, usize)>) {
            let mut got = Vec::new();
            let mut lost = std::mem::take(&mut fx_a.lost_links);
            let mut to_b = fx_a.sends;
            for _ in 0..100 {
                let mut fx_b = Effects::default();
                let mut touched = Vec::new();
                for out in to_b.drain(..) {
                    assert_eq!(out.to, self.b_addr);
                    let d = BytesMut::from(&out.data[..]);
                    touched.extend(self.b.on_datagram(self.now, self.a_addr, d, &mut fx_b));
                }
                for ch in touched {
                    self.b.drive(ch, self.now, &mut fx_b);
                }
                got.extend(fx_b.internal.drain(..).map(|(_, f)| f));
                let mut fx_a = Effects::default();
                let mut touched = Vec::new();
                for out in fx_b.sends {
                    let d = BytesMut::from(&out.data[..]);
                    touched.extend(self.a.on_datagram(self.now, self.b_addr, d, &mut fx_a));
                }
                for ch in touched {
                    self.a.drive(ch, self.now, &mut fx_a);
                }
                lost.append(&mut fx_a.lost_links);
                if fx_a.sends.is_empty() {
                    return (got, lost);
                }
                to_b = fx_a.sends;
            }
            panic!("the nodes kept exchanging datagrams for 100 rounds");
        }
    }

    #[test]
    fn a_link_carries_one_way_frames_to_the_other_node_in_any_number() {
        let mut nodes = Nodes::new();
        let mut fx = Effects::default();
        let frames: Vec<Bytes> = (0..600u32)
            .map(|i| crate::server::internal_frame(format!("envelope {i}").as_bytes()))
            .collect();
        for f in &frames {
            let (now, to) = (nodes.now, nodes.b_addr);
            nodes.a.send_internal(now, to, f.clone(), &mut fx).unwrap();
        }
        assert_eq!(nodes.a.link_count(), 1, "one link per peer endpoint");
        let (got, lost) = nodes.pump(fx);
        assert!(lost.is_empty());
        // More frames than the peer's stream limit: the rest went as streams were granted.
        assert!(frames.len() > crate::tls::MAX_INTERNAL_STREAMS as usize);
        let mut got: Vec<Vec<u8>> = got.into_iter().map(|f| f.to_vec()).collect();
        let mut want: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every frame arrives once, whole");
    }

    #[test]
    fn a_full_link_refuses_more_frames_with_a_typed_error() {
        let mut nodes = Nodes::new();
        let mut fx = Effects::default();
        let to = nodes.b_addr;
        let frame = crate::server::internal_frame(b"x");
        // Before the handshake nothing leaves: the queue fills to its bound.
        for _ in 0..MAX_QUEUED_FRAMES_PER_LINK {
            nodes
                .a
                .send_internal(nodes.now, to, frame.clone(), &mut fx)
                .unwrap();
        }
        let err = nodes
            .a
            .send_internal(nodes.now, to, frame, &mut fx)
            .unwrap_err();
        assert!(matches!(err, LinkError::Backlog { .. }), "{err}");
        assert!(err.to_string().contains("frames already wait"));
    }

    #[test]
    fn a_client_cannot_send_one_way_frames() {
        let mut pair = Pair::new(1 << 20);
        let id = pair.conn.streams().open(Dir::Uni).unwrap();
        let frame = crate::server::internal_frame(b"not for clients");
        let mut send = pair.conn.send_stream(id);
        send.write(&frame).unwrap();
        send.finish().unwrap();
        let mut fx = Effects::default();
        let mut buf = Vec::new();
        while let Some(t) = pair.conn.poll_transmit(pair.now, 1, &mut buf) {
            let d = BytesMut::from(&buf[..t.size]);
            if let Some(ch) = pair
                .server
                .on_datagram(pair.now, pair.client_addr, d, &mut fx)
            {
                pair.server.drive(ch, pair.now, &mut fx);
            }
            buf.clear();
        }
        assert!(
            fx.internal.is_empty(),
            "the client protocol takes no one-way frames"
        );
        assert!(fx.requests.is_empty());
    }

    #[test]
    fn a_whole_request_frame_is_dispatched_with_its_peer_and_answered_on_its_stream() {
        let mut pair = Pair::new(1 << 20);
        let frame = quiver_schema::requests::metadata(7, &["t"]);
        let id = pair.send(&frame);
        let mut requests = pair.pump();
        assert_eq!(requests.len(), 1, "one frame, dispatched once it is whole");
        let (ch, sid, peer, got) = requests.remove(0);
        assert_eq!(&got[..], &frame[..]);
        assert_eq!(peer.remote, pair.client_addr);
        assert_eq!(peer.client_certificate, None, "no mTLS here");
        let answer = quiver_schema::frame::error_frame(7, ApiKey::Metadata, ErrorCode::None, "ok");
        let mut fx = Effects::default();
        pair.server
            .on_response(ch, sid, answer.clone(), pair.now, &mut fx);
        pair.deliver_to_client(fx.sends);
        pair.pump();
        assert_eq!(pair.response(id), answer.to_vec());
    }

    #[test]
    fn an_oversize_frame_is_answered_with_a_typed_error_and_never_dispatched() {
        let mut pair = Pair::new(64);
        let frame =
            quiver_schema::requests::metadata(3, &["a-topic-name-long-enough-to-pass-64-bytes"]);
        assert!(frame.len() > 64);
        let id = pair.send(&frame);
        assert!(pair.pump().is_empty(), "not dispatched");
        let answer = pair.response(id);
        let env = parse_frame(&answer, 1 << 20).unwrap();
        assert_eq!(env.error().unwrap().code(), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn many_requests_on_one_connection_are_dispatched_each_once() {
        let mut pair = Pair::new(1 << 20);
        let frames: Vec<Bytes> = (0..20)
            .map(|i| quiver_schema::requests::metadata(i, &[]))
            .collect();
        for f in &frames {
            pair.send(f);
        }
        let requests = pair.pump();
        let mut ids: Vec<u64> = requests
            .iter()
            .map(|(_, _, _, f)| parse_frame(f, 1 << 20).unwrap().request_id())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..20).collect::<Vec<u64>>());
    }
}
