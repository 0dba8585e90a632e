"""Whether the runtime takes new work, and whether it is stopping.

One object, because every controller asks it (a submit refuses once draining,
a tell is dropped once stopping) and the HTTP middleware reads it through the
façade: a flag copied into each controller would disagree with the others.
"""

from __future__ import annotations

import threading

from aicli.errors import Unavailable


class Gate:
    def __init__(self) -> None:
        self.accepting = False
        self._stopped = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def open(self) -> None:
        """The last step of a start: requests may now bring work."""
        self.accepting = True

    def close(self) -> None:
        """A drain or a stop began: no new work (work already taken goes on)."""
        self.accepting = False

    def stop(self) -> bool:
        """Mark the runtime stopping; False if it already was (a second stop does nothing)."""
        if self._stopped.is_set():
            return False
        self._stopped.set()
        return True

    def check_accepting(self) -> None:
        if not self.accepting:
            raise Unavailable("The server is shutting down and takes no new work.", 5)
