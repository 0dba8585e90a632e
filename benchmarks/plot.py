"""The plot: per-task latency as a CDF beside throughput against sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

# Plain millisecond ticks on the log axis (matplotlib would write 3×10¹).
LOG_TICKS_MS = (10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000)

PLOT_LABELS = {
    "aicli": "aicli: POST + GET ?wait",
    "aicli_prefer": "aicli: POST, Prefer: wait",
    "sdk": "SDK client",
    "spawn": "claude -p per task",
}


def _not_measured(axes: Any) -> None:
    axes.text(0.5, 0.5, "not measured in this run", ha="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def _latency_panel(axes: Any, latency: dict[str, Any] | None) -> None:
    """CDF on a log axis: spawn-per-task is an order of magnitude off the rest."""
    axes.set_title("Per-task latency, one warm session")
    if not latency:
        _not_measured(axes)
        return
    everything: list[float] = []
    for name, label in PLOT_LABELS.items():
        if name not in latency:
            continue
        ordered = sorted(s * 1000 for s in latency[name]["samples_s"])
        everything += ordered
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.step(
            ordered,
            fractions,
            where="post",
            label=f"{label} (p50 {latency[name]['p50_ms']:.1f} ms)",
        )
    axes.set_xscale("log")
    low, high = min(everything), max(everything)
    axes.xaxis.set_major_locator(
        FixedLocator([t for t in LOG_TICKS_MS if low / 2 <= t <= high * 2])
    )
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_minor_locator(NullLocator())
    runs = latency.get("runs", 1)
    per_run = f"{latency['tasks']} tasks each" + (f" in each of {runs} runs" if runs > 1 else "")
    axes.set_xlabel(f"ms (log scale), {per_run}, interleaved")
    axes.set_ylabel("fraction of tasks")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(True, which="both", alpha=0.3)


def _throughput_panel(axes: Any, throughput: dict[str, Any] | None) -> None:
    """Best round as a line, every round as a dot: the spread is the machine's noise."""
    axes.set_title("Throughput, N sessions at once")
    if not throughput:
        _not_measured(axes)
        return
    rows = throughput["by_sessions"]
    sessions = [int(n) for n in rows]
    for side, label, marker in (("aicli", "aicli", "o"), ("sdk", "N SDK clients", "s")):
        if not all(f"{side}_tps" in row for row in rows.values()):
            continue
        (line,) = axes.plot(
            sessions, [row[f"{side}_tps"] for row in rows.values()], marker=marker, label=label
        )
        for n, row in zip(sessions, rows.values(), strict=True):
            axes.scatter(
                [n] * len(row[f"{side}_rounds"]),
                row[f"{side}_rounds"],
                s=12,
                color=line.get_color(),
                alpha=0.35,
            )
    for n, row in zip(sessions, rows.values(), strict=True):
        if "ratio_aicli_over_sdk" in row:
            axes.annotate(
                f"{row['ratio_aicli_over_sdk']:.2f}×",
                (n, row["aicli_tps"]),
                textcoords="offset points",
                xytext=(7, -13),
                ha="left",
                fontsize="small",
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks(sessions, [str(n) for n in sessions])
    axes.set_ylim(bottom=0)
    axes.set_xlabel("sessions")
    axes.set_ylabel("tasks/s (best round; dots: every round)")
    axes.legend(loc="lower left", fontsize="small")
    axes.grid(True, alpha=0.3)


def plot(results: dict[str, Any], paths: list[Path], title: str) -> None:
    """Per-task latency (left) and throughput (right), saved to every one of ``paths``."""
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.8))
    _latency_panel(latency, results.get("latency"))
    _throughput_panel(throughput, results.get("throughput"))
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=110)
    plt.close(figure)
