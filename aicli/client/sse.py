"""Server-Sent Events, read line by line into the API's ``Event`` objects.

Only what aicli's streams need is read: a frame's ``data`` lines are the whole
event as JSON, seq and type included, so its ``id`` and ``event`` lines (there
for EventSource) and comment lines (keep-alives) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from aicli.contract import Event
from aicli.errors import AicliError

_decoder = msgspec.json.Decoder(Event)


def _event(text: str) -> Event:
    try:
        return _decoder.decode(text)
    except msgspec.MsgspecError as ex:
        raise AicliError(
            f"The event stream sent a frame that is not an aicli event: {ex}."
        ) from None


def events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream whose lines arrive one by one (without their ends)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield _event("\n".join(data))
            data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
