"""A session actor's idle clock: nothing left to run for the whole timeout, and its
process stops, then the actor (passivation), until it is needed again.

Each start of the clock gets a new token, so a timeout that fires after work came
is recognised and ignored.
"""

from __future__ import annotations

import time
from typing import Any

import pykka

from aicli.actors.messages import IdleTimeout, ProcessIdle
from aicli.actors.scheduler import Timer
from aicli.actors.session_context import ActorContext


class IdleClock:
    def __init__(
        self,
        context: ActorContext,
        session_id: str,
        ref: pykka.ActorRef[Any],
        supervisor: pykka.ActorRef[Any],
    ) -> None:
        self.ctx = context
        self.session_id = session_id
        self.ref = ref
        self.supervisor = supervisor
        self.token = 0
        self.timer: Timer | None = None

    def start(self, *, with_process: bool) -> None:
        """Nothing left to run: the clock starts, unless it already runs. With a process,
        the supervisor hears of it (an idle process is the first to be evicted)."""
        if self.timer is not None:
            return
        self.token += 1
        if with_process:
            self.supervisor.tell(ProcessIdle(self.session_id, time.monotonic()))
        timeout = self.ctx.settings.idle_process_timeout
        if timeout > 0:
            self.timer = self.ctx.scheduler.tell_later(timeout, self.ref, IdleTimeout(self.token))

    def stop(self) -> None:
        """Work is here: the clock stops, and a timeout already on its way is stale."""
        self.token += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def ran_out(self, message: IdleTimeout) -> bool:
        """Whether ``message`` is the running clock's timeout; if so the clock is spent."""
        if message.token != self.token:
            return False
        self.timer = None
        return True
