"""Recording how a turn ended, apart from running it.

The end of a turn is committed once; only then is the turn over. An earlier attempt
whose answer was lost shows as an illegal transition and reads the task back instead.
Which failures are retried, and what dies with them, is the actor's rule: this only
writes, then tells the waiters and the metrics.
"""

from __future__ import annotations

import time

from aicli.actors.session_context import ActorContext, announce
from aicli.actors.transcript_sync import TranscriptSync
from aicli.actors.turn import Turn
from aicli.contract import Session, Task
from aicli.errors import IllegalTransition


class TurnRecorder:
    def __init__(self, context: ActorContext, transcript: TranscriptSync | None) -> None:
        self.ctx = context
        self.transcript = transcript

    def keep_transcript(self, session: Session, epoch: int | None) -> None:
        """Before the end is committed: a peer that runs the next task resumes from it."""
        if self.transcript is not None and session.claude_session_id:
            self.transcript.after_turn(session.workdir, session.claude_session_id, epoch)

    def record(self, turn: Turn, epoch: int | None) -> Task:
        """Commit the turn's outcome; the task as the store now has it."""
        outcome = turn.outcome
        assert outcome is not None
        self.ctx.faults.reach("finish.before_commit")
        try:
            return self.ctx.store.finish_task(
                turn.task.id,
                outcome.status,
                output=outcome.output,
                error=outcome.error,
                cost_usd=outcome.cost_usd,
                num_turns=outcome.num_turns,
                duration_ms=outcome.duration_ms,
                usage=outcome.usage,
                events=turn.events,
                epoch=epoch,
            )
        except IllegalTransition:  # an earlier attempt committed, its answer was lost
            return self.ctx.store.get_task(turn.task.id)

    def recorded(self, turn: Turn, task: Task) -> None:
        """Waiters first: they answer clients; the bookkeeping after can wait a moment."""
        announce(self.ctx, task, duration_ms=task.duration_ms, cost_usd=task.cost_usd)
        self.ctx.metrics.task_duration.labels(task.status).observe(time.monotonic() - turn.started)
        assert turn.outcome is not None
        if turn.outcome.cost_usd:
            self.ctx.metrics.cost.inc(turn.outcome.cost_usd)
