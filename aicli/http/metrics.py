"""HTTP request metrics, added to the registry the runtime already fills.

Each worker thread tallies its own requests in plain counters, and a collector
sums the threads' tallies when ``/metrics`` is scraped. ``prometheus_client``'s
own counters and histograms take a lock per update (three per request here);
with 16 requests at once those locks cut a cached ``GET /tasks/{id}`` to
half its throughput. The exposition is the same: a counter by method, route
and status and the caller's role (admin, user, or none: not signed in or the
open service; never the principal, which would grow without bound), and a
histogram of durations by method and route.

One registry can only hold one collector per name, and an embedder may build
several apps on one runtime, so the collector is made once per registry.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import INF

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# prometheus_client's default buckets, as the histogram had before.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = (
    weakref.WeakKeyDictionary()
)


class _Tally:
    """One thread's requests of one (method, route, status): count, seconds, bucket counts."""

    __slots__ = ("buckets", "count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class HttpMetrics(Collector):
    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every thread's tallies, kept after the thread ends so no count is ever lost.
        self._threads: list[dict[tuple[str, str, int, str], _Tally]] = []

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> HttpMetrics:
        with _lock:
            metrics = _by_registry.get(registry)
            if metrics is None:
                metrics = _by_registry[registry] = cls()
                registry.register(metrics)
            return metrics

    def observe(
        self, method: str, route: str, status: int, seconds: float, role: str = "none"
    ) -> None:
        tallies = getattr(self._local, "tallies", None)
        if tallies is None:
            tallies = self._local.tallies = {}
            with self._lock:
                self._threads.append(tallies)
        method = method if method in KNOWN_METHODS else "other"
        tally = tallies.get((method, route, status, role))
        if tally is None:
            tally = tallies[(method, route, status, role)] = _Tally()
        tally.count += 1
        tally.seconds += seconds
        tally.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        counts: dict[tuple[str, str, str, str], int] = {}
        durations: dict[tuple[str, str], _Tally] = {}
        with self._lock:
            threads = list(self._threads)
        for tallies in threads:
            for (method, route, status, role), tally in list(tallies.items()):
                key = (method, route, str(status), role)
                counts[key] = counts.get(key, 0) + tally.count
                total = durations.setdefault((method, route), _Tally())
                total.count += tally.count
                total.seconds += tally.seconds
                total.buckets = [a + b for a, b in zip(total.buckets, tally.buckets, strict=True)]
        requests = CounterMetricFamily(
            "aicli_http_requests",
            "HTTP requests answered, by method, route template, status and the caller's role.",
            labels=["method", "route", "status", "role"],
        )
        for labels, count in sorted(counts.items()):
            requests.add_metric(list(labels), count)
        yield requests
        duration = HistogramMetricFamily(
            "aicli_http_request_duration_seconds",
            "Time to the response headers, by method and route template.",
            labels=["method", "route"],
        )
        for labels, total in sorted(durations.items()):
            running, buckets = 0, []
            for bound, count in zip([*BUCKETS, INF], total.buckets, strict=True):
                running += count
                buckets.append((_bound(bound), running))
            duration.add_metric(list(labels), buckets, total.seconds)
        yield duration


def _bound(bound: float) -> str:
    return "+Inf" if bound == INF else repr(bound)
