"""The ``Prefer`` request header (RFC 7240), as far as aicli honours it: ``wait``.

A preference is a hint: one we cannot read, or a value out of range, is
ignored rather than refused, as the RFC asks.
"""

from __future__ import annotations

import falcon

MAX_WAIT_S = 60


def preferred_wait(req: falcon.Request) -> int | None:
    """The ``wait=N`` preference in seconds (0–60), or None if absent or not usable."""
    header = req.get_header("Prefer")
    if not header:
        return None
    for preference in header.split(","):
        # A preference may carry parameters after ';'; ``wait`` takes none we use.
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if value.isascii() and value.isdigit() and int(value) <= MAX_WAIT_S:
            return int(value)
        return None
    return None
