//! # quiver-tests: end-to-end tests on real processes, sockets and files
//!
//! - `src/bin/crash_appender.rs`: a child process that appends with fsync and reports every
//!   acknowledged batch on stdout, for the kill -9 test in `tests/crash_recovery.rs`.
//! - `tests/disk_full.rs`: a log on a small loop-mounted ext4 filled to ENOSPC.
//! - Broker-level tests arrive with the broker node.
