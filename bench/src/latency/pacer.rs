//! When the open loop wakes to send the next message.
//!
//! tokio's timer wheel has a 1 ms tick: a producer sleeping until a message's intended send time
//! with `tokio::time::sleep_until` wakes up to 1 ms late (0.75 ms at the median, measured), and
//! that lateness lands in publish delay and end-to-end latency — the harness's own error, not
//! the system's. [`Pacer::precise`] sleeps on a `timerfd` (an hrtimer, woken through tokio's
//! reactor) instead, at most once per [`PRECISE_RESOLUTION`], so the pacing error is tens of
//! µs while the wake-ups stay bounded at high rates. [`Pacer::tokio`] follows tokio's clock,
//! which tests pause to make every sleep exact.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The shortest gap between two timerfd wake-ups of one producer: messages due within it go out
/// together (each still records its own publish delay).
pub const PRECISE_RESOLUTION: Duration = Duration::from_micros(100);

/// Which timer the open loop sleeps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// [`Pacer::tokio`]: for tests on a paused clock.
    Tokio,
    /// [`Pacer::precise`]: for measurements.
    Precise,
}

pub enum Pacer {
    /// tokio's timer (1 ms resolution; follows a paused clock).
    Tokio,
    /// A timerfd per producer.
    TimerFd {
        fd: AsyncFd<OwnedFd>,
        last_wake: Option<Instant>,
    },
}

impl Pacer {
    /// The pacer `pacing` asks for; a timerfd that cannot be made falls back to tokio's timer.
    pub fn new(pacing: Pacing) -> Self {
        match pacing {
            Pacing::Tokio => Self::tokio(),
            Pacing::Precise => Self::precise().unwrap_or_else(|e| {
                tracing::warn!("no timerfd ({e}): pacing with tokio's 1 ms timer");
                Self::tokio()
            }),
        }
    }

    pub fn tokio() -> Self {
        Pacer::Tokio
    }

    /// A timerfd pacer; must be called inside a tokio runtime with I/O enabled.
    pub fn precise() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns `fd`, which stays open and the same until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Pacer::TimerFd {
            fd,
            last_wake: None,
        })
    }

    /// Human-readable, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Pacer::Tokio => "tokio timer (1 ms)",
            Pacer::TimerFd { .. } => "timerfd (100 µs)",
        }
    }

    /// Waits until `deadline` (or a little after: see [`PRECISE_RESOLUTION`]).
    pub async fn sleep_until(&mut self, deadline: Instant) {
        match self {
            Pacer::Tokio => tokio::time::sleep_until(deadline).await,
            Pacer::TimerFd { fd, last_wake } => {
                if deadline <= Instant::now() {
                    return; // already due: messages behind schedule go out back to back
                }
                let target = match *last_wake {
                    Some(w) => deadline.max(w + PRECISE_RESOLUTION),
                    None => deadline,
                };
                let remaining = target.saturating_duration_since(Instant::now());
                if !remaining.is_zero() && arm(fd.get_ref(), remaining).is_ok() {
                    wait_expiry(fd).await;
                }
                *last_wake = Some(Instant::now());
            }
        }
    }
}

fn arm(fd: &OwnedFd, after: Duration) -> std::io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
    let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the armed timer to expire (reads its expiration count).
async fn wait_expiry(fd: &AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `count`.
        let n = unsafe {
            libc::read(
                fd.get_ref().as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
        if n == 8 {
            return;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            guard.clear_ready();
        } else {
            return;
        }
    }
}
