"""One page of sessions or tasks, read by their ``(created_at, id)`` indexes.

Shared by the repositories that list (``sessions``, ``tasks``): the page is weighed
before it is read, so that a page of large rows is never read whole only to be cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from aicli.contract import Page
from aicli.storage import paging
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time
from aicli.storage.sql import aware, marks, where
from aicli.validation import parse_statuses, parse_time

# A page with more stored text than this is read row by row (see ``read_page``).
_JSON_PAGE_MAX = 256 * 1024
_json_rows = msgspec.json.Decoder(list[list[Any]]).decode


def statuses_of(value: str | Iterable[str] | None, kind: type[StrEnum]) -> frozenset[str] | None:
    """A query's ``status``: a comma list as the wire writes it, or a list as Python holds
    it (an embedder's keywords); ``None`` when it narrows nothing."""
    allowed = tuple(kind)
    if isinstance(value, str):
        value = parse_statuses(value, allowed, "status")
    return paging.status_filter(value, allowed)


def time_of(value: str | datetime | None, name: str) -> datetime | None:
    """A query's time bound: RFC 3339 text as the wire writes it, or an aware datetime."""
    return parse_time(value, name) if isinstance(value, str) else aware(value, name)


def merges(statuses: frozenset[str] | None) -> bool:
    """Whether a page is merged from one query per status (and so needs a snapshot)."""
    return statuses is not None and len(statuses) > 1


def read_page(
    engine: Engine,
    table: str,
    columns: str,
    from_row: Callable[[Sequence[Any]], Any],
    conditions: list[str],
    params: list[Any],
    statuses: frozenset[str] | None,
    request: paging.PageRequest,
    size: str,
    json_row: str | None = None,
    kept: Callable[[str, str], Any] | None = None,
) -> Page:
    """Inside a read: one page (``conditions`` include the cursor's) and whether more follow.

    ``size`` is the SQL of a row's stored text: the keys, sizes and statuses of the
    page's rows are read first, and the page shortened to what fits
    ``paging.PAGE_BYTES`` (see ``paging``) before any large row is read. Then only
    the rows ``kept(id, status)`` does not already hold (ended tasks, which never
    change) are read, by id: a page of history is mostly answered from memory.

    With several statuses, each is read from its own ``(status, created_at,
    id)`` index range and the results merged, so no query has to sort every
    matching row (which an ``IN`` list over the index would). With
    ``json_row`` (SQLite), the rows come as one JSON array in one row (see
    ``rows.TASK_JSON_ROW``): fewer rows for the driver to build.
    """
    execute = engine.execute
    tail = f" ORDER BY {paging.ordering(request.order)} LIMIT ?"

    def keys(status: str | None) -> Any:
        chosen = conditions if status is None else [*conditions, "status = ?"]
        values = [*params, *(() if status is None else (status,)), request.limit + 1]
        what = f"created_at, id, {size}, status"
        return execute(f"SELECT {what} FROM {table}{where(chosen)}{tail}", values)

    sized = [
        tuple(row)
        for status in ((None,) if statuses is None else sorted(statuses))
        for row in keys(status)
    ]
    if merges(statuses):
        sized.sort(key=lambda row: (from_db_time(row[0]), row[1]), reverse=request.order == "desc")
    count = min(request.limit, paging.fitting(row[2] for row in sized))
    chosen = sized[:count]
    found = {} if kept is None else {row[1]: kept(row[1], row[3]) for row in chosen}
    missing = [row[1] for row in chosen if found.get(row[1]) is None]
    if missing:
        if sum(row[2] or 0 for row in chosen if row[1] in missing) > _JSON_PAGE_MAX:
            json_row = None  # the one text of the page would be one more copy of it all
        # The filter again: without a snapshot, a row may have moved out of it since.
        again = [f"id IN ({marks(len(missing))})", *conditions]
        values = [*missing, *params]
        if statuses is not None:
            again.append(f"status IN ({marks(len(statuses))})")
            values += sorted(statuses)
        sql = f"SELECT {columns} FROM {table}{where(again)}"
        found.update(_built(engine, sql, values, json_row, from_row))
    # A row that left the filter (or was deleted) between the two reads is left out, and the
    # page's cursor is still the position of the last row it stood for.
    items = [found[row[1]] for row in chosen if found.get(row[1]) is not None]
    has_more = len(sized) > count
    last = chosen[-1] if has_more else None
    cursor = None if last is None else paging.encode_cursor(from_db_time(last[0]), last[1])
    return Page(data=items, has_more=has_more, next_cursor=cursor)


def _built(
    engine: Engine,
    sql: str,
    values: list[Any],
    json_row: str | None,
    from_row: Callable[[Sequence[Any]], Any],
) -> dict[str, Any]:
    """The rows ``sql`` selects, built, by id (in no order: the caller has the page's)."""
    if json_row is None:
        rows = engine.execute(sql, values)
    else:
        text = engine.execute(f"SELECT json_group_array({json_row}) FROM ({sql})", values)
        rows = _json_rows(text.fetchone()[0])
    return {row[0]: from_row(row) for row in rows}
