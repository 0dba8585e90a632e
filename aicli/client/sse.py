"""Server-Sent Events, read line by line into the API's ``Event`` objects.

Only what aicli's streams use is parsed: ``id``, ``event`` and ``data`` fields
and comment lines (keep-alives). The ``data`` of each frame is the whole event
as JSON, so the frame's ``id`` and ``event`` are only checked, never trusted
over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from aicli.contract import Event

_decoder = msgspec.json.Decoder(Event)


def events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream whose lines arrive one by one (without their ends)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield _decoder.decode("\n".join(data))
            data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
