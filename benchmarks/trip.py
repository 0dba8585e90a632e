"""One task's trip, counted: actor hops to its prompt, commits, ``has_pending``, supervisor SQL.

The issue's targets for the new house are counts, not times: a warm task takes
at most 2 actor hops before its prompt goes to the CLI and 3 durable commits in
all, a cold task (its session's first, whose CLI starts) reads ``has_pending``
once, and the supervisor does no I/O. They are counted from outside the
product, in a process of its own (``python -m benchmarks.trip``) that runs
aicli as ``aicli serve`` does (the runtime, its app, aicli's Waitress wrapper)
with these seams wrapped before it starts:

* every message an actor handles (``pykka.Actor._handle_receive``), on whose
  thread (pykka names an actor's thread after its class);
* every SQL statement and every ``COMMIT`` through Peewee (its ``Database``
  classes' ``execute_sql`` and ``commit``), on whose thread, and whether the
  commit waits for the disk (aicli's non-durable writes run between ``PRAGMA
  synchronous = NORMAL`` and ``= FULL`` on their thread);
* every ``has_pending`` and ``send_prompt`` of any aicli class that has one,
  wherever the refactor moves them (outermost calls only).

A task's window runs from just before its ``POST`` to its terminal ``GET
?wait`` plus a quiet moment for what is recorded after the answer; what other
threads do meanwhile (the node lease, say) is in the window too, so each count
comes with the list it counted, by thread. The sandbox is off: it changes none
of these counts, and costs a start-up the counts do not need.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the child runs in --ref's virtualenv too, which has no bench extra
    from benchmarks.fake import FakeApi
    from benchmarks.options import Options

HERE = Path(__file__).resolve().parent
WARM_TASKS = 5
SETTLE_S = 0.5
TERMINAL = ("completed", "failed", "cancelled")
_local = threading.local()
_log: list[tuple[float, str, str, str]] = []  # (when, kind, thread, detail)


def _note(kind: str, detail: str) -> None:
    _log.append((time.monotonic(), kind, threading.current_thread().name, detail))


def _outermost(
    kind: str, method: Callable[..., Any], note: Callable[..., str]
) -> Callable[..., Any]:
    """``method``, noting its outermost calls per thread (a delegating wrapper calls it too)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_local, kind, 0)
        if depth == 0:
            _note(kind, note(*args, **kwargs))
        setattr(_local, kind, depth + 1)
        try:
            return method(*args, **kwargs)
        finally:
            setattr(_local, kind, depth)

    return wrapper


def _message(actor: Any, message: Any) -> str:
    path = getattr(message, "attr_path", None)
    return ".".join(path) if path else type(message).__name__


def _sql(db: Any, sql: str, *args: Any, **kwargs: Any) -> str:
    text = " ".join(str(sql).split())
    upper = text.upper()
    if upper.startswith("PRAGMA SYNCHRONOUS"):
        _local.lazy = "NORMAL" in upper
    elif getattr(_local, "first", "") is None:
        _local.first = text[:40]  # what the transaction is about, shown with its commit
    return text[:90]


def _begin(db: Any, *args: Any, **kwargs: Any) -> str:
    _local.first = None  # Peewee begins on its cursor, not through execute_sql
    return ""


def _commit(db: Any, *args: Any, **kwargs: Any) -> str:
    kind = "lazy" if getattr(_local, "lazy", False) else "durable"
    return f"{kind}: {getattr(_local, 'first', None) or '?'}"


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def _wrap_named(classes: list[type], name: str, kind: str, note: Callable[..., str]) -> int:
    wrapped = 0
    for cls in classes:
        if name in vars(cls):
            setattr(cls, name, _outermost(kind, vars(cls)[name], note))
            wrapped += 1
    return wrapped


def _aicli_classes() -> list[type]:
    import aicli

    classes = []
    for module in pkgutil.walk_packages(aicli.__path__, "aicli."):
        if ".testing" in module.name or module.name.endswith("__main__"):
            continue
        try:
            loaded = importlib.import_module(module.name)
        except Exception:  # a module that needs what this machine lacks is not on the hot path
            continue
        classes += [
            value
            for value in vars(loaded).values()
            if isinstance(value, type) and value.__module__ == module.name
        ]
    return classes


def instrument() -> dict[str, int]:
    """Wrap the seams; how many methods each wrapped (0: the seam moved, count not measured)."""
    import peewee
    import pykka

    classes = _aicli_classes()
    databases = _subclasses(peewee.Database)  # aicli's own subclasses are imported now
    return {
        "actor messages": _wrap_named([pykka.Actor], "_handle_receive", "hop", _message),
        "sql": _wrap_named(databases, "execute_sql", "sql", _sql),
        "begin": _wrap_named(databases, "begin", "begin", _begin),
        "commit": _wrap_named(databases, "commit", "commit", _commit),
        "has_pending": _wrap_named(classes, "has_pending", "has_pending", lambda *a, **k: ""),
        "send_prompt": _wrap_named(classes, "send_prompt", "prompt", lambda *a, **k: ""),
    }


def _window(start: float, end: float) -> list[tuple[float, str, str, str]]:
    return [entry for entry in list(_log) if start <= entry[0] < end]


def _counted(entries: list[tuple[float, str, str, str]], kind: str) -> dict[str, Any]:
    chosen = [entry for entry in entries if entry[1] == kind]
    by = Counter(f"{thread.rsplit('-', 1)[0]}: {detail}" for _, _, thread, detail in chosen)
    return {"count": len(chosen), "what": dict(by)}


def _trip(entries: list[tuple[float, str, str, str]]) -> dict[str, Any]:
    prompts = [entry[0] for entry in entries if entry[1] == "prompt"]
    before = [entry for entry in entries if prompts and entry[0] < prompts[0]]
    commits = [entry for entry in entries if entry[1] == "commit"]
    durable = sum(1 for entry in commits if entry[3].startswith("durable"))
    supervisor = [e for e in entries if e[1] == "sql" and e[2].startswith("Supervisor")]
    return {
        "hops_before_prompt": _counted(before, "hop") if prompts else None,
        "hops_in_all": _counted(entries, "hop")["count"],
        "commits": _counted(entries, "commit"),
        "durable_commits": durable,
        "has_pending": _counted(entries, "has_pending"),
        "has_pending_before_prompt": (
            _counted(before, "has_pending")["count"] if prompts else None
        ),
        "supervisor_sql": {
            "count": len(supervisor),
            "what": dict(Counter(e[3] for e in supervisor)),
        },
        "sql_statements": _counted(entries, "sql")["count"],
    }


class _Json:
    """JSON over one kept-alive connection, with the standard library only (see above)."""

    def __init__(self, url: str) -> None:
        split = urlsplit(url)
        self.connection = HTTPConnection(split.hostname, split.port, timeout=60)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data else {}
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer


def _run_task(call: _Json, session_id: str, index: int) -> dict[str, Any]:
    started = time.monotonic()
    command = {"command": f"t{index} [[say: ok]]"}
    task_id = call("POST", f"/sessions/{session_id}/tasks", command)["id"]
    while call("GET", f"/tasks/{task_id}?wait=30")["status"] not in TERMINAL:
        pass
    time.sleep(SETTLE_S)
    return _trip(_window(started, time.monotonic()))


def child(scratch: str) -> dict[str, Any]:
    """In the trip's own process: instrument, serve, run a cold task and warm ones, count."""
    seams = instrument()
    from aicli.http import Server, create_app
    from aicli.runtime import Runtime

    runtime = Runtime.start(
        database_url=f"sqlite:///{Path(scratch) / 'trip.db'}",
        sandbox="off",
        state_dir=str(Path(scratch) / "state"),
    )
    server = Server(create_app(runtime), host="127.0.0.1", port=0, threads=runtime.settings.threads)
    serving = threading.Thread(target=server.run, name="bench-waitress", daemon=True)
    serving.start()
    try:
        call = _Json(server.url)
        workdir = tempfile.mkdtemp(dir=scratch)
        session_id = call("POST", "/sessions", {"workdir": workdir})["id"]
        cold = _run_task(call, session_id, 0)
        warm = [_run_task(call, session_id, i) for i in range(1, WARM_TASKS + 1)]
    finally:
        server.request_stop()
        serving.join(timeout=5)
        try:
            runtime.shutdown(grace=1)
        finally:
            runtime.stop()
            server.close()
    return {"seams_wrapped": seams, "cold": cold, "warm": warm}


def _counts(python: str, fake: FakeApi) -> dict[str, Any]:
    """One trip process with ``python``'s aicli; its counts, the warm ones summed up."""
    from aicli.actors.claude_bin import find_claude

    with tempfile.TemporaryDirectory(prefix="aicli-bench-trip-") as scratch:
        # ``-m`` puts the working directory first on the path: one that holds only this
        # package, so that the aicli imported is the interpreter's own (--ref's, say).
        (Path(scratch) / "benchmarks").symlink_to(HERE)
        env = {
            **fake.cli_env(fake.new_home()),
            "AICLI_STATE_DIR": str(Path(scratch) / "state"),
            "AICLI_CLAUDE_BIN": find_claude(),
        }
        done = subprocess.run(
            [python, "-m", "benchmarks.trip", scratch],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=scratch,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the trip's process failed: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    warm = result["warm"]
    result["warm_counts"] = {
        "hops_before_prompt": sorted(
            trip["hops_before_prompt"]["count"] for trip in warm if trip["hops_before_prompt"]
        ),
        "durable_commits": sorted(trip["durable_commits"] for trip in warm),
        "commits": sorted(trip["commits"]["count"] for trip in warm),
        "has_pending": sorted(trip["has_pending"]["count"] for trip in warm),
        "supervisor_sql": sorted(trip["supervisor_sql"]["count"] for trip in warm),
    }
    return result


def measure(fake: FakeApi, options: Options) -> dict[str, Any]:
    """Our counts; with ``--ref``, its counts beside them (the same code, its aicli)."""
    result = _counts(sys.executable, fake)
    if options.ref is not None:
        result["ref"] = _counts(str(Path(options.ref).with_name("python")), fake)
    return result


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
