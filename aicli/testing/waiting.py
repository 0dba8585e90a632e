"""Waiting on conditions that no event announces (the state of outside processes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Re-check ``condition`` every ``interval`` s until it is truthy and return its value;
    fail after ``timeout``. The default is a deadline, not a claim about speed: generous,
    because the suite runs on two workers beside other runs on a two-core machine."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
