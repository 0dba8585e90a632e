"""Query strings: unknown or repeated parameters are errors, not silently ignored.

A misspelt filter (``?stauts=failed``) that is ignored returns a plausible but
wrong list, so every route names the parameters it takes (a struct of
``aicli.contract``, which reads them) and rejects others.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import falcon
import msgspec

from aicli import contract
from aicli.errors import InvalidRequest
from aicli.validation import unstorable

Q = TypeVar("Q", bound=msgspec.Struct)


def params(req: falcon.Request, kind: type[Q] | None = None) -> Q | None:
    """The query parameters as ``kind``: each given at most once and each one of its fields."""
    found = req.params
    if not found and kind is not None:
        return _defaults(kind)  # most requests carry none: skip the work below
    allowed = _names(kind) if kind else []
    unknown = sorted(name for name in found if name not in allowed)
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise InvalidRequest(
            f"Unknown query parameter {names}; allowed: {allowed_text}.",
            {"unknown_parameters": unknown, "allowed_parameters": allowed},
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
    return None if kind is None else contract.query(dict(found), kind)


@functools.cache
def _names(kind: type) -> list[str]:
    return [field.encode_name for field in msgspec.structs.fields(kind)]


@functools.cache
def _defaults(kind: type[Q]) -> Q:
    return contract.query({}, kind)
