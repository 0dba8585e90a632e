"""The end of a turn: decided (by Claude's result, the process's death, a cancel, a
timeout, or a failure of ours), then committed, and retried until it is.

A turn belongs to one process generation. If anything goes wrong while it is live
(a handler raises, a commit fails), that process is killed, its late messages are
ignored, and the task fails with a clear error before anything else runs.
"""

from __future__ import annotations

import logging
from typing import Any

from aicli.actors.messages import Advance, RetryFinish, TaskDeadline
from aicli.actors.scheduler import Timer
from aicli.actors.session_context import SESSION_LOG
from aicli.actors.session_core import SessionCore
from aicli.actors.stream import Outcome
from aicli.contract import TaskStatus
from aicli.errors import NotOwner

log = logging.getLogger(SESSION_LOG)

RETRY_S = 1.0


class TurnEnder:
    def __init__(self, core: SessionCore) -> None:
        self.core = core
        self.retry_timer: Timer | None = None

    def end_running(self, status: str, error: str) -> None:
        """Interrupt the running turn; its result (or the process's death) finishes the task."""
        core = self.core
        turn = core.current
        assert turn is not None
        if turn.interrupted_as is not None or turn.outcome is not None:
            return
        turn.interrupted_as = (status, error)
        core.approvals.expire_waiting(
            core.current, f"The task is ending ({status}) before this was decided."
        )
        process = core.host.live_process
        if process is not None and process.alive:
            process.interrupt()
            turn.timers.append(
                core.ctx.scheduler.tell_later(
                    core.ctx.settings.cancel_grace,
                    core.actor_ref,
                    TaskDeadline(turn.task.id, "kill"),
                )
            )
        else:
            self.conclude(Outcome.failure(error))

    def deadline(self, message: TaskDeadline) -> None:
        """The task's time is up, or its interrupt was not heeded in time (then: kill)."""
        core = self.core
        turn = core.current
        if turn is None or turn.task.id != message.task_id or turn.outcome is not None:
            return
        if message.kind == "timeout":
            if not turn.timed_out(message):
                return  # set before the clock paused for a person; a new one is running
            limit = turn.task.timeout_s or 0
            self.end_running(
                TaskStatus.FAILED, f"Timed out after {limit:g} s; the Claude turn was interrupted."
            )
        elif message.kind == "kill" and core.host.process is not None:
            log.warning("session %s: turn did not end after interrupt; killing", core.session_id)
            core.host.kill()

    def conclude(self, outcome: Outcome, events: list[tuple[str, dict[str, Any]]] = ()) -> None:
        """The turn is over: how it ended is decided now, and committed next."""
        turn = self.core.current
        assert turn is not None
        turn.cancel_timers()
        if turn.interrupted_as is not None and outcome.status != TaskStatus.COMPLETED:
            status, error = turn.interrupted_as
            outcome = Outcome.failure(error, status=status, like=outcome)
        turn.outcome = outcome
        turn.events = list(events)
        self.commit_end()

    def commit_end(self) -> None:
        """Store the outcome; only then is the turn over. A failed commit kills the turn's
        process (nothing more of it may reach the store) and is retried."""
        core = self.core
        turn = core.current
        assert turn is not None and turn.outcome is not None
        if not core.state.fenced:
            core.recorder.keep_transcript(core.session, core.claim.epoch)
        try:
            task = core.recorder.record(turn, core.claim.epoch)
        except NotOwner:
            core.let_go("another node took it over; it ends the task")
            return
        except Exception:
            log.exception(
                "session %s: could not record how task %s ended; retrying",
                core.session_id,
                turn.task.id,
            )
            core.host.retire()
            self.retry(RetryFinish())
            return
        core.current = None
        core.recorder.recorded(turn, task)
        if turn.interrupted_as is not None and core.host.live_process is not None:
            core.state.sweeping_tools = True
            core.host.sweep_tools(core.actor_ref)
        core.stop_if_done()
        core.starter.advance()

    def retry(self, message: Advance | RetryFinish) -> None:
        """Try again in a while; one retry waits at a time."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.retry_timer = self.core.ctx.scheduler.tell_later(RETRY_S, self.core.actor_ref, message)
