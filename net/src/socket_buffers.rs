//! Kernel socket buffer sizes for UDP sockets carrying QUIC at disk speed.

use std::os::fd::RawFd;

fn set(fd: RawFd, option: libc::c_int, bytes: usize) -> bool {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int that
    // lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Asks for `bytes` of send and receive buffer. The `*FORCE` options pass the
/// `net.core.{r,w}mem_max` caps but need CAP_NET_ADMIN; without it the plain options give
/// what the caps allow (raise them with sysctl, see docs/operations.md).
pub fn enlarge(fd: RawFd, bytes: usize) {
    if !set(fd, libc::SO_RCVBUFFORCE, bytes) && !set(fd, libc::SO_RCVBUF, bytes) {
        tracing::warn!("could not enlarge the UDP receive buffer to {bytes} bytes");
    }
    if !set(fd, libc::SO_SNDBUFFORCE, bytes) && !set(fd, libc::SO_SNDBUF, bytes) {
        tracing::warn!("could not enlarge the UDP send buffer to {bytes} bytes");
    }
}
