"""The fake API can make the real CLI call any tool, as approvals and their tests need."""

from __future__ import annotations

import json
from pathlib import Path

pytest_plugins = ("tests.http_fixtures",)


def test_a_tool_directive_makes_the_cli_call_that_tool(client, workdir, fake_api):
    target = Path(workdir) / "written.txt"
    session = client.open_session(workdir, allowed_tools=["Write"])
    given = json.dumps({"file_path": str(target), "content": "from the fake"})
    done = client.wait_terminal(client.submit(session["id"], f"[[tool: Write {given}]]")["id"])
    assert done["status"] == "completed", done
    assert target.read_text() == "from the fake"
    assert done["output"].startswith("Tool said:")


def test_a_tool_outside_the_sessions_permissions_is_refused_and_the_turn_goes_on(
    client, workdir, fake_api
):
    target = Path(workdir) / "never.txt"
    session = client.open_session(workdir)
    given = json.dumps({"file_path": str(target), "content": "no"})
    done = client.wait_terminal(client.submit(session["id"], f"[[tool: Write {given}]]")["id"])
    assert done["status"] == "completed" and not target.exists()
    assert done["output"].startswith("Tool said:")
    offered = {tool["name"] for request in fake_api.requests for tool in request.body["tools"]}
    assert {"Write", "Bash"} <= offered
