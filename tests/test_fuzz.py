"""Schemathesis against a live server: no 5xx, and every response is what the document says.

Random ids and workdirs only ever reach the 404 and 400 paths, so hooks swap in
real ones some of the time (a workdir inside the workspace root, a session that
takes tasks, a session that may be closed, a finished task); that way the fuzzer
also walks the routes behind a successful lookup. The server has a token, so
the 401 responses are part of the document and ``ignored_auth`` can check them.

Cases are drawn per operation and per mode (valid, then invalid input) with a
small budget; ``scripts/fuzz.py`` runs the same test with a large one
(``FUZZ_MAX_EXAMPLES``, ``FUZZ_SEED``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.http_server import Client, serving

pytest_plugins = ("tests.http_fixtures",)

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
)
# Successes that only real ids and workdirs reach: proof that the hooks work.
DEEP = {
    ("POST /sessions", 201),
    ("GET /sessions/{session_id}", 200),
    ("DELETE /sessions/{session_id}", 200),
    ("POST /sessions/{session_id}/tasks", 202),
    ("GET /sessions/{session_id}/tasks", 200),
    ("GET /tasks/{task_id}", 200),
    ("DELETE /tasks/{task_id}", 409),
    ("GET /tasks/{task_id}/events", 200),
}
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
SEED = os.environ.get("FUZZ_SEED")


@dataclass(frozen=True)
class RealIds:
    """Things that exist on the server, for the hooks to mix into generated cases."""

    workdir: str
    keeper: str  # an open session that takes the fuzzer's tasks
    victim: str  # a session the fuzzer may close
    task: str  # a finished task


def _sometimes(generated: dict[str, Any] | None, name: str, *real: str) -> st.SearchStrategy:
    if not generated or name not in generated:
        return st.just(generated)
    return st.one_of(st.just(generated), *(st.just({**generated, name: v}) for v in real))


def install_hooks(schema: schemathesis.BaseSchema, ids: RealIds) -> set[tuple[str, int]]:
    """Mix real ids into path, query and body; the generated value stays as likely.

    Returns the set of (operation, status) seen, filled as the cases run.
    """
    seen: set[tuple[str, int]] = set()

    def sessions_for(context: schemathesis.HookContext) -> tuple[str, ...]:
        operation = context.operation
        if operation.method.upper() == "DELETE" and operation.path == "/sessions/{session_id}":
            return (ids.victim,)
        return (ids.keeper, ids.victim)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        strategy = _sometimes(path_parameters, "session_id", *sessions_for(context))
        return strategy.flatmap(lambda params: _sometimes(params, "task_id", ids.task))

    @schema.hook
    def flatmap_query(context, query):
        return _sometimes(query, "session_id", ids.keeper, ids.victim)

    @schema.hook
    def flatmap_body(context, body):
        if context.operation.path != "/sessions" or not isinstance(body, dict):
            return st.just(body)
        return st.one_of(st.just(body), st.just({**body, "workdir": ids.workdir}))

    @schema.hook
    def after_call(context, case, response):
        seen.add((case.operation.label, response.status_code))

    return seen


@pytest.fixture
def target(make_runtime, tmp_path) -> Iterator[tuple[str, RealIds]]:
    root = tmp_path / "workspace"
    (root / "project").mkdir(parents=True)
    runtime = make_runtime(
        api_token=TOKEN,
        workspace_root=str(root),
        max_sessions=20,
        max_pending_per_session=5,
    )
    with serving(runtime) as url:
        client = Client(url, token=TOKEN)
        keeper = client.open_session(str(root / "project"))
        victim = client.open_session(str(root / "project"))
        task = client.wait_terminal(client.submit(keeper["id"], "[[say: ready]]")["id"])
        yield url, RealIds(str(root / "project"), keeper["id"], victim["id"], task["id"])


def load_schema(url: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}}
    )
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, headers=AUTH)


def fuzz_operation(operation: Any, mode: GenerationMode) -> int:
    """Run the checks on generated cases; the number of cases (0 if none can exist)."""
    count = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        # Given here, not in the config, so that ignored_auth can take them away.
        case.call_and_validate(headers=AUTH)

    if SEED is not None:
        run = hypothesis.seed(int(SEED))(run)
    try:
        run()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE, f"{operation.label}: no valid input"
    return count


def test_no_5xx_and_every_response_as_documented(target):
    url, ids = target
    schema = load_schema(url)
    seen = install_hooks(schema, ids)
    failures: list[str] = []
    cases = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                cases += fuzz_operation(operation, mode)
            except (Exception, BaseExceptionGroup) as ex:  # every operation, not only the first
                failures.append(f"{operation.label} ({mode.value}): {ex}")
    assert not failures, "\n\n".join(failures)
    assert cases >= 100, f"only {cases} cases were generated"
    assert seen >= DEEP, f"never reached: {sorted(DEEP - seen)}"
