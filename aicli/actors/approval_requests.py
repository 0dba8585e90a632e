"""What the CLI asks with ``--permission-prompt-tool stdio``, and what we answer.

Pure functions, so the protocol (measured in CLI-FACTS.md: ``can_use_tool``
requests, ``allow`` with ``updatedInput``, ``deny`` with a message, answers to
``AskUserQuestion`` inside the input) is tested without a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aicli.contract import ApprovalKind

QUESTION_TOOL = "AskUserQuestion"
DENIED = "The user denied this tool use."
NO_TURN = "No task of this session is running now, so nobody can approve this."
WITHDRAWN = "The CLI withdrew this request before anyone decided it."
UNSERVED = "aicli answers only can_use_tool control requests."


@dataclass(frozen=True)
class ToolRequest:
    """One ``can_use_tool`` request of the CLI."""

    request_id: str
    tool_name: str
    input: dict[str, Any]
    suggestions: list[Any]

    @property
    def kind(self) -> ApprovalKind:
        return ApprovalKind.QUESTION if self.tool_name == QUESTION_TOOL else ApprovalKind.TOOL


def tool_request_of(message: dict[str, Any]) -> ToolRequest | None:
    """The request a ``control_request`` line carries, or None if it asks something else."""
    request = message.get("request")
    if not isinstance(request, dict) or request.get("subtype") != "can_use_tool":
        return None
    given = request.get("input")
    suggestions = request.get("permission_suggestions")
    return ToolRequest(
        request_id=str(message.get("request_id")),
        tool_name=str(request.get("tool_name") or "?"),
        input=given if isinstance(given, dict) else {},
        suggestions=suggestions if isinstance(suggestions, list) else [],
    )


def allow(given: dict[str, Any]) -> dict[str, Any]:
    """Run the tool with ``given`` (the request's input, or what a person changed it to)."""
    return {"behavior": "allow", "updatedInput": given}


def deny(message: str) -> dict[str, Any]:
    """Do not run it; Claude gets ``message`` as the tool's (failed) result and goes on."""
    return {"behavior": "deny", "message": message}


def unanswered(timeout_s: float) -> str:
    return f"No one answered this request within {timeout_s:g} s, so it was denied."
