//! One shard's QUIC endpoint: quinn-proto's sans-IO state machines driven by glommio's own
//! UDP socket and timers on the shard's io_uring. No reactor thread, no lock: the endpoint,
//! every connection and every request live on the shard that bound the socket (`Rc`, `!Send`).
//!
//! Three kinds of tasks share the [`Driver`]: the receive loop (datagrams in), the timer loop
//! (QUIC timeouts), and one task per request (the handler, then the response out). Each takes
//! the driver for a synchronous step that returns [`Effects`] — datagrams to send and requests
//! to dispatch — and performs them after releasing it.
//!
//! Datagrams move in batches ([`crate::udp`]): the receive loop drains what is queued before
//! it drives the connections once, so one ACK answers many packets; connections emit up to
//! [`udp::MAX_GSO_SEGMENTS`] datagrams per transmit, sent in one GSO call. When the socket
//! buffer is full, sending falls back to glommio's `send_to`, which awaits io_uring's
//! completion: a real writability signal that back-pressures the sender.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UdpSocket;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ReadError,
    ServerConfig, StreamEvent, StreamId, VarInt, WriteError,
};
use quiver_schema::frame::{error_frame, FrameError};
use quiver_schema::wire::ApiKey;

use crate::frame_reader::FrameReader;
use crate::udp;
use crate::NetError;

/// Who is at the other end of a connection, as TLS established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub remote: SocketAddr,
    /// The DER of the certificate the client presented (mTLS), if it presented one.
    pub client_certificate: Option<Bytes>,
}

/// Answers one request frame (length prefix included) from `peer` with one response frame.
pub trait Handler: 'static {
    fn handle(&self, peer: Rc<Peer>, request: BytesMut) -> Pin<Box<dyn Future<Output = Bytes>>>;
}

/// Application error code used when the server stops reading a stream it refused.
const STOP_REFUSED: VarInt = VarInt::from_u32(1);
/// Kernel send and receive buffer of each shard's UDP socket: a burst of 64 KiB batches from
/// many streams must not overflow it (drops look like a black hole to MTU discovery).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Largest UDP payload read at once.
const MAX_DATAGRAM_BYTES: usize = 65_535;
/// Receive calls drained before the connections are driven: bounds how long incoming
/// datagrams hold up the responses and timers waiting behind them.
const RECV_BATCH_CALLS: usize = 8;

/// One or more datagrams for one destination: `segment_size` set means `data` holds several
/// of that size (the last may be shorter), for one GSO send.
struct Outgoing {
    data: Bytes,
    to: SocketAddr,
    segment_size: Option<usize>,
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
struct Effects {
    sends: Vec<Outgoing>,
    requests: Vec<(ConnectionHandle, StreamId, Rc<Peer>, BytesMut)>,
}

struct Conn {
    inner: Connection,
    /// Known once the handshake is done (set by the first request).
    peer: Option<Rc<Peer>>,
    readers: HashMap<StreamId, FrameReader>,
    /// Response bytes not yet accepted by the stream (flow control).
    writers: HashMap<StreamId, Bytes>,
}

/// The sans-IO core plus per-stream bookkeeping. Never held across an `.await`.
struct Driver {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    max_frame_bytes: usize,
    max_connections: usize,
    /// Datagrams per transmit: [`udp::MAX_GSO_SEGMENTS`] with GSO, else 1 (also once the
    /// kernel refused a GSO send, e.g. on a device without checksum offload).
    max_segments: usize,
    buf: Vec<u8>,
}

impl Driver {
    /// Feeds one datagram to the endpoint. Returns the connection it concerns, to be driven
    /// once the whole receive batch is in.
    fn on_datagram(
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
                            self.conns.insert(
                                ch,
                                Conn {
                                    inner: conn,
                                    peer: None,
                                    readers: HashMap::new(),
                                    writers: HashMap::new(),
                                },
                            );
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
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.inner.handle_event(event);
                }
                to_drive = Some(ch);
            }
            Some(DatagramEvent::Response(t)) => fx.sends.push(Outgoing::one(&buf, &t)),
            None => {}
        }
        buf.clear();
        self.buf = buf;
        to_drive
    }

    fn on_timeouts(&mut self, now: Instant, fx: &mut Effects) {
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
            if let Some(c) = self.conns.get_mut(&ch) {
                c.inner.handle_timeout(now);
            }
            self.drive(ch, now, fx);
        }
    }

    fn close_all(&mut self, now: Instant, fx: &mut Effects) {
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

    fn next_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.inner.poll_timeout())
            .min()
    }

    fn on_response(
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
    fn drive(&mut self, ch: ConnectionHandle, now: Instant, fx: &mut Effects) {
        let Self {
            endpoint,
            conns,
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
                Event::Stream(StreamEvent::Readable { id }) => read_stream(c, ch, id, fx),
                Event::Stream(StreamEvent::Writable { id }) => write_pending(c, id),
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    c.writers.remove(&id);
                }
                Event::ConnectionLost { reason } => {
                    tracing::debug!(?ch, "connection closed: {reason}")
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
        if c.inner.is_drained() {
            conns.remove(&ch);
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
        Ok(frame) => fx.requests.push((ch, id, peer_of(c), frame)),
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

/// A bound QUIC endpoint for one shard.
pub struct QuicServer {
    socket: Rc<UdpSocket>,
    driver: Rc<RefCell<Driver>>,
    timer_bell: (LocalSender<()>, Rc<LocalReceiver<()>>),
    local_addr: SocketAddr,
}

impl QuicServer {
    /// Binds `addr` on the current shard. `max_frame_bytes` bounds one request.
    pub fn bind(
        addr: SocketAddr,
        config: Arc<ServerConfig>,
        max_frame_bytes: usize,
        max_connections: usize,
    ) -> Result<Self, NetError> {
        let mut socket = UdpSocket::bind(addr).map_err(|e| NetError::Bind {
            addr,
            source: e.into(),
        })?;
        // glommio receives into an 8 KiB buffer by default and silently truncates larger
        // datagrams, which QUIC then drops as undecryptable: MTU discovery would fall back
        // to 1200 bytes. Receive whole datagrams.
        socket.set_buffer_size(MAX_DATAGRAM_BYTES);
        crate::socket_buffers::enlarge(socket.as_raw_fd(), SOCKET_BUFFER_BYTES);
        let gso = udp::gso_supported(socket.as_raw_fd());
        tracing::debug!(%addr, gso, "UDP segmentation offload");
        let local_addr = socket.local_addr().map_err(|e| NetError::Bind {
            addr,
            source: e.into(),
        })?;
        let endpoint = Endpoint::new(Arc::new(endpoint_config()), Some(config), true, None);
        let (tx, rx) = local_channel::new_bounded(1);
        Ok(Self {
            socket: Rc::new(socket),
            driver: Rc::new(RefCell::new(Driver {
                endpoint,
                conns: HashMap::new(),
                max_frame_bytes,
                max_connections,
                max_segments: if gso { udp::MAX_GSO_SEGMENTS } else { 1 },
                buf: Vec::with_capacity(MAX_DATAGRAM_BYTES),
            })),
            timer_bell: (tx, Rc::new(rx)),
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the socket fails or `stop` resolves; then closes every connection (the
    /// peers learn at once instead of timing out). Spawns the timer loop and one task per
    /// request; requests in flight when `stop` resolves still run to completion.
    pub async fn run(
        self,
        handler: Rc<dyn Handler>,
        stop: impl Future<Output = ()>,
    ) -> Result<(), NetError> {
        let ctx = Rc::new(Ctx {
            socket: self.socket,
            driver: self.driver,
            bell: self.timer_bell.0,
            handler,
        });
        let timer = glommio::spawn_local(timer_loop(ctx.clone(), self.timer_bell.1));
        let result = futures_lite::future::or(recv_loop(ctx.clone(), self.local_addr), async {
            stop.await;
            Ok(())
        })
        .await;
        let mut fx = Effects::default();
        ctx.driver.borrow_mut().close_all(Instant::now(), &mut fx);
        ctx.send_all(fx.sends).await;
        drop(timer);
        result
    }
}

struct Ctx {
    socket: Rc<UdpSocket>,
    driver: Rc<RefCell<Driver>>,
    bell: LocalSender<()>,
    handler: Rc<dyn Handler>,
}

impl Ctx {
    /// Sends the datagrams, dispatches the requests, and tells the timer loop to look again.
    async fn perform(self: &Rc<Self>, fx: Effects) {
        for (ch, id, peer, frame) in fx.requests {
            let ctx = self.clone();
            glommio::spawn_local(async move {
                let response = ctx.handler.handle(peer, frame).await;
                let mut fx = Effects::default();
                ctx.driver
                    .borrow_mut()
                    .on_response(ch, id, response, Instant::now(), &mut fx);
                ctx.send_all(fx.sends).await;
                let _ = ctx.bell.try_send(());
            })
            .detach();
        }
        self.send_all(fx.sends).await;
        let _ = self.bell.try_send(());
    }

    async fn send_all(&self, sends: Vec<Outgoing>) {
        for out in sends {
            let Some(size) = out.segment_size else {
                self.send_one(&out.data, out.to).await;
                continue;
            };
            // A transmit built before GSO was turned off still holds several datagrams.
            if self.driver.borrow().max_segments > 1 {
                match udp::try_send(self.socket.as_raw_fd(), &out.data, out.to, Some(size)) {
                    Ok(true) => continue,
                    Ok(false) => {} // buffer full: the awaited sends below wait for room
                    Err(e) => {
                        tracing::warn!(to = %out.to, "GSO send refused ({e}); sending one datagram per call from now on");
                        self.driver.borrow_mut().max_segments = 1;
                    }
                }
            }
            for datagram in out.data.chunks(size) {
                self.send_one(datagram, out.to).await;
            }
        }
    }

    async fn send_one(&self, datagram: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(datagram, to).await {
            tracing::debug!(%to, "sending a datagram failed: {e}");
        }
    }
}

/// Waits until a datagram is queued (a one-byte peek through glommio), then drains up to
/// [`RECV_BATCH_CALLS`] receives without waiting, and drives each connection they touched.
async fn recv_loop(ctx: Rc<Ctx>, local: SocketAddr) -> Result<(), NetError> {
    let fd = ctx.socket.as_raw_fd();
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    let mut probe = [0u8; 1];
    let failed = |e: std::io::Error| NetError::Bind {
        addr: local,
        source: e,
    };
    loop {
        ctx.socket
            .peek_from(&mut probe)
            .await
            .map_err(|e| failed(e.into()))?;
        let now = Instant::now();
        let mut fx = Effects::default();
        let mut touched: Vec<ConnectionHandle> = Vec::new();
        {
            let mut driver = ctx.driver.borrow_mut();
            for _ in 0..RECV_BATCH_CALLS {
                let got = match udp::try_recv(fd, &mut buf) {
                    Ok(Some(got)) => got,
                    Ok(None) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(failed(e)),
                };
                for datagram in buf[..got.len].chunks(got.stride.max(1)) {
                    let ch = driver.on_datagram(now, got.from, BytesMut::from(datagram), &mut fx);
                    if let Some(ch) = ch.filter(|ch| !touched.contains(ch)) {
                        touched.push(ch);
                    }
                }
            }
            for ch in touched {
                driver.drive(ch, now, &mut fx);
            }
        }
        ctx.perform(fx).await;
    }
}

async fn timer_loop(ctx: Rc<Ctx>, bell: Rc<LocalReceiver<()>>) {
    loop {
        let deadline = ctx.driver.borrow_mut().next_timeout();
        match deadline {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(
                    async {
                        glommio::timer::sleep(wait).await;
                    },
                    async {
                        bell.recv().await;
                    },
                )
                .await;
            }
            None => {
                if bell.recv().await.is_none() {
                    return;
                }
            }
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            let mut fx = Effects::default();
            ctx.driver.borrow_mut().on_timeouts(now, &mut fx);
            ctx.perform(fx).await;
        }
    }
}
