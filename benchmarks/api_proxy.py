"""What the credential-injecting API proxy adds to one Messages request, direct vs through it.

A sandboxed CLI reaches the API only through ``aicli.actors.api_proxy``, so
every model turn pays its hop. One request is what the CLI sends each turn:
a ~50 KB streamed ``POST /v1/messages`` with the CLI's headers, read to the
end of its SSE answer. Direct and proxied requests alternate against the same
fake, so load from elsewhere falls on both alike. The proxy runs in a process
of its own, as it will in ``aicli serve`` apart from the CLI; the client keeps
its connection to the proxy alive (as the CLI does), while the fake ends every
streamed answer by closing, so the direct client and the proxy alike connect
to it anew for each request.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import psutil

from aicli.actors.api_proxy import ApiProxy
from benchmarks.fake import REQUEST_BODY, FakeApi
from benchmarks.stats import summary

# The headers the pinned CLI sends with each turn (measured against the fake).
CLI_HEADERS = {
    "accept": "application/json",
    "content-type": "application/json",
    "user-agent": "claude-cli/2.1.330 (external, sdk-cli)",
    "x-claude-code-session-id": "75cef527-46a3-4cb2-b9cb-d8a535c5658f",
    "x-stainless-arch": "x64",
    "x-stainless-lang": "js",
    "x-stainless-os": "Linux",
    "x-stainless-package-version": "0.128.0",
    "x-stainless-retry-count": "0",
    "x-stainless-runtime": "node",
    "x-stainless-runtime-version": "v26.12.1",
    "x-stainless-timeout": "600",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "anthropic-dangerous-direct-browser-access": "true",
    "anthropic-version": "2023-06-01",
    "x-app": "cli",
    "connection": "keep-alive",
    "accept-encoding": "gzip, deflate, br, zstd",
}
WARMUP = 20


class _Client:
    """One keep-alive client, reconnecting whenever the server closed (as the CLI's agent does)."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = {**CLI_HEADERS, "x-api-key": key}

    def turn(self) -> float:
        started = time.perf_counter()
        self.conn.request("POST", "/v1/messages?beta=true", body=REQUEST_BODY, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200 or not body.rstrip().endswith(b'{"type": "message_stop"}'):
            raise RuntimeError(f"unexpected answer {response.status}: {body[-200:]!r}")
        return elapsed


def measure(fake: FakeApi, quick: bool) -> dict[str, Any]:
    count = 300 if quick else 1000
    key = fake.variables["ANTHROPIC_API_KEY"]
    proxy = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.api_proxy", fake.url, key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        started = json.loads(proxy.stdout.readline())
        direct = _Client(fake.url, key)
        proxied = _Client(started["url"], started["token"])
        samples: dict[str, list[float]] = {"direct": [], "proxied": []}
        for n in range(WARMUP + count):
            if n == WARMUP:
                cpu_before = _cpu_seconds(proxy.pid)
            # Alternate which goes first, so neither always follows the other.
            order = (("direct", direct), ("proxied", proxied))
            for name, client in order if n % 2 else reversed(order):
                elapsed = client.turn()
                if n >= WARMUP:
                    samples[name].append(elapsed)
        cpu = _cpu_seconds(proxy.pid) - cpu_before
    finally:
        assert proxy.stdin is not None
        proxy.stdin.close()
        proxy.wait(timeout=10)
    results: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    results["added_p50_ms"] = results["proxied"]["p50_ms"] - results["direct"]["p50_ms"]
    results["added_p99_ms"] = results["proxied"]["p99_ms"] - results["direct"]["p99_ms"]
    results["proxy_cpu_ms_per_request"] = cpu / count * 1000
    return results


def _cpu_seconds(pid: int) -> float:
    """The proxy process's user + system time (10 ms ticks: read over many requests)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> None:
    """Proxy to the upstream and key in argv until stdin closes; print the URL and a token."""
    proxy = ApiProxy(sys.argv[1], {"x-api-key": sys.argv[2]})
    proxy.start()
    print(json.dumps({"url": proxy.url, "token": proxy.grant()}), flush=True)
    sys.stdin.read()
    proxy.stop()


if __name__ == "__main__":
    main()
