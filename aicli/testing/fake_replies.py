"""What the fake Anthropic API answers: the request it got and the reply it chooses.

The reply is read from ``[[...]]`` directives in the newest prompt (listed in
``aicli.testing.fake_anthropic``), so a test that drives aicli through HTTP, or
a server in another process, needs no side channel to say what the model does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

QUESTION_TOOL = "AskUserQuestion"
DIRECTIVE = re.compile(r"\[\[([a-z-]+)(?::\s*(.*?))?\]\]", re.DOTALL)


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request."""

    text: str | None = None
    bash_command: str | None = None
    tool: tuple[str, dict[str, Any]] | None = None  # any tool: its name and input
    stream_seconds: float = 0.0
    error_status: int | None = None

    @staticmethod
    def say(text: str, stream_seconds: float = 0.0) -> Reply:
        return Reply(text=text, stream_seconds=stream_seconds)

    @staticmethod
    def bash(command: str) -> Reply:
        return Reply(bash_command=command)

    @staticmethod
    def use(tool: str, given: dict[str, Any]) -> Reply:
        return Reply(tool=(tool, given))

    @staticmethod
    def error(status: int) -> Reply:
        return Reply(error_status=status)


@dataclass
class RecordedRequest:
    """One request the fake received; ``finished_at`` is set when its answer ends."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started_at: float
    finished_at: float | None = None
    reply: Reply | None = None

    @property
    def session_id(self) -> str | None:
        return self.headers.get("x-claude-code-session-id")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages") or []

    @property
    def has_tools(self) -> bool:
        return self.offers("Bash")

    def offers(self, tool: str) -> bool:
        """Whether the CLI sent ``tool`` among the tools the model may call."""
        return any(given.get("name") == tool for given in self.body.get("tools") or [])

    @property
    def prompt(self) -> str:
        """The newest prompt: the last text block of the newest user message that has text.

        The CLI folds a prompt that got no answer (after an API error, say) into
        the next user message, so only the last block is the newest prompt.
        """
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            texts = _texts_of(message.get("content"))
            if texts:
                return texts[-1]
        return ""

    @property
    def last_tool_result(self) -> str | None:
        """The tool result the newest user message carries, unless it also brings a new prompt."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if not isinstance(content, list) or _texts_of(content):
                return None
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return "\n".join(_texts_of(block.get("content")))
            return None
        return None

    def user_texts(self) -> list[str]:
        """Every user prompt in the conversation, oldest first: shows carried context."""
        texts = []
        for message in self.messages:
            if message.get("role") == "user":
                texts.extend(_texts_of(message.get("content")))
        return texts


def _texts_of(content: Any) -> list[str]:
    """The text blocks of a message's content, without the CLI's system reminders."""
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        return []
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text", "")
            if text and not text.lstrip().startswith("<system-reminder>"):
                texts.append(text)
        elif isinstance(block, str) and block:
            texts.append(block)
    return texts


def reply_from_directives(request: RecordedRequest) -> Reply:
    """Decide the answer from the ``[[...]]`` directives in the newest prompt."""
    prompt = request.prompt
    directives = {name: (arg or "").strip() for name, arg in DIRECTIVE.findall(prompt)}
    seconds = float(directives.get("slow") or 0)
    if "error" in directives:
        return Reply.error(int(directives["error"]))
    tool_result = request.last_tool_result
    if request.has_tools:
        if "bash-forever" in directives:
            return Reply.bash("echo again")
        if "bash" in directives and tool_result is None:
            return Reply.bash(directives["bash"])
    if "ask" in directives and tool_result is None and request.offers(QUESTION_TOOL):
        return Reply.use(QUESTION_TOOL, question_input(directives["ask"]))
    if "tool" in directives and tool_result is None:
        name, _, given = directives["tool"].partition(" ")
        if request.offers(name):
            return Reply.use(name, json.loads(given or "{}"))
    if tool_result is not None:
        return Reply.say(f"Tool said: {tool_result.strip()}", seconds)
    if "big" in directives:
        size = int(directives["big"])
        return Reply.say(("0123456789abcdef" * (size // 16 + 1))[:size], seconds)
    if "say" in directives:
        return Reply.say(directives["say"], seconds)
    return Reply.say(f"Reply to: {prompt.strip()[:200]}", seconds)


def question_input(spec: str) -> dict[str, Any]:
    """AskUserQuestion's input for ``question | option | option ...``."""
    question, *labels = [part.strip() for part in spec.split("|")]
    options = [{"label": label, "description": f"Choose {label}"} for label in labels]
    return {
        "questions": [
            {"question": question, "header": "Question", "options": options, "multiSelect": False}
        ]
    }
