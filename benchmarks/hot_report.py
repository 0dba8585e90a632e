"""The issue's hot-path table: each row against its anchor, median of the runs, beside --ref.

Each cell is the median over the runs of that run's own ratio (a row and its
anchor measured in the same minutes), with every run's value after it, so the
spread is in plain sight. With ``--ref``, the same rows measured in the same
runs on the other checkout's server stand beside ours: the "before and after,
side by side" table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HotRow:
    measure: str
    goal: str
    section: str
    ours: str  # the dotted key of ours in a run; ``ref`` swaps the side
    ref: str | None
    unit: str = "×"
    better_low: bool = True


def _read_row(measure: str, goal: str, name: str) -> HotRow:
    return HotRow(
        measure,
        goal,
        "read",
        f"{name}.ratio_aicli_over_bare",
        f"{name}.ratio_ref_over_bare",
        better_low=False,
    )


HOT_ROWS = (
    HotRow(
        "per-task p50, POST + `GET ?wait`, vs SDK",
        "≤ 1.10×",
        "latency",
        "ratio_aicli_over_sdk_p50",
        "ratio_ref_aicli_over_sdk_p50",
    ),
    HotRow(
        "per-task p50, `Prefer: wait`, vs SDK",
        "≤ 1.05×",
        "latency",
        "ratio_aicli_prefer_over_sdk_p50",
        "ratio_ref_aicli_prefer_over_sdk_p50",
    ),
    HotRow(
        "server CPU per task, POST + GET ?wait",
        "≤ 2 ms",
        "latency",
        "aicli_server_cpu_ms_per_task",
        "ref_aicli_server_cpu_ms_per_task",
        unit=" ms",
    ),
    _read_row("`GET /tasks/{id}` req/s vs bare Falcon (wrk, 16 connections)", "≥ 0.6×", "task"),
    _read_row(
        "`GET /tasks?session_id=…&limit=50` (60 tasks) vs bare Falcon", "≥ 0.6×", "session_list"
    ),
    _read_row("`/healthz` vs bare Falcon", "—", "healthz"),
    HotRow(
        "extra: per-task p50, POST + `GET ?wait`, sandbox on, vs SDK (unsandboxed)",
        "—",
        "latency",
        "ratio_aicli_sandboxed_over_sdk_p50",
        None,
    ),
    HotRow(
        "extra: server CPU per task, POST + GET ?wait, sandbox on",
        "—",
        "latency",
        "aicli_sandboxed_server_cpu_ms_per_task",
        None,
        unit=" ms",
    ),
    _read_row("extra: `GET /tasks?limit=50` vs bare Falcon", "—", "list"),
    HotRow(
        "extra: the anchor encoding the page per request (`resp.media`), session page",
        "—",
        "read",
        "session_list.ratio_bare_media_over_bare",
        None,
        better_low=False,
    ),
    HotRow(
        "extra: the anchor in aicli's Waitress wrapper vs plain Waitress, `/tasks/{id}`",
        "—",
        "read",
        "task.ratio_bare_wrapped_over_bare",
        None,
        better_low=False,
    ),
)


def _dig(value: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _cell(section: dict[str, Any], key: str | None, unit: str) -> str | None:
    """``1.21× (1.19, 1.21, 1.25)``: the median, then each run's own value."""
    if key is None:
        return None
    median = _dig(section, key)
    if median is None:
        return None
    runs = [run[key] for run in section.get("per_run", []) if key in run]
    digits = 1 if unit == " ms" else 2
    text = f"{median:.{digits}f}{unit}"
    if len(runs) > 1:
        text += " (" + ", ".join(f"{value:.{digits}f}" for value in runs) + ")"
    return text


def hot_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """(measure, goal, ours[, ref]) per row measured in this run."""
    with_ref = bool(results["meta"].get("ref"))
    rows = []
    for row in HOT_ROWS:
        section = results.get(row.section) or {}
        ours = _cell(section, row.ours, row.unit)
        if ours is None:
            continue
        cells = [row.measure, row.goal, ours]
        if with_ref:
            cells.append(_cell(section, row.ref, row.unit) or "–")
        rows.append(tuple(cells))
    return rows


def hot_header(results: dict[str, Any]) -> tuple[str, ...]:
    meta = results["meta"]
    ours = f"this checkout, median of {meta.get('runs', 1)} (each run)"
    if ref := meta.get("ref"):
        return ("measure", "goal", ours, f"--ref {ref}")
    return ("measure", "goal", ours)


def _count_text(counts: list[int]) -> str:
    return ", ".join(str(count) for count in counts)


def trip_rows(trip: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """The trip of one task, as counted in its own instrumented process (``trip.py``)."""
    yield from _trip_rows(trip, "one task's trip")
    if ref := trip.get("ref"):
        yield from _trip_rows(ref, "one task's trip (--ref)")


def _trip_rows(trip: dict[str, Any], section: str) -> Iterator[tuple[str, str, str]]:
    cold, warm = trip["cold"], trip["warm_counts"]
    hops = cold["hops_before_prompt"]
    yield (
        section,
        "warm: actor hops before the prompt (each task)",
        _count_text(warm["hops_before_prompt"]),
    )
    yield (
        section,
        "warm: durable commits (each task; all commits)",
        f"{_count_text(warm['durable_commits'])}; {_count_text(warm['commits'])}",
    )
    yield section, "warm: has_pending reads (each task)", _count_text(warm["has_pending"])
    yield section, "cold: actor hops before the prompt", str(hops["count"] if hops else "–")
    yield (
        section,
        "cold: has_pending reads (before the prompt; in all)",
        f"{cold['has_pending_before_prompt']}; {cold['has_pending']['count']}",
    )
    yield (
        section,
        "cold: durable commits (all commits)",
        f"{cold['durable_commits']} ({cold['commits']['count']})",
    )
    yield (
        section,
        "supervisor SQL statements (cold; warm each)",
        f"{cold['supervisor_sql']['count']}; {_count_text(warm['supervisor_sql'])}",
    )
    unwrapped = [name for name, count in trip["seams_wrapped"].items() if not count]
    if unwrapped:
        yield section, "seams not found (their counts are not measured)", ", ".join(unwrapped)
