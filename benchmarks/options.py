"""What a benchmark is asked to do in this run, beyond its own constants."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """``quick``: fewer samples. ``ref``: another checkout's ``aicli`` to run beside ours.

    ``first_run`` is false on the repeats of a section that is run several
    times for its median: what is not a hot-path row (spawn per task, the
    1,000,000-task table) is measured once, on the first run.
    """

    quick: bool = False
    ref: str | None = None
    first_run: bool = True
