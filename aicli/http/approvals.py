"""Approvals (1.1): list what waits for a person, read one, and decide it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from aicli.contract import ApprovalDecision, ApprovalListQuery
from aicli.http import media
from aicli.http.middleware import caller
from aicli.http.query import params

if TYPE_CHECKING:
    from aicli.runtime import Runtime


class ApprovalsResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = self._runtime.approvals(params(req, ApprovalListQuery), principal=caller(req))
        media.write(resp, page)


class ApprovalResource:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response, approval_id: str) -> None:
        params(req)
        media.write(resp, self._runtime.get_approval(approval_id, principal=caller(req)))

    def on_post(self, req: falcon.Request, resp: falcon.Response, approval_id: str) -> None:
        params(req)
        decision = media.read(req, ApprovalDecision, self._runtime.settings.max_body_bytes)
        media.write(resp, self._runtime.decide(approval_id, decision, principal=caller(req)))
