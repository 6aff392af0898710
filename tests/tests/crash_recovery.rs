//! kill -9 at random moments while a child process appends with fsync: every acknowledged
//! batch survives byte for byte, and nothing but valid, contiguous batches follows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use quiver_batch::{header, validate_batch, BatchLimits};
use quiver_storage::PartitionLog;
use quiver_tests::{crash_batch, crash_log_config};
use rand::{Rng, SeedableRng};

const ROUNDS: u64 = 60;

fn expected_bytes(round: u64, seq: u64, base: u64) -> Bytes {
    let mut b = crash_batch(round, seq);
    header::stamp_base_offset(&mut b, base as i64);
    header::stamp_leader_epoch(&mut b, round as i32);
    b.freeze()
}

/// Reads the whole log in a fresh executor; checks every batch and their contiguity.
fn read_log(dir: &std::path::Path) -> Vec<Bytes> {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap()
        .run(async move {
            let log = PartitionLog::open(&dir, crash_log_config()).await.unwrap();
            let mut out: Vec<Bytes> = Vec::new();
            let mut next = 0u64;
            loop {
                let got = log.read(next, 4 << 20).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for b in got {
                    let h = validate_batch(
                        &b,
                        BatchLimits {
                            max_batch_bytes: 1 << 20,
                        },
                    )
                    .expect("only valid batches are served");
                    assert_eq!(h.base_offset as u64, next, "batches are contiguous");
                    next = h.last_offset() as u64 + 1;
                    out.push(b);
                }
            }
            assert_eq!(next, log.durable_offset());
            log.close().await.unwrap();
            out
        })
}

#[test]
fn acknowledged_batches_survive_kill_9_at_random_moments() {
    let dir = tempfile::Builder::new()
        .prefix("quiver-crash-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let seed = std::env::var("QUIVER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash test seed {seed} (set QUIVER_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut total_acks = 0usize;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_appender"))
            .arg(dir.path())
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn crash_appender");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let open = lines.next().expect("child prints OPEN").unwrap();
        assert!(open.starts_with("OPEN "), "{open}");
        let kill_after = rng.gen_range(1..400usize);
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let parts: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|p| p.parse().unwrap())
                .collect();
            let [r, seq, base] = parts[..] else {
                panic!("bad line {line}")
            };
            acked.insert(base, expected_bytes(r, seq, base));
            seen += 1;
            if seen >= kill_after {
                break;
            }
        }
        // SIGKILL while the other in-flight appends are mid-write.
        child.kill().expect("kill -9");
        // Acks already printed before the kill count as acknowledged too.
        for line in lines.map_while(Result::ok) {
            let parts: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|p| p.parse().ok())
                .collect();
            if let [r, seq, base] = parts[..] {
                acked.insert(base, expected_bytes(r, seq, base));
            }
        }
        child.wait().unwrap();
        total_acks += seen;
        let log = read_log(dir.path());
        let by_base: BTreeMap<u64, &Bytes> = log
            .iter()
            .map(|b| (u64::from_be_bytes(b[..8].try_into().unwrap()), b))
            .collect();
        for (base, want) in &acked {
            let got = by_base.get(base).unwrap_or_else(|| {
                panic!("round {round}: acknowledged batch at {base} lost (seed {seed})")
            });
            assert_eq!(
                *got, want,
                "round {round}: batch at {base} differs (seed {seed})"
            );
        }
    }
    eprintln!("{ROUNDS} kill -9 rounds, {total_acks} acknowledged batches checked");
}
