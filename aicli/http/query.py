"""Query strings: unknown or repeated parameters are errors, not silently ignored.

A misspelt filter (``?stauts=failed``) that is ignored returns a plausible but
wrong list, so every route names the parameters it takes and rejects others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import falcon

from aicli.errors import InvalidRequest
from aicli.validation import parse_limit, parse_order, parse_statuses, parse_time, unstorable

PAGE_PARAMS = ("limit", "cursor", "order")


def params(req: falcon.Request, allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters, each given at most once and each one of ``allowed``."""
    found = req.params
    unknown = sorted(name for name in found if name not in allowed)
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise InvalidRequest(
            f"Unknown query parameter {names}; allowed: {allowed_text}.",
            {"unknown_parameters": unknown, "allowed_parameters": list(allowed)},
        )
    for name, value in found.items():
        if isinstance(value, list):
            raise InvalidRequest(
                f"Query parameter '{name}' is given more than once.", {"field": name}
            )
        problem = unstorable(value)
        if problem is not None:
            raise InvalidRequest(
                f"Query parameter '{name}' must not contain {problem}.", {"field": name}
            )
    return dict(found)


def page_kwargs(given: dict[str, str]) -> dict[str, Any]:
    cursor = given.get("cursor")
    if cursor is not None and not cursor:
        raise InvalidRequest("'cursor' must not be empty.", {"field": "cursor"})
    return {
        "limit": parse_limit(given.get("limit")),
        "cursor": cursor,
        "order": parse_order(given.get("order")),
    }


def statuses(given: dict[str, str], allowed: Sequence[str]) -> list[str] | None:
    value = given.get("status")
    return None if value is None else parse_statuses(value, allowed, "status")


def time_param(given: dict[str, str], name: str) -> Any:
    value = given.get(name)
    return None if value is None else parse_time(value, name)
