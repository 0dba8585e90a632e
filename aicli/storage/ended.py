"""Tasks that have ended, kept as built from their rows: they never change again.

Most reads are of ended tasks (results, history lists), and building a task
from its row costs more than the database's read of it: about 5 µs a task,
most of a page of 50. A task is kept only once its row is terminal, and no
write of the store touches a terminal row (``transitions`` allows no move out
of a terminal state), so an entry never goes stale; retention may delete it
(on any node), which ``Store.get_task`` checks before it answers from here.
Bounded by count and by the text held, metadata included (forty tasks of a
megabyte of metadata each once sat here uncounted); the oldest entry goes first.

A large task (past ``MAX_CHARS_ONE``) is not kept but shared: found here for as long
as anyone holds it (a weak reference), and read once for all who ask at once. Sixty
long-polls woken by the end of a task with a 10 MB answer each read and built it for
themselves.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from aicli.contract import TERMINAL_STATUSES, Task
from aicli.flights import Flights
from aicli.storage.rows import TASK_COLUMNS, task_from_row

MAX_TASKS = 4096
MAX_CHARS = 8_000_000
# A task with more text than this is rebuilt at each read rather than crowd out others.
MAX_CHARS_ONE = 64_000
# How long a read waits for another's read of the same task before it makes its own.
READ_WAIT_S = 30.0
_STATUS_AT = [name.strip() for name in TASK_COLUMNS.split(",")].index("status")


def _chars(task: Task) -> int:
    metadata = sum(len(key) + len(str(value)) for key, value in task.metadata.items())
    return len(task.command) + len(task.output or "") + len(task.error or "") + metadata


class EndedTasks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._chars = 0
        self._large: weakref.WeakValueDictionary[str, Task] = weakref.WeakValueDictionary()
        self._reads: Flights[str, Task] = Flights(READ_WAIT_S)

    def get(self, task_id: str) -> Task | None:
        found = self._tasks.get(task_id)
        if found is None:
            with self._lock:
                found = self._large.get(task_id)
        return found

    def kept(self, task_id: str, status: str) -> Task | None:
        """The task kept for a row read with ``status``, if any.

        Only a row that is terminal itself is answered from here: a page read in one
        snapshot may hold a task as running that has ended since, and must show it as
        its snapshot saw it (a filter on status chose that row).
        """
        return self.get(task_id) if status in TERMINAL_STATUSES else None

    def read_once(self, task_id: str, read: Callable[[], Task]) -> Task:
        """``read()``, or the ended task that another thread's ``read()`` of it at the same
        time returned (a task that had not ended when that read began may have since: the
        thread then reads for itself)."""
        return self._reads.once(task_id, read, usable=lambda task: task.is_terminal)

    def keep(self, task: Task) -> Task:
        """``task``, remembered if it has ended."""
        if task.status not in TERMINAL_STATUSES:
            return task
        size = _chars(task)
        if size > MAX_CHARS_ONE:
            with self._lock:
                self._large[task.id] = task
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
                self._large.pop(task_id, None)
                task = self._tasks.pop(task_id, None)
                if task is not None:
                    self._chars -= _chars(task)

    def from_row(self, row: Sequence[Any]) -> Task:
        """The task of a row of ``TASK_COLUMNS``, built only if not ``kept`` already."""
        return self.kept(row[0], row[_STATUS_AT]) or self.keep(task_from_row(row))
