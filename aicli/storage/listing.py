"""One page of sessions or tasks, read by their ``(created_at, id)`` indexes.

Shared by the repositories that list (``sessions``, ``tasks``): the page is weighed
before it is read, so that a page of large rows is never read whole only to be cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from aicli.contract import Page
from aicli.storage import paging
from aicli.storage.engine import Engine
from aicli.storage.fields import from_db_time
from aicli.storage.rows import TASK_COLUMNS
from aicli.storage.sql import where

# A page with more stored text than this is read row by row (see ``read_page``).
_JSON_PAGE_MAX = 256 * 1024
_TASK_CREATED_AT = TASK_COLUMNS.split(", ").index("created_at")
_json_rows = msgspec.json.Decoder(list[list[Any]]).decode


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
) -> Page:
    """Inside a read: one page (``conditions`` include the cursor's) and whether more follow.

    ``size`` is the SQL of a row's stored text: the keys and sizes of the page's
    rows are read first, and the page shortened to what fits ``paging.PAGE_BYTES``
    (see ``paging``) before any large row is read.

    With several statuses, each is read from its own ``(status, created_at,
    id)`` index range and the results merged, so no query has to sort every
    matching row (which an ``IN`` list over the index would). With
    ``json_row`` (SQLite), the rows come as one JSON array in one row (see
    ``rows.TASK_JSON_ROW``), put back in page order here: an aggregate does
    not promise to keep the order of its input.
    """
    execute = engine.execute
    tail = f" ORDER BY {paging.ordering(request.order)} LIMIT ?"
    reverse = request.order == "desc"

    def select(what: str, status: str | None) -> tuple[str, list[Any]]:
        chosen = conditions if status is None else [*conditions, "status = ?"]
        values = (
            [*params, request.limit + 1] if status is None else [*params, status, request.limit + 1]
        )
        return f"SELECT {what} FROM {table}{where(chosen)}{tail}", values

    sized = [
        tuple(row)
        for status in ((None,) if statuses is None else sorted(statuses))
        for row in execute(*select(f"created_at, id, {size}", status))
    ]
    if merges(statuses):
        sized.sort(key=lambda row: (from_db_time(row[0]), row[1]), reverse=reverse)
    taken = paging.fitting(row[2] for row in sized)
    if taken < min(len(sized), request.limit):
        request = paging.PageRequest(taken, request.order, request.after)
    if sum(row[2] or 0 for row in sized[: taken + 1]) > _JSON_PAGE_MAX:
        json_row = None  # the one text of the page would be one more copy of it all

    def fetch(status: str | None) -> list[Any]:
        sql, values = select(columns, status)
        if json_row is None:
            return [from_row(row) for row in execute(sql, values)]
        text = execute(f"SELECT json_group_array({json_row}) FROM ({sql})", values)
        rows = _json_rows(text.fetchone()[0])
        rows.sort(key=lambda row: (row[_TASK_CREATED_AT], row[0]), reverse=reverse)
        return [from_row(row) for row in rows]

    if statuses is None:
        items = fetch(None)
    else:
        items = [item for status in sorted(statuses) for item in fetch(status)]
        if merges(statuses):
            items.sort(key=lambda item: (item.created_at, item.id), reverse=reverse)
    return paging.page_of(items, request)
