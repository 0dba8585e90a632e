"""Tasks that have ended, kept as built from their rows: they never change again.

Most reads are of ended tasks (results, history lists), and building a task
from its row costs more than the database's read of it: about 5 µs a task,
most of a page of 50. A task is kept only once its row is terminal, and no
write of the store touches a terminal row (``transitions`` allows no move out
of a terminal state), so an entry never goes stale; retention may delete it
(on any node), which ``Store.get_task`` checks before it answers from here.
Bounded by count and by the text held, metadata included (forty tasks of a
megabyte of metadata each once sat here uncounted); the oldest entry goes first.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from aicli.contract import TERMINAL_STATUSES, Task
from aicli.storage.rows import TASK_COLUMNS, task_from_row

MAX_TASKS = 4096
MAX_CHARS = 8_000_000
# A task with more text than this is rebuilt at each read rather than crowd out others.
MAX_CHARS_ONE = 64_000
_STATUS_AT = [name.strip() for name in TASK_COLUMNS.split(",")].index("status")


def _chars(task: Task) -> int:
    metadata = sum(len(key) + len(str(value)) for key, value in task.metadata.items())
    return len(task.command) + len(task.output or "") + len(task.error or "") + metadata


class EndedTasks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._chars = 0

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def keep(self, task: Task) -> Task:
        """``task``, remembered if it has ended."""
        if task.status not in TERMINAL_STATUSES:
            return task
        size = _chars(task)
        if size > MAX_CHARS_ONE:
            return task
        with self._lock:
            if task.id not in self._tasks:
                self._tasks[task.id] = task
                self._chars += size
                while len(self._tasks) > MAX_TASKS or self._chars > MAX_CHARS:
                    self._chars -= _chars(self._tasks.pop(next(iter(self._tasks))))
        return task

    def forget(self, task_ids: Sequence[str]) -> None:
        """Drop what is kept of these tasks: retention deleted them."""
        with self._lock:
            for task_id in task_ids:
                task = self._tasks.pop(task_id, None)
                if task is not None:
                    self._chars -= _chars(task)

    def from_row(self, row: Sequence[Any]) -> Task:
        """The task of a row of ``TASK_COLUMNS``, built only if not kept already.

        Only a row that is terminal itself is answered from what is kept: a page
        read in one snapshot may hold a task as running that has ended since, and
        must show it as its snapshot saw it (a filter on status chose that row).
        """
        if row[_STATUS_AT] in TERMINAL_STATUSES:
            found = self._tasks.get(row[0])
            if found is not None:
                return found
        return self.keep(task_from_row(row))
