"""Reading request bodies: size-capped, JSON objects only, valid Unicode throughout.

We read the body ourselves rather than through ``req.media`` so that the bytes
actually read are capped whatever ``Content-Length`` claims, and so that every
failure names what was wrong.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from aicli.errors import InvalidRequest
from aicli.validation import type_name

JSON_MEDIA_TYPES = frozenset({"application/json"})


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or any ``application/*+json``, parameters ignored.

    A missing ``Content-Type`` counts as JSON: clients that send a JSON body
    without naming it are common, and nothing else would be meant.
    """
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in JSON_MEDIA_TYPES or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        description=f"The request body is larger than the limit of {limit} bytes."
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(req: falcon.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; 413 or 400 (as ``InvalidRequest``) otherwise.

    The declared length and the media type were checked by ``BodyLimits``.
    """
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    if not raw.strip():
        raise InvalidRequest("The request body is empty; it must be a JSON object.")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        # A lone \udXXX escape leaves half a surrogate pair: text that can be
        # neither stored, nor passed to Claude, nor even echoed in an error.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The request body has an unpaired surrogate escape (like \\udcff); "
            "its text must be valid Unicode."
        ) from None
    except ValueError as ex:
        raise InvalidRequest(f"The request body is not valid JSON: {ex}.") from None
    except RecursionError:
        raise InvalidRequest("The request body nests JSON arrays or objects too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type_name(body)}.")
    return body
