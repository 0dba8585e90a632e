"""A decision made on one node reaches the CLI of another: the answer rebuilt from the store.

The node where a person decides commits the decision and tells its peers only the
approval's id; the node whose CLI asked rebuilds the answer from the stored row and
the ``approval_decided`` event (``ApprovalDesk.answer_of``). Here the desk decides
each kind of decision and the rebuilt answer must be the one the deciding node sent
its own CLI, without any actor or node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from aicli.actors.messages import Answer, Decided
from aicli.actors.notifier import Notifier
from aicli.approval_desk import ApprovalDesk
from aicli.contract import Approval, ApprovalDecision, ApprovalKind, Session, Task
from aicli.storage import Store
from aicli.testing.store_sql import submit_task

pytest_plugins = ("tests.storage_fixtures",)

BASH = {"command": "echo hi > hi.txt", "description": "Write a file"}
QUESTION = {
    "questions": [
        {
            "question": "Which database?",
            "header": "DB",
            "multiSelect": False,
            "options": [{"label": "SQLite"}, {"label": "PostgreSQL"}],
        }
    ]
}

CASES = {
    "allow": (
        ApprovalKind.TOOL,
        {"decision": "allow"},
        {"behavior": "allow", "updatedInput": BASH},
    ),
    "allow with a message": (
        ApprovalKind.TOOL,
        {"decision": "allow", "message": "fine"},
        {"behavior": "allow", "updatedInput": BASH},
    ),
    "allow with updated_input": (
        ApprovalKind.TOOL,
        {"decision": "allow", "updated_input": {"command": "echo other > o.txt"}},
        {"behavior": "allow", "updatedInput": {"command": "echo other > o.txt"}},
    ),
    "allow and remember": (
        ApprovalKind.TOOL,
        {"decision": "allow", "remember": True},
        {"behavior": "allow", "updatedInput": BASH},
    ),
    "answers": (
        ApprovalKind.QUESTION,
        {"decision": "allow", "answers": {"Which database?": "PostgreSQL"}},
        {
            "behavior": "allow",
            "updatedInput": {**QUESTION, "answers": {"Which database?": "PostgreSQL"}},
        },
    ),
    "deny": (
        ApprovalKind.TOOL,
        {"decision": "deny", "message": "Not here."},
        {"behavior": "deny", "message": "Not here."},
    ),
    "deny without a message": (
        ApprovalKind.TOOL,
        {"decision": "deny"},
        {"behavior": "deny", "message": "The user denied this tool use."},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_answer_rebuilt_on_another_node_is_the_one_sent_here(
    store: Store, tmp_path: Path, case: str
) -> None:
    kind, body, expected = CASES[case]
    session, _, asked = _asking(store, tmp_path, kind)
    told: list[Any] = []
    desk = ApprovalDesk(store, Notifier(), told.append)

    desk.decide(asked.id, _decision(body))

    [here] = told
    assert here == Decided(session.id, Answer(asked.id, expected))
    # Another node, whose CLI asked, has only the store (a desk of its own on it).
    elsewhere = ApprovalDesk(store, Notifier(), told.append).answer_of(asked.id)
    assert elsewhere == here.answer


def test_an_undecided_or_expired_approval_has_no_answer_to_rebuild(
    store: Store, tmp_path: Path
) -> None:
    _, task, asked = _asking(store, tmp_path, ApprovalKind.TOOL)
    desk = ApprovalDesk(store, Notifier(), lambda _: None)
    assert desk.answer_of(asked.id) is None
    store.approvals.expire(task.id, "over")
    assert desk.answer_of(asked.id) is None


def _asking(store: Store, tmp_path: Path, kind: ApprovalKind) -> tuple[Session, Task, Approval]:
    """A session's running task and the approval it asks for: a Bash use or a question."""
    session = store.create_session(workdir=str(tmp_path), approvals="ask")
    submit_task(store, session.id, command="do it")
    task = store.start_next_task(session.id)
    assert task is not None
    asked = store.approvals.request(
        session_id=session.id,
        task_id=task.id,
        kind=kind,
        tool_name="AskUserQuestion" if kind == ApprovalKind.QUESTION else "Bash",
        given=QUESTION if kind == ApprovalKind.QUESTION else BASH,
        suggestions=[],
    )
    return session, task, asked


def _decision(body: dict[str, Any]) -> ApprovalDecision:
    return msgspec.convert(body, ApprovalDecision)
