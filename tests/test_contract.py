"""The contract's JSON: every field, no more, with times in the one API format."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from aicli import contract
from aicli.contract import Session, Task, TaskStatus, clock, utcnow

NOW = datetime(2026, 11, 24, 4, 33, 10, 123456, tzinfo=UTC)


def test_times_are_utc_with_microseconds_and_z():
    assert contract.encode(NOW) == b'"2026-11-24T04:33:10.123456Z"'
    assert contract.encode(utcnow()).endswith(b'Z"')


def test_encoded_values_have_exactly_their_fields_and_the_time_format():
    task = Task(id="t", session_id="s", command="c", status=TaskStatus.PENDING, created_at=NOW)
    session = Session(id="s", status="idle", workdir="/w", created_at=NOW)
    task_json = msgspec.json.decode(contract.encode(task))
    session_json = msgspec.json.decode(contract.encode(session))
    assert set(task_json) == set(Task.__struct_fields__)
    assert set(session_json) == set(Session.__struct_fields__)
    assert task_json["created_at"] == "2026-11-24T04:33:10.123456Z"
    assert session_json["created_at"] == "2026-11-24T04:33:10.123456Z"
    assert session_json["task_counts"] == dict.fromkeys(map(str, TaskStatus), 0)


def test_now_is_never_on_a_whole_second_so_it_is_written_with_microseconds(monkeypatch):
    class OnTheSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 24, 4, 33, 10, tzinfo=tz)

    monkeypatch.setattr(clock, "datetime", OnTheSecond)
    now = utcnow()
    assert now.microsecond == 1
    assert contract.encode(now) == b'"2026-11-24T04:33:10.000001Z"'
