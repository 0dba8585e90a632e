"""Times and ids as the API writes them, made in one place so that all of them keep its promises.

Times are aware UTC ``datetime`` values written as RFC 3339 with six fraction
digits and a ``Z``; ids are URL-safe and sort in creation order, which keyset
pagination over ``(created_at, id)`` relies on when two rows share a microsecond.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Annotated

from msgspec import Meta

# An aware UTC time; the API writes it as RFC 3339 with microseconds and a ``Z``.
WRITTEN_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
Timestamp = Annotated[datetime, Meta(tz=True, extra_json_schema={"pattern": WRITTEN_TIME})]


def utcnow() -> datetime:
    """Now, never on a whole second.

    msgspec writes a time's fraction only when it has one, natively and fast
    (a hook per time cost a page of 50 tasks 0.3 ms); so every time this
    program stamps comes from here, and one microsecond later keeps the promise
    of six digits. (A node's lease times are the database's own ``now()``.)
    """
    now = datetime.now(UTC)
    return now if now.microsecond else now.replace(microsecond=1)


_id_lock = threading.Lock()
_last_id_ns = 0


def new_id() -> str:
    """A URL-safe id whose sort order is creation order.

    The first 16 hex digits are a strictly increasing nanosecond clock (per
    process), so ordering by id alone reproduces acceptance order even when two
    rows share a microsecond timestamp.
    """
    global _last_id_ns
    with _id_lock:
        now = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = now
    return f"{now:016x}{os.urandom(8).hex()}"
