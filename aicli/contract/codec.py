"""JSON in and out through the contract's structs, with refusals in the API's words.

Every way a value enters (an HTTP body, a query string, an embedder's keyword
arguments) is checked by the same struct and refused with the same wording
(``wording``), so an HTTP client and an embedder get the same error for the same
mistake.
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

import msgspec

from aicli.contract.wording import invalid, invalid_parameter
from aicli.errors import InvalidRequest

encode = msgspec.json.Encoder().encode
S = TypeVar("S")
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decode(raw: bytes, kind: type[S]) -> S:
    """A request body as ``kind``: ``InvalidRequest`` names what is wrong, and where.

    Raises ``msgspec.DecodeError`` for bytes that are not JSON at all.
    """
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        given = msgspec.json.decode(raw)  # DecodeError if it is not JSON: that comes first
        raise invalid(exc, kind, given) from None


def convert(fields: Any, kind: type[S]) -> S:
    """Keyword arguments of an embedder as ``kind``, with the errors an HTTP client gets.

    JSON cannot carry half a surrogate pair, so HTTP bodies never hold one; a
    Python string can, and no database or command line would take it.
    """
    try:
        encode(fields)
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        raise InvalidRequest(
            "A text field holds an unpaired surrogate or a value that is not JSON; "
            "text must be valid Unicode."
        ) from None
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc, kind, fields) from None


# How a query string spells a number: msgspec's own reading of strings takes 1e2 and 1.0
# for an integer and refuses 007 and .5, so these are read here and msgspec checks the rest.
_SPELLED = {
    int: re.compile(r"[0-9]+"),
    float: re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"),
}


def query(given: dict[str, str], kind: type[S]) -> S:
    """Query parameters (names checked already, see ``aicli.http.query``) as ``kind``.

    Numbers are spelled in ASCII digits (a ``seq`` with blanks around it, as ever); a
    number too long to be in range stays text, which ``kind`` refuses like any other.
    """
    fields: dict[str, Any] = dict(given)
    for name, number in _numbers(kind).items():
        text = given.get(name)
        if text is None:
            continue
        if name in ("after", "Last-Event-ID"):
            text = text.strip()
        # int() takes at most 4300 digits; 30 are more than any bound.
        if _SPELLED[number].fullmatch(text) and (number is float or len(text.lstrip("0")) <= 30):
            fields[name] = number(text)
    try:
        return msgspec.convert(fields, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid_parameter(exc, kind, given) from None


@functools.cache
def _numbers(kind: type) -> dict[str, type]:
    """The fields of ``kind`` that hold a number, by name as given, and the number's type.

    A query string is all text and a strict conversion takes no text for a number,
    so ``query`` turns these into numbers first, by the spelling it accepts.
    """
    found = {}
    numbers = {msgspec.inspect.IntType: int, msgspec.inspect.FloatType: float}
    for field in msgspec.inspect.type_info(kind).fields:
        for option in getattr(field.type, "types", (field.type,)):
            while isinstance(option, msgspec.inspect.Metadata):  # Annotated
                option = option.type
            if type(option) in numbers:
                found[field.encode_name] = numbers[type(option)]
    return found
