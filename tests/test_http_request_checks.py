"""What the request checks work out once stays right, and stays small."""

from __future__ import annotations

import falcon.testing
import pytest

from aicli.errors import MisdirectedRequest
from aicli.http.middleware import HOSTS_REMEMBERED, HostCheck
from aicli.settings import Settings


def _req(host: str) -> falcon.Request:
    return falcon.testing.create_req(headers={"Host": host})


def test_a_host_verdict_remembered_is_the_verdict_asked_afresh() -> None:
    check = HostCheck(Settings(allowed_hosts="api.example"))
    for _ in range(2):  # the second time from memory
        check.check(_req("127.0.0.1:8080"))
        check.check(_req("API.example."))
        with pytest.raises(MisdirectedRequest):
            check.check(_req("evil.example"))


def test_a_stranger_sending_new_host_names_does_not_grow_what_is_remembered() -> None:
    check = HostCheck(Settings())
    for index in range(HOSTS_REMEMBERED * 4):
        with pytest.raises(MisdirectedRequest):
            check.check(_req(f"rebind-{index}.example"))
    assert len(check._answers) == HOSTS_REMEMBERED
    with pytest.raises(MisdirectedRequest):
        check.check(_req(f"rebind-{HOSTS_REMEMBERED * 4}.example"))
    check.check(_req("localhost"))  # still answered, past the memory's bound
