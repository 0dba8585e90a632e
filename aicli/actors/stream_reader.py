"""What the session's CLI writes, read on the actor's thread: its session id, its
requests for approval, the events of the running turn, and the result that ends it.

A message of an older process generation, of a process on its way out, or read
after this node's lease ran out is ignored: nothing of it may reach the store.
"""

from __future__ import annotations

from typing import Any

from aicli.actors.messages import StreamMessage
from aicli.actors.notifier import events_of
from aicli.actors.session_core import SessionCore
from aicli.actors.stream import event_of, outcome_of
from aicli.actors.turn import SERVER_SHUTDOWN
from aicli.contract import TaskStatus


class StreamReader:
    def __init__(self, core: SessionCore) -> None:
        self.core = core

    def read(self, message: StreamMessage) -> None:
        core = self.core
        host = core.host
        if message.generation != host.generation or host.process_ending or core.lease_gone():
            return
        data = message.message
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self._learn_claude_session(data.get("session_id"))
            return
        if kind == "control_request":
            self._asked(data)
            return
        if kind == "control_cancel_request":
            core.approvals.withdraw(core.current, str(data.get("request_id")))
            return
        turn = core.current
        if turn is None or turn.generation != message.generation or turn.outcome is not None:
            return
        event = event_of(data)
        if data.get("type") == "result":
            self._learn_claude_session(data.get("session_id"))
            outcome = outcome_of(data, host.process_cost)
            total = data.get("total_cost_usd")
            if total is not None:
                host.process_cost = float(total)
            core.ender.conclude(outcome, [event] if event else [])
        elif event is not None:
            core.ctx.faults.reach("stream.event")
            core.ctx.store.append_events(turn.task.id, [event], epoch=core.claim.epoch)
            core.ctx.notifier.announce(events_of(turn.task.id))

    def _asked(self, data: dict[str, Any]) -> None:
        """The CLI asks to use a tool; a turn that now waits for a person while the
        session takes no new work ends at once: nobody will be there to answer."""
        core = self.core
        process = core.host.process
        assert process is not None
        timeout_s = core.session.approval_timeout_s
        waits = core.approvals.request(data, core.current, process, timeout_s)
        if waits and not core.state.takes_new_work:
            core.ender.end_running(TaskStatus.CANCELLED, SERVER_SHUTDOWN)

    def _learn_claude_session(self, claude_session_id: str | None) -> None:
        core = self.core
        if claude_session_id and claude_session_id != core.session.claude_session_id:
            core.session = core.ctx.store.update_session(
                core.session_id, claude_session_id=claude_session_id
            )
