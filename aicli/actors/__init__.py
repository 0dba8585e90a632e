"""The actors: a supervisor, an actor per live session, and what they share.

Pykka logs, at INFO and with a traceback, every exception an actor method
hands back to a caller that asked. Most of ours are refusals (no such
session, session closed, queue full, shutting down): answers, not crashes,
and a traceback per 404 or 409 buries the real ones. Importing this package
(anything under ``aicli.actors`` does) drops those records, for embedders as
well as ``aicli serve``. ``StorageError`` and ``IllegalTransition`` mean an
outage or a bug and keep their traceback, as does anything not an
``AicliError``.
"""

from __future__ import annotations

import logging

from aicli.errors import AicliError, IllegalTransition, StorageError


class _RefusalsAreNotCrashes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(error, AicliError)
            and not isinstance(error, StorageError | IllegalTransition)
            and str(record.msg).startswith("Exception returned from")
        )


logging.getLogger("pykka").addFilter(_RefusalsAreNotCrashes())
