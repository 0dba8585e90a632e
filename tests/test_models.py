"""The JSON shape of the models is every field, no more, with times in the one API format."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

from aicli.models import Session, Task, format_time

NOW = datetime(2026, 11, 24, 4, 33, 10, 123456, tzinfo=UTC)


def test_times_are_utc_with_microseconds_and_z():
    assert format_time(NOW) == "2026-11-24T04:33:10.123456Z"
    assert format_time(NOW.replace(microsecond=0)) == "2026-11-24T04:33:10.000000Z"
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-11-24T04:33:10.123456Z"
    assert format_time(NOW.replace(tzinfo=None)) == "2026-11-24T04:33:10.123456Z"
    assert format_time(None) is None


def test_to_json_has_exactly_the_fields():
    task = Task(id="t", session_id="s", command="c", status="pending", created_at=NOW)
    session = Session(id="s", status="idle", workdir="/w", created_at=NOW, allowed_tools=("Bash",))
    assert set(task.to_json()) == {f.name for f in fields(Task)}
    assert set(session.to_json()) == {f.name for f in fields(Session)}
    assert task.to_json()["created_at"] == "2026-11-24T04:33:10.123456Z"
    assert session.to_json()["allowed_tools"] == ["Bash"]
