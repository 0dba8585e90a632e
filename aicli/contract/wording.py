"""msgspec's validation errors in the API's words: the field by name, its rule, what it was.

msgspec says ``Expected `int` <= 200 - at `$.limit```; a person needs ``'limit' must
be an integer from 1 to 200, not '500'.``, and a program the field's name in
``details``. The rules are read from the JSON Schema msgspec writes
for the same struct, so a message states the bounds the OpenAPI document shows.
"""

from __future__ import annotations

import functools
import re
import typing
from enum import StrEnum
from typing import Any

import msgspec

from aicli.contract.fields import NO_NUL, NOT_BLANK, VISIBLE_ASCII
from aicli.contract.queries import ORDERS, query_schemas
from aicli.errors import InvalidRequest

# msgspec's words for types and patterns, as people read them.
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_JSON_NAMES = {**_TYPE_NAMES, "int": "a number"}  # what a client sent, in JSON's terms
_PATTERN_RULES = {
    VISIBLE_ASCII: "must be visible ASCII characters, without whitespace",
    NO_NUL: "must not hold a NUL character",
    NOT_BLANK: "must not be empty or only whitespace, nor hold a NUL character",
}
# The same patterns by the text msgspec quotes them with.
_PATTERNS = {repr(pattern)[1:-1]: pattern for pattern in (NO_NUL, NOT_BLANK, VISIBLE_ASCII)}
_UNITS = {"timeout_s": "a number of seconds"}
_TICKED = re.compile(r"`([^`]+)`")
_REGEX = re.compile(r"matching regex '(.*)'$", re.DOTALL)
_LONGEST = re.compile(r"of length <= (\d+)")
_MAP_KEY = re.compile(r"`key` in `\$\.([A-Za-z_]+)`")
_NOUNS = {"SessionCreate": "session", "TaskSubmit": "task", "CredentialsSet": "credentials"}
# Each query parameter's rule as the API words it; the others are worded as body fields are.
_QUERY_RULES = {
    "limit": "an integer from 1 to {maximum}",
    "order": " or ".join(f"'{order}'" for order in ORDERS),
    "wait": "a number of seconds from 0 to {maximum:g}",
    "after": "an integer >= 0 and <= {maximum}",
    "Last-Event-ID": "an integer >= 0 and <= {maximum}",
}


def invalid_parameter(
    exc: msgspec.ValidationError, kind: type, given: dict[str, str]
) -> InvalidRequest:
    """A refused query parameter in the API's words: its whole range, and the text given.

    A parameter arrives as text, so msgspec's ``got `str``` would say nothing; and the
    range of ``limit`` or ``wait`` reads better as "from 1 to 200" than as two bounds.
    """
    name = str(exc).partition(" - at `$.")[2].removesuffix("`")
    rule = _QUERY_RULES.get(name)
    if rule is None or name not in given:
        return invalid(exc, kind, given)
    rule = rule.format(**query_schemas(kind)[name])
    return InvalidRequest(f"'{name}' must be {rule}, not {given[name]!r}.", {"field": name})


def _named(match: re.Match[str], names: dict[str, str] = _TYPE_NAMES) -> str:
    return " or ".join(names.get(t.strip(), t.strip()) for t in match.group(1).split("|"))


def _bad_key(said: str, name: str, given: Any) -> InvalidRequest:
    """A refused key of the map ``name``: msgspec names the map only, so the key is found here."""
    quoted = _REGEX.search(said)
    pattern = _PATTERNS.get(quoted.group(1)) if quoted else None
    keys = given.get(name) if isinstance(given, dict) else None
    bad = [key for key in keys or () if pattern and not re.search(pattern, key)]
    which = f" {_shown(bad[0])}" if bad else ""
    rule = _PATTERN_RULES[pattern] if pattern else "is invalid"
    return InvalidRequest(f"'{name}' key{which} {rule}.", {"field": name})


def invalid(exc: msgspec.ValidationError, kind: type, given: Any) -> InvalidRequest:
    """msgspec's error in the API's words: the field by name, what it must be, what it was.

    ``given`` is what was checked (a body, keyword arguments, query parameters): msgspec
    says where a value failed but not what it was, and a message that shows it is one a
    person can act on.
    """
    said, _, where = str(exc).partition(" - at ")
    if "unknown field" in said:
        unknown = _unknown_field(said, where, kind, given)
        if unknown is not None:
            return unknown
    if "missing required field" in said:
        name = said.split("`")[1]
        return InvalidRequest(f"'{name}' is required.", {"field": name})
    key_of = _MAP_KEY.fullmatch(where.strip())
    if key_of is not None:  # a map's key: msgspec says "`key` in `$.metadata`"
        return _bad_key(said, key_of.group(1), given)
    spot = where.strip("`").removeprefix("$.")
    name = re.split(r"[\[.]", spot, maxsplit=1)[0] if where else ""
    if not name:
        got = _TICKED.search(said.split("got", 1)[-1])
        what = _named(got, _JSON_NAMES) if got else "something else"
        return InvalidRequest(f"The request body must be a JSON object, not {what}.")
    value = given.get(name, ...) if isinstance(given, dict) else ...
    if spot.endswith("[...]") and isinstance(value, dict):  # a map's value: name its key
        key = next((k for k, v in value.items() if not isinstance(v, str)), None)
        spot, value = (f"{name}.{key}", value[key]) if key is not None else (spot, ...)
    elif spot != name:
        value = ...
    return _bad_value(said, kind, name, spot, value)


def _unknown_field(said: str, where: str, kind: type, given: Any) -> InvalidRequest | None:
    """Every unknown field of the body and the allowed ones; a nested one by its path.

    msgspec stops at the first unknown field; a client that misspelt two would fix one
    and be refused again, so the top level names them all, and what it takes.
    """
    if where:  # inside a nested object: name it by its path
        inner = _TICKED.search(said)
        path = f"{where.strip('`').removeprefix('$.')}.{inner.group(1) if inner else '?'}"
        return InvalidRequest(f"Unknown field '{path}'.", {"field": path})
    if not isinstance(given, dict):
        return None
    fields = getattr(kind, "__struct_fields__", ())
    unknown = sorted(str(name) for name in given if name not in fields)
    noun = _NOUNS.get(kind.__name__, kind.__name__)
    names = ", ".join(f"'{name}'" for name in unknown)
    return InvalidRequest(
        f"Unknown {noun} field{'s' if len(unknown) > 1 else ''} {names}; "
        f"allowed: {', '.join(fields)}.",
        {"field": unknown[0], "unknown_fields": unknown, "allowed_fields": list(fields)},
    )


def _bad_value(said: str, kind: type, name: str, spot: str, value: Any) -> InvalidRequest:
    """A refused value at ``spot`` (in field ``name``; ``...``: not known) and its rule.

    A field's whole rule is said, bounds and all, where msgspec names only the bound
    that was broken: one refusal should be enough to get the value right.
    """
    details = {"field": name}
    if said.startswith("Invalid enum value"):
        allowed = _enum_values(kind, name)
        return InvalidRequest(
            f"'{spot}' must be one of {', '.join(allowed)}, not {_shown(value)}.",
            {**details, "allowed": allowed},
        )
    wanted, _, got = said.removeprefix("Expected ").partition(", got ")
    pattern = _REGEX.search(wanted)
    if pattern is not None:
        return InvalidRequest(
            f"'{spot}' {_PATTERN_RULES.get(_PATTERNS.get(pattern.group(1), ''), 'is invalid')}.",
            details,
        )
    if value == "":
        return InvalidRequest(f"'{spot}' must not be empty.", details)
    longest = _LONGEST.search(wanted)
    if longest is not None and isinstance(value, str | list):
        unit = "characters" if isinstance(value, str) else "items"
        return InvalidRequest(
            f"'{spot}' has {len(value)} {unit}; the most allowed is {longest.group(1)}.", details
        )
    if spot == name:  # say the whole rule, bounds and all
        wanted = _rules(kind).get(name, wanted)
    wanted = _TICKED.sub(_named, wanted).replace(".0 ", " ").removesuffix(".0")
    if name in _UNITS:
        wanted = wanted.replace("a number", _UNITS[name], 1)
    if got:
        was = _TICKED.sub(lambda m: _named(m, _JSON_NAMES), got)
    else:
        was = "" if value is ... else _shown(value)
    return InvalidRequest(f"'{spot}' must be {wanted}{f', not {was}' if was else ''}.", details)


@functools.cache
def _rules(kind: type) -> dict[str, str]:
    """Each field's rule in words, from the JSON Schema msgspec writes for ``kind``.

    Read from the schema rather than written out, so that a refusal states the bounds
    the OpenAPI document shows, and a bound changed in the struct changes both.
    """
    _, components = msgspec.json.schema_components([kind])
    rules = {}
    for name, schema in components[kind.__name__].get("properties", {}).items():
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        if len(options) == 1 and "type" in options[0]:
            rules[name] = _rule(options[0])
    return rules


_KINDS = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}


def _rule(schema: dict[str, Any]) -> str:
    kind = "integer" if schema.get("multipleOf") == 1 else schema["type"]
    words = [_TYPE_NAMES.get(_KINDS.get(kind, kind), kind)]
    for key, sign in (
        ("exclusiveMinimum", ">"),
        ("minimum", ">="),
        ("exclusiveMaximum", "<"),
        ("maximum", "<="),
    ):
        if key in schema:
            words.append(f"{'and ' if len(words) > 1 else ''}{sign} {schema[key]:g}")
    return " ".join(words)


def _enum_values(kind: type, name: str) -> list[str]:
    hint = typing.get_type_hints(kind).get(name)
    for option in (*typing.get_args(hint), hint):
        if isinstance(option, type) and issubclass(option, StrEnum):
            return [member.value for member in option]
    return []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
