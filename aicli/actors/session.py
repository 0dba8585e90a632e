"""The session actor: one Claude conversation, its task queue and its process.

Tasks of a session run one at a time in acceptance order. The actor owns the
queue and the ``ClaudeProcess``; the process's threads only ``tell`` it what
the CLI wrote, and every timer (task timeout, kill after a failed interrupt,
idle stop) is a message too. So a handler never waits on the process, and
while a task runs the actor keeps answering submits, cancels and closes.

The store is written before anyone is told: a status is persisted, then
announced on the notifier, so a waiter that wakes reads what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from aicli.actors.census import CENSUS_KEY, ProcessCensus
from aicli.actors.claude_process import ClaudeProcess, ProcessExit
from aicli.actors.messages import (
    Advance,
    Evict,
    EvictRefused,
    IdleTimeout,
    ProcessBusy,
    ProcessExited,
    ProcessIdle,
    SessionStopped,
    Shutdown,
    SlotGranted,
    SlotReleased,
    SlotRequested,
    StreamMessage,
    TaskDeadline,
)
from aicli.actors.notifier import Notifier
from aicli.actors.stream import Outcome, event_of, outcome_of
from aicli.errors import LimitExceeded, SessionClosed, Unavailable
from aicli.metrics import Metrics
from aicli.models import (
    CANCELLED,
    FAILED,
    SESSION_BUSY,
    SESSION_CLOSED,
    SESSION_IDLE,
    Session,
    Task,
    utcnow,
)
from aicli.settings import Settings
from aicli.storage import Store

log = logging.getLogger(__name__)

CANCELLED_PENDING = "Cancelled before it started."
CANCELLED_RUNNING = "Cancelled while running; the Claude turn was interrupted."
SESSION_CLOSED_PENDING = "The session was closed before this task started."
SESSION_CLOSED_RUNNING = "The session was closed while this task ran."
SERVER_SHUTDOWN = "The server shut down while this task ran; the Claude turn was interrupted."


@dataclass(frozen=True)
class ActorContext:
    """What every session actor shares with the runtime: built once, passed to each."""

    store: Store
    notifier: Notifier
    census: ProcessCensus
    metrics: Metrics
    settings: Settings
    claude_bin: str
    claude_env: Mapping[str, str]
    owner: str


@dataclass
class RunningTask:
    task_id: str
    started: float
    timeout_s: float | None
    end: tuple[str, str] | None = None  # (status, error) decided by us, not by Claude
    timers: list[threading.Timer] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()


def tell_quietly(ref: pykka.ActorRef[Any], message: object) -> None:
    """Tell ``ref`` unless it has stopped: late news for a gone actor is no error."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


def tell_later(ref: pykka.ActorRef[Any], seconds: float, message: object) -> threading.Timer:
    """Deliver ``message`` to ``ref`` after ``seconds``, unless cancelled first."""
    timer = threading.Timer(min(seconds, threading.TIMEOUT_MAX), tell_quietly, (ref, message))
    timer.daemon = True
    timer.start()
    return timer


class SessionActor(pykka.ThreadingActor):
    def __init__(
        self, session: Session, context: ActorContext, supervisor: pykka.ActorRef[Any]
    ) -> None:
        super().__init__()
        self.session_id = session.id
        self.session = session
        self.ctx = context
        self.supervisor = supervisor
        self.queue: OrderedDict[str, Task] = OrderedDict()  # pending tasks, oldest first
        self.current: RunningTask | None = None
        self.process: ClaudeProcess | None = None
        self.generation = 0
        self.slot = "none"  # none -> requested -> held -> none
        self.closed = session.status == SESSION_CLOSED
        self.shutting_down = False
        self.passivating = False
        self.process_cost = 0.0
        self.idle_token = 0

    # Lifecycle

    def on_start(self) -> None:
        if not self.closed:
            self.queue.update((t.id, t) for t in self.ctx.store.pending_tasks(self.session_id))
        self._advance()
        self._became_idle()

    def on_stop(self) -> None:
        if self.current is not None:
            self.current.cancel_timers()
        if self.process is not None and self.process.alive:
            self.process.kill()
            self._forget_process(self.process)
        self.supervisor.tell(SessionStopped(self.session_id, self.actor_urn))

    # Asks from the runtime

    def submit(
        self,
        command: str,
        timeout_s: float | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Task, bool]:
        if self.closed:
            raise SessionClosed(self.session_id)
        self.passivating = False
        if self.shutting_down:
            raise Unavailable("The server is shutting down and takes no new tasks.", 5)
        if idempotency_key is not None:
            earlier = self.ctx.store.task_for_idempotency_key(self.session_id, idempotency_key)
            if earlier is not None:
                return earlier, False
        limit = self.ctx.settings.max_pending_per_session
        if len(self.queue) >= limit:
            raise LimitExceeded(
                f"Session '{self.session_id}' already has {limit} pending tasks; "
                "retry when some have run.",
                retry_after=max(1, len(self.queue) // 10),
                details={"max_pending_per_session": limit},
            )
        store = self.ctx.store

        def record() -> tuple[Task, bool]:
            task, created = store.create_task(
                session_id=self.session_id,
                command=command,
                timeout_s=timeout_s,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
            if created:
                store.append_events(task.id, [("status", status_data(task))])
            return task, created

        task, created = store.atomically(record)
        if created:
            self._announce(task, command_chars=len(command))
            self.queue[task.id] = task
            self.actor_ref.tell(Advance())
            task = dataclasses.replace(task, queue_position=len(self.queue) - 1)
        return task, created

    def cancel(self, task_id: str) -> None:
        """Start cancelling; the runtime waits for the terminal status on the notifier."""
        if task_id in self.queue:
            del self.queue[task_id]
            self._finish_pending(task_id, CANCELLED_PENDING)
            self._advance()
        elif self.current is not None and self.current.task_id == task_id:
            self._end_running(CANCELLED, CANCELLED_RUNNING)

    def close(self) -> str | None:
        """Close the session; returns the id of a task that is still being interrupted."""
        if self.closed:
            return None
        self.closed = True
        while self.queue:
            self._finish_pending(self.queue.popitem(last=False)[0], SESSION_CLOSED_PENDING)
        running = self.current.task_id if self.current is not None else None
        if running is not None:
            self._end_running(CANCELLED, SESSION_CLOSED_RUNNING)
        self.ctx.store.update_session(self.session_id, status=SESSION_CLOSED)
        self.ctx.notifier.announce(self.session_id)
        self._stop_process()
        self._stop_if_done()
        return running

    # Tells

    def on_receive(self, message: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            super().on_receive(message)
            return
        try:
            handler(self, message)
        except Exception:
            log.exception("session %s: failed to handle %r", self.session_id, type(message))
            self._fail_current_after_bug()

    def _on_stream(self, message: StreamMessage) -> None:
        if message.generation != self.generation:
            return
        data = message.message
        if data.get("type") == "system" and data.get("subtype") == "init":
            self._learn_claude_session(data.get("session_id"))
            return
        if self.current is None:
            return
        event = event_of(data)
        if data.get("type") == "result":
            self._learn_claude_session(data.get("session_id"))
            outcome = outcome_of(data, self.process_cost)
            total = data.get("total_cost_usd")
            if total is not None:
                self.process_cost = float(total)
            self._finish_running(outcome, [event] if event else [])
        elif event is not None:
            self.ctx.store.append_events(self.current.task_id, [event])
            self.ctx.notifier.announce(self.current.task_id)

    def _on_exit(self, message: ProcessExited) -> None:
        if message.generation != self.generation:
            return
        process, self.process = self.process, None
        if process is not None:
            self._forget_process(process)
        if self.current is not None:
            self._finish_running(self._death_outcome(message.exit))
        self._release_slot()
        self._stop_if_done()
        self._advance()
        if self.actor_ref.is_alive():
            self._became_idle()

    def _on_slot_granted(self, _: SlotGranted) -> None:
        self.slot = "held"
        if self.closed or self.shutting_down or not self.queue:
            self._release_slot()
            return
        self._advance()

    def _on_evict(self, _: Evict) -> None:
        if self.current is None and self.process is not None:
            self._stop_process()
        elif self.current is None and self.slot == "held":
            self._release_slot()
        else:
            self.supervisor.tell(EvictRefused(self.session_id))

    def _on_deadline(self, message: TaskDeadline) -> None:
        if self.current is None or self.current.task_id != message.task_id:
            return
        if message.kind == "timeout":
            limit = self.current.timeout_s
            self._end_running(
                FAILED, f"Timed out after {limit:g} s; the Claude turn was interrupted."
            )
        elif message.kind == "kill" and self.process is not None:
            log.warning("session %s: turn did not end after interrupt; killing", self.session_id)
            threading.Thread(target=self.process.kill, daemon=True).start()

    def _on_idle(self, message: IdleTimeout) -> None:
        """Idle for the whole timeout: stop the process, then this actor, until needed again."""
        if message.token != self.idle_token or self.current is not None or self.queue:
            return
        self.passivating = True
        if self.process is not None:
            log.info("session %s: stopping its idle Claude process", self.session_id)
            self._stop_process()
        self._stop_if_done()

    def _on_advance(self, _: Advance) -> None:
        self._advance()

    def _on_shutdown(self, _: Shutdown) -> None:
        self.shutting_down = True
        self.queue.clear()
        if self.current is not None:
            self._end_running(CANCELLED, SERVER_SHUTDOWN)
        self._stop_process()

    _handlers = {
        StreamMessage: _on_stream,
        ProcessExited: _on_exit,
        SlotGranted: _on_slot_granted,
        Evict: _on_evict,
        TaskDeadline: _on_deadline,
        IdleTimeout: _on_idle,
        Shutdown: _on_shutdown,
        Advance: _on_advance,
    }

    # Running tasks

    def _advance(self) -> None:
        """Start the next task if there is one and nothing runs."""
        if self.current is not None or not self.queue or self.closed or self.shutting_down:
            return
        if self.process is not None and not self.process.usable:
            return  # it is on its way out; its exit releases the slot and calls us again
        if self.process is None:
            if self.slot == "none":
                self.slot = "requested"
                self.supervisor.tell(SlotRequested(self.session_id))
                return
            if self.slot == "requested":
                return
            if not self._spawn():
                return
        self._run(self.queue.popitem(last=False)[1])

    def _spawn(self) -> bool:
        self.generation += 1
        generation = self.generation
        ref = self.actor_ref

        def on_message(message: dict[str, Any]) -> None:
            tell_quietly(ref, StreamMessage(generation, message))

        def on_exit(exit_: ProcessExit) -> None:
            tell_quietly(ref, ProcessExited(generation, exit_))

        process = ClaudeProcess(
            claude_bin=self.ctx.claude_bin,
            settings=self.session.settings,
            on_message=on_message,
            on_exit=on_exit,
            resume=self.session.claude_session_id,
            env=self.ctx.claude_env,
            owner=self.ctx.owner,
        )
        try:
            process.start()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument
            log.error("session %s: cannot start Claude: %s", self.session_id, exc)
            self._finish_pending(
                self.queue.popitem(last=False)[0],
                f"The Claude process could not be started: {exc}.",
                FAILED,
            )
            self._release_slot()
            self._advance()
            return False
        self.process = process
        self.process_cost = 0.0
        self.ctx.census.add(self.session_id)
        self.ctx.store.record_process(
            process.pid, process.start_time or 0.0, process.mark, "claude"
        )
        return True

    def _run(self, pending: Task) -> None:
        """Send the prompt first, then record that it runs, while Claude is already thinking."""
        assert self.process is not None
        self.process.send_prompt(pending.command)
        store = self.ctx.store

        def record() -> Task:
            now = utcnow()
            task = store.start_task(pending.id, started_at=now)
            store.append_events(pending.id, [("status", status_data(task))])
            store.update_session(self.session_id, status=SESSION_BUSY, last_active_at=now)
            return task

        task = store.atomically(record)
        self.current = RunningTask(
            task_id=task.id, started=time.monotonic(), timeout_s=task.timeout_s
        )
        self.idle_token += 1
        self._announce(task)
        self.supervisor.tell(ProcessBusy(self.session_id))
        if task.timeout_s:
            self.current.timers.append(
                tell_later(self.actor_ref, task.timeout_s, TaskDeadline(task.id, "timeout"))
            )

    def _end_running(self, status: str, error: str) -> None:
        """Interrupt the running turn; its result (or the process's death) finishes the task."""
        current = self.current
        assert current is not None
        if current.end is not None:
            return
        current.end = (status, error)
        if self.process is not None and self.process.alive:
            self.process.interrupt()
            current.timers.append(
                tell_later(
                    self.actor_ref,
                    self.ctx.settings.cancel_grace,
                    TaskDeadline(current.task_id, "kill"),
                )
            )

    def _finish_running(
        self, outcome: Outcome, events: list[tuple[str, dict[str, Any]]] = ()
    ) -> None:
        """Store the outcome, the events that carried it and the final status in one commit."""
        current = self.current
        assert current is not None
        self.current = None
        current.cancel_timers()
        status, error, output = outcome.status, outcome.error, outcome.output
        if current.end is not None and outcome.status != "completed":
            status, error, output = current.end[0], current.end[1], None
        store = self.ctx.store

        def record() -> Task:
            now = utcnow()
            if events:
                store.append_events(current.task_id, list(events))
            task = store.finish_task(
                current.task_id,
                status,
                output=output,
                error=error,
                cost_usd=outcome.cost_usd,
                num_turns=outcome.num_turns,
                duration_ms=outcome.duration_ms,
                usage=outcome.usage,
                completed_at=now,
            )
            store.append_events(task.id, [("status", status_data(task))])
            if not self.closed:
                store.update_session(self.session_id, status=SESSION_IDLE, last_active_at=now)
            return task

        task = store.atomically(record)
        self.ctx.metrics.task_duration.labels(status).observe(time.monotonic() - current.started)
        if outcome.cost_usd:
            self.ctx.metrics.cost.inc(outcome.cost_usd)
        self._announce(task, duration_ms=task.duration_ms, cost_usd=task.cost_usd)
        self.ctx.notifier.forget(task.id)
        self._became_idle()
        self._advance()

    def _finish_pending(self, task_id: str, error: str, status: str = CANCELLED) -> None:
        store = self.ctx.store

        def record() -> Task:
            if status != CANCELLED:
                store.start_task(task_id, started_at=utcnow())
            task = store.finish_task(task_id, status, error=error, completed_at=utcnow())
            store.append_events(task_id, [("status", status_data(task))])
            return task

        self._announce(store.atomically(record))
        self.ctx.notifier.forget(task_id)

    def _death_outcome(self, exit_: ProcessExit) -> Outcome:
        return Outcome(FAILED, None, exit_.describe(), None, None, None, None)

    def _fail_current_after_bug(self) -> None:
        """A handler raised: fail the running task rather than leave it running forever."""
        if self.current is None:
            return
        try:
            self._finish_running(
                Outcome(FAILED, None, "aicli failed while handling this task.", *[None] * 4)
            )
        except Exception:
            log.exception("session %s: could not fail the task either", self.session_id)
            self.current = None

    # Process and slot bookkeeping

    def _became_idle(self) -> None:
        """Nothing left to run: start the idle clock (process stop, then passivation)."""
        if self.queue or self.current is not None:
            return
        self.idle_token += 1
        if self.process is not None:
            self.supervisor.tell(ProcessIdle(self.session_id, time.monotonic()))
        timeout = self.ctx.settings.idle_process_timeout
        if timeout > 0:
            tell_later(self.actor_ref, timeout, IdleTimeout(self.idle_token))

    def _stop_process(self) -> None:
        if self.process is not None and self.process.alive:
            threading.Thread(target=self.process.stop, daemon=True).start()
        elif self.process is None and self.slot == "held":
            self._release_slot()

    def _forget_process(self, process: ClaudeProcess) -> None:
        self.ctx.census.discard(self.session_id)
        if process.pid is not None:
            self.ctx.store.forget_process(process.pid, process.start_time or 0.0)
        self.ctx.notifier.announce(CENSUS_KEY)

    def _release_slot(self) -> None:
        if self.slot != "none":
            self.slot = "none"
            self.supervisor.tell(SlotReleased(self.session_id))

    def _stop_if_done(self) -> None:
        """A closed or long-idle session's actor goes away once its process has.

        An idle one costs a thread and a database connection; the supervisor
        starts a new actor for the session when it is needed again.
        """
        done = self.process is None and self.current is None and not self.queue
        if done and (self.closed or self.passivating):
            self._release_slot()
            self.stop()

    def _learn_claude_session(self, claude_session_id: str | None) -> None:
        if claude_session_id and claude_session_id != self.session.claude_session_id:
            self.session = self.ctx.store.update_session(
                self.session_id, claude_session_id=claude_session_id
            )

    def _announce(self, task: Task, **details: Any) -> None:
        """Wake the task's waiters and log the change in one line (never the prompt itself)."""
        self.ctx.notifier.announce(task.id)
        log.info(
            "task %s",
            task.status,
            extra={
                "task_id": task.id,
                "session_id": task.session_id,
                **status_data(task),
                **details,
            },
        )


def status_data(task: Task) -> dict[str, Any]:
    """The data of a ``status`` event: the new status, and the error when there is one."""
    data: dict[str, Any] = {"status": task.status}
    if task.error:
        data["error"] = task.error
    return data
