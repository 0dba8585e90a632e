"""The contract's JSON: every field, no more, with times in the one API format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec

from aicli import contract
from aicli.contract import Session, Task, TaskStatus, Timestamp, format_time

NOW = Timestamp(2026, 11, 24, 4, 33, 10, 123456, tzinfo=UTC)


def test_times_are_utc_with_microseconds_and_z():
    assert format_time(NOW) == "2026-11-24T04:33:10.123456Z"
    assert format_time(NOW.replace(microsecond=0)) == "2026-11-24T04:33:10.000000Z"
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-11-24T04:33:10.123456Z"


def test_encoded_values_have_exactly_their_fields_and_the_time_format():
    on_the_second = Timestamp(2026, 11, 24, 4, 33, 10, tzinfo=UTC)
    task = Task(id="t", session_id="s", command="c", status=TaskStatus.PENDING, created_at=NOW)
    session = Session(id="s", status="idle", workdir="/w", created_at=on_the_second)
    task_json = msgspec.json.decode(contract.encode(task))
    session_json = msgspec.json.decode(contract.encode(session))
    assert set(task_json) == set(Task.__struct_fields__)
    assert set(session_json) == set(Session.__struct_fields__)
    assert task_json["created_at"] == "2026-11-24T04:33:10.123456Z"
    assert session_json["created_at"] == "2026-11-24T04:33:10.000000Z"
    assert session_json["task_counts"] == dict.fromkeys(map(str, TaskStatus), 0)


def test_times_read_back_as_timestamps():
    decoded = contract.decode(contract.encode(NOW), Timestamp)
    assert decoded == NOW and isinstance(decoded, datetime)
