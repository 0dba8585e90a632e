"""Nodes (1.1): the servers sharing this database, for admins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from aicli.contract import NodeList
from aicli.http import media
from aicli.http.middleware import caller
from aicli.http.query import params

if TYPE_CHECKING:
    from aicli.runtime import Runtime


class NodesResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params(req)
        media.write(resp, NodeList(data=self._runtime.nodes(principal=caller(req))))
