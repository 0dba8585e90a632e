"""Several runs of a section as one: the median of every number, the runs kept beside it.

A ratio is the median of each run's own ratio (each run compares its rows with
their anchor measured in the same minutes), not a ratio of medians taken at
different times.
"""

from __future__ import annotations

import statistics
from typing import Any


def _median(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, bool) or not isinstance(first, int | float | dict | list):
        return first
    if isinstance(first, dict):
        # What only some runs measure (spawn per task, the big table: the first) from those.
        keys = dict.fromkeys(key for value in values if isinstance(value, dict) for key in value)
        return {
            key: _median(
                [value[key] for value in values if isinstance(value, dict) and key in value]
            )
            for key in keys
        }
    if isinstance(first, list):
        # Samples: every run's, so that a plot shows them all.
        return [item for value in values if isinstance(value, list) for item in value]
    numbers = [value for value in values if isinstance(value, int | float)]
    return statistics.median(numbers)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' median, number by number, with ``runs`` (how many) and each run's ratios."""
    combined: dict[str, Any] = _median(runs)
    combined["runs"] = len(runs)
    combined["per_run"] = [_ratios(run) for run in runs]
    return combined


def _ratios(run: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every ``ratio_*`` and ``*_per_task`` number of one run, by its dotted key."""
    found: dict[str, float] = {}
    for key, value in run.items():
        if isinstance(value, dict):
            found.update(_ratios(value, f"{prefix}{key}."))
        elif isinstance(value, float) and (key.startswith("ratio_") or key.endswith("_per_task")):
            found[f"{prefix}{key}"] = value
    return found
