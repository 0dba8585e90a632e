"""Tasks across sessions: list, fetch (optionally long-polled) and cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from aicli.contract import TaskListQuery, TaskStatus, TaskWaitQuery
from aicli.errors import TaskNotCancellable
from aicli.http import media
from aicli.http.bodies import Bodies
from aicli.http.middleware import caller
from aicli.http.query import params
from aicli.http.slots import Slots

if TYPE_CHECKING:
    from aicli.runtime import Runtime


class TasksResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = self._runtime.list_tasks(params(req, TaskListQuery), principal=caller(req))
        media.write(resp, page)


class TaskResource:
    def __init__(self, runtime: Runtime, slots: Slots, bodies: Bodies) -> None:
        self._runtime = runtime
        self._slots = slots
        self._bodies = bodies

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        wait = params(req, TaskWaitQuery).wait
        if wait > 0:
            # A long-poll pins a worker thread like a stream does, so it takes a slot.
            with self._slots.acquire():
                task = self._runtime.wait(task_id, wait, principal=caller(req))
        else:
            task = self._runtime.get_task(task_id, principal=caller(req))
        self._bodies.write(resp, task)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        params(req)
        task = self._runtime.cancel(task_id, principal=caller(req))
        # The runtime hands back a task that had already ended as it is.
        if task.status != TaskStatus.CANCELLED:
            raise TaskNotCancellable(task.id, task.status)
        media.write(resp, task)
