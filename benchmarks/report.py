"""The run's results as people read them: a table, goal checks, JSON, Markdown and a plot."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

Row = tuple[str, str, str]


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    measured: Callable[[dict[str, Any]], float | None]
    met: Callable[[float], bool]
    unit: str = "×"
    digits: int = 2


def _get(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


GOALS = (
    Goal(
        "per-task p50: aicli vs SDK",
        "≤ 1.10×",
        lambda r: _get(r, "latency", "ratio_aicli_over_sdk_p50"),
        lambda v: v <= 1.10,
    ),
    Goal(
        "per-task p50: spawn-per-task vs aicli",
        "≥ 10×",
        lambda r: _get(r, "latency", "ratio_spawn_over_aicli_p50"),
        lambda v: v >= 10,
    ),
    Goal(
        "throughput at 16 sessions: aicli vs 16 SDK clients",
        "≥ 0.9×",
        lambda r: _get(r, "throughput", "by_sessions", "16", "ratio_aicli_over_sdk"),
        lambda v: v >= 0.9,
    ),
    Goal(
        "GET /tasks/{id} req/s vs bare Falcon",
        "≥ 0.6×",
        lambda r: _get(r, "read", "task", "ratio_aicli_over_bare"),
        lambda v: v >= 0.6,
    ),
    Goal(
        "GET /tasks?limit=50 req/s vs bare Falcon",
        "≥ 0.6×",
        lambda r: _get(r, "read", "list", "ratio_aicli_over_bare"),
        lambda v: v >= 0.6,
    ),
    Goal(
        "long-poll: completed_at to response, p99",
        "≤ 100 ms",
        lambda r: _get(r, "longpoll", "p99_ms"),
        lambda v: v <= 100,
        " ms",
    ),
    Goal(
        "SSE fan-out: streams that saw the task complete",
        "all 50",
        lambda r: _get(r, "sse", "streams_complete"),
        lambda v: v >= 50,
        "",
        0,
    ),
)


def goal_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for goal in GOALS:
        value = goal.measured(results)
        checks.append(
            {
                "goal": goal.name,
                "target": goal.target,
                "measured": None if value is None else f"{value:.{goal.digits}f}{goal.unit}",
                "met": None if value is None else goal.met(value),
            }
        )
    return checks


def _pcts(stats: dict[str, Any], keys: tuple[str, ...] = ("p50_ms", "p90_ms", "p99_ms")) -> str:
    return " / ".join(f"{stats[key]:.1f}" for key in keys)


def _rows(results: dict[str, Any]) -> Iterator[Row]:
    if fake := results.get("fake"):
        yield (
            "fake API",
            "one request p50 / p99 ms",
            _pcts(fake["sequential"], ("p50_ms", "p99_ms")),
        )
        rps = f"{fake['concurrent_16_rps']:.0f} ({fake['concurrent_16_errors']} errors)"
        yield "fake API", "req/s, 16 Python clients (a floor)", rps
    if latency := results.get("latency"):
        for name, label in (("aicli", "aicli"), ("sdk", "SDK client"), ("spawn", "claude -p")):
            if name in latency:
                yield "per-task latency", f"{label} p50 / p90 / p99 ms", _pcts(latency[name])
        if phases := latency.get("aicli_phases"):
            text = ", ".join(f"{name} {stats['p50_ms']:.1f}" for name, stats in phases.items())
            yield "per-task latency", "aicli p50 by phase, ms", text
        cpu = f"SDK client {latency['sdk_client_cpu_ms_per_task']:.1f}"
        if "aicli_server_cpu_ms_per_task" in latency:
            cpu = f"aicli server {latency['aicli_server_cpu_ms_per_task']:.1f}, {cpu}"
        yield "per-task latency", "CPU per task besides Claude's, ms", cpu
        if "ratio_aicli_over_sdk_p50" in latency:
            yield (
                "per-task latency",
                "aicli / SDK (p50)",
                f"{latency['ratio_aicli_over_sdk_p50']:.2f}×",
            )
            ratio = latency["ratio_spawn_over_aicli_p50"]
            yield "per-task latency", "spawn / aicli (p50)", f"{ratio:.1f}×"
        yield "per-task latency", "spawn / SDK (p50)", f"{latency['ratio_spawn_over_sdk_p50']:.1f}×"
    if longpoll := results.get("longpoll"):
        keys = ("p50_ms", "p99_ms", "max_ms")
        yield "long-poll", "completed_at → response p50 / p99 / max ms", _pcts(longpoll, keys)
    if throughput := results.get("throughput"):
        for sessions, row in throughput["by_sessions"].items():
            text = f"SDK {row['sdk_tps']:.1f}"
            if "aicli_tps" in row:
                text = f"aicli {row['aicli_tps']:.1f}, {text} ({row['ratio_aicli_over_sdk']:.2f}×)"
            yield "throughput", f"{sessions} sessions, tasks/s", text
    if read := results.get("read"):
        for name in ("task", "list"):
            entry = read[name]
            aicli, bare = entry["aicli"], entry["bare"]
            yield (
                f"read path ({aicli['tool']})",
                f"GET {entry['path']} req/s (p99 ms)",
                f"aicli {aicli['rps']:.0f} ({aicli['p99_ms']:.1f}), bare Falcon {bare['rps']:.0f} "
                f"({bare['p99_ms']:.1f}) → {entry['ratio_aicli_over_bare']:.2f}×",
            )
        if big := read.get("big_table"):
            yield f"{big['tasks']:,} tasks", "bulk insert s (setup)", f"{big['fill_s']:.0f}"
            for name, query in big["queries"].items():
                yield (
                    f"{big['tasks']:,} tasks",
                    f"{name}: p50 / p99 ms",
                    _pcts(query, ("p50_ms", "p99_ms")),
                )
    if sse := results.get("sse"):
        keys = ("p50_ms", "p99_ms")
        yield (
            "SSE fan-out",
            "GET /tasks p50 / p99 ms, no streams",
            _pcts(sse["baseline_reads"], keys),
        )
        yield (
            "SSE fan-out",
            f"GET /tasks p50 / p99 ms, {sse['streams']} streams",
            _pcts(sse["reads_with_streams"], keys),
        )
        yield "SSE fan-out", "streams that saw completion", f"{sse['streams_complete']}"
    if memory := results.get("memory"):
        yield "memory", "aicli RSS idle MB", f"{memory['aicli_rss_idle_mb']:.0f}"
        yield (
            "memory",
            f"aicli RSS with {memory['sessions']} sessions MB",
            f"{memory['aicli_rss_with_sessions_mb']:.0f} ({memory['per_session_kb']:.1f} KB each)",
        )
        if memory["claude_rss_mean_mb"] is not None:
            yield (
                "memory",
                f"RSS per live Claude process tree MB ({memory['live_processes']} live)",
                f"{memory['claude_rss_mean_mb']:.0f} (max {memory['claude_rss_max_mb']:.0f})",
            )
    for section in ("latency", "throughput"):
        if reason := _get(results, section, "aicli_skipped"):
            yield section, "aicli side skipped", reason
    for section, reason in results.get("skipped", {}).items():
        yield section, "skipped", reason
    for section, error in results.get("failed", {}).items():
        yield section, "FAILED", error


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _goal_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    verdicts = {True: "met", False: "MISSED", None: "not measured"}
    return [
        (check["goal"], check["target"], check["measured"] or "–", verdicts[check["met"]])
        for check in results["goals"]
    ]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    return "\n\n".join(
        [
            "# Benchmark results",
            f"Run {meta['finished_at']} on {meta['cores']} cores, 1-minute load average "
            f"{meta['load_average_at_start']:.1f} at the start and "
            f"{meta['load_average_at_end']:.1f} at the end ({meta['mode']}; "
            f"{meta['claude_version']}; settings {meta['server_settings']}). "
            "Real Claude Code CLI against the instant fake Anthropic API; "
            "see README.md for what each number means. The machine is shared: numbers "
            "taken while other work runs are noisy.",
            _markdown_table(("benchmark", "measure", "value"), list(_rows(results))),
            "## Goals",
            _markdown_table(("goal", "target", "measured", "verdict"), _goal_rows(results)),
        ]
    )


def print_table(results: dict[str, Any]) -> None:
    rows = list(_rows(results))
    widths = [max(len(row[i]) for row in rows) for i in range(2)] if rows else [0, 0]
    for section, measure, value in rows:
        print(f"{section:<{widths[0]}}  {measure:<{widths[1]}}  {value}")
    print()
    for goal, target, measured, verdict in _goal_rows(results):
        print(f"[{verdict}] {goal}: {measured} (goal {target})")


def plot(latency: dict[str, Any], paths: list[Path]) -> None:
    """Box plot and CDF of per-task latency, log scale: spawn is an order of magnitude off."""
    labels = {"aicli": "aicli", "sdk": "SDK client", "spawn": "claude -p per task"}
    series = {labels[name]: latency[name]["samples_s"] for name in labels if name in latency}
    millis = {label: [s * 1000 for s in samples] for label, samples in series.items()}
    figure, (box, cdf) = plt.subplots(1, 2, figsize=(11, 4.5))
    box.boxplot(list(millis.values()), tick_labels=list(millis), whis=(1, 99), showfliers=True)
    box.set_yscale("log")
    box.set_ylabel("per-task latency, ms (log)")
    box.set_title("Per-task latency (whiskers: p1–p99)")
    for label, values in millis.items():
        ordered = sorted(values)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        cdf.step(ordered, fractions, where="post", label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("per-task latency, ms (log)")
    cdf.set_ylabel("fraction of tasks")
    cdf.set_title(f"CDF, {latency['tasks']} sequential tasks on one warm session")
    cdf.legend()
    cdf.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], out: Path, publish: Path | None) -> list[Path]:
    """latest.json and latency.png under ``out``; with ``publish``, RESULTS.md and the plot too."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "latest.json"]
    written[0].write_text(json.dumps(results, indent=2) + "\n")
    plots = [out / "latency.png"]
    if publish is not None:
        (publish / "RESULTS.md").write_text(markdown(results) + "\n")
        written.append(publish / "RESULTS.md")
        plots.append(publish / "latency.png")
    if "latency" in results:
        plot(results["latency"], plots)
        written += plots
    return written
