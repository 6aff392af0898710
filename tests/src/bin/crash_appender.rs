//! Child process for the kill -9 test: opens the log in `DIR` (recovering it), then appends
//! batches `crash_batch(ROUND, 0..)` with fsync, 8 in flight, printing `ACK round seq base`
//! for each acknowledged one, until killed.
//!
//! Usage: crash_appender DIR ROUND

use std::io::Write;
use std::rc::Rc;

use quiver_storage::PartitionLog;
use quiver_tests::{crash_batch, crash_log_config};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next().and_then(|r| r.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash_appender DIR ROUND");
        std::process::exit(2);
    };
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("glommio executor");
    ex.run(async move {
        let log = Rc::new(
            PartitionLog::open(&dir, crash_log_config())
                .await
                .expect("open log"),
        );
        println!("OPEN {}", log.durable_offset());
        let next_seq = Rc::new(std::cell::Cell::new(0u64));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                let next_seq = next_seq.clone();
                glommio::spawn_local(async move {
                    loop {
                        let seq = next_seq.get();
                        next_seq.set(seq + 1);
                        let info = log
                            .append(crash_batch(round, seq), round as i32)
                            .await
                            .expect("append");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {round} {seq} {}", info.base_offset).expect("stdout");
                        out.flush().expect("stdout");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await;
        }
    });
}
