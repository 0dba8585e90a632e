"""The embedding API: everything aicli does, without HTTP.

``Runtime`` starts the parts in dependency order (store, notifier, supervisor,
which starts session actors) and stops them in reverse. Callers live on their
own threads (HTTP workers, an app's threads); they ask actors with a timeout,
read the store directly (it is the source of truth), and wait on the notifier,
never by polling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psutil
import pykka

from aicli import validation
from aicli.actors import process_tree
from aicli.actors.census import CENSUS_KEY, ProcessCensus
from aicli.actors.claude_bin import claude_version, find_claude
from aicli.actors.notifier import Notifier
from aicli.actors.session import ActorContext
from aicli.actors.supervisor import Supervisor
from aicli.errors import (
    SessionClosed,
    StorageError,
    Unavailable,
)
from aicli.metrics import Metrics
from aicli.models import PENDING, Event, Page, Session, Task
from aicli.settings import Settings
from aicli.storage import Store, open_store

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
CANCEL_TIMEOUT = 15.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        claude_bin: str,
        claude_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.claude_bin = claude_bin
        self.notifier = Notifier()
        self.census = ProcessCensus()
        self.metrics = Metrics(store.task_status_counts, lambda: len(self.census))
        self.owner_prefix = owner_prefix(store.database_url)
        self.context = ActorContext(
            store=store,
            notifier=self.notifier,
            census=self.census,
            metrics=self.metrics,
            settings=settings,
            claude_bin=claude_bin,
            claude_env=dict(claude_env or {}),
            owner=f"{self.owner_prefix}{uuid.uuid4().hex[:12]}",
        )
        self.accepting = False
        self._supervisor: pykka.ActorRef[Supervisor] | None = None
        self._stopped = threading.Event()

    @classmethod
    def start(cls, *, claude_env: Mapping[str, str] | None = None, **overrides: Any) -> Runtime:
        """Open the store, end what a crashed run left behind, and start the actors.

        Takes the settings of ``aicli serve`` as keyword arguments (defaults from
        ``AICLI_*``); ``claude_env`` is added to the environment of every CLI.
        """
        settings = Settings.resolve(overrides)
        claude_bin = find_claude(settings.claude_bin)
        store = open_store(settings.database_url)
        runtime = cls(settings, store, claude_bin, claude_env)
        try:
            runtime._start()
        except BaseException:
            store.close()
            raise
        return runtime

    def _start(self) -> None:
        self.reap_leftovers()
        self._supervisor = Supervisor.start(self.context)
        failed = self._supervisor.proxy().recover().get(timeout=60)
        if failed:
            log.warning("failed %d tasks the previous run left running", len(failed))
        self.accepting = True

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once ``stop`` has begun: waits return at once and streams should end."""
        return self._stopped.is_set()

    @property
    def metrics_registry(self) -> Any:
        return self.metrics.registry

    # Sessions

    def open_session(self, **fields: Any) -> Session:
        self._check_accepting()
        clean = validation.session_fields(fields, workspace_root=self.settings.workspace_root)
        return self._with_process_state(self._ask(self._proxy().open_session(clean)))

    def get_session(self, session_id: str) -> Session:
        return self._with_process_state(self.store.get_session(session_id))

    def list_sessions(
        self,
        *,
        status: Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        page = self.store.list_sessions(statuses=status, limit=limit, cursor=cursor, order=order)
        return dataclasses.replace(page, items=[self._with_process_state(s) for s in page.items])

    def close_session(self, session_id: str) -> Session:
        session = self.store.get_session(session_id)
        if session.status != "closed":
            try:
                running = self._on_session(session_id, lambda actor: actor.close())
            except SessionClosed:
                running = None
            if running is not None:
                self.wait(running, timeout=self.settings.cancel_grace + 10)
        return self.get_session(session_id)

    # Tasks

    def submit_task(
        self,
        session_id: str,
        command: str,
        *,
        timeout_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Task, bool]:
        """Accept a task; the bool is False when ``idempotency_key`` matched an earlier one."""
        self._check_accepting()
        fields: dict[str, Any] = {"command": command}
        if timeout_s is not None:
            fields["timeout_s"] = timeout_s
        if metadata is not None:
            fields["metadata"] = metadata
        clean = validation.task_fields(fields, max_command_chars=self.settings.max_command_chars)
        task, created = self._on_session(
            session_id, lambda actor: actor.submit(idempotency_key=idempotency_key, **clean)
        )
        return (task if created else self._with_queue_positions([task])[0]), created

    def submit(self, session_id: str, command: str, **options: Any) -> Task:
        return self.submit_task(session_id, command, **options)[0]

    def get_task(self, task_id: str) -> Task:
        return self._with_queue_positions([self.store.get_task(task_id)])[0]

    def list_tasks(
        self,
        *,
        session_id: str | None = None,
        status: Sequence[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        if session_id is not None:
            self.store.get_session(session_id)
        page = self.store.list_tasks(
            session_id=session_id,
            statuses=status,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
            order=order,
        )
        return dataclasses.replace(page, items=self._with_queue_positions(page.items))

    def cancel(self, task_id: str) -> Task:
        """Cancel a pending or running task; returns it once it has ended.

        A task that had already ended is returned as it is, so check ``status``:
        only ``cancelled`` means the cancel took effect (HTTP answers 409 otherwise).
        """
        task = self.store.get_task(task_id)
        if task.is_terminal:
            return task
        with contextlib.suppress(SessionClosed):  # closing the session cancels it anyway
            self._on_session(task.session_id, lambda actor: actor.cancel(task_id))
        task = self.wait(task_id, timeout=CANCEL_TIMEOUT)
        if not task.is_terminal:
            raise Unavailable(
                f"Task '{task_id}' did not stop within {CANCEL_TIMEOUT:g} s; try again.", 5
            )
        return task

    def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it is terminal, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.notifier.version(task_id)
            task = self.get_task(task_id)
            remaining = deadline - time.monotonic()
            if task.is_terminal or remaining <= 0 or self.notifier.closed:
                return task
            self.notifier.wait(task_id, seen, remaining)

    def events(self, task_id: str, after: int = 0) -> list[Event]:
        self.store.get_task(task_id)
        return self.store.list_events(task_id, after=after)

    def wait_for_events(self, task_id: str, after: int, timeout: float) -> list[Event]:
        """Events with ``seq > after``, waiting up to ``timeout`` for the first of them."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.notifier.version(task_id)
            events = self.store.list_events(task_id, after=after)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self.notifier.closed:
                return events
            self.notifier.wait(task_id, seen, remaining)

    # Service

    def readiness(self) -> dict[str, str]:
        try:
            self.store.ping()
        except StorageError as exc:
            raise Unavailable(f"The database does not answer: {exc.message.rstrip('.')}.") from exc
        if not self.accepting:
            raise Unavailable("The server is shutting down.")
        return {"database": "ok", "claude": claude_version(self.claude_bin)}

    def reap_leftovers(self) -> int:
        """End processes a previous run on this database left behind (after a crash).

        A process counts as ours only if its environment carries this database's
        mark but not this run's; a process recorded by pid must also have the
        recorded start time, so a reused pid is never hit.
        """
        this_run = self.context.owner
        leftovers = {
            p.pid: p
            for p in process_tree.marked_processes(self.owner_prefix, prefix=True)
            if not (process_tree.mark_of(p.pid) or "").startswith(this_run)
        }
        for pid, start_time, *_ in self.store.recorded_processes():
            process = _recorded_process(pid, start_time)
            if process is not None:
                mark = process_tree.mark_of(pid) or ""
                if mark.startswith(self.owner_prefix) and not mark.startswith(this_run):
                    leftovers[pid] = process
            self.store.forget_process(pid, start_time)
        if leftovers:
            log.warning("ending %d processes left by an earlier run", len(leftovers))
            process_tree.kill_all(leftovers.values())
        return len(leftovers)

    def shutdown(self, grace: float | None = None) -> None:
        """Stop taking work, let running tasks finish for ``grace`` s, then interrupt them."""
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        for task in self.store.running_tasks():
            self.wait(task.id, timeout=max(0.0, deadline - time.monotonic()))
        if self._supervisor is None:
            return
        try:
            self._ask(self._supervisor.proxy().shutdown_sessions())
        except Unavailable:
            log.warning("the supervisor did not answer the shutdown")
        cutoff = self.settings.cancel_grace + 10
        for task in self.store.running_tasks():
            self.wait(task.id, timeout=cutoff)
        end = time.monotonic() + cutoff
        while True:
            seen = self.notifier.version(CENSUS_KEY)
            remaining = end - time.monotonic()
            if not len(self.census) or remaining <= 0:
                return
            self.notifier.wait(CENSUS_KEY, seen, remaining)

    def stop(self) -> None:
        """Stop every actor in reverse order of start; no Claude process survives it."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.accepting = False
        if self._supervisor is not None:
            try:
                self._supervisor.proxy().stop_sessions(timeout=10).get(timeout=120)
            except pykka.Timeout:
                log.warning("session actors did not stop in time")
            self._supervisor.stop(timeout=10)
        # Session actors end their own trees; this catches whatever escaped them.
        process_tree.kill_all(process_tree.marked_processes(self.context.owner, prefix=True))
        self.notifier.close()
        self.store.close()

    # Helpers

    def _proxy(self) -> Any:
        if self._supervisor is None or self._stopped.is_set():
            raise Unavailable("The runtime is stopped.")
        return self._supervisor.proxy()

    def _on_session(self, session_id: str, call: Callable[[Any], pykka.Future[Any]]) -> Any:
        """Ask the session's actor; if it stopped in between (closed, or idle), look again.

        The supervisor starts a new actor for an idle session, and says
        ``SessionClosed`` for a closed one, so a second look settles it.
        """
        for _ in range(3):
            ref = self._ask(self._proxy().session_actor(session_id))
            try:
                return self._ask(call(ref.proxy()))
            except pykka.ActorDeadError:
                continue
        raise Unavailable(f"Session '{session_id}' did not answer; try again.", 1)

    def _ask(self, future: pykka.Future[Any]) -> Any:
        try:
            return future.get(timeout=ASK_TIMEOUT)
        except pykka.Timeout:
            raise Unavailable("The service is busy; an actor did not answer in time.", 1) from None

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise Unavailable("The server is shutting down and takes no new work.", 5)

    def _with_process_state(self, session: Session) -> Session:
        return dataclasses.replace(session, process_alive=self.census.alive(session.id))

    def _with_queue_positions(self, tasks: list[Task]) -> list[Task]:
        sessions = {t.session_id for t in tasks if t.status == PENDING}
        if not sessions:
            return tasks
        positions: dict[str, int] = {}
        for session_id in sessions:
            for index, task_id in enumerate(self.store.pending_task_ids(session_id)):
                positions[task_id] = index
        return [
            dataclasses.replace(t, queue_position=positions.get(t.id)) if t.status == PENDING else t
            for t in tasks
        ]


def owner_prefix(database_url: str) -> str:
    """A mark shared by every run on one database, so a new run can find an old one's children."""
    return f"aicli-{hashlib.sha256(database_url.encode()).hexdigest()[:12]}/"


def _recorded_process(pid: int, start_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        return process if abs(process.create_time() - start_time) < 0.01 else None
    except psutil.NoSuchProcess:
        return None
