"""The run's results as people read them: a header, the goals, the table, JSON, Markdown, a plot.

The goals table is the performance issue's, row for row; every other number
the run takes is in the table below it, so that a miss can be read next to
what explains it (the phases, the CPU, the baseline without watchers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.goals import VERDICTS, goal_checks, lookup
from benchmarks.hot_report import hot_header, hot_rows, trip_rows
from benchmarks.plot import plot

__all__ = ["goal_checks", "print_table", "write"]

Row = tuple[str, str, str]
PLOT = "bench.png"

# -- the table of every number ----------------------------------------------------------------


def _pcts(stats: dict[str, Any], keys: tuple[str, ...] = ("p50_ms", "p90_ms", "p99_ms")) -> str:
    return " / ".join(f"{stats[key]:.1f}" for key in keys)


def _fake_rows(fake: dict[str, Any]) -> Iterator[Row]:
    yield "fake API", "one request p50 / p99 ms", _pcts(fake["sequential"], ("p50_ms", "p99_ms"))
    rps = f"{fake['concurrent_16_rps']:.0f} ({fake['concurrent_16_errors']} errors)"
    yield "fake API", "req/s, 16 Python clients (a floor)", rps


LATENCY_LABELS = {
    "aicli": "aicli POST + GET ?wait",
    "aicli_prefer": "aicli Prefer: wait",
    "aicli_sandboxed": "aicli POST + GET ?wait, sandbox on",
    "ref_aicli": "--ref POST + GET ?wait",
    "ref_aicli_prefer": "--ref Prefer: wait",
    "sdk": "SDK client",
    "spawn": "claude -p per task",
}


def _latency_rows(latency: dict[str, Any]) -> Iterator[Row]:
    section = "per-task latency"
    for name, label in LATENCY_LABELS.items():
        if name not in latency:
            continue
        text = _pcts(latency[name])
        if (answered := latency.get(f"{name}_answered_by_post")) is not None:
            text += f" ({answered:g} of {latency['tasks']} answered 200)"
        yield section, f"{label} p50 / p90 / p99 ms", text
    for name in ("aicli", "aicli_prefer", "ref_aicli", "ref_aicli_prefer"):
        if phases := latency.get(f"{name}_phases"):
            text = ", ".join(f"{phase} {stats['p50_ms']:.1f}" for phase, stats in phases.items())
            yield section, f"{LATENCY_LABELS[name]} p50 by phase, ms", text
    cpu = [
        f"{LATENCY_LABELS[name]} {latency[key]:.1f} (idle "
        f"{latency.get(f'{name}_server_idle_cpu_ms_per_task', 0):.1f})"
        for name in LATENCY_LABELS
        if (key := f"{name}_server_cpu_ms_per_task") in latency
    ]
    if cpu:
        yield section, "server CPU per task, ms (user+sys, a server per variant)", ", ".join(cpu)
    yield section, "SDK client CPU per task, ms", f"{latency['sdk_client_cpu_ms_per_task']:.1f}"
    ratios = [
        f"{LATENCY_LABELS[name]} {latency[key]:.2f}×"
        for name in LATENCY_LABELS
        if name != "spawn" and name != "sdk" and (key := f"ratio_{name}_over_sdk_p50") in latency
    ]
    if ratios:
        yield section, "aicli / SDK (p50, median of the runs' ratios)", ", ".join(ratios)
    if "ratio_spawn_over_aicli_p50" in latency:
        ratio = latency["ratio_spawn_over_aicli_p50"]
        yield section, "spawn / aicli POST + GET ?wait (p50)", f"{ratio:.1f}×"
    if "ratio_spawn_over_sdk_p50" in latency:
        yield section, "spawn / SDK (p50)", f"{latency['ratio_spawn_over_sdk_p50']:.1f}×"
    for name in LATENCY_LABELS:
        if reason := latency.get(f"{name}_skipped"):
            yield section, f"{LATENCY_LABELS[name]} skipped", reason


def _throughput_rows(throughput: dict[str, Any]) -> Iterator[Row]:
    for sessions, row in throughput["by_sessions"].items():
        text = f"SDK {row['sdk_tps']:.1f}"
        if "aicli_tps" in row:
            text = (
                f"aicli {row['aicli_tps']:.1f} (server CPU "
                f"{row['aicli_server_cpu_ms_per_task']:.1f} ms/task), {text} "
                f"({row['ratio_aicli_over_sdk']:.2f}×)"
            )
        noun = "session" if sessions == "1" else "sessions"
        yield "throughput", f"{sessions} {noun}, tasks/s", text


def _read_rows(read: dict[str, Any]) -> Iterator[Row]:
    sides = {"aicli": "aicli", "ref": "--ref", "bare": "bare Falcon", "bare_media": "media"}
    sides["bare_wrapped"] = "wrapped"
    for name in ("task", "session_list", "list", "healthz"):
        if not (entry := read.get(name)):
            continue
        shown = [
            f"{label} {entry[side]['rps']:.0f} ({entry[side]['p99_ms']:.1f})"
            + (f" [{entry[side]['errors']:g} non-2xx]" if entry[side].get("errors") else "")
            for side, label in sides.items()
            if side in entry
        ]
        yield (
            f"read path ({entry['aicli']['tool']})",
            f"GET {entry['path']} req/s (p99 ms)",
            f"{', '.join(shown)} → {entry['ratio_aicli_over_bare']:.2f}×",
        )
    if big := read.get("big_table"):
        section = f"{big['tasks']:,} tasks"
        yield section, "bulk insert s (setup)", f"{big['fill_s']:.0f}"
        for name, query in big["queries"].items():
            yield section, f"{name}: p50 / p99 ms", _pcts(query, ("p50_ms", "p99_ms"))


def _fanout_rows(fan: dict[str, Any]) -> Iterator[Row]:
    section = "fan-out"
    yield (
        section,
        f"{fan['streams']} SSE streams on {fan['sessions']} tasks: opened / at once / 503 / failed",
        f"{fan['streams_opened']} / {fan['streams_peak_open']} / "
        f"{fan['streams_refused_503']} / {fan['streams_failed'] + fan['streams_other_status']}",
    )
    events = "/".join(str(n) for n in fan["events_per_task"])
    yield section, f"streams that saw every event ({events} a task)", f"{fan['streams_complete']}"
    yield (
        section,
        f"{fan['long_polls']} long-polls: answered / 503 / failed",
        f"{fan['long_polls_answered']} / {fan['long_polls_refused_503']} / "
        f"{fan['long_polls_failed']}",
    )
    yield (
        section,
        "all open after s; stream head p50 / p99 ms",
        f"{fan['open_s']:.2f}; {_pcts(fan['stream_head'], ('p50_ms', 'p99_ms'))}",
    )
    yield (
        section,
        "GET /tasks/{id} p50 / p99 ms, no watchers",
        _pcts(fan["baseline_reads"], ("p50_ms", "p99_ms")),
    )
    loaded = fan["reads_with_watchers"]
    yield (
        section,
        "GET /tasks/{id} p50 / p99 ms, watchers open",
        f"{_pcts(loaded, ('p50_ms', 'p99_ms'))} ({loaded['n']} reads in {fan['reads_s']:.1f} s, "
        f"{fan['streams_open_through_reads']} streams open throughout)",
    )
    yield section, "server threads, watchers open", f"{fan['server_threads_while_open']}"
    if fan["errors_seen"]:
        yield section, "errors seen", "; ".join(fan["errors_seen"])


def _memory_rows(memory: dict[str, Any]) -> Iterator[Row]:
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


def _tree_text(live: dict[str, Any]) -> str:
    """A live session's tree: RSS (USS), the CLI's part and the wrappers'."""
    if "rss_mb" not in live:
        return "no live session found"
    return (
        f"{live['rss_mb']:.0f} ({live['uss_mb']:.0f}): CLI {live['cli_rss_mb']:.0f} "
        f"({live['cli_uss_mb']:.0f}), wrappers {live['wrapper_rss_mb']:.0f} "
        f"({live['wrapper_uss_mb']:.0f})"
    )


def _processes_text(live: dict[str, Any]) -> str:
    if "processes" not in live:
        return "–"
    names = ", ".join(f"{name} {count}" for name, count in live["processes_by_name"].items())
    return f"{live['processes']} ({names})"


def _sandbox_rows(box: dict[str, Any]) -> Iterator[Row]:
    section = "sandbox on / off"
    on, off = box["on"], box["off"]
    if not box["sandbox_in_effect"]:
        yield (
            section,
            "WARNING",
            "the sandbox was not in effect: the `on` server's sessions ran bare",
        )
    yield (
        section,
        f"cold start (POST /sessions → first task done) p50 / p90 ms, {box['cold_starts']} each",
        f"on {_pcts(on['cold_start'], ('p50_ms', 'p90_ms'))}, "
        f"off {_pcts(off['cold_start'], ('p50_ms', 'p90_ms'))} → "
        f"{box['ratio_cold_start_p50']:.2f}× "
        f"({on['cold_start']['p50_ms'] - off['cold_start']['p50_ms']:+.0f} ms) at p50",
    )
    yield (
        section,
        "close (DELETE → its processes gone) p50 / p90 ms",
        f"on {_pcts(on['close'], ('p50_ms', 'p90_ms'))}, "
        f"off {_pcts(off['close'], ('p50_ms', 'p90_ms'))}",
    )
    yield (
        section,
        f"per task, warm session, p50 / p90 / p99 ms, {box['tasks']} each",
        f"on {_pcts(on['task'])}, off {_pcts(off['task'])} → {box['ratio_task_p50']:.2f}× at p50",
    )
    for side in ("on", "off"):
        live = box[side]["live"]
        yield (
            section,
            f"{side}: RSS (USS) per live session tree MB, {live['live_sessions']} live",
            _tree_text(live),
        )
        yield section, f"{side}: processes per live session", _processes_text(live)
        if live["other_server_children"]:
            yield (
                section,
                f"{side}: server children outside sessions",
                ", ".join(live["other_server_children"]),
            )


def _api_proxy_rows(proxy: dict[str, Any]) -> Iterator[Row]:
    keys = ("p50_ms", "p99_ms")
    yield "API proxy", "Messages request direct p50 / p99 ms", _pcts(proxy["direct"], keys)
    yield "API proxy", "through the proxy p50 / p99 ms", _pcts(proxy["proxied"], keys)
    added = f"{proxy['added_p50_ms']:.2f} / {proxy['added_p99_ms']:.2f}"
    yield "API proxy", "added p50 / p99 ms", added
    yield "API proxy", "proxy CPU per request ms", f"{proxy['proxy_cpu_ms_per_request']:.2f}"


def _rows(results: dict[str, Any]) -> Iterator[Row]:
    if fake := results.get("fake"):
        yield from _fake_rows(fake)
    if latency := results.get("latency"):
        yield from _latency_rows(latency)
    if longpoll := results.get("longpoll"):
        keys = ("p50_ms", "p99_ms", "max_ms")
        yield "long-poll", "completed_at → response p50 / p99 / max ms", _pcts(longpoll, keys)
    if throughput := results.get("throughput"):
        yield from _throughput_rows(throughput)
    if read := results.get("read"):
        yield from _read_rows(read)
    if trip := results.get("trip"):
        yield from trip_rows(trip)
    if fan := results.get("fanout"):
        yield from _fanout_rows(fan)
    if memory := results.get("memory"):
        yield from _memory_rows(memory)
    if box := results.get("sandbox"):
        yield from _sandbox_rows(box)
    if proxy := results.get("api_proxy"):
        yield from _api_proxy_rows(proxy)
    for section in ("latency", "throughput"):
        if reason := lookup(results, section, "aicli_skipped"):
            yield section, "aicli side skipped", reason
    for section, reason in results.get("skipped", {}).items():
        yield section, "skipped", reason
    for section, error in results.get("failed", {}).items():
        yield section, "FAILED", error


# -- output -----------------------------------------------------------------------------------


def _when(meta: dict[str, Any]) -> str:
    return datetime.fromisoformat(meta["started_at"]).strftime("%Y-%m-%d %H:%M UTC")


def _machine(meta: dict[str, Any]) -> str:
    ram = f"{meta['ram_bytes'] / 2**30:.1f} GiB RAM" if meta.get("ram_bytes") else "RAM unknown"
    return f"{meta['cores']} cores, {ram}"


def header(results: dict[str, Any]) -> list[str]:
    """When, on what, with which Claude Code, under what load, with which server settings."""
    meta = results["meta"]
    ref = f" Beside ours: --ref {meta['ref']}." if meta.get("ref") else ""
    return [
        f"Run {_when(meta)} ({meta['mode']}{'' if meta['mode'] == 'full' else ' run'}) "
        f"on {_machine(meta)}; {meta['claude_version']}; Python {meta['python']}.",
        f"1-minute load average {meta['load_average_at_start']:.1f} at the start, "
        f"{meta['load_average_at_end']:.1f} at the end.",
        f"Server settings: {meta['server_settings']}. Hot-path rows: the median of "
        f"{meta.get('runs', 1)} runs, each on fresh servers.{ref}",
    ]


def _markdown_table(header_cells: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header_cells) + " |", "|" + " --- |" * len(header_cells)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


GOAL_HEADER = ("measure", "goal", "measured", "verdict")


def _goal_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (check["measure"], check["goal"], check["measured"] or "–", VERDICTS[check["met"]])
        for check in results["goals"]
    ]


def markdown(results: dict[str, Any]) -> str:
    return "\n\n".join(
        [
            "# Benchmark results",
            " ".join(header(results))
            + " Real Claude Code CLI against the instant fake Anthropic API; see README.md "
            "for what each number means. The machine is shared: numbers taken while "
            "other work runs are noisy.",
            "## The hot path (issue 27), median of the runs",
            _markdown_table(hot_header(results), hot_rows(results)),
            "## Goals",
            _markdown_table(GOAL_HEADER, _goal_rows(results)),
            f"![Per-task latency and throughput]({PLOT})",
            "## Every number",
            _markdown_table(("benchmark", "measure", "value"), list(_rows(results))),
        ]
    )


def _print_columns(rows: list[tuple[str, ...]], columns: int) -> None:
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(columns - 1)]
    for row in rows:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def print_table(results: dict[str, Any]) -> None:
    for line in header(results):
        print(line)
    print()
    _print_columns(list(_rows(results)), 3)
    print()
    print("Goals")
    goals = _goal_rows(results)
    # The verdict first: it is what one looks for, and the measured text is long.
    rows = [(f"[{v}]", m, g, value) for m, g, value, v in goals]
    _print_columns([("verdict", *GOAL_HEADER[:3]), *rows], 4)
    if hot := hot_rows(results):
        print()
        print("The hot path (issue 27): median of the runs (each run's value in brackets)")
        header_cells = hot_header(results)
        _print_columns([header_cells, *hot], len(header_cells))


def write(results: dict[str, Any], out: Path, publish: Path | None) -> list[Path]:
    """latest.json and the plot under ``out``; with ``publish``, RESULTS.md and the plot too."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "latest.json"]
    written[0].write_text(json.dumps(results, indent=2) + "\n")
    plots = [out / PLOT]
    if publish is not None:
        (publish / "RESULTS.md").write_text(markdown(results) + "\n")
        written.append(publish / "RESULTS.md")
        plots.append(publish / PLOT)
    meta = results["meta"]
    title = (
        f"aicli vs the Claude Agent SDK: {_when(meta)}, {_machine(meta)}, "
        f"{meta['claude_version']} ({meta['mode']})"
    )
    plot(results, plots, title)
    return written + plots
