"""Keyset pagination over ``(created_at, id)`` and its opaque cursor.

A cursor is the urlsafe base64 (unpadded) of ``v1|<created_at>|<id>`` for the
last row of a page: a *position*, not a query. It does not record the order it
was made for, so it is valid with either order: the next page holds the rows
strictly after the position in the order asked for (``desc``: older, ``asc``:
newer). Filters are not encoded either; a client that changes them mid-walk gets
the new filter applied from that position on. Because a row's position never
changes, a cursor stays valid while rows are inserted: rows are never skipped or
repeated, and rows inserted behind the position are simply not reached.

``limit`` is a most, not a promise: a page also ends once the text of its rows
passes ``PAGE_BYTES`` (with at least one row, however large), and then says
``has_more`` with a cursor, as any page that is not the last. Two hundred tasks
of a megabyte of metadata each were one answer of 200 MB, built several times
over (rows, structs, JSON) by each request that asked for them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aicli.contract import Page
from aicli.errors import InvalidRequest
from aicli.storage.fields import to_db_time

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Characters of stored text (prompts, answers, metadata, event data) a page holds at most,
# bar its first row.
PAGE_BYTES = 4 * 1024 * 1024
ORDERS = ("asc", "desc")

_CURSOR_VERSION = "v1"
_CURSOR_ALPHABET = re.compile(r"[A-Za-z0-9_-]{1,200}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Position:
    created_at: datetime
    id: str


@dataclass(frozen=True)
class PageRequest:
    limit: int
    order: str
    after: Position | None


def page_request(limit: int, cursor: str | None, order: str) -> PageRequest:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {MAX_LIMIT}, not {limit!r}.", {"field": "limit"}
        )
    if order not in ORDERS:
        raise InvalidRequest(f"'order' must be 'asc' or 'desc', not {order!r}.", {"field": "order"})
    return PageRequest(limit, order, None if cursor is None else decode_cursor(cursor))


def page_of(items: list[Any], request: PageRequest) -> Page:
    """A page from up to ``limit + 1`` items in page order: the extra one says more follow."""
    has_more = len(items) > request.limit
    items = items[: request.limit]
    last = items[-1] if has_more else None
    cursor = None if last is None else encode_cursor(last.created_at, last.id)
    return Page(data=items, has_more=has_more, next_cursor=cursor)


def fitting(sizes: Iterable[int], budget: int | None = None) -> int:
    """How many of the rows of ``sizes`` (in page order) a page takes: each while the ones
    before it hold less than ``budget`` (default ``PAGE_BYTES``), so always the first."""
    budget = PAGE_BYTES if budget is None else budget
    count = total = 0
    for size in sizes:
        if count and total >= budget:
            break
        count += 1
        total += size or 0
    return count


def encode_cursor(created_at: datetime, row_id: str) -> str:
    text = f"{_CURSOR_VERSION}|{created_at.astimezone(UTC).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    bad = InvalidRequest(
        "'cursor' is not a cursor this service issued; pass a next_cursor back unchanged.",
        {"field": "cursor"},
    )
    if not isinstance(cursor, str) or not _CURSOR_ALPHABET.fullmatch(cursor):
        raise bad
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        version, when, row_id = text.split("|")
        created_at = datetime.fromisoformat(when)
        # An offset can move year 1 or 9999 out of range on the way to UTC.
        in_utc = created_at.astimezone(UTC) if created_at.tzinfo is not None else None
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise bad from None
    if version != _CURSOR_VERSION or in_utc is None or not _ID.fullmatch(row_id):
        raise bad
    return Position(in_utc, row_id)


def window(
    request: PageRequest,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> tuple[list[str], list[str]]:
    """SQL conditions (and their parameters) for rows past the cursor and inside the time window.

    Of the cursor and the window's bound on the same side, only the tighter one
    is emitted (it implies the other). SQLite scans an index range from one
    bound per side, so two overlapping ones could make it scan from the looser.
    """
    position = request.after
    lower, upper = created_after, created_before
    conditions: list[str] = []
    params: list[str] = []
    if position is not None:
        at = [to_db_time(position.created_at), position.id]
        if request.order == "desc" and (upper is None or position.created_at < upper):
            conditions.append("(created_at, id) < (?, ?)")
            params += at
            upper = None
        elif request.order == "asc" and (lower is None or position.created_at > lower):
            conditions.append("(created_at, id) > (?, ?)")
            params += at
            lower = None
    if lower is not None:
        conditions.append("created_at > ?")
        params.append(to_db_time(lower))
    if upper is not None:
        conditions.append("created_at < ?")
        params.append(to_db_time(upper))
    return conditions, params


def ordering(order: str) -> str:
    """The ``ORDER BY`` list of a page: the keyset, both columns the same way."""
    return "created_at DESC, id DESC" if order == "desc" else "created_at, id"


def status_filter(
    statuses: Iterable[str] | str | None, allowed: tuple[str, ...]
) -> frozenset[str] | None:
    """The statuses a list is narrowed to; ``None`` when no filter is needed (none given, or
    all). ``InvalidRequest`` for an unknown one, or an empty set."""
    if statuses is None:
        return None
    chosen = frozenset((statuses,) if isinstance(statuses, str) else statuses)
    unknown = sorted(chosen - set(allowed))
    if not chosen or unknown:
        raise InvalidRequest(
            f"'status' must be among {', '.join(allowed)}; got {', '.join(unknown) or 'nothing'}.",
            {"field": "status"},
        )
    return None if chosen == frozenset(allowed) else chosen
