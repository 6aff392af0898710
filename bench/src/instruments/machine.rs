//! The machine settings that move latency figures, recorded beside them: the same binary on
//! the same VM gave a write+fdatasync p50 of 120 µs with the guest polling 200 µs before it
//! halts an idle CPU, and 240 µs without (docs/decisions/0015). Also what takes a CPU from
//! the benchmark without asking: DAMON's kernel thread (not preemptible; 2–8 ms at a time on
//! the benchmark VM) and processes that run above normal priority (the VM's own agent).
//! Read from `/proc` and `/sys`; what a kernel does not have is left out.

use serde_json::{json, Value};

/// Where Linux keeps the setting or fact each field is read from.
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const CPUIDLE: &str = "/sys/devices/system/cpu/cpuidle";
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
const CPUFREQ_GOVERNOR: &str = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor";
const DAMON_KDAMONDS: &str = "/sys/kernel/mm/damon/admin/kdamonds";
const PROC: &str = "/proc";

/// `/proc/<pid>/stat` flag of kernel threads (`PF_KTHREAD`).
const PF_KTHREAD: u64 = 0x0020_0000;
/// Scheduling policies that run before every normal thread.
const SCHED_FIFO: u64 = 1;
const SCHED_RR: u64 = 2;

/// What this machine's idle and frequency settings are, as JSON (absent keys: not on this
/// kernel).
pub fn settings() -> Value {
    let mut out = json!({ "cpus": crate::harness::online_cpus() });
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
    if let Some(damon) = damon(std::path::Path::new(DAMON_KDAMONDS)) {
        out["damon"] = json!(damon);
    }
    let above = processes_above_normal_priority(std::path::Path::new(PROC));
    if !above.is_empty() {
        out["processes_above_normal_priority"] = json!(above.join(", "));
    }
    out
}

/// DAMON's monitors under `kdamonds` (sysfs admin interface): `"off"` when none runs, else
/// what the running ones do, e.g. `"1 kdamond on (paddr, pageout, sampling every 500 ms)"`.
/// `None` without the interface.
fn damon(kdamonds: &std::path::Path) -> Option<String> {
    let entries = std::fs::read_dir(kdamonds).ok()?;
    let mut running = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if read_path(&dir.join("state")).as_deref() != Some("on") {
            continue;
        }
        let context = dir.join("contexts/0");
        let mut what = Vec::new();
        if let Some(ops) = read_path(&context.join("operations")) {
            what.push(ops);
        }
        if let Ok(schemes) = std::fs::read_dir(context.join("schemes")) {
            let mut actions: Vec<String> = schemes
                .flatten()
                .filter_map(|s| read_path(&s.path().join("action")))
                .collect();
            actions.sort();
            what.extend(actions);
        }
        let sample_us = read_path(&context.join("monitoring_attrs/intervals/sample_us"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(us) = sample_us {
            what.push(format!("sampling every {} ms", us / 1000));
        }
        running.push(what.join(", "));
    }
    Some(match running.len() {
        0 => "off".to_string(),
        n => {
            running.sort();
            running.dedup();
            format!("{n} kdamond on ({})", running.join("; "))
        }
    })
}

/// User processes (not kernel threads, not this one) whose main thread runs at a negative
/// nice value or a real-time policy: they take a busy shard's CPU whenever they wake.
/// Each as `name (nice -10)` or `name (SCHED_FIFO 50)`, sorted, one entry per name+setting.
fn processes_above_normal_priority(proc_dir: &std::path::Path) -> Vec<String> {
    let own = std::process::id();
    let mut found: Vec<String> = std::fs::read_dir(proc_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| std::fs::read_to_string(proc_dir.join(format!("{pid}/stat"))).ok())
        .filter_map(|line| above_normal_priority(&line))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// One `/proc/<pid>/stat` line: `Some("name (nice -10)")` for a user process above normal
/// priority, `None` for everything else (kernel threads included) or a line it cannot read.
fn above_normal_priority(stat: &str) -> Option<String> {
    // The name is in parentheses and may hold spaces or parentheses itself.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // `rest[0]` is field 3 (state): field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3)?.parse::<i64>().ok();
    let flags = field(9)? as u64;
    if flags & PF_KTHREAD != 0 {
        return None;
    }
    let nice = field(19)?;
    let rt_priority = field(40).unwrap_or(0);
    match field(41).unwrap_or(0) as u64 {
        SCHED_FIFO => Some(format!("{name} (SCHED_FIFO {rt_priority})")),
        SCHED_RR => Some(format!("{name} (SCHED_RR {rt_priority})")),
        _ if nice < 0 => Some(format!("{name} (nice {nice})")),
        _ => None,
    }
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
    match settings["damon"].as_str() {
        Some("off") | None => {}
        Some(d) => parts.push(format!(
            "DAMON {d} (its kernel thread is not preemptible: stalls whichever CPU it runs on)"
        )),
    }
    if let Some(p) = settings["processes_above_normal_priority"].as_str() {
        parts.push(format!("above normal priority: {p}"));
    }
    parts.join(", ")
}

fn read(path: &str) -> Option<String> {
    read_path(std::path::Path::new(path))
}

fn read_path(path: &std::path::Path) -> Option<String> {
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
        let bare = json!({"cpus": 8, "cpufreq_governor": "performance", "damon": "off"});
        assert_eq!(describe(&bare), "8 CPUs, cpufreq performance");
    }

    #[test]
    fn names_running_damon_monitors_and_their_scheme() {
        let root = tempfile::tempdir().unwrap();
        let kdamonds = root.path().join("kdamonds");
        let write = |rel: &str, text: &str| {
            let path = kdamonds.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{text}\n")).unwrap();
        };
        write("nr_kdamonds", "2");
        write("0/state", "on");
        write("0/contexts/0/operations", "paddr");
        write("0/contexts/0/schemes/0/action", "pageout");
        write(
            "0/contexts/0/monitoring_attrs/intervals/sample_us",
            "500000",
        );
        write("1/state", "off");
        assert_eq!(
            damon(&kdamonds).as_deref(),
            Some("1 kdamond on (paddr, pageout, sampling every 500 ms)")
        );
        write("0/state", "off");
        assert_eq!(damon(&kdamonds).as_deref(), Some("off"));
        assert_eq!(damon(&root.path().join("absent")), None);
        let line = describe(&json!({"cpus": 2, "damon": "1 kdamond on (paddr)"}));
        assert!(line.contains("DAMON 1 kdamond on (paddr)"), "{line}");
    }

    #[test]
    fn finds_user_processes_above_normal_priority() {
        // /proc/1/stat of the benchmark VM's agent: nice -10 (field 19).
        let agent = "1 (process_api) S 0 0 0 0 -1 4194560 286682 1444925490 0 432598 2966 \
            21631 5676902 1628556 10 -10 13 0 22 38260736 2227 18446744073709551615 1 1 0 0 0 \
            0 0 4096 1256 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(
            above_normal_priority(agent).as_deref(),
            Some("process_api (nice -10)")
        );
        // The same line as a kernel thread (PF_KTHREAD in field 9) and at nice 0.
        let kthread = agent.replace(" 4194560 ", " 2129984 ");
        assert_eq!(above_normal_priority(&kthread), None);
        let normal = agent.replace(" 10 -10 ", " 20 0 ");
        assert_eq!(above_normal_priority(&normal), None);
        // A name with spaces and parentheses, at SCHED_FIFO 50 (fields 40 and 41).
        let fifo = "7 (a (b) c) S 0 0 0 0 -1 4194560 0 0 0 0 0 0 0 0 -51 0 1 0 22 0 0 0 0 0 0 \
            0 0 0 0 0 0 0 0 0 17 1 50 1 0 0 0";
        assert_eq!(
            above_normal_priority(fifo).as_deref(),
            Some("a (b) c (SCHED_FIFO 50)")
        );
        assert_eq!(above_normal_priority("garbage"), None);
        assert_eq!(above_normal_priority("9 (x) S 1 2"), None);
    }

    #[test]
    fn this_machine_lists_its_higher_priority_processes_without_failing() {
        // Whatever runs here: every entry names a process and its setting.
        for p in processes_above_normal_priority(std::path::Path::new(PROC)) {
            assert!(p.contains(" (nice -") || p.contains(" (SCHED_"), "{p}");
        }
    }
}
