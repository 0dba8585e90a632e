"""aicli: run tasks inside Claude Code sessions, over HTTP or embedded in your app.

The embedding API is ``Runtime``; ``Session`` and ``Task`` are the frozen
snapshots it hands out. ``Runtime`` is imported on first use, so that code
needing only the models (or the fake API) does not load the actor system.
"""

from typing import Any

from aicli.contract import Event, Page, Session, Task

__all__ = ["Event", "Page", "Runtime", "Session", "Task"]
# The one source of the version: setup.cfg reads this literal (``attr:``, without importing).
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from aicli.runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'aicli' has no attribute {name!r}")
