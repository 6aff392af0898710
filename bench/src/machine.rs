//! The machine settings that move latency figures, recorded beside them: the same binary on
//! the same VM gave a write+fdatasync p50 of 120 µs with the guest polling 200 µs before it
//! halts an idle CPU, and 240 µs without (docs/decisions/0015). Read from `/proc` and `/sys`;
//! what a kernel does not have is left out.

use serde_json::{json, Value};

/// Where Linux keeps the setting or fact each field is read from.
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const CPUIDLE: &str = "/sys/devices/system/cpu/cpuidle";
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
const CPUFREQ_GOVERNOR: &str = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor";

/// What this machine's idle and frequency settings are, as JSON (absent keys: not on this
/// kernel).
pub fn settings() -> Value {
    // Online CPUs of the machine, not this thread's affinity (the load generator is pinned).
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let mut out = json!({ "cpus": cpus });
    let fields = [
        ("kernel", read(OSRELEASE)),
        ("cpuidle_driver", read(&format!("{CPUIDLE}/current_driver"))),
        (
            "cpuidle_governor",
            read(&format!("{CPUIDLE}/current_governor")),
        ),
        ("cpufreq_governor", read(CPUFREQ_GOVERNOR)),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            out[key] = json!(v);
        }
    }
    if let Some(ns) = read(HALT_POLL_NS).and_then(|s| s.parse::<u64>().ok()) {
        out["guest_halt_poll_ns"] = json!(ns);
    }
    out
}

/// One line for people: `settings()` with what it means for wake-ups.
pub fn describe(settings: &Value) -> String {
    let mut parts = vec![format!("{} CPUs", settings["cpus"])];
    if let Some(k) = settings["kernel"].as_str() {
        parts.push(format!("kernel {k}"));
    }
    if let Some(d) = settings["cpuidle_driver"].as_str() {
        let governor = settings["cpuidle_governor"].as_str().unwrap_or("?");
        parts.push(format!("cpuidle {d}/{governor}"));
    }
    if let Some(ns) = settings["guest_halt_poll_ns"].as_u64() {
        parts.push(match ns {
            0 => "guest_halt_poll_ns 0 (an idle vCPU halts at once: every wake-up is a VM exit)"
                .to_string(),
            ns => format!(
                "guest_halt_poll_ns {ns} (an idle vCPU polls up to {} µs first)",
                ns / 1000
            ),
        });
    }
    if let Some(g) = settings["cpufreq_governor"].as_str() {
        parts.push(format!("cpufreq {g}"));
    }
    parts.join(", ")
}

fn read(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine_and_names_the_halt_poll_setting() {
        let s = settings();
        assert!(s["cpus"].as_u64().is_some_and(|n| n >= 1));
        // Every Linux has the release file; the rest depends on the kernel and the platform.
        assert!(s["kernel"].as_str().is_some_and(|k| !k.is_empty()));
        let line = describe(&s);
        assert!(line.contains("CPUs") && line.contains("kernel"), "{line}");
    }

    #[test]
    fn describes_halt_polling_on_and_off() {
        let off = json!({"cpus": 2, "guest_halt_poll_ns": 0});
        assert!(describe(&off).contains("halts at once"));
        let on = json!({"cpus": 2, "guest_halt_poll_ns": 200_000});
        assert!(describe(&on).contains("polls up to 200 µs"));
        let bare = json!({"cpus": 8, "cpufreq_governor": "performance"});
        assert_eq!(describe(&bare), "8 CPUs, cpufreq performance");
    }
}
