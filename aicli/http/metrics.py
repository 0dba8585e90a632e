"""HTTP request metrics, added to the registry the runtime already fills.

One registry can only hold one collector per name, and an embedder may build
several apps on one runtime, so the collectors are made once per registry.
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import CollectorRegistry, Counter, Histogram

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = (
    weakref.WeakKeyDictionary()
)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "aicli_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self._duration = Histogram(
            "aicli_http_request_duration_seconds",
            "Time to the response headers, by method and route template.",
            ("method", "route"),
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> HttpMetrics:
        with _lock:
            metrics = _by_registry.get(registry)
            if metrics is None:
                metrics = _by_registry[registry] = cls(registry)
            return metrics

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "other"
        self._requests.labels(method, route, str(status)).inc()
        self._duration.labels(method, route).observe(seconds)
