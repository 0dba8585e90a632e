"""Several ``aicli serve`` nodes on one PostgreSQL database, for tests of a cluster.

``Cluster(root, database_url, env).start(3, relayed=[2])`` starts three nodes at
once, each a subprocess with a port, a ``--node-url``, a ``CLAUDE_CONFIG_DIR``
and a ``HOME`` of its own (as if on a machine of its own) and ``--lease-ttl 3``;
the third one's database connections run through an
``aicli.testing.relay.Relay`` that the test can pause, cut or take down. The
fixtures that give each test a fresh schema and the real CLI against the fake
API are in ``tests/test_multinode.py``.

Each node runs in a PID namespace of its own (``unshare --pid --fork --mount-proc``),
as on a host of its own: it cannot see or kill another node's processes. The
namespace's init (the child ``unshare`` forked) is a shell that starts the server
and reaps what is orphaned to it, as a host's init does (the server would leave
zombies: it waits only for its own children). ``NodeProcess.kill()``, how a
machine or a container dies, is a SIGKILL of that init, which the kernel turns
into a SIGKILL of everything in the namespace: the server, the Claude CLIs in
their sessions, their Bash tools in theirs, the watchdog. ``freeze()`` and
``thaw()`` stop and continue the server process alone, ``terminate()`` sends it
SIGTERM.

Also here: ``NodeClient``, a light HTTP client (one ``requests`` session per
thread; no OpenAPI check, so that hundreds of calls stay cheap), an SSE
follower, what the fake API saw, and small statistics.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
import requests

from aicli.actors import process_tree
from aicli.runtime import owner_prefix
from aicli.testing.fake_anthropic import FakeAnthropic, RecordedRequest
from aicli.testing.relay import Relay
from aicli.testing.waiting import wait_for
from tests.http_server import SseReader
from tests.serve_process import AICLI, free_port

T = TypeVar("T")

LEASE_TTL = 3.0
# The init of a node's PID namespace: starts the server, reaps orphans, ends with it.
INIT = '"$@" & wait $!'
TERMINAL = ("completed", "failed", "cancelled")


# Nodes


class NodeProcess:
    """One ``aicli serve`` in a process group of its own; ``launch`` starts it, ``wait_ready``
    waits until it serves and holds a lease."""

    def __init__(
        self,
        name: str,
        directory: Path,
        database_url: str,
        env: dict[str, str],
        args: Iterable[str] = (),
        relay: Relay | None = None,
    ) -> None:
        self.name = name
        self.directory = directory
        self.relay = relay
        self.database_url = relay.url_for(database_url) if relay else database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "serve.log"
        self.config_dir = directory / "claude-config"
        home = directory / "home"
        for path in (self.config_dir, home):
            path.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **env, "CLAUDE_CONFIG_DIR": str(self.config_dir)}
        self.env["HOME"] = str(home)
        self.env["AICLI_STATE_DIR"] = str(directory / "state")  # each node a host of its own
        self.args = list(args)
        self.node_ids: list[str] = []  # every id it has held, oldest first (it rejoins as new)
        self.popen: subprocess.Popen[bytes] | None = None  # ``unshare``, the server's parent
        self._init_pid: int | None = None
        self._server_pid: int | None = None
        self.client = NodeClient(self.url)
        self._log: Any = None

    def __repr__(self) -> str:
        return f"<node {self.name} {self.url} {self.node_id}>"

    @property
    def command(self) -> list[str]:
        return [
            AICLI,
            "serve",
            "--port",
            str(self.port),
            "--node-url",
            self.url,
            "--database-url",
            self.database_url,
            *self.args,
        ]

    def launch(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", INIT, "init", *self.command],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, as a service manager starts it
        )
        self._init_pid = self._server_pid = None

    @property
    def init_pid(self) -> int:
        """The namespace's init, outside it (inside, it is 1)."""
        if self._init_pid is None:
            self._init_pid = self._child_of(self._unshare_pid)
        return self._init_pid

    @property
    def pid(self) -> int:
        """The server's pid, outside its namespace (inside, it is 2)."""
        if self._server_pid is None:
            self._server_pid = self._child_of(self.init_pid)
        return self._server_pid

    @property
    def _unshare_pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def _child_of(self, parent: int) -> int:
        def forked() -> int | None:
            try:
                children = psutil.Process(parent).children()
            except psutil.NoSuchProcess:
                return None
            return children[0].pid if children else None

        return wait_for(forked, timeout=10, what=f"node {self.name} to start")

    def freeze(self) -> None:
        """SIGSTOP for the server process alone (not its CLIs, tools or watchdog)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def node_id(self) -> str | None:
        """The id of the lease it held when last asked."""
        return self.node_ids[-1] if self.node_ids else None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _check_running(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(
                f"node {self.name} exited early ({self.popen.returncode}):\n{self.log_tail()}"
            )

    def ready(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The ``/readyz`` body when it answers 200 (and note the node id); else None."""
        try:
            response = requests.get(f"{self.url}/readyz", timeout=timeout)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        node_id = body.get("node")
        if node_id and node_id != self.node_id:
            self.node_ids.append(node_id)
        return body

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until it answers ready with a lease; its node id."""

        def ready_now() -> str | None:
            self._check_running()
            body = self.ready(timeout=1.0)
            return body.get("node") if body else None

        return wait_for(ready_now, timeout=timeout, what=f"node {self.name} to be ready")

    def wait_rejoined(self, timeout: float, old_ids: Iterable[str]) -> str:
        """Wait until it is ready again under an id it did not have before."""
        old = set(old_ids)

        def rejoined() -> str | None:
            self._check_running()
            body = self.ready(timeout=1.0)
            node_id = body.get("node") if body else None
            return node_id if node_id and node_id not in old else None

        return wait_for(rejoined, timeout=timeout, what=f"node {self.name} to join again")

    def processes(self) -> list[psutil.Process]:
        """Everything the node started and that still runs: the Claude CLIs and their tools,
        found as descendants and by the mark of each id the node held (tools that detached).
        Not its watchdog, which lives as long as the server."""
        found: dict[int, psutil.Process] = {}
        prefix = owner_prefix(self.database_url)
        if self.alive:
            for child in process_tree.descendants(self.pid):
                if (process_tree.mark_of(child.pid) or "").startswith(prefix):
                    found[child.pid] = child
        for node_id in self.node_ids:
            for marked in process_tree.marked_processes(f"{prefix}{node_id}/", prefix=True):
                found.setdefault(marked.pid, marked)
        return [p for p in found.values() if _running(p)]

    def kill(self) -> float:
        """Die like a machine: SIGKILL for the init of its PID namespace, which takes
        everything in the namespace with it; returns the time (``time.time()``) it
        stopped, the moment of death for takeover measurements.

        The init dies only once it is scheduled, and the rest only as it exits: the
        server, its watchdog and the CLIs with their tools are stopped first (SIGSTOP),
        so that nothing writes another byte meanwhile.
        """
        assert self.popen is not None
        tree = {p.pid: p for p in self.processes()}
        with contextlib.suppress(psutil.NoSuchProcess):
            server = psutil.Process(self.pid)
            tree.update({p.pid: p for p in [server, *process_tree.descendants(server.pid)]})
        # The server first: it is what writes. It has died once its stop is sent, not
        # before: a commit it made while the signal was on its way was made alive.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)
        died_at = time.time()
        process_tree.signal_all(tree.values(), signal.SIGSTOP)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGKILL)
        self.popen.wait(10)  # ``unshare`` returns once its namespace is empty
        return died_at

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a clean stop; its exit status."""
        assert self.popen is not None
        os.kill(self.pid, signal.SIGTERM)
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """Kill it (if it still runs) and whatever it left, and close its log."""
        if self.popen is not None:
            if self.alive:
                self.kill()
            else:
                process_tree.kill_all(self.processes())
        if self._log is not None:
            self._log.close()
            self._log = None


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Cluster:
    """N nodes on one database; ``relayed`` names the nodes (by index) whose database
    connections run through a relay of their own (``True``: all of them)."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        env: dict[str, str],
        *,
        lease_ttl: float = LEASE_TTL,
        args: Iterable[str] = (),
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.env = env
        self.lease_ttl = lease_ttl
        self.args = ["--lease-ttl", str(lease_ttl), *args]
        self.nodes: list[NodeProcess] = []
        self.relays: list[Relay] = []

    def start(self, count: int, relayed: Iterable[int] | bool = ()) -> list[NodeProcess]:
        """Start ``count`` nodes at once and wait until each is ready."""
        indexes = set(range(count)) if relayed is True else set(relayed or ())
        target = urlsplit(self.database_url)
        new = []
        for index in range(len(self.nodes), len(self.nodes) + count):
            relay = None
            if index in indexes:
                relay = Relay(target.hostname or "127.0.0.1", target.port or 5432)
                self.relays.append(relay)
            directory = self.root / f"node{index}"
            directory.mkdir(parents=True, exist_ok=True)
            node = NodeProcess(
                f"n{index}", directory, self.database_url, self.env, self.args, relay
            )
            new.append(node)
        self.nodes.extend(new)
        for node in new:  # all at once: each takes about half a second to serve
            node.launch()
        deadline = time.monotonic() + 60
        for node in new:
            node.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        return new

    @property
    def live(self) -> list[NodeProcess]:
        return [node for node in self.nodes if node.alive]

    def node_with_id(self, node_id: str | None) -> NodeProcess | None:
        """The node that holds or held ``node_id`` (learnt from ``GET /nodes`` if need be)."""
        found = next((node for node in self.nodes if node_id in node.node_ids), None)
        if found is None and node_id is not None and self.live:
            self.learn_ids()
            found = next((node for node in self.nodes if node_id in node.node_ids), None)
        return found

    def learn_ids(self) -> None:
        """Note the ids ``GET /nodes`` lists, by URL: a node that lost its lease joined again
        under a new one."""
        by_url = {node.url: node for node in self.nodes}
        for listed in self.live[0].client.nodes():
            node = by_url.get(listed["url"])
            if node is not None and listed["id"] not in node.node_ids:
                node.node_ids.append(listed["id"])

    def listed_ids(self, via: NodeProcess | None = None) -> list[str]:
        """The node ids ``GET /nodes`` lists (asked of ``via``, or of the first live node)."""
        asked = via or self.live[0]
        return [node["id"] for node in asked.client.nodes()]

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.name} {node.url} ({node.log_path}) ---\n{node.log_tail()}"
            for node in self.nodes
        )

    def stop(self) -> None:
        errors = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # stop the rest regardless
                errors.append(exc)
        for relay in self.relays:
            relay.close()
        if errors:
            raise errors[0]


def poll(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """``wait_for`` for conditions that cost the cluster a request: checked every ``interval``
    (on two cores, a poll every 20 ms of a list would take a good part of one)."""
    return wait_for(condition, timeout, what, interval)


# HTTP


class NodeClient:
    """The API of one node, from any thread (a ``requests`` session per thread)."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.http.request(method, self.base_url + path, **kwargs)

    def get_json(self, path: str, **params: Any) -> Any:
        response = self.request("GET", path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def open_session(self, workdir: str, **fields: Any) -> dict[str, Any]:
        response = self.request("POST", "/sessions", json={"workdir": workdir, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def submit(
        self,
        session_id: str,
        command: str,
        *,
        key: str | None = None,
        wait: float | None = None,
        expect: Iterable[int] = (200, 202),
        **fields: Any,
    ) -> dict[str, Any]:
        """``POST /sessions/{id}/tasks`` (with an ``Idempotency-Key``, ``Prefer: wait``)."""
        headers = {}
        if key is not None:
            headers["Idempotency-Key"] = key
        if wait is not None:
            headers["Prefer"] = f"wait={wait:g}"
        response = self.request(
            "POST",
            f"/sessions/{session_id}/tasks",
            json={"command": command, **fields},
            headers=headers,
            timeout=self.timeout + (wait or 0),
        )
        assert response.status_code in tuple(expect), (response.status_code, response.text)
        body = response.json()
        body["_status_code"] = response.status_code
        return body

    def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        response = self.request(
            "GET", f"/tasks/{task_id}", params={"wait": wait}, timeout=self.timeout + wait
        )
        assert response.status_code == 200, response.text
        return response.json()

    def wait_terminal(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Long-poll until the task has ended; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            task = self.task(task_id, wait=max(0, min(30, round(left, 1))))
            if task["status"] in TERMINAL:
                return task
            if left <= 0:
                raise AssertionError(f"task {task_id} not ended after {timeout}s: {task}")

    def events(self, task_id: str) -> list[dict[str, Any]]:
        """The task's whole event log, page by page."""
        events: list[dict[str, Any]] = []
        while True:
            params = {"after": events[-1]["seq"] if events else 0, "limit": 1000}
            page = self.get_json(f"/tasks/{task_id}/events", **params)
            events.extend(page["data"])
            if not page.get("has_more"):
                return events

    def walk(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
            page = self.get_json(path, **query)
            items.extend(page["data"])
            if not page["has_more"]:
                return items
            cursor = page["next_cursor"]

    def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        return self.walk("/tasks", **filters)

    def sessions(self, **filters: Any) -> list[dict[str, Any]]:
        return self.walk("/sessions", **filters)

    def session(self, session_id: str) -> dict[str, Any]:
        return self.get_json(f"/sessions/{session_id}")

    def nodes(self) -> list[dict[str, Any]]:
        return self.get_json("/nodes")["data"]

    def follow(self, task_id: str, after: int | None = None) -> SseFollower:
        """An SSE stream of the task's events, open when this returns, read in a thread."""
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        response = requests.get(
            f"{self.base_url}/tasks/{task_id}/events", headers=headers, stream=True, timeout=90
        )
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return SseFollower(response)


class SseFollower:
    """Reads an SSE response in a thread: ``events`` as ``(time.time(), event)``, ``ended``."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="sse-follower", daemon=True)
        self._thread.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for _, event in self.received]

    def _read(self) -> None:
        reader = SseReader(self.response)
        try:
            while (event := reader.next_event()) is not None:
                self.received.append((time.time(), event))
        except Exception as exc:  # reported by wait_ended
            self.error = exc
        finally:
            self.ended.set()

    def wait_ended(self, timeout: float) -> list[dict[str, Any]]:
        assert self.ended.wait(timeout), f"the SSE stream did not end within {timeout}s"
        if self.error is not None and not isinstance(self.error, requests.ConnectionError):
            raise self.error
        return self.events

    def close(self) -> None:
        self.response.close()


# What the fake API saw


def _starts_a_turn(request: RecordedRequest) -> bool:
    return request.last_tool_result is None


def turn_starts(fake: FakeAnthropic, needle: str) -> list[RecordedRequest]:
    """The requests that started a turn for the prompt holding ``needle``: its prompt is the
    newest text and the request carries no tool result (the request after a tool call
    repeats the prompt, but is the same turn going on)."""
    return [
        request
        for request in fake.conversation_requests()
        if needle in request.prompt and _starts_a_turn(request)
    ]


def turn_start_counts(fake: FakeAnthropic, tag: str) -> Counter[str]:
    """How many turns the fake API saw start for each prompt, by the first match of the
    regular expression ``tag`` in the prompt (one pass over everything it received)."""
    pattern = re.compile(tag)
    counts: Counter[str] = Counter()
    for request in fake.conversation_requests():
        found = pattern.search(request.prompt)
        if found and _starts_a_turn(request):
            counts[found.group(0)] += 1
    return counts


# Times and numbers


def epoch(timestamp: str | None) -> float | None:
    """An RFC 3339 time of the API as seconds since the epoch (the clock of ``time.time``)."""
    return None if timestamp is None else datetime.fromisoformat(timestamp).timestamp()


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value at least ``fraction`` of them reach."""
    ordered = sorted(values)
    assert ordered, "no values"
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def brief(task: dict[str, Any]) -> str:
    """A task in one line, for assertion messages."""
    fields = ("id", "session_id", "command", "status", "started_at", "completed_at", "error")
    return json.dumps({name: task.get(name) for name in fields})


def status_events(events: list[dict[str, Any]]) -> list[str]:
    return [event["data"].get("status") for event in events if event["type"] == "status"]


def report(title: str, **values: Any) -> None:
    """One line for people running ``pytest -s``: what a test measured."""
    print(f"\n[multinode] {title}: {json.dumps(values, default=str)}", flush=True)
