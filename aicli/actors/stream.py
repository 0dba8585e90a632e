"""What the CLI's stream-json messages mean for a task: events, and its final outcome.

Pure functions, so that the rules (which messages become events, when a result
counts as failed, how much a turn cost) are tested without a process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aicli.contract import TaskStatus

# Messages that say nothing about the task itself: the CLI's start-up banner
# (its session id is taken from it elsewhere), answers to our control requests
# and partial-message deltas (the complete message follows).
_SKIPPED = {("system", "init"), ("control_response", None), ("stream_event", None)}


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` with every lone UTF-16 surrogate replaced by U+FFFD.

    Node cuts strings in the middle of an emoji (long tool output does this),
    and JSON keeps the half as ``"\\ud83d"``; such a string cannot be encoded
    as UTF-8, so no database would store it. Pairs were joined by the JSON
    decoder already, so whatever surrogate is left is a lone one.
    """
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def event_of(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The (type, data) of the event a stream message becomes, or None to skip it."""
    kind = message.get("type")
    subtype = message.get("subtype")
    if (kind, subtype) in _SKIPPED or (kind, None) in _SKIPPED or not isinstance(kind, str):
        return None
    if kind == "assistant":
        body = message.get("message") or {}
        return "assistant", {"content": body.get("content") or [], "model": body.get("model")}
    if kind == "user":
        content = (message.get("message") or {}).get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
            return "tool_result", {"content": blocks}
        return "user", {"content": blocks}
    if kind == "result":
        return "result", {k: v for k, v in message.items() if k != "type"}
    return kind, {k: v for k, v in message.items() if k != "type"}


@dataclass(frozen=True)
class Outcome:
    """How a turn ended, in the task's own terms."""

    status: str
    output: str | None
    error: str | None
    cost_usd: float | None
    num_turns: int | None
    duration_ms: int | None
    usage: dict[str, int] | None

    @classmethod
    def failure(
        cls, error: str, status: str = TaskStatus.FAILED, like: Outcome | None = None
    ) -> Outcome:
        """A turn that ended in ``status`` for our reason; what Claude spent is still counted."""
        if like is None:
            return cls(status, None, error, None, None, None, None)
        return cls(status, None, error, like.cost_usd, like.num_turns, like.duration_ms, like.usage)


def turn_cost(message: dict[str, Any], previous_total: float) -> float | None:
    """The cost of this turn alone: the CLI's ``total_cost_usd`` adds up over its process."""
    per_model = message.get("model_usage_since_last_result")
    if isinstance(per_model, dict):
        return round(sum(float(m.get("costUSD") or 0) for m in per_model.values()), 10)
    total = message.get("total_cost_usd")
    if total is None:
        return None
    return round(max(0.0, float(total) - previous_total), 10)


def failure_message(message: dict[str, Any]) -> str:
    """One sentence from the CLI's own words about why a turn failed."""
    subtype = message.get("subtype")
    text = message.get("result")
    if isinstance(text, str) and text.strip():
        said = text.strip()
    else:
        errors = [e for e in message.get("errors") or [] if not str(e).startswith("[ede_")]
        said = "; ".join(str(e) for e in errors)
    if subtype == "error_max_turns":
        return f"Claude stopped at the maximum number of turns: {said or subtype}."
    return f"Claude reported an error: {said or subtype or 'no message'}."


def outcome_of(message: dict[str, Any], previous_total: float) -> Outcome:
    """Turn a ``result`` message into the task's outcome.

    Either one fails it: ``is_error`` true, or a ``subtype`` other than
    ``"success"``. The subtype alone would miss an API error, which ends a turn
    with ``subtype: "success"`` and ``is_error: true``; it is still read so that
    an ``error_*`` subtype (``error_max_turns``) without the flag is never taken
    for a success.
    """
    failed = bool(message.get("is_error")) or message.get("subtype") not in (None, "success")
    usage = message.get("usage") or {}
    return Outcome(
        status=TaskStatus.FAILED if failed else TaskStatus.COMPLETED,
        output=None if failed else (message.get("result") or ""),
        error=failure_message(message) if failed else None,
        cost_usd=turn_cost(message, previous_total),
        num_turns=message.get("num_turns"),
        duration_ms=message.get("duration_ms"),
        usage={
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
        },
    )
