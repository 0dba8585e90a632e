"""The session actor: one Claude conversation, its process, and the only taker from its queue.

The queue is the session's pending rows in the store: submits, cancels of
pending tasks and closes write there directly, and this actor is told to
``Advance``. It asks the store for the next task, which commits that task as
``running`` (the store decides what runs next and that nothing else of the
session runs), and only then sends its prompt. A crash at any point therefore
leaves either a pending task whose prompt was never sent or a running one that
the restart rule fails: never a prompt sent twice.

A turn belongs to one process generation. If anything goes wrong while a turn
is live (a handler raises, a commit fails), that process is killed, its late
messages are ignored, and the task fails with a clear error before anything
else runs. ``current`` is cleared once the turn's terminal state is committed,
or when the actor lets the session go (another node holds it, or this node lost
its lease): then nothing is written here, and the node that holds the session
fails the task.

The process's threads only ``tell`` this actor what the CLI wrote, and every
timer (task timeout, kill after a failed interrupt, idle stop, retry) is a
message from the one scheduler, so a handler never waits on the process.

The actor keeps its mailbox, its handler table, its failure rule and its declared
state (``session_state``); the rest is its components: the task taker (the queue),
the claim, the process host, the turn recorder, the approvals and the idle clock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pykka

from aicli.actors.idle_clock import IdleClock
from aicli.actors.messages import (
    Advance,
    Answer,
    ApprovalDeadline,
    Cancel,
    Close,
    Drain,
    Evict,
    EvictRefused,
    Fence,
    IdleTimeout,
    ProcessBusy,
    ProcessExited,
    RetryFinish,
    SessionStopped,
    Shutdown,
    SlotGranted,
    SlotReleased,
    SlotRequested,
    StreamMessage,
    TaskDeadline,
    ToolsSwept,
)
from aicli.actors.notifier import events_of
from aicli.actors.process_host import ProcessHost
from aicli.actors.scheduler import Timer
from aicli.actors.session_claim import NO_LEASE, SessionClaim
from aicli.actors.session_context import (
    SESSION_LOG,
    ActorContext,
    ProcessFactory,
    announce,
)
from aicli.actors.session_dirs import session_dirs
from aicli.actors.session_state import Intake, SessionState, Slot
from aicli.actors.stream import Outcome, event_of, outcome_of
from aicli.actors.task_taker import TaskTaker
from aicli.actors.transcript_sync import TranscriptSync
from aicli.actors.turn import SERVER_SHUTDOWN, Turn
from aicli.actors.turn_approvals import TurnApprovals
from aicli.actors.turn_recorder import TurnRecorder
from aicli.contract import Session, Task, TaskStatus
from aicli.errors import NotOwner, StorageError, Unavailable

# What other modules import from here, wherever it is defined.
__all__ = [
    "CANCELLED_PENDING",
    "CANCELLED_RUNNING",
    "RETRY_S",
    "SERVER_SHUTDOWN",
    "SESSION_CLOSED_PENDING",
    "SESSION_CLOSED_RUNNING",
    "ActorContext",
    "ProcessFactory",
    "SessionActor",
    "announce",
]

log = logging.getLogger(SESSION_LOG)

CANCELLED_PENDING = "Cancelled before it started."
CANCELLED_RUNNING = "Cancelled while running; the Claude turn was interrupted."
SESSION_CLOSED_PENDING = "The session was closed before this task started."
SESSION_CLOSED_RUNNING = "The session was closed while this task ran."
RETRY_S = 1.0


class SessionActor(pykka.ThreadingActor):
    def __init__(
        self, session: Session, context: ActorContext, supervisor: pykka.ActorRef[Any]
    ) -> None:
        super().__init__()
        self.session_id = session.id
        self.session = session
        self.ctx = context
        self.store = context.store
        self.supervisor = supervisor
        self.current: Turn | None = None
        self.state = SessionState()
        if session.status == "closed":
            self.state.close()
        self.retry_timer: Timer | None = None
        self.dirs = session_dirs(context.state_dir, session.id)
        transcript = (
            TranscriptSync(
                self.store,
                session.id,
                {**os.environ, **context.claude_env, "CLAUDE_CONFIG_DIR": str(self.dirs.claude)},
            )
            if self.store.is_postgres  # several nodes: the conversation moves with the session
            else None
        )
        self.queue = TaskTaker(context, session.id)
        self.claim = SessionClaim(context, session.id)
        self.host = ProcessHost(context, session.id, self.dirs, transcript)
        self.recorder = TurnRecorder(context, transcript)
        self.approvals = TurnApprovals(context, session.id, self.actor_ref, self._lease_gone)
        self.idle = IdleClock(context, session.id, self.actor_ref, supervisor)

    # Lifecycle

    def on_start(self) -> None:
        try:
            self._advance()
        except Exception as exc:
            log.exception("session %s: failed to start", self.session_id)
            self._after_failure(exc)

    def on_stop(self) -> None:
        for timer in (self.idle.timer, self.retry_timer):
            if timer is not None:
                timer.cancel()
        if self.current is not None:
            self.current.cancel_timers()
        self.host.kill_now(fenced=self.state.fenced)
        # A turn still live keeps the claim: its task fails when this node's lease ends.
        if not self.state.fenced and self.current is None:
            self.claim.release()
        self.supervisor.tell(SessionStopped(self.session_id, self.actor_urn, self.state.handed_off))

    # Tells

    def on_receive(self, message: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            super().on_receive(message)
            return
        try:
            handler(self, message)
        except NotOwner:
            self._let_go("another node took it over")
        except Exception as exc:
            kind = type(message).__name__
            if isinstance(exc, StorageError | Unavailable):  # an outage, not a bug of ours
                log.warning("session %s: %s while handling %s", self.session_id, exc, kind)
            else:
                log.exception("session %s: failed to handle %s", self.session_id, kind)
            self._after_failure(exc)

    def _on_advance(self, _: Advance) -> None:
        self._advance(told_of_work=True)

    def _on_cancel(self, message: Cancel) -> None:
        if self.current is not None and self.current.task.id == message.task_id:
            self._end_running(TaskStatus.CANCELLED, CANCELLED_RUNNING)

    def _on_close(self, _: Close) -> None:
        self.state.close()
        if self.current is not None:
            self._end_running(TaskStatus.CANCELLED, SESSION_CLOSED_RUNNING)
        self._stop_process()
        self._stop_if_done()

    def _on_drain(self, _: Drain) -> None:
        self.state.drain()
        if self.current is not None and self.current.waiting:
            # Nobody will be there to answer: the turn ends now, not at the end of the grace.
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _on_fence(self, _: Fence) -> None:
        """This node may no longer act for the session: its process dies, nothing is written.

        A peer fails the running task once the lease has run out, and runs the rest."""
        self.state.fence()
        self._let_go("this node lost its lease")

    def _on_shutdown(self, _: Shutdown) -> None:
        self.state.drain()
        if self.current is not None:
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)
        self._stop_process()

    def _on_stream(self, message: StreamMessage) -> None:
        host = self.host
        if message.generation != host.generation or host.process_ending or self._lease_gone():
            return
        data = message.message
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self._learn_claude_session(data.get("session_id"))
            return
        if kind == "control_request":
            self._on_control_request(data)
            return
        if kind == "control_cancel_request":
            self.approvals.withdraw(self.current, str(data.get("request_id")))
            return
        turn = self.current
        if turn is None or turn.generation != message.generation or turn.outcome is not None:
            return
        event = event_of(data)
        if data.get("type") == "result":
            self._learn_claude_session(data.get("session_id"))
            outcome = outcome_of(data, host.process_cost)
            total = data.get("total_cost_usd")
            if total is not None:
                host.process_cost = float(total)
            self._conclude(outcome, [event] if event else [])
        elif event is not None:
            self.ctx.faults.reach("stream.event")
            self.store.append_events(turn.task.id, [event], epoch=self.claim.epoch)
            self.ctx.notifier.announce(events_of(turn.task.id))

    def _on_control_request(self, data: dict[str, Any]) -> None:
        process = self.host.process
        assert process is not None
        timeout_s = self.session.approval_timeout_s
        waits = self.approvals.request(data, self.current, process, timeout_s)
        if waits and not self.state.takes_new_work:
            self._end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _on_answer(self, message: Answer) -> None:
        self.approvals.answer(message, self.current, self.host.live_process)

    def _on_approval_deadline(self, message: ApprovalDeadline) -> None:
        timeout_s = self.session.approval_timeout_s
        self.approvals.deadline(message, self.current, self.host.live_process, timeout_s)

    def _on_exit(self, message: ProcessExited) -> None:
        if message.generation != self.host.generation:
            return
        process = self.host.exited()
        self._release_slot()
        if process is not None:
            self.host.forget(process, fenced=self.state.fenced)
        turn = self.current
        if turn is not None and turn.generation == message.generation and turn.outcome is None:
            self._conclude(Outcome.failure(message.exit.describe()))
        self._stop_if_done()
        self._advance()

    def _on_retry_finish(self, _: RetryFinish) -> None:
        if self.current is not None and self.current.outcome is not None:
            self._commit_end()

    def _on_tools_swept(self, _: ToolsSwept) -> None:
        self.state.sweeping_tools = False
        self._advance()

    def _on_slot_granted(self, _: SlotGranted) -> None:
        self.state.move_slot(Slot.HELD)
        if not self.state.takes_new_work or not self.queue.has_pending():
            self._release_slot()
            self._became_idle()
            return
        self._advance()

    def _on_evict(self, _: Evict) -> None:
        if self.current is None and self.host.process is not None:
            self._stop_process()
        elif self.current is None and self.state.slot is Slot.HELD:
            self._release_slot()
        else:
            self.supervisor.tell(EvictRefused(self.session_id))

    def _on_deadline(self, message: TaskDeadline) -> None:
        turn = self.current
        if turn is None or turn.task.id != message.task_id or turn.outcome is not None:
            return
        if message.kind == "timeout":
            if not turn.timed_out(message):
                return  # set before the clock paused for a person; a new one is running
            limit = turn.task.timeout_s or 0
            self._end_running(
                TaskStatus.FAILED, f"Timed out after {limit:g} s; the Claude turn was interrupted."
            )
        elif message.kind == "kill" and self.host.process is not None:
            log.warning("session %s: turn did not end after interrupt; killing", self.session_id)
            self.host.kill()

    def _on_idle(self, message: IdleTimeout) -> None:
        """Idle for the whole timeout: stop the process, then this actor, until needed again."""
        if self.current is not None or not self.idle.ran_out(message):
            return
        self.state.passivate()
        if self.host.process is not None:
            log.info("session %s: stopping its idle Claude process", self.session_id)
            self._stop_process()
        self._stop_if_done()

    _handlers: dict[type, Callable[[SessionActor, Any], None]] = {
        Advance: _on_advance,
        Cancel: _on_cancel,
        Close: _on_close,
        Drain: _on_drain,
        Shutdown: _on_shutdown,
        Fence: _on_fence,
        StreamMessage: _on_stream,
        ProcessExited: _on_exit,
        RetryFinish: _on_retry_finish,
        ToolsSwept: _on_tools_swept,
        SlotGranted: _on_slot_granted,
        Evict: _on_evict,
        TaskDeadline: _on_deadline,
        IdleTimeout: _on_idle,
        Answer: _on_answer,
        ApprovalDeadline: _on_approval_deadline,
    }

    # Starting tasks

    def _advance(self, *, told_of_work: bool = False) -> None:
        """Start the session's next task, if the store has one and nothing runs.

        ``told_of_work``: a submit's wake, so a live process skips the look and takes
        straight away; taking nothing is no error.
        """
        state, host = self.state, self.host
        if self.current is not None or state.sweeping_tools or state.actor_stopping:
            return
        if not state.takes_new_work:
            return
        if host.process is not None and (host.process_ending or not host.process.usable):
            return  # on its way out; its exit calls us again
        # A read first: taking nothing would cost a write transaction, and most turns end so.
        if (host.process is None or not told_of_work) and not self.queue.has_pending():
            if state.orphan_possible and self.claim.epoch is not None:
                self._settle_orphan()
            self._became_idle()
            return
        if host.process is None:
            self._not_idle()
            if state.slot is Slot.NONE:
                state.move_slot(Slot.REQUESTED)
                self.supervisor.tell(SlotRequested(self.session_id))
                return
            if state.slot is Slot.REQUESTED:
                return
        # A slot is ours: now the session, unless another node runs it.
        if not self._claimed() or (state.orphan_possible and self._settle_orphan()):
            return
        if not self._may_run_next():
            return
        if host.process is None and not self._spawn():
            return
        self._start_next()

    def _may_run_next(self) -> bool:
        """Whether the next task may run; if not, it fails (or the process goes) saying why."""
        spent = self.queue.budget_spent(self.session)
        if spent is not None:
            self._fail_unrun(spent)
            return False
        moved = self.queue.workdir_problem(self.session)
        if moved is not None:
            self._refuse_moved_workdir(moved)
            return False
        return True

    def _claimed(self) -> bool:
        """Whether this node holds the session, claiming it first if need be."""
        why_not = self.claim.take(self.session.workdir)
        if why_not is None:
            return True
        if why_not is NO_LEASE:
            self._retry(Advance())
        else:
            self._let_go(why_not)
        return False

    def _lease_gone(self) -> bool:
        """Whether the lease this actor's claim was taken under is gone; if so it lets go,
        continuing nothing of the turn."""
        if not self.claim.lease_lost():
            return False
        self._let_go("this node's lease is gone")
        return True

    def _let_go(self, why: str) -> None:
        """Another node runs the session (or must): stop here without writing for it."""
        log.info("session %s: letting go here (%s)", self.session_id, why)
        self.state.hand_off()
        self.claim.drop()
        if self.current is not None:
            self.current.cancel_timers()
            self.current = None
        self.host.retire()
        self._release_slot()
        self.stop()

    def _start_next(self) -> None:
        """Record, then dispatch: the prompt goes out only after ``running`` is committed."""
        process = self.host.process
        assert process is not None
        self.ctx.faults.reach("start.before_commit")
        task = self.queue.take(self.claim.epoch)
        if task is None:
            self._became_idle()
            return
        self.current = turn = Turn(
            task, self.host.generation, time.monotonic(), work_left=task.timeout_s or None
        )
        self._not_idle()
        announce(self.ctx, task)
        self.ctx.faults.reach("start.after_commit")
        process.send_prompt(task.command)
        self.supervisor.tell(ProcessBusy(self.session_id))
        turn.start_clock(self.ctx.scheduler, self.actor_ref)

    def _fail_unrun(self, error: str) -> None:
        """Fail the next task without sending it; the rest follow one message at a time."""
        if not self.queue.fail_unrun(error, self.claim.epoch):
            self._became_idle()
            return
        self.actor_ref.tell(Advance())

    def _settle_orphan(self) -> bool:
        """Fail a task the store shows running that no turn of ours owns; True if there was one.

        Only this actor starts the session's tasks and it sends a prompt only once
        ``current`` holds the turn, so such a task's prompt never left: it fails
        (running cannot go back to pending) saying so, instead of blocking the queue.
        """
        orphan = self.queue.orphan()
        self.state.orphan_possible = False
        if orphan is None:
            return False
        self._fail_turn(
            orphan,
            "aicli could not confirm that this task started, so it was not sent to Claude; "
            "submit it again.",
        )
        return True

    def _fail_turn(self, task: Task, error: str) -> None:
        """A task this actor started but will not run: it fails through the usual commit."""
        self.current = Turn(task, self.host.generation, time.monotonic())
        self._not_idle()
        self._conclude(Outcome.failure(error))

    def _refuse_moved_workdir(self, why: str) -> None:
        """Fail the next task: its workdir is not the one the session was opened on. A live
        process dies too, as its sandbox holds what the workdir was; each later task fails
        alike until the directory is back."""
        if self.host.process is None:
            self._fail_next(why)
            return
        self.host.retire()
        task = self.queue.take(self.claim.epoch)
        if task is not None:
            self._fail_turn(task, why)

    def _spawn(self) -> bool:
        """Start a process for the next task; if that cannot work, that task fails saying why."""
        failure = self.host.spawn(self.session, self.claim.node_id, self.actor_ref)
        if failure is None:
            return True
        self._fail_next(failure)
        return False

    def _fail_next(self, error: str) -> None:
        self._release_slot()
        task = self.queue.take(self.claim.epoch)
        if task is not None:
            self._fail_turn(task, error)

    # Ending tasks

    def _end_running(self, status: str, error: str) -> None:
        """Interrupt the running turn; its result (or the process's death) finishes the task."""
        turn = self.current
        assert turn is not None
        if turn.end is not None or turn.outcome is not None:
            return
        turn.end = (status, error)
        self.approvals.expire_waiting(
            self.current, f"The task is ending ({status}) before this was decided."
        )
        process = self.host.live_process
        if process is not None and process.alive:
            process.interrupt()
            turn.timers.append(
                self.ctx.scheduler.tell_later(
                    self.ctx.settings.cancel_grace,
                    self.actor_ref,
                    TaskDeadline(turn.task.id, "kill"),
                )
            )
        else:
            self._conclude(Outcome.failure(error))

    def _conclude(self, outcome: Outcome, events: list[tuple[str, dict[str, Any]]] = ()) -> None:
        """The turn is over: how it ended is decided now, and committed next."""
        turn = self.current
        assert turn is not None
        turn.cancel_timers()
        if turn.end is not None and outcome.status != TaskStatus.COMPLETED:
            outcome = Outcome.failure(turn.end[1], status=turn.end[0], like=outcome)
        turn.outcome = outcome
        turn.events = list(events)
        self._commit_end()

    def _commit_end(self) -> None:
        """Store the outcome; only then is the turn over. A failed commit kills the turn's
        process (nothing more of it may reach the store) and is retried."""
        turn = self.current
        assert turn is not None and turn.outcome is not None
        if not self.state.fenced:
            self.recorder.keep_transcript(self.session, self.claim.epoch)
        try:
            task = self.recorder.record(turn, self.claim.epoch)
        except NotOwner:
            self._let_go("another node took it over; it ends the task")
            return
        except Exception:
            log.exception(
                "session %s: could not record how task %s ended; retrying",
                self.session_id,
                turn.task.id,
            )
            self.host.retire()
            self._retry(RetryFinish())
            return
        self.current = None
        self.recorder.recorded(turn, task)
        if turn.end is not None and self.host.live_process is not None:
            self.state.sweeping_tools = True
            self.host.sweep_tools(self.actor_ref)
        self._stop_if_done()
        self._advance()

    def _after_failure(self, exc: Exception) -> None:
        """A handler raised. During a turn: the generation rule. Otherwise: look again later."""
        turn = self.current
        if turn is None:
            self.state.orphan_possible = True
            self._retry(Advance())
            return
        if turn.outcome is not None:
            self._retry(RetryFinish())
            return
        self.host.retire()
        try:
            self._conclude(
                Outcome.failure(
                    f"aicli failed while handling this task ({type(exc).__name__}: {exc}); "
                    "its Claude turn was stopped."
                )
            )
        except Exception:
            log.exception("session %s: could not fail the task either", self.session_id)

    def _retry(self, message: Advance | RetryFinish) -> None:
        """Try again in a while; one retry waits at a time."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.retry_timer = self.ctx.scheduler.tell_later(RETRY_S, self.actor_ref, message)

    # Idleness, the slot, and stopping

    def _became_idle(self) -> None:
        """Nothing left to run: start the idle clock (process stop, then passivation)."""
        if self.current is None:
            self.idle.start(with_process=self.host.process is not None)

    def _not_idle(self) -> None:
        """Work is here: the idle clock stops, and a passivation under way is called off."""
        self.state.wake()
        self.idle.stop()

    def _stop_process(self) -> None:
        self.host.stop()
        if self.host.process is None and self.state.slot is Slot.HELD:
            self._release_slot()

    def _release_slot(self) -> None:
        if self.state.slot is not Slot.NONE:
            self.state.move_slot(Slot.NONE)
            self.supervisor.tell(SlotReleased(self.session_id))

    def _stop_if_done(self) -> None:
        """A closed or long-idle session's actor goes away once its process has.

        An idle one costs a thread and a database connection; the supervisor
        starts a new actor for the session when it is needed again, and also
        when a task reached the store while this one was stopping.
        """
        if self.host.process is not None or self.current is not None:
            return
        if self.state.goes_once_idle:
            if self.state.intake is Intake.CLOSED:
                self.dirs.remove()  # no process runs: nothing of the session needs them now
            self.state.stop()
            self._release_slot()
            self.stop()

    def _learn_claude_session(self, claude_session_id: str | None) -> None:
        if claude_session_id and claude_session_id != self.session.claude_session_id:
            self.session = self.store.update_session(
                self.session_id, claude_session_id=claude_session_id
            )
