//! Instruments of the machine, not of Quiver (cargo feature `instruments`): what takes a CPU
//! or a wake-up from the benchmark. They explained figures on noisy VMs while the harness was
//! built (docs/decisions/0015, 0016); a user measuring Quiver does not need them, so the
//! shipped binary leaves them out. `crate::meters` is how the harness uses them.
//!
//! - [`hiccup`]: the machine's own stalls (jHiccup's method), during runs and idle.
//! - [`busy_cpu`]: what a spinning thread per CPU loses, split by who took the time.
//! - [`cpu_wait`]: how long the busy threads of watched processes waited for a CPU.
//! - [`machine`]: the idle and frequency settings, DAMON monitors, processes above normal
//!   priority.

pub mod busy_cpu;
pub mod cpu_wait;
pub mod hiccup;
pub mod machine;
