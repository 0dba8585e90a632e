"""One task's trip, counted: actor hops before its prompt, commits, queue reads, and where
the store is called from (issue 27's targets for the hot path).

Counts, never timings: the runtime runs with a scripted Claude, the store's engine and
``has_pending`` are wrapped to record each call and its thread, and every ``tell`` to
the supervisor or a session actor is recorded, as is each session actor's start and
each prompt sent. A quiet point is a recorded event (the supervisor hearing that a
process went idle), never a sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest

from aicli import Runtime
from aicli.actors.session import SessionActor
from aicli.actors.session_dirs import session_dirs
from aicli.actors.supervisor import Supervisor
from aicli.contract import TaskStatus
from aicli.testing.scripted_claude import ScriptedClaude, ScriptedProcess
from aicli.testing.waiting import wait_for


@dataclass
class Trip:
    """What happened, in order: ``(kind, detail, thread name)``."""

    steps: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, detail: str) -> None:
        with self.lock:
            self.steps.append((kind, detail, threading.current_thread().name))

    def clear(self) -> None:
        with self.lock:
            self.steps.clear()

    def before_prompt(self) -> list[tuple[str, str, str]]:
        with self.lock:
            kinds = [kind for kind, _, _ in self.steps]
            return self.steps[: kinds.index("prompt")]

    def hops_before_prompt(self) -> list[str]:
        """Each message that crossed into an actor (or an actor started) before the prompt."""
        return [d for k, d, _ in self.before_prompt() if k in ("tell", "start")]

    def count(self, kind: str, detail: str | None = None) -> int:
        with self.lock:
            return sum(1 for k, d, _ in self.steps if k == kind and detail in (None, d))

    def store_threads(self) -> set[str]:
        with self.lock:
            return {t for k, _, t in self.steps if k in ("read", "write", "durable")}

    def idled(self) -> bool:
        return self.count("tell", "Supervisor<-ProcessIdle") > 0


@pytest.fixture
def trip(monkeypatch: pytest.MonkeyPatch) -> Trip:
    trip = Trip()
    tell = pykka.ActorRef.tell

    def counted_tell(ref: pykka.ActorRef[Any], message: Any) -> None:
        if ref.actor_class in (Supervisor, SessionActor):
            trip.note("tell", f"{ref.actor_class.__name__}<-{type(message).__name__}")
        tell(ref, message)

    start = SessionActor.on_start

    def counted_start(actor: SessionActor) -> None:
        trip.note("start", "SessionActor")
        start(actor)

    send = ScriptedProcess.send_prompt

    def counted_send(process: ScriptedProcess, content: str) -> None:
        trip.note("prompt", content)
        send(process, content)

    monkeypatch.setattr(pykka.ActorRef, "tell", counted_tell)
    monkeypatch.setattr(SessionActor, "on_start", counted_start)
    monkeypatch.setattr(ScriptedProcess, "send_prompt", counted_send)
    return trip


@pytest.fixture
def runtime(tmp_path, tmp_path_factory, trip: Trip) -> Iterator[Runtime]:
    rt = Runtime.start(
        database_url=f"sqlite:///{tmp_path}/aicli.db", process_factory=ScriptedClaude()
    )
    store = rt.store
    engine = store.engine
    read, write, has_pending = engine.read, engine.write, store.has_pending

    def counted_read(work: Any, **options: Any) -> Any:
        trip.note("read", "")
        return read(work, **options)

    def counted_write(work: Any, *, durable: bool = True) -> Any:
        trip.note("durable" if durable else "write", "")
        return write(work, durable=durable)

    def counted_has_pending(session_id: str) -> bool:
        trip.note("has_pending", session_id)
        return has_pending(session_id)

    engine.read, engine.write, store.has_pending = counted_read, counted_write, counted_has_pending
    yield rt
    rt.stop()


def _session_writes(trip: Trip) -> int:
    """Durable commits made for the task: by the caller and by the session's actor (not the
    node's lease, which renews on its own clock)."""
    with trip.lock:
        return sum(
            1
            for k, _, t in trip.steps
            if k == "durable" and (t == "MainThread" or t.startswith("SessionActor"))
        )


def _warm(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory, trip: Trip) -> str:
    """A session whose process is live and idle, its slot held; the trip recorded afresh."""
    session = runtime.open_session(workdir=str(tmp_path_factory.mktemp("work")))
    first = runtime.submit(session.id, "first")
    assert runtime.wait(first.id, timeout=10).status == TaskStatus.COMPLETED
    wait_for(trip.idled, what="the first task's process idle")
    trip.clear()
    return session.id


def test_a_warm_task_takes_at_most_two_actor_hops_before_its_prompt(
    runtime, tmp_path_factory, trip
):
    session_id = _warm(runtime, tmp_path_factory, trip)
    task = runtime.submit(session_id, "warm")
    assert runtime.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    hops = trip.hops_before_prompt()
    assert len(hops) <= 2, hops
    # Straight to the live actor, which keeps its slot: no request and grant.
    assert hops == ["SessionActor<-Advance"]


def test_a_warm_task_makes_three_durable_commits_in_all(runtime, tmp_path_factory, trip):
    session_id = _warm(runtime, tmp_path_factory, trip)
    task = runtime.submit(session_id, "warm")
    assert runtime.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    wait_for(trip.idled, what="the warm task's process idle")
    assert _session_writes(trip) == 3  # accepted, started, finished


def test_a_warm_task_reads_no_queue_before_its_prompt(runtime, tmp_path_factory, trip):
    session_id = _warm(runtime, tmp_path_factory, trip)
    task = runtime.submit(session_id, "warm")
    assert runtime.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    assert [d for k, d, _ in trip.before_prompt() if k == "has_pending"] == []


def test_a_cold_task_reads_its_queue_once_before_its_prompt(runtime, tmp_path_factory, trip):
    session = runtime.open_session(workdir=str(tmp_path_factory.mktemp("work")))
    trip.clear()
    task = runtime.submit(session.id, "cold")
    assert runtime.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    reads = [d for k, d, _ in trip.before_prompt() if k == "has_pending"]
    assert reads == [session.id]


def test_the_supervisor_thread_never_calls_the_store(runtime, tmp_path_factory, trip):
    """Open, a cold task, a warm one, an idle stop and a close: the router does no I/O, so
    no slow query can hold up another session's slot."""
    session = runtime.open_session(workdir=str(tmp_path_factory.mktemp("work")))
    for prompt in ("cold", "warm"):
        task = runtime.submit(session.id, prompt)
        assert runtime.wait(task.id, timeout=10).status == TaskStatus.COMPLETED
    runtime.close_session(session.id)
    wait_for(
        lambda: trip.count("tell", "Supervisor<-SessionStopped"), what="the session's actor gone"
    )
    assert trip.count("durable") > 0  # the wrapper saw the trip's calls
    assert not {t for t in trip.store_threads() if t.startswith("Supervisor")}


def test_a_session_closed_with_no_actor_here_has_its_directories_removed_off_the_router(
    runtime, tmp_path_factory, trip
):
    """The supervisor removed them itself on ``CloseSession``; an actor started for the
    closed session does it now, on its own thread."""
    session = runtime.open_session(workdir=str(tmp_path_factory.mktemp("work")))
    dirs = session_dirs(runtime.settings.state_dir, session.id)
    dirs.claude.mkdir(parents=True)
    runtime.close_session(session.id)
    wait_for(lambda: not dirs.root.exists(), what="the removal")
    assert trip.count("start", "SessionActor") == 1
    assert not {t for t in trip.store_threads() if t.startswith("Supervisor")}
