"""Prometheus instruments of the runtime; the HTTP layer adds its own to the same registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _StateCollector(Collector):
    """Reads task counts, live processes and pending approvals at scrape time, so they can
    never drift."""

    def __init__(
        self,
        task_counts: Callable[[], dict[str, int]],
        live_processes: Callable[[], int],
        pending_approvals: Callable[[], int],
    ) -> None:
        self._task_counts = task_counts
        self._live_processes = live_processes
        self._pending_approvals = pending_approvals

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._task_counts()
        tasks = GaugeMetricFamily("aicli_tasks", "Tasks by status.", labels=["status"])
        for status, count in sorted(counts.items()):
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily(
            "aicli_queue_depth", "Pending tasks over all sessions.", value=counts.get("pending", 0)
        )
        yield GaugeMetricFamily(
            "aicli_live_claude_processes",
            "Claude CLI processes alive now.",
            value=self._live_processes(),
        )
        yield GaugeMetricFamily(
            "aicli_approvals_pending",
            "Tool uses and questions waiting for a person now.",
            value=self._pending_approvals(),
        )


class Metrics:
    def __init__(
        self,
        task_counts: Callable[[], dict[str, int]],
        live_processes: Callable[[], int],
        pending_approvals: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        self.task_duration = Histogram(
            "aicli_task_duration_seconds",
            "Wall time of tasks from start to a terminal status.",
            ["status"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.cost = Counter(
            "aicli_cost_usd", "Cost reported by Claude over all tasks.", registry=self.registry
        )
        self.registry.register(_StateCollector(task_counts, live_processes, pending_approvals))
