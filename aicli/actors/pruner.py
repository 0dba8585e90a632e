"""Runs retention (``--retain-days``) now and then: a ``Prune`` from the one scheduler, an
hour apart, the first soon after the start. One node at a time prunes (see
``storage.retention``); a failed round is logged and the next one tries again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pykka

from aicli.actors.scheduler import Scheduler, Timer
from aicli.contract import utcnow
from aicli.errors import StorageError, Unavailable
from aicli.storage import Store

log = logging.getLogger(__name__)

EVERY_S = 3600.0
FIRST_S = 60.0


@dataclass(frozen=True)
class Prune:
    pass


class Pruner(pykka.ThreadingActor):
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        retain_days: float,
        *,
        first_s: float | None = None,
        every_s: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__()
        self._store = store
        self._scheduler = scheduler
        self._retain = timedelta(days=retain_days)
        self._first_s = FIRST_S if first_s is None else first_s
        self._every_s = EVERY_S if every_s is None else every_s
        self._clock = clock
        self._timer: Timer | None = None

    def on_start(self) -> None:
        self._timer = self._scheduler.tell_later(self._first_s, self.actor_ref, Prune())

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_receive(self, message: object) -> None:
        if not isinstance(message, Prune):
            return
        try:
            pruned = self._store.retention.prune(self._clock() - self._retain)
            if pruned.tasks or pruned.transcript_chunks:
                log.info(
                    "retention pruned %d ended tasks and %d transcript chunks",
                    pruned.tasks,
                    pruned.transcript_chunks,
                )
        except (StorageError, Unavailable) as exc:
            log.warning("retention could not prune: %s", exc)
        self._timer = self._scheduler.tell_later(self._every_s, self.actor_ref, Prune())
