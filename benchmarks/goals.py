"""The performance issues' goals, row for row: each with its measured value and a verdict.

A goal's check reads the run's results and says what it measured (as text) and
whether that meets the goal; a benchmark that did not run is "not measured".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERDICTS = {True: "met", False: "MISSED", None: "not measured"}


def lookup(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


# What a goal's check gives: the measured value as text (None: not measured) and
# the verdict (True met, False missed, None not measured or not comparable).
Check = tuple[str | None, bool | None]


@dataclass(frozen=True)
class Goal:
    measure: str
    target: str
    check: Callable[[dict[str, Any]], Check]


def _latency_ratio(name: str, limit: float) -> Callable[[dict[str, Any]], Check]:
    def check(results: dict[str, Any]) -> Check:
        latency = results.get("latency") or {}
        ratio = latency.get(f"ratio_{name}_over_sdk_p50")
        if ratio is None:
            return None, None
        text = f"{ratio:.2f}× ({latency[name]['p50_ms']:.1f} vs {latency['sdk']['p50_ms']:.1f} ms)"
        if name == "aicli_prefer":
            answered = latency["prefer_answered_by_post"]
            text += f"; {answered:g} of {latency['tasks']} answered by the POST"
        return text, ratio <= limit

    return check


def _throughput(results: dict[str, Any]) -> Check:
    row = lookup(results, "throughput", "by_sessions", "16")
    if not row or "ratio_aicli_over_sdk" not in row:
        return None, None
    ratio = row["ratio_aicli_over_sdk"]
    return f"{ratio:.2f}× ({row['aicli_tps']:.1f} vs {row['sdk_tps']:.1f} tasks/s)", ratio >= 0.95


def _cpu(results: dict[str, Any]) -> Check:
    """The POST + GET ?wait server's CPU over the latency rounds per task; the others beside it."""
    latency = results.get("latency") or {}
    ours = latency.get("aicli_server_cpu_ms_per_task")
    if ours is None:
        return None, None
    parts = [
        f"{label} {latency[key]:.1f}"
        for name, label in (("aicli_prefer", "Prefer"), ("aicli_sandboxed", "sandbox on"))
        if (key := f"{name}_server_cpu_ms_per_task") in latency
    ]
    if (under_load := lookup(results, "throughput", "by_sessions", "16")) and (
        "aicli_server_cpu_ms_per_task" in under_load
    ):
        parts.append(f"16 sessions at once {under_load['aicli_server_cpu_ms_per_task']:.1f}")
    return f"{ours:.1f} ms ({', '.join(parts)})", ours <= 2.0


def _streams(results: dict[str, Any]) -> Check:
    fan = results.get("fanout")
    if not fan:
        return None, None
    refused = fan["streams_refused_503"] + fan["streams_failed"] + fan["streams_other_status"]
    poll_refused = fan["long_polls_refused_503"] + fan["long_polls_failed"]
    text = (
        f"{fan['streams_peak_open']} open at once, {refused} refused, "
        f"{fan['streams_complete']} saw every event; long-polls: "
        f"{fan['long_polls_answered']} of {fan['long_polls']} answered, {poll_refused} refused"
    )
    met = (
        fan["streams_peak_open"] >= fan["streams"]
        and fan["streams_complete"] >= fan["streams"]
        and refused == 0
        and fan["long_polls_answered"] >= fan["long_polls"]
    )
    return text, met


def _reads_under_streams(results: dict[str, Any]) -> Check:
    """Met only if the streams were all open while the reads ran; a slow p99 is a miss anyway."""
    fan = results.get("fanout")
    if not fan:
        return None, None
    p99 = fan["reads_with_watchers"]["p99_ms"]
    open_through = fan["streams_open_through_reads"]
    text = (
        f"{p99:.1f} ms (p50 {fan['reads_with_watchers']['p50_ms']:.1f}; "
        f"{open_through} streams open throughout; no watchers: "
        f"p99 {fan['baseline_reads']['p99_ms']:.1f})"
    )
    if p99 >= 50:
        return text, False
    return text, True if open_through >= fan["streams"] else None


def _read_ratio(name: str) -> Callable[[dict[str, Any]], Check]:
    def check(results: dict[str, Any]) -> Check:
        entry = lookup(results, "read", name)
        if not entry:
            return None, None
        ratio = entry["ratio_aicli_over_bare"]
        text = (
            f"{ratio:.2f}× ({entry['aicli']['rps']:.0f} vs {entry['bare']['rps']:.0f} req/s, "
            f"{entry['aicli']['tool']})"
        )
        return text, ratio >= 0.6

    return check


def _memory(results: dict[str, Any]) -> Check:
    memory = results.get("memory")
    if not memory:
        return None, None
    rss = memory["aicli_rss_with_sessions_mb"]
    text = (
        f"{rss:.0f} MB ({memory['aicli_rss_idle_mb']:.0f} MB idle, {memory['sessions']} sessions)"
    )
    return text, rss < 100 if memory["sessions"] >= 1000 else None


def _api_proxy(results: dict[str, Any]) -> Check:
    added = lookup(results, "api_proxy", "added_p50_ms")
    if added is None:
        return None, None
    return f"{added:.2f} ms", added < 1.0


def _sandbox(results: dict[str, Any]) -> Check:
    """Met if the sandbox's sessions answer within noise of unsandboxed ones (``sandbox``)."""
    box = results.get("sandbox")
    if not box:
        return None, None
    ratio = box["ratio_task_p50"]
    text = (
        f"{ratio:.2f}× ({box['on']['task']['p50_ms']:.1f} vs {box['off']['task']['p50_ms']:.1f} ms)"
    )
    if not box["sandbox_in_effect"]:
        return f"{text}; the sandbox was not in effect", None
    return text, ratio <= 1.10


GOALS = (
    Goal("per-task p50, POST + `GET ?wait`", "≤ 1.10× SDK", _latency_ratio("aicli", 1.10)),
    Goal(
        "per-task p50, POST with `Prefer: wait`",
        "≤ 1.05× SDK",
        _latency_ratio("aicli_prefer", 1.05),
    ),
    Goal("throughput, 16 sessions at once", "≥ 0.95× 16 SDK clients", _throughput),
    Goal("server CPU per task, POST + GET ?wait (server process, user+sys)", "≤ 2 ms", _cpu),
    Goal(
        "open SSE streams at once, all receiving every event",
        "500, none refused, with 100 long-polls besides",
        _streams,
    ),
    Goal("`GET /tasks/{id}` p99 while those 500 streams are open", "< 50 ms", _reads_under_streams),
    Goal("`GET /tasks/{id}` req/s", "≥ 0.6× bare Falcon on Waitress", _read_ratio("task")),
    Goal(
        "`GET /tasks?session_id=…&limit=50` req/s (60 tasks in the session)",
        "≥ 0.6× bare Falcon on Waitress",
        _read_ratio("session_list"),
    ),
    Goal("aicli RSS with 1,000 idle sessions", "< 100 MB", _memory),
    Goal("API proxy: added p50 per streamed Messages request", "< 1 ms", _api_proxy),
    Goal("per-task p50, sandbox on / off", "≤ 1.10× (within noise)", _sandbox),
)


def goal_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for goal in GOALS:
        measured, met = goal.check(results)
        checks.append(
            {"measure": goal.measure, "goal": goal.target, "measured": measured, "met": met}
        )
    return checks
