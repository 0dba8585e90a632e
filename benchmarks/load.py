"""Requests per second against one URL from many keep-alive connections.

``wrk`` when it is installed (``apt-get install wrk``): on a 2-core box a
Python client saturates long before the server does, and would measure itself.
The Python fallback is kept so that the benchmark runs anywhere, and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import Any

import requests

from benchmarks.stats import summary

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _wrk(url: str, seconds: float, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--latency",
            "--timeout",
            "10s",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    out = done.stdout
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {
        "tool": "wrk",
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _seconds(percentiles["50"]) * 1000,
        "p99_ms": _seconds(percentiles["99"]) * 1000,
        "errors": int(bad.group(1)) if bad else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def _python(url: str, seconds: float, connections: int) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    deadline = time.perf_counter() + seconds

    def hammer(slot: int) -> None:
        with requests.Session() as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if http.get(url, timeout=10).status_code != 200:
                    errors[slot] += 1
                latencies[slot].append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [sample for slot in latencies for sample in slot]
    stats = summary(flat)
    return {
        "tool": "python",
        "rps": len(flat) / elapsed,
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "errors": sum(errors),
    }


def hammer(url: str, seconds: float, connections: int = 16) -> dict[str, Any]:
    """rps, p50/p99 and non-200 count of GETs to ``url`` for ``seconds``."""
    if shutil.which("wrk"):
        return _wrk(url, seconds, connections)
    return _python(url, seconds, connections)
