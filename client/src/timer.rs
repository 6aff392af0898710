//! [`PreciseTimer`]: a sleep with tens-of-µs precision inside a tokio runtime.
//!
//! tokio's timer wheel ticks once per millisecond and rounds every deadline up to a tick, so a
//! 1 ms sleep takes 1–2 ms. That is the whole of a producer's `linger_ms = 1` budget (measured:
//! a lone acks=all record took 2.8 ms end to end with it, 0.75 ms without linger), and the
//! whole of a benchmark's pacing error. A `timerfd` is a kernel hrtimer whose expiry wakes the
//! task through tokio's reactor, like a socket would.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// A one-shot timerfd registered with the current tokio runtime. Re-arming it (a new sleep)
/// replaces an earlier deadline, so a sleep that was abandoned (the other branch of a
/// `select!` won) costs nothing later; a new sleep to the deadline already armed does not
/// re-arm it (on a VM each `timerfd_settime` that reprograms the CPU's timer is a VM exit:
/// re-arming on every wake-up was 7 % of the benchmark's load generator).
pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
    /// The deadline the kernel timer is set to and that has not been waited out yet.
    armed: Option<Instant>,
}

impl PreciseTimer {
    /// A timer on the current tokio runtime, which must have I/O enabled.
    pub fn new() -> std::io::Result<Self> {
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
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd, armed: None })
    }

    /// Waits until `deadline` (at once when it has passed).
    pub async fn sleep_until(&mut self, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        if self.armed != Some(deadline) {
            self.armed = None;
            if self.arm(remaining).is_err() {
                return;
            }
            self.armed = Some(deadline);
        }
        self.wait_expiry().await;
        self.armed = None;
    }

    fn arm(&self, after: Duration) -> std::io::Result<()> {
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
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for. Setting the
        // timer also resets its expiration count.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the armed timer to expire (reads its expiration count).
    async fn wait_expiry(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let mut count = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `count`, which outlives the call.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_never_ends_before_its_deadline() {
        let mut timer = PreciseTimer::new().unwrap();
        for micros in [1, 50, 300, 1_500] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(deadline).await;
            assert!(
                Instant::now() >= deadline,
                "woke before a {micros} µs deadline"
            );
        }
    }

    #[tokio::test]
    async fn a_sleep_abandoned_and_resumed_to_the_same_deadline_still_ends_there() {
        let mut timer = PreciseTimer::new().unwrap();
        let deadline = Instant::now() + Duration::from_millis(3);
        tokio::select! {
            _ = timer.sleep_until(deadline) => panic!("ended before its deadline"),
            _ = std::future::ready(()) => {}
        }
        timer.sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn an_abandoned_sleep_does_not_end_a_later_one_early() {
        let mut timer = PreciseTimer::new().unwrap();
        let short = Instant::now() + Duration::from_millis(1);
        tokio::select! {
            _ = timer.sleep_until(short) => {}
            _ = std::future::ready(()) => {}
        }
        // The abandoned 1 ms sleep expires while nothing waits on it.
        std::thread::sleep(Duration::from_millis(3));
        let deadline = Instant::now() + Duration::from_millis(5);
        timer.sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
    }
}
