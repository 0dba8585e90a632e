"""Schemathesis against a live server: every phase and check; no 5xx, no valid request refused.

One run of the engine behind ``schemathesis run``, over every operation of the served
document: its examples, the coverage phase's boundary values, random valid and invalid
cases, and stateful chains along the document's links (``POST /sessions``, then calls
with the new session's id, and so on).

It runs twice: as the built-in admin (the configured token) and as a user principal, whose
admin-only routes answer 403 and whose view is its own work.

Every check is on but ``use_after_free``: DELETE closes a session or cancels a task and
keeps it readable (the contract), which that check counts as a fault. A body over the size
limit is 413 whatever else is wrong with it, so ``negative_data_rejection`` takes 413 too.

The document says in words what no schema can (its 400 and 404 responses); the hooks here
act on it. A workdir (and a read path) must exist on this machine and a cursor must be one
this server issued, so valid cases get real ones. Ids must be ones the server issued: an
unknown one is 404, a fine answer to a valid request, and the hooks mix real ids in, so that
the routes
behind a lookup are walked too. The server takes commands of at most 10,000 characters:
with the default 100,000 schemathesis' coverage phase cannot build a valid body (and then
sends invalid ones labelled valid), and so every valid body stays far below the byte limit.

``FUZZ_MAX_EXAMPLES`` and ``FUZZ_SEED`` set the budget and the seed; ``scripts/fuzz.py``
runs this test with a big budget.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, events, from_schema
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.adapter.parameters import ParameterLocation

from aicli.testing.waiting import wait_for
from tests.http_server import Client, serving

pytest_plugins = ("tests.http_fixtures",)

TOKEN = "fuzz-token"
# Successes that only real ids and workdirs reach: proof that the hooks and links work.
DEEP = {
    ("POST /sessions", 201),
    ("GET /sessions/{session_id}", 200),
    ("DELETE /sessions/{session_id}", 200),
    ("POST /sessions/{session_id}/tasks", 202),
    ("GET /sessions/{session_id}/tasks", 200),
    ("GET /tasks/{task_id}", 200),
    ("DELETE /tasks/{task_id}", 409),
    ("GET /tasks/{task_id}/events", 200),
    ("GET /approvals/{approval_id}", 200),
}
REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
SEED = os.environ.get("FUZZ_SEED")


@dataclass(frozen=True)
class Real:
    """Things that exist on the server, for the hooks to put into generated cases."""

    workdir: str
    keeper: str  # an open session that takes the fuzzer's tasks
    victim: str  # a session the fuzzer may close
    task: str  # a finished task
    cursor: str  # a next_cursor the server issued
    principal: str  # the caller's own principal id
    approval: str  # an approval that waits for a decision (until the fuzzer makes one)


def _sometimes(generated: dict[str, Any] | None, name: str, *real: str) -> st.SearchStrategy:
    if not generated or name not in generated:
        return st.just(generated)
    return st.one_of(st.just(generated), *(st.just({**generated, name: v}) for v in real))


def _valid(case: schemathesis.Case, location: ParameterLocation) -> bool:
    component = case.meta.components.get(location) if case.meta else None
    return component is not None and component.mode == GenerationMode.POSITIVE


def install_hooks(schema: schemathesis.BaseSchema, real: Real) -> None:
    """Real ids mixed into paths and queries; a real workdir and cursor in valid cases."""

    def sessions_for(context: schemathesis.HookContext) -> tuple[str, ...]:
        operation = context.operation
        if operation.method.upper() == "DELETE" and operation.path == "/sessions/{session_id}":
            return (real.victim,)
        return (real.keeper, real.victim)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        strategy = _sometimes(path_parameters, "session_id", *sessions_for(context))
        strategy = strategy.flatmap(lambda params: _sometimes(params, "task_id", real.task))
        strategy = strategy.flatmap(lambda params: _sometimes(params, "approval_id", real.approval))
        return strategy.flatmap(lambda params: _sometimes(params, "principal_id", real.principal))

    @schema.hook
    def flatmap_query(context, query):
        strategy = _sometimes(query, "session_id", real.keeper, real.victim)
        strategy = strategy.flatmap(lambda params: _sometimes(params, "task_id", real.task))
        return strategy.flatmap(lambda params: _sometimes(params, "owner", real.principal))

    @schema.hook
    def map_case(context, case):
        body = case.body if isinstance(case.body, dict) else {}
        if _valid(case, ParameterLocation.BODY) and "workdir" in body:
            case.body = {**body, "workdir": real.workdir}
            if body.get("read_paths"):  # each must exist, as the workdir
                case.body["read_paths"] = [real.workdir]
        if _valid(case, ParameterLocation.BODY) and body.get("workspace_root") is not None:
            case.body = {**body, "workspace_root": real.workdir}
        if _valid(case, ParameterLocation.BODY) and "decision" in body:
            # What fits a tool use: no answers, and neither a changed input nor remember
            # with deny or with each other (the 400 the document words).
            fitting = {"decision": body["decision"], "message": body.get("message")}
            if body["decision"] == "allow" and body.get("remember"):
                fitting["remember"] = True
            elif body["decision"] == "allow" and body.get("updated_input") is not None:
                fitting["updated_input"] = body["updated_input"]
            case.body = fitting
        if _valid(case, ParameterLocation.HEADER) and "Idempotency-Key" in (case.headers or {}):
            # A key names one request: the engine's keys repeat across bodies, which is the
            # 422 idempotency_key_reused, a refusal of a valid request it cannot foresee.
            case.headers = {**case.headers, "Idempotency-Key": uuid.uuid4().hex}
        if _valid(case, ParameterLocation.QUERY) and "cursor" in (case.query or {}):
            case.query = {**case.query, "cursor": real.cursor}
        return case


def load_schema(url: str, token: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "seed": int(SEED) if SEED else 0,
            "cache": {"enabled": False},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": SEED is None,
                "database": "none",
            },
            "checks": {
                "use_after_free": {"enabled": False},
                "negative_data_rejection": {"expected-statuses": REJECTED},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


@dataclass
class Outcome:
    failures: dict[tuple[str, str], str]
    cases: Counter[str]  # by phase
    answers: set[tuple[str, int]]  # (operation, status)


def run(schema: schemathesis.BaseSchema) -> Outcome:
    """Every phase of the engine; each failure once, by operation and check."""
    outcome = Outcome({}, Counter(), set())
    for event in from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise event.exception
        if isinstance(event, events.NonFatalError):
            outcome.failures[(event.label, "error")] = str(event.info)
        if not isinstance(event, events.ScenarioFinished):
            continue
        recorder = event.recorder
        outcome.cases[event.phase.value] += len(recorder.cases)
        for case_id, interaction in recorder.interactions.items():
            if interaction.response is not None:
                label = recorder.cases[case_id].value.operation.label
                outcome.answers.add((label, interaction.response.status_code))
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.status == Status.FAILURE and check.failure_info is not None:
                    failure = check.failure_info.failure
                    label = recorder.cases[case_id].value.operation.label
                    outcome.failures.setdefault(
                        (label, check.name),
                        f"{failure.title} ({event.phase.value}): {failure.message}\n"
                        f"{check.failure_info.code_sample}",
                    )
    return outcome


@pytest.fixture(params=["admin", "user"])
def target(request, make_runtime, tmp_path) -> Iterator[tuple[str, str, Real]]:
    root = tmp_path / "workspace"
    (root / "project").mkdir(parents=True)
    runtime = make_runtime(
        api_token=TOKEN,
        workspace_root=str(root),
        max_sessions=20,
        max_pending_per_session=5,
        max_command_chars=10_000,
    )
    with serving(runtime) as url:
        token, principal = TOKEN, "root"
        if request.param == "user":
            made = Client(url, token=TOKEN).post("/principals", json={"name": "fuzzer"}).json()
            token, principal = made["token"], made["id"]
        client = Client(url, token=token)
        keeper = client.open_session(str(root / "project"))
        victim = client.open_session(str(root / "project"))
        task = client.wait_terminal(client.submit(keeper["id"], "[[say: ready]]")["id"])
        cursor = client.get("/sessions", params={"limit": 1}).json()["next_cursor"]
        work = str(root / "project")
        asker = client.open_session(work, approvals="ask")
        waits = client.submit(asker["id"], "[[bash: echo fuzz > fuzz.txt]]")
        approval = wait_for(
            lambda: client.get("/approvals", params={"task_id": waits["id"]}).json()["data"],
            what="the approval the fuzzer gets",
        )[0]
        yield (
            url,
            token,
            Real(work, keeper["id"], victim["id"], task["id"], cursor, principal, approval["id"]),
        )


def test_every_check_holds_on_every_operation(target):
    url, token, real = target
    schema = load_schema(url, token)
    install_hooks(schema, real)
    outcome = run(schema)
    if outcome.failures:
        found = (f"{label} {check}: {text}" for (label, check), text in outcome.failures.items())
        pytest.fail("\n\n".join(found), pytrace=False)
    assert set(outcome.cases) >= {"coverage", "fuzzing", "stateful"}, outcome.cases
    assert sum(outcome.cases.values()) >= 500, outcome.cases
    assert outcome.answers >= DEEP, f"never reached: {sorted(DEEP - outcome.answers)}"
