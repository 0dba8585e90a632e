"""Named points between two steps of the actor core, where a crash test can strike.

Promises like "a prompt is never sent for a task the store does not show
running" are about what happens when the server dies between two steps. A test
proves them by stalling or killing a real server exactly there, so the actors
call ``faults.reach(point)`` at each such seam. Unarmed (the normal case) that
costs a dictionary lookup.

``AICLI_FAULTS`` arms points for an ``aicli serve`` under test:
``point=action[@n],...``, where ``action`` is ``stall`` (block that thread for
good: a disk that never answers), ``kill`` (SIGKILL the server) or ``raise``
(the step fails), on the ``n``-th time the point is reached (default: the
first). Points: ``start.before_commit``, ``start.after_commit`` (the task is
committed as running, its prompt not yet sent), ``stream.event`` (an event of
a live turn is about to be stored), ``finish.before_commit``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping

from aicli.errors import AicliError, InvalidRequest

ENVIRONMENT_VARIABLE = "AICLI_FAULTS"
ACTIONS = ("stall", "kill", "raise")


class FaultInjected(AicliError):
    """The step failed because a test armed a fault there."""


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[str, int]] = {}
        self._reached: dict[str, int] = {}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Faults:
        faults = cls()
        spec = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, rest = item.partition("=")
            action, _, nth = rest.partition("@")
            if action not in ACTIONS or not point or (nth and not nth.isdigit()):
                raise InvalidRequest(
                    f"{ENVIRONMENT_VARIABLE} item {item!r} is not point=action[@n] with an "
                    f"action among {', '.join(ACTIONS)}.",
                    {"setting": ENVIRONMENT_VARIABLE},
                )
            faults.arm(point, action, int(nth or 1))
        return faults

    def arm(self, point: str, action: str, nth: int = 1) -> None:
        """Strike at ``point`` the ``nth`` time it is reached from now on."""
        with self._lock:
            self._armed[point] = (action, self._reached.get(point, 0) + nth)

    def reach(self, point: str) -> None:
        if not self._armed:
            return
        with self._lock:
            count = self._reached[point] = self._reached.get(point, 0) + 1
            armed = self._armed.get(point)
            if armed is None or armed[1] != count:
                return
            del self._armed[point]
        action = armed[0]
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "stall":
            threading.Event().wait()
        raise FaultInjected(f"A fault was injected at {point}.", {"point": point})
