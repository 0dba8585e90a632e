"""Waitress's worker pool, grown on demand so that hundreds of streams can stay open.

Waitress runs each response on a worker thread until its body ends, so every
open SSE stream or long-poll holds a thread. A pool sized for hundreds of them
up front would cost memory nobody uses most of the time; instead it starts at
``threads`` and adds a thread whenever a request would otherwise queue, up to
``threads + max_streams``. Streams are capped at ``max_streams`` (the slots),
so ordinary requests always find ``threads`` workers, however many streams are
open. An idle thread blocked on a condition costs about 17 KB and no CPU, so
threads are kept once made rather than churned.
"""

from __future__ import annotations

from typing import Any

from waitress.task import ThreadedTaskDispatcher


class GrowingDispatcher(ThreadedTaskDispatcher):
    def __init__(self, threads: int, most: int) -> None:
        super().__init__()
        self._most = max(threads, most)
        self.set_thread_count(threads)

    def add_task(self, task: Any) -> None:
        with self.lock:
            running = len(self.threads) - self.stop_count
            idle = running - self.active_count
            grow = idle <= len(self.queue) and running < self._most
        if grow:
            self.set_thread_count(running + 1)
        super().add_task(task)
