"""Watchers of one task share its tail: a new event is read from the store once, not per watcher."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aicli.actors import event_tail
from aicli.actors.event_tail import EventTails
from aicli.contract import Event


class CountingStore:
    def __init__(self) -> None:
        self.log: list[Event] = []
        self.reads: list[int] = []

    def add(self, count: int) -> None:
        for _ in range(count):
            seq = len(self.log) + 1
            self.log.append(
                Event(seq=seq, type="assistant", created_at=datetime.now(UTC), data={"n": seq})
            )

    def list_events(self, task_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        self.reads.append(after)
        found = [event for event in self.log if event.seq > after]
        return found if limit is None else found[:limit]

    def event_page(self, task_id: str, *, after: int, limit: int) -> tuple[list[Event], bool]:
        found = self.list_events(task_id, after=after, limit=limit + 1)
        return found[:limit], len(found) > limit


def seqs(events: list[Any]) -> list[int]:
    return [event.seq for event in events]


def test_many_watchers_of_one_version_cost_one_read():
    store = CountingStore()
    tails = EventTails(store)
    store.add(3)
    for _ in range(100):
        assert seqs(tails.after("t", 0, None, version=1)) == [1, 2, 3]
    assert store.reads == [0]
    store.add(2)
    # Watchers at different places all get what they have not seen, after one more read.
    assert seqs(tails.after("t", 3, None, version=2)) == [4, 5]
    assert seqs(tails.after("t", 1, 2, version=2)) == [2, 3]
    assert seqs(tails.after("t", 5, None, version=2)) == []
    assert store.reads == [0, 3]


def test_a_watcher_behind_what_the_tail_keeps_reads_the_store(monkeypatch):
    monkeypatch.setattr(event_tail, "MAX_EVENTS", 4)
    store = CountingStore()
    tails = EventTails(store)
    store.add(10)
    assert seqs(tails.after("t", 0, None, version=1)) == list(range(1, 11))
    # The tail now keeps 7..10; a watcher at 2 is served by the store directly.
    assert seqs(tails.after("t", 2, 3, version=1)) == [3, 4, 5]
    assert seqs(tails.after("t", 8, None, version=1)) == [9, 10]
    assert store.reads == [0, 2]


def test_tails_of_the_least_recently_read_tasks_are_dropped(monkeypatch):
    monkeypatch.setattr(event_tail, "MAX_TASKS", 2)
    store = CountingStore()
    tails = EventTails(store)
    store.add(1)
    for task_id in ("a", "b", "c", "a"):
        tails.after(task_id, 0, None, version=1)
    assert store.reads == [0, 0, 0, 0]  # "a" was dropped for "c", so it was read again
