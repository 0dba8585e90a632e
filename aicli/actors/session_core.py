"""What the coordinators of a turn reach of the session actor they serve.

The actor composes components that know nothing of one another (the task taker,
the claim, the process host, the turn recorder, the approvals, the idle clock)
and three coordinators that carry a turn across them: ``TurnStarter`` (the queue
to a prompt), ``StreamReader`` (what the CLI writes) and ``TurnEnder`` (the end,
committed). Like Mopidy's controllers reaching one another through ``core``,
they call back through this protocol instead of importing the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pykka

    from aicli.actors.process_host import ProcessHost
    from aicli.actors.session_claim import SessionClaim
    from aicli.actors.session_context import ActorContext
    from aicli.actors.session_state import SessionState
    from aicli.actors.task_taker import TaskTaker
    from aicli.actors.turn import Turn
    from aicli.actors.turn_approvals import TurnApprovals
    from aicli.actors.turn_ender import TurnEnder
    from aicli.actors.turn_recorder import TurnRecorder
    from aicli.actors.turn_starter import TurnStarter
    from aicli.contract import Session


class SessionCore(Protocol):
    session_id: str
    session: Session
    ctx: ActorContext
    supervisor: pykka.ActorRef[Any]
    current: Turn | None  # the running turn, until its end is committed or the session let go
    state: SessionState
    queue: TaskTaker
    claim: SessionClaim
    host: ProcessHost
    recorder: TurnRecorder
    approvals: TurnApprovals
    starter: TurnStarter
    ender: TurnEnder

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]: ...

    def let_go(self, why: str) -> None: ...

    def lease_gone(self) -> bool: ...

    def became_idle(self) -> None: ...

    def not_idle(self) -> None: ...

    def release_slot(self) -> None: ...

    def stop_if_done(self) -> None: ...
