"""Request bodies into contract structs, responses out of them.

We read the body ourselves rather than through ``req.media`` so that the bytes
actually read are capped whatever ``Content-Length`` claims; ``msgspec``
validates while it decodes, straight into the struct the runtime takes, and
encodes the structs the runtime returns. When the body is not JSON at all, the
standard library's parser words the error (msgspec's words for a lone
surrogate escape, "truncated", would mislead).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, TypeVar

import falcon
import msgspec

from aicli import contract
from aicli.errors import InvalidRequest

JSON_TYPE = "application/json; charset=utf-8"
JSON_MEDIA_TYPES = frozenset({"application/json"})
# The most of a large response body handed to Waitress at once.
PIECE = 256 * 1024
S = TypeVar("S")


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or any ``application/*+json``, parameters ignored.

    A body without a ``Content-Type`` is not taken as JSON: a web page of any site
    may send one, and ``text/plain``, to this server without the browser asking it
    first (a CORS "simple" request); a JSON type makes the browser ask, and we
    never say yes.
    """
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in JSON_MEDIA_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        description=f"The request body is larger than the limit of {limit} bytes."
    )


def read(req: falcon.Request, kind: type[S], max_bytes: int) -> S:
    """The body as ``kind``; 413, or 400 (as ``InvalidRequest``) naming what is wrong.

    The declared length and the media type were checked by ``BodyLimits``.
    """
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    if not raw.strip():
        raise InvalidRequest("The request body is empty; it must be a JSON object.")
    try:
        return contract.decode(raw, kind)
    except msgspec.DecodeError:
        raise _not_json(raw) from None
    except RecursionError:
        raise InvalidRequest("The request body nests JSON arrays or objects too deeply.") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _OutOfRange(Exception):
    """A number past the largest double (``1e400``): valid JSON that msgspec refuses."""


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _OutOfRange(text)
    return number


def _not_json(raw: bytes) -> InvalidRequest:
    try:
        json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite)
    except UnicodeDecodeError:
        return InvalidRequest("The request body is not valid UTF-8.")
    except ValueError as ex:
        return InvalidRequest(f"The request body is not valid JSON: {ex}.")
    except RecursionError:
        return InvalidRequest("The request body nests JSON arrays or objects too deeply.")
    except _OutOfRange as ex:
        return InvalidRequest(
            f"The request body's number {ex} is out of range: it must fit a 64-bit float."
        )
    # Valid JSON that msgspec refused: a lone \\udXXX escape, half a surrogate pair.
    return InvalidRequest(
        "The request body has an unpaired surrogate escape (like \\udcff); "
        "its text must be valid Unicode."
    )


def write(resp: falcon.Response, value: Any) -> None:
    """``value`` as the JSON body (``write_encoded``)."""
    write_encoded(resp, contract.encode(value))


def write_encoded(resp: falcon.Response, body: bytes, holding: object = None) -> None:
    """``body``, encoded JSON, as the response body; a large one in pieces of ``PIECE``
    bytes, which Waitress takes one by one, where it copied a whole body into its buffer
    at once. ``holding`` is kept alive until the last piece is sent (a body shared for as
    long as any response sends it, ``bodies``)."""
    resp.content_type = JSON_TYPE
    if len(body) <= PIECE:
        resp.data = body
        return
    resp.content_length = len(body)
    resp.stream = _held_pieces(body, holding)


def _held_pieces(data: bytes, holding: object) -> Iterator[bytes]:
    """``pieces(data)``; this frame holds ``holding`` until the last is sent."""
    yield from pieces(data)


def pieces(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]
