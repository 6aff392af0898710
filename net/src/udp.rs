//! Batched, non-blocking UDP calls on a shard's socket: GSO sends (up to
//! [`MAX_GSO_SEGMENTS`] datagrams in one `sendmsg`) and receives that drain the socket without
//! waiting. At disk speed a shard moves tens of thousands of datagrams a second; GSO cut its
//! `sendmsg` calls about fivefold (docs/decisions/0008-udp-segmentation-offload.md).
//!
//! Every call passes `MSG_DONTWAIT` and reports "would block" as `Ok(None)`/`Ok(false)`:
//! the socket stays in blocking mode because glommio's io_uring operations on the same socket
//! (the readiness wait, the fallback sends) need it so. Waiting is glommio's job.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Most datagrams per GSO send, as quinn's own endpoint uses (the kernel takes up to 64, and
/// UDP's 64 KiB payload bound holds 45 datagrams of 1,452 bytes; 32 measured no better).
pub const MAX_GSO_SEGMENTS: usize = 10;

/// Most payload bytes one GSO send may carry in all (UDP's bound over IPv4: 65,535 minus the
/// IP and UDP headers). The kernel refuses a larger send with `EMSGSIZE`.
pub const MAX_GSO_PAYLOAD_BYTES: u16 = 65_507;

/// How many datagrams of `segment_bytes` one GSO send may hold: [`MAX_GSO_SEGMENTS`], fewer
/// when datagrams are so large (MTU discovery on loopback or jumbo frames) that ten would
/// pass [`MAX_GSO_PAYLOAD_BYTES`]; at least one.
pub fn segments_per_send(segment_bytes: u16) -> usize {
    let fit = usize::from(MAX_GSO_PAYLOAD_BYTES) / usize::from(segment_bytes.max(1200));
    fit.clamp(1, MAX_GSO_SEGMENTS)
}

/// Whether the kernel takes GSO sends on this socket (`UDP_SEGMENT` readable; Linux 4.18+).
/// Without it the shard sends one datagram per call.
///
/// GRO (`UDP_GRO`) is deliberately not turned on: with it, under CPU contention, a request
/// now and then went unanswered until the client's request timeout (10 s in the test that
/// showed it; 5 of 33 runs with two CPU hogs, 0 of 28 without GRO), and the client's retry
/// then duplicated the batch. The kernel counted no drop; the cause is not found yet.
/// [`try_recv`] still splits a coalesced receive by the size the kernel reports.
pub fn gso_supported(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket; value and len are valid for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// What one receive returned: `len` bytes from `from`, holding datagrams of `stride` bytes
/// each (the last may be shorter); `stride == len` when the kernel did not coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub stride: usize,
}

/// Room for one `UDP_GRO` control message (an int).
const CMSG_SPACE_BYTES: usize = 64;

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_SPACE_BYTES]);

/// Receives what is queued, without waiting. `Ok(None)`: nothing queued.
pub fn try_recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; CMSG_SPACE_BYTES]);
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = CMSG_SPACE_BYTES as _;
    // SAFETY: `hdr` describes live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    let len = n as usize;
    let mut stride = len;
    // SAFETY: the kernel filled `msg_controllen` bytes of control messages into `control`;
    // the CMSG macros walk within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                if size > 0 {
                    stride = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    let Some(from) = from_sockaddr(&name) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram from an address that is neither IPv4 nor IPv6",
        ));
    };
    Ok(Some(Received { len, from, stride }))
}

/// Sends `data` to `to` without waiting; with `segment_size`, as datagrams of that size (the
/// last may be shorter) in one GSO call. `Ok(false)`: the socket buffer is full.
pub fn try_send(
    fd: RawFd,
    data: &[u8],
    to: SocketAddr,
    segment_size: Option<usize>,
) -> io::Result<bool> {
    let (mut name, name_len) = to_sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = CmsgBuf([0; CMSG_SPACE_BYTES]);
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = name_len;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(size) = segment_size.filter(|s| *s < data.len()) {
        let segment = u16::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "GSO segment over 64 KiB"))?;
        // SAFETY: CMSG_SPACE of a u16 fits the 64-byte, 8-aligned control buffer; the
        // header and data are written inside it.
        unsafe {
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
        }
    }
    // SAFETY: `hdr` describes live buffers of the lengths it states.
    let n = unsafe { libc::sendmsg(fd, &hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(false),
            _ => Err(e),
        };
    }
    Ok(true)
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        (a, b)
    }

    /// Turns GRO on for a test socket: the receive path must split what the kernel coalesced.
    fn enable_gro(fd: RawFd) -> bool {
        let on: libc::c_int = 1;
        // SAFETY: `fd` is an open socket; the option value outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }

    #[test]
    fn sockaddrs_round_trip() {
        for addr in ["127.0.0.1:7420", "[::1]:9", "[fe80::1%2]:443"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            let (storage, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }

    #[test]
    fn nothing_queued_is_none_not_a_wait() {
        let (a, _) = pair();
        let mut buf = vec![0u8; 2048];
        assert_eq!(try_recv(a.as_raw_fd(), &mut buf).expect("recv"), None);
    }

    #[test]
    fn a_gso_send_never_passes_udps_payload_bound() {
        assert_eq!(segments_per_send(1_452), MAX_GSO_SEGMENTS);
        assert_eq!(segments_per_send(6_550), 10);
        assert_eq!(segments_per_send(8_952), 7);
        assert_eq!(segments_per_send(65_000), 1);
        for mtu in [1_200u16, 1_452, 4_000, 6_550, 6_551, 8_952, 16_384, 65_527] {
            let n = segments_per_send(mtu);
            assert!(n == 1 || n * usize::from(mtu) <= usize::from(MAX_GSO_PAYLOAD_BYTES));
        }
    }

    #[test]
    fn a_gso_send_arrives_as_datagrams_of_the_segment_size() {
        let (a, b) = pair();
        let gro = enable_gro(b.as_raw_fd());
        let to = b.local_addr().expect("addr");
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let gso = gso_supported(a.as_raw_fd());
        assert!(try_send(a.as_raw_fd(), &data, to, gso.then_some(1000)).expect("send"));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.iter().map(|d: &Vec<u8>| d.len()).sum::<usize>() < data.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "datagrams lost on loopback"
            );
            let Some(r) = try_recv(b.as_raw_fd(), &mut buf).expect("recv") else {
                std::thread::yield_now(); // loopback delivers within sendmsg; only a race lands here
                continue;
            };
            assert_eq!(r.from, a.local_addr().expect("addr"));
            if gro {
                for chunk in buf[..r.len].chunks(r.stride) {
                    got.push(chunk.to_vec());
                }
            } else {
                got.push(buf[..r.len].to_vec());
            }
        }
        assert_eq!(got.concat(), data);
        if gso {
            let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
            assert_eq!(sizes, vec![1000, 1000, 500]);
        }
    }
}
