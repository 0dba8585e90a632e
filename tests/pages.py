"""Walking a store's list pages as a client does, checking the paging rules on the way.

A plain module (not a pytest plugin), so tests import it freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aicli.contract import Page


def walk_pages(read: Callable[[str | None], Page[Any]], limit: int) -> Iterator[Page[Any]]:
    """Each page ``read(cursor)`` gives, first to last: none holds more than ``limit``
    items, one that has more after it is full and names the next cursor, the last names none."""
    cursor = None
    while True:
        page = read(cursor)
        assert len(page.data) <= limit
        yield page
        if not page.has_more:
            assert page.next_cursor is None
            return
        assert len(page.data) == limit and page.next_cursor
        cursor = page.next_cursor
