"""The session's queue as its actor takes from it: what may run next, and taking it.

The queue is the session's pending rows in the store. Taking a task commits it as
``running`` (the store decides what runs next and that nothing else of the session
runs); a task that may not run is taken and failed at once, saying why, so the
queue never stalls behind it.
"""

from __future__ import annotations

import logging
import os

from aicli.actors.session_context import SESSION_LOG, ActorContext, announce
from aicli.contract import ROOT_PRINCIPAL_ID, Session, Task, TaskStatus
from aicli.workspace import outside_root

log = logging.getLogger(SESSION_LOG)


class TaskTaker:
    def __init__(self, context: ActorContext, session_id: str) -> None:
        self.ctx = context
        self.store = context.store
        self.session_id = session_id

    def has_pending(self) -> bool:
        return self.store.has_pending(self.session_id)

    def work_left(self) -> bool:
        """``has_pending`` as the actor ends; if the store does not answer, True: a new
        actor looks again."""
        try:
            return self.has_pending()
        except Exception as exc:
            log.warning("session %s: could not look at its queue: %s", self.session_id, exc)
            return True

    def take(self, epoch: int | None) -> Task | None:
        """Commit the next task as running (None: there is none)."""
        return self.store.start_next_task(self.session_id, epoch=epoch)

    def orphan(self) -> Task | None:
        """A task the store shows running, which no turn of this actor may own."""
        return self.store.running_task_of(self.session_id)

    def fail_unrun(self, error: str, epoch: int | None) -> bool:
        """Fail the next task without sending it; whether there was one."""
        task = self.take(epoch)
        if task is None:
            return False
        announce(self.ctx, task)
        ended = self.store.finish_task(task.id, TaskStatus.FAILED, error=error, epoch=epoch)
        announce(self.ctx, ended)
        return True

    def budget_spent(self, session: Session) -> str | None:
        """Why the next task may not run: its owner's budget is spent (None: it may)."""
        owner = session.owner
        if owner is None or owner == ROOT_PRINCIPAL_ID:
            return None
        principal = self.store.principals.get(owner)
        budget = principal.limits.budget_usd
        if budget is None or principal.total_cost_usd < budget:
            return None
        return (
            f"Principal '{principal.name}' has spent its budget of ${budget:g}"
            f" (${principal.total_cost_usd:.4f}); this task was not run."
        )

    def workdir_problem(self, session: Session) -> str | None:
        """Why the next task may not run in the session's workdir (or with its read paths),
        checked at every task start: a symlink or a rename can move them after the session
        was opened, and the sandbox binds whatever they lead to when a process starts."""
        root = self.ctx.settings.workspace_root
        if root and outside_root(session.workdir, root):
            return (
                f"The session's workdir '{session.workdir}' now lies outside the "
                f"workspace root '{root}'; open a session inside it."
            )
        for what, path in [
            ("workdir", session.workdir),
            *(("read path", p) for p in session.settings.read_paths),
        ]:
            if problem := path_moved(what, path):
                return problem
        return None


def path_moved(what: str, path: str) -> str | None:
    """Why a task may not run with the session's ``what`` (its workdir or a read path,
    stored as its real path when the session was opened) at ``path``, or None: it is gone,
    or a link now stands where it was, say to another user's workspace, which the next
    process would otherwise follow."""
    real = os.path.realpath(path)
    if real != path:
        return (
            f"The session's {what} '{path}' is no longer the directory the session was "
            f"opened on: it now leads to '{real}'. The task was not run; open a session on "
            "the directory you mean."
        )
    if not os.path.isdir(path):
        return f"The session's {what} '{path}' is gone; the task was not run."
    return None
