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
state (``session_state``). The rest are parts it composes (``session_core``):
components that know nothing of one another, and the coordinators of a turn.
"""

from __future__ import annotations

import logging
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
    ProcessExited,
    RetryFinish,
    SessionStopped,
    Shutdown,
    SlotGranted,
    SlotReleased,
    StreamMessage,
    TaskDeadline,
    ToolsSwept,
    Wake,
)
from aicli.actors.process_host import ProcessHost
from aicli.actors.session_claim import SessionClaim
from aicli.actors.session_context import (
    SESSION_LOG,
    ActorContext,
    ProcessFactory,
    announce,
    transcript_sync,
)
from aicli.actors.session_dirs import session_dirs
from aicli.actors.session_state import Intake, SessionState, Slot
from aicli.actors.stream import Outcome
from aicli.actors.stream_reader import StreamReader
from aicli.actors.task_taker import TaskTaker
from aicli.actors.turn import SERVER_SHUTDOWN, Turn
from aicli.actors.turn_approvals import TurnApprovals
from aicli.actors.turn_ender import RETRY_S, TurnEnder
from aicli.actors.turn_recorder import TurnRecorder
from aicli.actors.turn_starter import TurnStarter
from aicli.contract import Session, SessionStatus, TaskStatus
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


class SessionActor(pykka.ThreadingActor):
    session: Session  # read in ``on_start``, on the actor's own thread

    def __init__(
        self,
        session_id: str,
        context: ActorContext,
        supervisor: pykka.ActorRef[Any],
        *,
        held_only: bool = False,
    ) -> None:
        """No I/O: this runs on the supervisor's thread (``on_start`` reads the session).
        ``held_only``: a peer's news; the actor runs the session only if this node holds it."""
        super().__init__()
        self.session_id = session_id
        self.held_only = held_only
        self.opened = False  # the session was read and runs here
        self.ctx = context
        self.supervisor = supervisor
        self.current: Turn | None = None
        self.state = SessionState()
        self.dirs = session_dirs(context.state_dir, session_id)
        transcript = transcript_sync(context, session_id, self.dirs)
        self.queue = TaskTaker(context, session_id)
        self.claim = SessionClaim(context, session_id)
        self.host = ProcessHost(context, session_id, self.dirs, transcript)
        self.recorder = TurnRecorder(context, transcript)
        self.approvals = TurnApprovals(context, session_id, self.actor_ref, self.lease_gone)
        self.idle = IdleClock(context, session_id, self.actor_ref, supervisor)
        self.starter = TurnStarter(self)
        self.reader = StreamReader(self)
        self.ender = TurnEnder(self)

    # Lifecycle

    def on_start(self) -> None:
        try:
            if self._open():
                self.starter.advance()
        except Exception as exc:
            log.exception("session %s: failed to start", self.session_id)
            self._after_failure(exc)

    def on_stop(self) -> None:
        for timer in (self.idle.timer, self.ender.retry_timer):
            if timer is not None:
                timer.cancel()
        if self.current is not None:
            self.current.cancel_timers()
        self.host.kill_now(fenced=self.state.fenced)
        # A turn still live keeps the claim: its task fails when this node's lease ends.
        if not self.state.fenced and self.current is None:
            self.claim.release()
        # Whether a task came in while it stopped, read here: the supervisor reads nothing.
        looks = self.opened and not self.state.handed_off and self.state.intake is Intake.OPEN
        pending = looks and self.queue.work_left()
        stopped = SessionStopped(self.session_id, self.actor_urn, self.state.handed_off, pending)
        self.supervisor.tell(stopped)

    def _open(self) -> bool:
        """Read the session here (the supervisor does no I/O); whether it runs here. If not,
        the actor stops; if the store fails, the supervisor starts one again in a while."""
        try:
            self.session = self.ctx.store.get_session(self.session_id)
            elsewhere = self.claim.runs_elsewhere(self.session, held_only=self.held_only)
        except Exception as exc:
            outage = isinstance(exc, StorageError | Unavailable)
            log.warning("session %s: not started: %s", self.session_id, exc, exc_info=not outage)
            wake = Wake(self.session_id, from_peer=self.held_only)
            self.ctx.scheduler.tell_later(RETRY_S, self.supervisor, wake)
            self.state.stop()
            self.stop()
            return False
        if self.session.status == SessionStatus.CLOSED:
            self.state.close()
            self.state.stop()
            self.dirs.remove()  # no process runs: nothing of the session needs them
        elif elsewhere:
            self.state.hand_off()
        else:
            self.opened = True
            return True
        self.stop()
        return False

    # Tells, and the failure rule

    def on_receive(self, message: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            super().on_receive(message)
            return
        try:
            handler(self, message)
        except NotOwner:
            self.let_go("another node took it over")
        except Exception as exc:
            kind = type(message).__name__
            if isinstance(exc, StorageError | Unavailable):  # an outage, not a bug of ours
                log.warning("session %s: %s while handling %s", self.session_id, exc, kind)
            else:
                log.exception("session %s: failed to handle %s", self.session_id, kind)
            self._after_failure(exc)

    def _after_failure(self, exc: Exception) -> None:
        """A handler raised. During a turn: the generation rule. Otherwise: look again later."""
        turn = self.current
        if turn is None:
            self.state.orphan_possible = True
            self.ender.retry(Advance())
            return
        if turn.outcome is not None:
            self.ender.retry(RetryFinish())
            return
        self.host.retire()
        try:
            self.ender.conclude(
                Outcome.failure(
                    f"aicli failed while handling this task ({type(exc).__name__}: {exc}); "
                    "its Claude turn was stopped."
                )
            )
        except Exception:
            log.exception("session %s: could not fail the task either", self.session_id)

    def _on_advance(self, _: Advance) -> None:
        self.starter.advance(told_of_work=True)

    def _on_cancel(self, message: Cancel) -> None:
        if self.current is not None and self.current.task.id == message.task_id:
            self.ender.end_running(TaskStatus.CANCELLED, CANCELLED_RUNNING)

    def _on_close(self, _: Close) -> None:
        self.state.close()
        if self.current is not None:
            self.ender.end_running(TaskStatus.CANCELLED, SESSION_CLOSED_RUNNING)
        self._stop_process()
        self.stop_if_done()

    def _on_drain(self, _: Drain) -> None:
        self.state.drain()
        if self.current is not None and self.current.waiting:
            # Nobody will be there to answer: the turn ends now, not at the end of the grace.
            self.ender.end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _on_fence(self, _: Fence) -> None:
        """This node may no longer act for the session: its process dies, nothing is written.

        A peer fails the running task once the lease has run out, and runs the rest."""
        self.state.fence()
        self.let_go("this node lost its lease")

    def _on_shutdown(self, _: Shutdown) -> None:
        self.state.drain()
        if self.current is not None:
            self.ender.end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)
        self._stop_process()

    def _on_stream(self, message: StreamMessage) -> None:
        self.reader.read(message)

    def _on_answer(self, message: Answer) -> None:
        self.approvals.answer(message, self.current, self.host.live_process)

    def _on_approval_deadline(self, message: ApprovalDeadline) -> None:
        timeout_s = self.session.approval_timeout_s
        self.approvals.deadline(message, self.current, self.host.live_process, timeout_s)

    def _on_exit(self, message: ProcessExited) -> None:
        if message.generation != self.host.generation:
            return
        process = self.host.exited()
        self.release_slot()
        if process is not None:
            self.host.forget(process, fenced=self.state.fenced)
        turn = self.current
        if turn is not None and turn.generation == message.generation and turn.outcome is None:
            self.ender.conclude(Outcome.failure(message.exit.describe()))
        self.stop_if_done()
        self.starter.advance()

    def _on_retry_finish(self, _: RetryFinish) -> None:
        if self.current is not None and self.current.outcome is not None:
            self.ender.commit_end()

    def _on_tools_swept(self, _: ToolsSwept) -> None:
        self.state.sweeping_tools = False
        self.starter.advance()

    def _on_slot_granted(self, _: SlotGranted) -> None:
        """The slot was asked for because the queue held work: no second look before taking."""
        self.state.move_slot(Slot.HELD)
        if not self.state.takes_new_work:
            self.release_slot()
            self.became_idle()
            return
        self.starter.advance(told_of_work=True)

    def _on_evict(self, _: Evict) -> None:
        if self.current is None and self.host.process is not None:
            self._stop_process()
        elif self.current is None and self.state.slot is Slot.HELD:
            self.release_slot()
        else:
            self.supervisor.tell(EvictRefused(self.session_id))

    def _on_deadline(self, message: TaskDeadline) -> None:
        self.ender.deadline(message)

    def _on_idle(self, message: IdleTimeout) -> None:
        """Idle for the whole timeout: stop the process, then this actor, until needed again."""
        if self.current is not None or not self.idle.ran_out(message):
            return
        self.state.passivate()
        if self.host.process is not None:
            log.info("session %s: stopping its idle Claude process", self.session_id)
            self._stop_process()
        self.stop_if_done()

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

    # What the coordinators call back (``SessionCore``)

    def lease_gone(self) -> bool:
        """Whether the lease this actor's claim was taken under is gone; if so it lets go,
        continuing nothing of the turn."""
        if not self.claim.lease_lost():
            return False
        self.let_go("this node's lease is gone")
        return True

    def let_go(self, why: str) -> None:
        """Another node runs the session (or must): stop here without writing for it."""
        log.info("session %s: letting go here (%s)", self.session_id, why)
        self.state.hand_off()
        self.claim.drop()
        if self.current is not None:
            self.current.cancel_timers()
            self.current = None
        self.host.retire()
        self.release_slot()
        self.stop()

    def became_idle(self) -> None:
        """Nothing left to run: start the idle clock (process stop, then passivation)."""
        if self.current is None:
            self.idle.start(with_process=self.host.process is not None)

    def not_idle(self) -> None:
        """Work is here: the idle clock stops, and a passivation under way is called off."""
        self.state.wake()
        self.idle.stop()

    def release_slot(self) -> None:
        if self.state.slot is not Slot.NONE:
            self.state.move_slot(Slot.NONE)
            self.supervisor.tell(SlotReleased(self.session_id))

    def stop_if_done(self) -> None:
        """A closed or long-idle session's actor goes away once its process has.

        An idle one costs a thread and a database connection; the supervisor starts a
        new one when it is needed again (or a task came in while this one stopped).
        """
        if self.host.process is not None or self.current is not None:
            return
        if self.state.goes_once_idle:
            if self.state.intake is Intake.CLOSED:
                self.dirs.remove()  # no process runs: nothing of the session needs them now
            self.state.stop()
            self.release_slot()
            self.stop()

    def _stop_process(self) -> None:
        self.host.stop()
        if self.host.process is None and self.state.slot is Slot.HELD:
            self.release_slot()
