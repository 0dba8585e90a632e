"""The fake Anthropic API in a process of its own, plus a measure of its own floor.

In the benchmark's process the fake would share a GIL with whatever drives the
load (the SDK's event loop, the HTTP clients) and tax each approach differently;
in its own process it costs every approach the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from aicli.testing.fake_anthropic import FakeAnthropic, RecordedRequest
from benchmarks.stats import summary

# What a Claude Code request weighs (its system prompt and tool schemas): ~50 KB.
REQUEST_BODY = json.dumps(
    {
        "model": "claude-fake",
        "stream": True,
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "x" * 45_000}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "[[say: ok]]"}],
    }
).encode()


class _Quiet(FakeAnthropic):
    """Keeps no request log (a run sends thousands of ~50 KB requests) and a deeper backlog.

    ``ThreadingHTTPServer`` listens with a backlog of 5: 16 CLIs connecting at
    once would see resets and retry with backoff, and the fake would throttle
    the throughput run instead of answering instantly.
    """

    def __init__(self) -> None:
        super().__init__()
        self._server.socket.listen(128)

    def _record(self, request: RecordedRequest) -> None:
        pass


class FakeApi:
    """``with FakeApi() as fake:`` runs the fake until the block ends."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.variables: dict[str, str] = {}
        self._scratch = tempfile.TemporaryDirectory(prefix="aicli-bench-")

    def __enter__(self) -> FakeApi:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fake"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("The fake Anthropic API did not start.")
        self.variables = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._scratch.cleanup()

    @property
    def url(self) -> str:
        return self.variables["ANTHROPIC_BASE_URL"]

    def new_home(self) -> str:
        """A fresh HOME, so no CLI reads the user's settings or another run's sessions."""
        return tempfile.mkdtemp(prefix="home-", dir=self._scratch.name)

    def new_workdir(self) -> str:
        return tempfile.mkdtemp(prefix="wd-", dir=self._scratch.name)

    def cli_env(self, home: str) -> dict[str, str]:
        """The environment for a Claude CLI (or aicli) talking to the fake."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AICLI_") and key not in ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")
        }
        return {**env, **self.variables, "HOME": home}


def _post_message(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/v1/messages", data=REQUEST_BODY, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def measure_floor(fake: FakeApi, quick: bool) -> dict[str, Any]:
    """How fast the fake answers one Claude-sized request alone, and how many it serves at once.

    Every task costs one such request, so a fake slower than aicli would hide aicli.
    """
    count = 50 if quick else 200
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        _post_message(fake.url)
        samples.append(time.perf_counter() - started)
    done = [0] * 16
    errors = [0] * 16
    deadline = time.perf_counter() + (1.5 if quick else 3.0)

    def hammer(slot: int) -> None:
        while time.perf_counter() < deadline:
            try:
                _post_message(fake.url)
                done[slot] += 1
            except OSError:
                errors[slot] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(len(done))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "sequential": summary(samples),
        "concurrent_16_rps": sum(done) / (time.perf_counter() - started),
        "concurrent_16_errors": sum(errors),
    }


def main() -> None:
    """Serve until stdin closes, so the fake dies with the benchmark whatever happens."""
    with _Quiet() as fake:
        print(json.dumps(fake.env()), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
