//! When the open loop wakes to send the next message.
//!
//! tokio's timer wheel has a 1 ms tick: a producer sleeping until a message's intended send time
//! with `tokio::time::sleep_until` wakes up to 1 ms late (0.75 ms at the median, measured), and
//! that lateness lands in publish delay and end-to-end latency — the harness's own error, not
//! the system's. [`Pacer::precise`] sleeps on a `timerfd` (an hrtimer, woken through tokio's
//! reactor) instead, at most once per [`PRECISE_RESOLUTION`], so the pacing error is tens of
//! µs while the wake-ups stay bounded at high rates. [`Pacer::tokio`] follows tokio's clock,
//! which tests pause to make every sleep exact.

use std::time::Duration;

use quiver_client::timer::PreciseTimer;
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
        timer: PreciseTimer,
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
        Ok(Pacer::TimerFd {
            timer: PreciseTimer::new()?,
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
            Pacer::TimerFd { timer, last_wake } => {
                if deadline <= Instant::now() {
                    return; // already due: messages behind schedule go out back to back
                }
                let target = match *last_wake {
                    Some(w) => deadline.max(w + PRECISE_RESOLUTION),
                    None => deadline,
                };
                timer.sleep_until(target.into_std()).await;
                *last_wake = Some(Instant::now());
            }
        }
    }
}
