#!/usr/bin/env python3
"""Turns perf/compare.sh's repetitions into the published figures.

    compare_table.py REPS_DIR RESULTS_DIR BENCHMARKS_MD

For every (workload, system) it takes the median repetition — by end-to-end p99 for a fixed
rate, by the maximum sustainable rate for a max-rate workload — copies that repetition's
JSON, .hgrm and .svg files to RESULTS_DIR as <workload>-<system>.*, writes every repetition to
RESULTS_DIR/compare.json, and replaces the table between the compare markers in BENCHMARKS_MD.
"""

import json
import shutil
import statistics
import sys
from pathlib import Path

BEGIN = "<!-- compare:begin (perf/compare.sh regenerates this table) -->"
END = "<!-- compare:end -->"


def median_item(items, key):
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2]


def ms(us):
    return f"{us / 1000:.2f} ms"


def hiccup_cell(hiccups):
    """Per CPU: the share of the time in hiccups > 1 ms and the longest (jHiccup's method)."""
    cpus = (hiccups or {}).get("per_cpu", [])
    if not cpus:
        return "n/a"
    return "; ".join(
        f"cpu {c['cpu']}{' (' + c['policy'] + ')' if 'policy' in c else ''}: "
        f"{100 * c['share_over_1ms']:.2f} %, max {ms(c['max_us'])}"
        for c in cpus
    )


def waits_cell(cpu_waits):
    """Per process, its busiest thread: the share of the time it waited for a CPU while
    runnable, its waits over 1 ms and the longest (`cpu_waits` of the report)."""
    busiest = {}
    for t in (cpu_waits or {}).get("threads", []):
        p = t["process"]
        if p not in busiest or t["ran_share"] > busiest[p]["ran_share"]:
            busiest[p] = t
    if not busiest:
        return "n/a"
    return "; ".join(
        f"{p} ({t['thread']}): {100 * t['waited_share']:.1f} %, "
        f"{t['waits_over_1ms']} > 1 ms, longest {ms(t['longest_wait_us'])}"
        for p, t in sorted(busiest.items())
    )


def main(reps_dir, results_dir, doc):
    reps_dir, results_dir, doc = Path(reps_dir), Path(results_dir), Path(doc)
    runs = {}  # (workload, system) -> [(rep_dir, report)]
    floors = []
    for rep in sorted(p for p in reps_dir.iterdir() if p.is_dir()):
        floor = rep / "floor.json"
        if floor.exists():
            floors.append(json.loads(floor.read_text()))
        for f in rep.glob("*.json"):
            if f.name == "floor.json":
                continue
            report = json.loads(f.read_text())
            system = report.get("system")
            workload = report.get("workload")
            if not system or not workload:
                continue
            runs.setdefault((workload, system), []).append((rep, report))
    if not runs:
        sys.exit(f"no reports under {reps_dir}")

    floor = median_item(floors, lambda f: f["floor_p99_us"]) if floors else None
    if floor:
        (results_dir / "floor.json").write_text(json.dumps(floor, indent=2) + "\n")

    summary = {"floor": floor, "floors_p99_us": [f["floor_p99_us"] for f in floors], "runs": {}}
    fixed_rows, max_rows = [], []
    max_rates = {}
    fixed_e2e = {}  # (workload, system) -> the median repetition's end_to_end figures
    for (workload, system), reps in sorted(runs.items()):
        is_max = "max_rate_msgs" in reps[0][1]["run"]
        if is_max:
            key = lambda r: r[1]["run"]["max_rate_msgs"]
        else:
            key = lambda r: r[1]["latency_us"]["end_to_end"]["p99_us"]
        rep, report = median_item(reps, key)
        stem = f"{workload}-{system}"
        for f in rep.glob(f"{stem}*"):
            if f.suffix in (".json", ".svg", ".hgrm"):
                shutil.copy(f, results_dir / f.name)
        summary["runs"][stem] = {
            "median_rep": rep.name,
            "reps": [
                {
                    "rep": r.name,
                    "max_rate_msgs": rr["run"].get("max_rate_msgs"),
                    "e2e_p50_us": rr["latency_us"]["end_to_end"]["p50_us"],
                    "e2e_p99_us": rr["latency_us"]["end_to_end"]["p99_us"],
                    "e2e_p999_us": rr["latency_us"]["end_to_end"]["p999_us"],
                    "published_msgs_per_s": rr["published_msgs_per_s"],
                    "errors": rr["errors"],
                    "unacknowledged": rr.get("unacknowledged", 0),
                    "unsent": rr.get("unsent", 0),
                    "hiccups_share_over_1ms": [
                        c["share_over_1ms"] for c in rr.get("hiccups", {}).get("per_cpu", [])
                    ],
                    "cpu_waits": waits_cell(rr.get("cpu_waits")),
                }
                for r, rr in reps
            ],
            "label": report["run"].get("label", ""),
        }
        e2e = report["latency_us"]["end_to_end"]
        pub = report["latency_us"]["publish_latency"]
        label = report["run"].get("label", "")
        if is_max:
            max_rates[(workload, system)] = report["run"]["max_rate_msgs"]
            max_rows.append(
                f"| {workload} | {system} | {report['run']['max_rate_msgs']:,} msg/s "
                f"| {ms(e2e['p50_us'])} | {ms(e2e['p99_us'])} | "
                + ", ".join(f"{r[1]['run']['max_rate_msgs']:,}" for r in reps)
                + f" | {label} |"
            )
        else:
            fixed_e2e[(workload, system)] = e2e
            ratio = (
                f"{e2e['p99_us'] / floor['floor_p99_us']:.1f}×" if floor else "n/a"
            )
            behind = report.get("unacknowledged", 0) + report.get("unsent", 0)
            consumed = report["consumed_msgs_per_s"] > 0
            e2e_cell = lambda k: ms(e2e[k]) if consumed else "none consumed in time"
            if not consumed or behind:
                ratio = "n/a (fell behind)"
            fixed_rows.append(
                f"| {workload} | {system} | {report['target_rate_msgs']:,} msg/s "
                f"({report['published_msgs_per_s']:,.0f} acked) | {e2e_cell('p50_us')} | {e2e_cell('p99_us')} "
                f"| {e2e_cell('p999_us')} | {ms(pub['p99_us'])} | {ratio} | "
                + ", ".join(ms(r[1]["latency_us"]["end_to_end"]["p99_us"]) for r in reps)
                + (f" (fell behind: {behind:,} messages unsent or unacknowledged when the run gave up)" if behind else "")
                + f" | {hiccup_cell(report.get('hiccups'))} | {waits_cell(report.get('cpu_waits'))} | {label} |"
            )

    lines = [BEGIN, ""]
    if floor:
        lines.append(
            f"Floor (median of {len(floors)} `quiver bench floor` runs, one per repetition): "
            f"QUIC echo p99 {floor['quic_echo']['p99_us']} µs + write+fdatasync p99 "
            f"{floor['write_fdatasync_4k']['p99_us']} µs = **{floor['floor_p99_us']} µs**."
            + (
                f" Hiccups of the idle machine ({floor['hiccups_idle'].get('seconds', '?')} s, "
                f"share of the time > 1 ms and longest): {hiccup_cell(floor['hiccups_idle'])}."
                if "hiccups_idle" in floor
                else ""
            )
            + (
                f" What busy CPUs lose ({floor['busy_cpus'].get('seconds', '?')} s of a thread per CPU "
                "spinning, all at once; of it, to other threads / unseen by the guest): "
                + "; ".join(
                    f"cpu {c['cpu']}: {c['lost_ms_per_s']:.1f} ms/s ({c['other_threads_ms_per_s']:.1f} / "
                    f"{c['unseen_by_guest_ms_per_s']:.1f}), {c['gaps_over_1ms']} gaps > 1 ms, "
                    f"longest {c['longest_us'] / 1000:.2f} ms"
                    for c in floor["busy_cpus"]["per_cpu"]
                )
                + "."
                if "busy_cpus" in floor
                else ""
            )
            + (
                " Machine: " + ", ".join(f"{k} {v}" for k, v in floor["machine"].items()) + "."
                if "machine" in floor
                else ""
            )
        )
        lines.append("")
    if fixed_rows:
        lines += [
            "| workload | system | rate | e2e p50 | e2e p99 | e2e p99.9 | publish p99 | e2e p99 / floor p99 | e2e p99 of each repetition | machine hiccups during the run (time > 1 ms, longest) | busiest threads' waits for a CPU (time, waits > 1 ms, longest) | durability |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *fixed_rows,
            "",
        ]
        for (workload, system), e2e in sorted(fixed_e2e.items()):
            echo = fixed_e2e.get((workload, "durable-echo"))
            if system != "quiver" or not echo:
                continue
            p50, p99 = e2e["p50_us"] / echo["p50_us"], e2e["p99_us"] / echo["p99_us"]
            lines.append(
                f"- {workload}: Quiver / durable echo (the design's floor under load) = "
                f"**{p50:.2f}×** at p50, **{p99:.2f}×** at p99"
            )
            summary.setdefault("quiver_over_durable_echo", {})[workload] = {"p50": p50, "p99": p99}
        lines.append("")
    if max_rows:
        lines += [
            "| workload | system | max rate with e2e p99 < 10 ms (median) | e2e p50 there | e2e p99 there | max rate of each repetition | durability |",
            "|---|---|---|---|---|---|---|",
            *max_rows,
            "",
        ]
        for (workload, system), rate in sorted(max_rates.items()):
            if system == "quiver":
                continue
            q = max_rates.get((workload, "quiver"))
            if q and rate:
                lines.append(f"- {workload}: Quiver / {system} = **{q / rate:.1f}×**")
                summary.setdefault("max_rate_ratios", {})[f"quiver/{system}"] = q / rate
        lines.append("")
    lines.append(END)

    (results_dir / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = doc.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + "\n".join(lines) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    doc.write_text(text)
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
