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
use quinn_proto::{ConnectionHandle, ServerConfig};

use crate::driver::{Driver, Effects, Outgoing, MAX_DATAGRAM_BYTES};
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

    /// Takes one frame another node sent on the internal protocol (no answer: replies travel
    /// on this node's own link back). The default drops it.
    fn internal(&self, _peer: Rc<Peer>, _frame: BytesMut) {}

    /// This node's link to `to` closed; `dropped` frames queued on it were not sent.
    fn link_lost(&self, _to: SocketAddr, _dropped: usize) {}
}

/// Sends frames to other nodes' endpoints from this shard's socket (the same endpoint that
/// serves, so a peer sees one address per shard). Cloneable, shard-local.
#[derive(Clone)]
pub struct Links {
    socket: Rc<UdpSocket>,
    driver: Rc<RefCell<Driver>>,
    bell: Rc<LocalSender<()>>,
}

impl Links {
    /// Queues `frame` (length-prefixed, see [`internal_frame`]) for the endpoint at `to` and
    /// sends what can go now. Best effort, like the network: a frame on a link that closes
    /// is dropped and [`Handler::link_lost`] says how many.
    pub async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), crate::LinkError> {
        let mut fx = Effects::default();
        let queued = self
            .driver
            .borrow_mut()
            .send_internal(Instant::now(), to, frame, &mut fx);
        send_all(&self.socket, &self.driver, fx.sends).await;
        let _ = self.bell.try_send(());
        queued
    }

    /// Links this endpoint holds open to other nodes.
    pub fn open_links(&self) -> usize {
        self.driver.borrow().link_count()
    }
}

/// `payload` as one internal frame: a 4-byte little-endian length, then the bytes.
pub fn internal_frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Kernel send and receive buffer of each shard's UDP socket: a burst of 64 KiB batches from
/// many streams must not overflow it (drops look like a black hole to MTU discovery).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Receive calls drained before the connections are driven: bounds how long incoming
/// datagrams hold up the responses and timers waiting behind them.
const RECV_BATCH_CALLS: usize = 8;

/// A bound QUIC endpoint for one shard.
pub struct QuicServer {
    socket: Rc<UdpSocket>,
    driver: Rc<RefCell<Driver>>,
    timer_bell: (Rc<LocalSender<()>>, Rc<LocalReceiver<()>>),
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
        // Bound without SO_REUSEPORT (glommio's own bind sets it): a second node on the same
        // port must fail here, not share the port and receive half of the first's datagrams.
        let std_socket =
            std::net::UdpSocket::bind(addr).map_err(|e| NetError::Bind { addr, source: e })?;
        // SAFETY: the fd is an open UDP socket we own; glommio takes ownership of it.
        let mut socket = unsafe {
            <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                std_socket,
            ))
        };
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
        let (tx, rx) = local_channel::new_bounded(1);
        Ok(Self {
            socket: Rc::new(socket),
            driver: Rc::new(RefCell::new(Driver::new(
                config,
                max_frame_bytes,
                max_connections,
                if gso { udp::MAX_GSO_SEGMENTS } else { 1 },
            ))),
            timer_bell: (Rc::new(tx), Rc::new(rx)),
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Lets this endpoint link to other nodes with `config`
    /// ([`crate::tls::internal_client_config`]); returns the handle that sends on the links.
    pub fn links(&self, config: quinn_proto::ClientConfig) -> Links {
        self.driver.borrow_mut().set_client_config(config);
        Links {
            socket: self.socket.clone(),
            driver: self.driver.clone(),
            bell: self.timer_bell.0.clone(),
        }
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
    bell: Rc<LocalSender<()>>,
    handler: Rc<dyn Handler>,
}

impl Ctx {
    /// Sends the datagrams, dispatches the requests, and tells the timer loop to look again.
    async fn perform(self: &Rc<Self>, fx: Effects) {
        for (peer, frame) in fx.internal {
            self.handler.internal(peer, frame);
        }
        for (to, dropped) in fx.lost_links {
            self.handler.link_lost(to, dropped);
        }
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
        send_all(&self.socket, &self.driver, sends).await
    }
}

async fn send_all(socket: &UdpSocket, driver: &RefCell<Driver>, sends: Vec<Outgoing>) {
    {
        for out in sends {
            let Some(size) = out.segment_size else {
                send_one(socket, &out.data, out.to).await;
                continue;
            };
            // A transmit built before GSO was turned off still holds several datagrams.
            if driver.borrow().max_segments > 1 {
                match udp::try_send(socket.as_raw_fd(), &out.data, out.to, Some(size)) {
                    Ok(true) => continue,
                    Ok(false) => {} // buffer full: the awaited sends below wait for room
                    Err(e) => {
                        tracing::warn!(to = %out.to, "GSO send refused ({e}); sending one datagram per call from now on");
                        driver.borrow_mut().max_segments = 1;
                    }
                }
            }
            for datagram in out.data.chunks(size) {
                send_one(socket, datagram, out.to).await;
            }
        }
    }
}

async fn send_one(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(datagram, to).await {
        tracing::debug!(%to, "sending a datagram failed: {e}");
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
