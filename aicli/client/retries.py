"""When a failed call may be sent again, and how long to wait before it is.

A call is sent again only if doing so cannot do a thing twice:

* any call whose connection never opened (nothing reached the server);
* reads and the API's idempotent writes (``GET``, ``DELETE``: cancelling or
  closing twice ends the same way as once) after any transport failure or a
  502, 503 or 504;
* a submit, because the client gives each one an ``Idempotency-Key``: the
  server answers a second copy with the first task.

Opening a session and deciding an approval are not retried once sent: a
second session would be opened, and a second decision refused as already made.
A 429 is not retried either: it says a limit of the caller's is full, which
the caller should see (``LimitExceeded.retry_after`` says when to try again).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

RETRIED_STATUSES = frozenset({502, 503, 504})
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 5.0


@dataclass(frozen=True)
class Policy:
    """How many times a call is sent again (``retries``) and whether it may be at all."""

    retries: int
    safe: bool

    def after_error(self, error: httpx.TransportError) -> bool:
        return self.safe or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)

    def after_status(self, status: int) -> bool:
        return self.safe and status in RETRIED_STATUSES


def delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: the server's word, else a jittered backoff."""
    if retry_after is not None:
        return min(retry_after, MAX_DELAY_S)
    backoff = min(FIRST_DELAY_S * 2**attempt, MAX_DELAY_S)
    return backoff * random.uniform(0.5, 1.0)
