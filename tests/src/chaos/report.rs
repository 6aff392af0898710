//! What a sweep prints: one line per schedule, the evidence and replay command of a failing
//! one, a summary, and the sweep as JSON (for perf/ and docs/reliability.md).

use std::collections::BTreeMap;

use super::run::{Options, Verdict};

/// `schedule 3 seed 1003: ok | kill 1, pause 2 | 1,840 ops, 1,622 acked, recovery 1.2 s, 21.0 s`
pub fn line(index: usize, v: &Verdict) -> String {
    let faults = if v.faults.is_empty() {
        "no faults".to_string()
    } else {
        v.faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let status = if v.anomalies.is_empty() {
        "ok".to_string()
    } else {
        format!("{} ANOMALIES", v.anomalies.len())
    };
    let phases: Vec<String> = v
        .phases
        .iter()
        .map(|(name, ms)| format!("{name} {:.1}", *ms as f64 / 1000.0))
        .collect();
    format!(
        "schedule {index} seed {}: {status} | {faults} | {} ops, {} acked, {} member kills, recovery {:.1} s | {:.1} s ({})",
        v.seed,
        v.operations,
        v.acknowledged,
        v.member_kills,
        v.recovery_ms as f64 / 1000.0,
        v.elapsed_ms as f64 / 1000.0,
        phases.join(", ")
    )
}

/// The anomalies of a failing schedule, each with the events that prove it, and the
/// command that replays it.
pub fn evidence(v: &Verdict, opts: &Options) -> String {
    let mut out = String::new();
    for a in v.anomalies.iter().take(20) {
        out.push_str(&format!("  {}: {}\n", a.kind, a.detail));
    }
    if v.anomalies.len() > 20 {
        out.push_str(&format!("  ... and {} more\n", v.anomalies.len() - 20));
    }
    for (a, events) in &v.evidence {
        out.push_str(&format!("  history of {} ({}):\n", a.subject, a.kind));
        for e in events.iter().take(60) {
            out.push_str(&format!(
                "    {:>7} ms  {:<11} {}\n",
                e.at_ms, e.actor, e.text
            ));
        }
    }
    out.push_str(&format!("  replay: {}\n", replay_command(v.seed, opts)));
    out
}

pub fn replay_command(seed: u64, opts: &Options) -> String {
    // The binary that ran (target/debug or target/release), relative to the checkout.
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| {
            let cwd = std::env::current_dir().ok()?;
            Some(e.strip_prefix(&cwd).unwrap_or(&e).display().to_string())
        })
        .unwrap_or_else(|| "target/debug/quiver-chaos".into());
    format!(
        "{exe} --seed {seed} --schedules 1 --nodes {} --duration-ms {}",
        opts.nodes, opts.duration_ms
    )
}

/// Totals over a sweep.
#[derive(Debug, Default)]
pub struct Summary {
    pub schedules: usize,
    pub failed: usize,
    pub harness_errors: usize,
    pub faults: BTreeMap<&'static str, u64>,
    pub operations: u64,
    pub acknowledged: u64,
    pub member_kills: u64,
    pub anomalies: BTreeMap<&'static str, u64>,
    pub recovery_ms: Vec<u64>,
}

impl Summary {
    pub fn add(&mut self, v: &Verdict) {
        self.schedules += 1;
        if !v.anomalies.is_empty() {
            self.failed += 1;
        }
        for (k, n) in &v.faults {
            *self.faults.entry(k).or_insert(0) += *n as u64;
        }
        for a in &v.anomalies {
            *self.anomalies.entry(a.kind).or_insert(0) += 1;
        }
        self.operations += v.operations;
        self.acknowledged += v.acknowledged;
        self.member_kills += v.member_kills as u64;
        self.recovery_ms.push(v.recovery_ms);
    }

    fn recovery_percentile(&self, q: f64) -> u64 {
        let mut r = self.recovery_ms.clone();
        r.sort_unstable();
        if r.is_empty() {
            return 0;
        }
        r[((r.len() - 1) as f64 * q).round() as usize]
    }

    pub fn text(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let anomalies: Vec<String> = self
            .anomalies
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "chaos: {} schedules, {} with anomalies, {} harness errors | faults: {} | {} operations, {} acknowledged, {} member kills | anomalies: {} | recovery p50 {:.1} s, max {:.1} s",
            self.schedules,
            self.failed,
            self.harness_errors,
            faults.join(", "),
            self.operations,
            self.acknowledged,
            self.member_kills,
            if anomalies.is_empty() { "none".to_string() } else { anomalies.join(", ") },
            self.recovery_percentile(0.5) as f64 / 1000.0,
            self.recovery_percentile(1.0) as f64 / 1000.0,
        )
    }

    pub fn json(&self, first_seed: u64, opts: &Options) -> serde_json::Value {
        serde_json::json!({
            "first_seed": first_seed,
            "nodes": opts.nodes,
            "duration_ms": opts.duration_ms,
            "schedules": self.schedules,
            "schedules_with_anomalies": self.failed,
            "harness_errors": self.harness_errors,
            "faults": self.faults,
            "operations": self.operations,
            "acknowledged": self.acknowledged,
            "member_kills": self.member_kills,
            "anomalies": self.anomalies,
            "recovery_ms_p50": self.recovery_percentile(0.5),
            "recovery_ms_max": self.recovery_percentile(1.0),
        })
    }
}
