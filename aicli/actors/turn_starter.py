"""From the session's queue to a prompt sent: the start of a turn.

Nothing runs while a turn runs, tools of an interrupted one are still being ended,
the actor is stopping, or the session takes no new work. Otherwise the next task
needs, in this order: a process slot from the supervisor (when no process lives),
this node's claim on the session, a spent budget or a moved workdir not in its
way, and a process. Only then is it committed as running, and only then does its
prompt go out.
"""

from __future__ import annotations

import time

from aicli.actors.messages import Advance, ProcessBusy, SlotRequested
from aicli.actors.session_claim import NO_LEASE
from aicli.actors.session_context import announce
from aicli.actors.session_core import SessionCore
from aicli.actors.session_state import Slot
from aicli.actors.stream import Outcome
from aicli.actors.turn import Turn
from aicli.contract import Task


class TurnStarter:
    def __init__(self, core: SessionCore) -> None:
        self.core = core

    def advance(self, *, told_of_work: bool = False) -> None:
        """Start the session's next task, if the store has one and nothing runs.

        ``told_of_work``: a submit's wake, or a slot granted because the queue held work:
        with a live process or that slot, no look at the queue before taking (taking
        nothing is no error). Without either, a look first: it spares a slot request.
        """
        core = self.core
        state, host = core.state, core.host
        if core.current is not None or state.sweeping_tools or state.actor_stopping:
            return
        if not state.takes_new_work:
            return
        if host.process is not None and (host.process_ending or not host.process.usable):
            return  # on its way out; its exit calls us again
        # A read first: taking nothing would cost a write transaction, and most turns end so.
        trusted = told_of_work and (host.process is not None or state.slot is Slot.HELD)
        if not trusted and not core.queue.has_pending():
            if state.orphan_possible and core.claim.epoch is not None:
                self._settle_orphan()
            core.became_idle()
            return
        if host.process is None:
            core.not_idle()
            if state.slot is Slot.NONE:
                state.move_slot(Slot.REQUESTED)
                core.supervisor.tell(SlotRequested(core.session_id))
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
        core = self.core
        spent = core.queue.budget_spent(core.session)
        if spent is not None:
            self._fail_unrun(spent)
            return False
        moved = core.queue.workdir_problem(core.session)
        if moved is not None:
            self._refuse_moved_workdir(moved)
            return False
        return True

    def _claimed(self) -> bool:
        """Whether this node holds the session, claiming it first if need be."""
        why_not = self.core.claim.take(self.core.session.workdir)
        if why_not is None:
            return True
        if why_not is NO_LEASE:
            self.core.ender.retry(Advance())
        else:
            self.core.let_go(why_not)
        return False

    def _start_next(self) -> None:
        """Record, then dispatch: the prompt goes out only after ``running`` is committed."""
        core = self.core
        process = core.host.process
        assert process is not None
        core.ctx.faults.reach("start.before_commit")
        task = core.queue.take(core.claim.epoch)
        if task is None:
            core.became_idle()
            return
        core.current = turn = Turn(
            task, core.host.generation, time.monotonic(), work_left=task.timeout_s or None
        )
        core.not_idle()
        announce(core.ctx, task)
        core.ctx.faults.reach("start.after_commit")
        process.send_prompt(task.command)
        core.supervisor.tell(ProcessBusy(core.session_id))
        turn.start_clock(core.ctx.scheduler, core.actor_ref)

    def _fail_unrun(self, error: str) -> None:
        """Fail the next task without sending it; the rest follow one message at a time."""
        if not self.core.queue.fail_unrun(error, self.core.claim.epoch):
            self.core.became_idle()
            return
        self.core.actor_ref.tell(Advance())

    def _settle_orphan(self) -> bool:
        """Fail a task the store shows running that no turn of ours owns; True if there was one.

        Only this actor starts the session's tasks and it sends a prompt only once
        ``current`` holds the turn, so such a task's prompt never left: it fails
        (running cannot go back to pending) saying so, instead of blocking the queue.
        """
        orphan = self.core.queue.orphan()
        self.core.state.orphan_possible = False
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
        core = self.core
        core.current = Turn(task, core.host.generation, time.monotonic())
        core.not_idle()
        core.ender.conclude(Outcome.failure(error))

    def _refuse_moved_workdir(self, why: str) -> None:
        """Fail the next task: its workdir is not the one the session was opened on. A live
        process dies too, as its sandbox holds what the workdir was; each later task fails
        alike until the directory is back."""
        if self.core.host.process is None:
            self._fail_next(why)
            return
        self.core.host.retire()
        task = self.core.queue.take(self.core.claim.epoch)
        if task is not None:
            self._fail_turn(task, why)

    def _spawn(self) -> bool:
        """Start a process for the next task; if that cannot work, that task fails saying why."""
        core = self.core
        failure = core.host.spawn(core.session, core.claim.node_id, core.actor_ref)
        if failure is None:
            return True
        self._fail_next(failure)
        return False

    def _fail_next(self, error: str) -> None:
        self.core.release_slot()
        task = self.core.queue.take(self.core.claim.epoch)
        if task is not None:
            self._fail_turn(task, error)
