"""A scriptable stand-in for the Anthropic Messages API, on loopback.

The real Claude Code CLI is pointed at it with ``ANTHROPIC_BASE_URL`` so that
tests (ours, and those of people who embed aicli) exercise the real CLI with no
key and no network. It answers ``POST /v1/messages`` with the same SSE event
sequence the real API streams.

What to answer is read from directives in the prompt itself, so a test that
drives aicli through HTTP, or a server in another process, needs no side
channel::

    [[say: some text]]         reply with exactly this text
    [[bash: echo hi]]          call the Bash tool with this command, then reply
                               with the tool's output once the result comes back
    [[bash-forever]]           call Bash (``echo again``) every turn: ends in max turns
    [[tool: Write {"file_path": "x", "content": "y"}]]
                               call any tool the CLI offers with this JSON input, then reply
                               with the tool's result; the JSON may not hold "]]"
    [[ask: Which color? | Red | Blue]]
                               ask the question with these options through the CLI's
                               AskUserQuestion tool (offered with approvals on), then
                               reply with the tool's result: the answer
    [[slow: 3]]                stream the reply over 3 seconds
    [[error: 401]]             answer with an HTTP error (400, 401, 403, 429, 500,
                               529) and ``x-should-retry: false``
    [[big: 5000000]]           a text reply of that many characters

A prompt without directives gets ``Reply to: <prompt>``. Tests that need more
can pass ``responder``: a callable from a ``RecordedRequest`` to a ``Reply`` (or
None to fall back to the directives).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aicli.testing.fake_replies import RecordedRequest, Reply, reply_from_directives

__all__ = ["FakeAnthropic", "RecordedRequest", "Reply"]

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _chunks(text: str, count: int) -> Iterator[str]:
    size = max(1, -(-len(text) // count))
    for start in range(0, len(text), size):
        yield text[start : start + size]


class FakeAnthropic:
    """The fake API server: ``with FakeAnthropic() as fake: fake.url ...``."""

    def __init__(
        self,
        responder: Callable[[RecordedRequest], Reply | None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment variables that point a Claude CLI at this fake."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-fake-key-for-tests",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }

    def conversation_requests(self) -> list[RecordedRequest]:
        """The requests of real conversation turns (those offering tools), oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/messages" and r.has_tools]

    def requests_with_prompt(self, needle: str) -> list[RecordedRequest]:
        return [r for r in self.conversation_requests() if needle in r.prompt]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _choose(self, request: RecordedRequest) -> Reply:
        if self.responder is not None:
            reply = self.responder(request)
            if reply is not None:
                return reply
        return reply_from_directives(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("fake-anthropic: " + format, *args)

            def do_GET(self) -> None:
                self._json(200, {})

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?", 1)[0]
                request = RecordedRequest(
                    path=path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    started_at=time.monotonic(),
                )
                fake._record(request)
                try:
                    if path == "/v1/messages/count_tokens":
                        self._json(200, {"input_tokens": 10})
                    elif path == "/v1/messages":
                        request.reply = fake._choose(request)
                        self._answer(request, request.reply)
                    else:
                        self._json(404, _error_body(404, f"No route {path}"))
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("fake-anthropic: client went away")
                finally:
                    request.finished_at = time.monotonic()

            def _json(self, status: int, body: dict[str, Any], extra: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, request: RecordedRequest, reply: Reply) -> None:
                if reply.error_status is not None:
                    message = ERROR_MESSAGES.get(reply.error_status, "fake API error")
                    self._json(
                        reply.error_status,
                        _error_body(reply.error_status, message),
                        {"x-should-retry": "false", "request-id": f"req_{uuid.uuid4().hex}"},
                    )
                    return
                model = request.body.get("model", "claude-fake")
                if not request.body.get("stream"):
                    self._json(200, _message(model, reply))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for chunk in _stream(model, reply):
                    self.wfile.write(chunk)
                    self.wfile.flush()

        return Handler


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def _usage(output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": 10,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message(model: str, reply: Reply) -> dict[str, Any]:
    if reply.bash_command is not None:
        content = [_tool_block("Bash", _bash_input(reply.bash_command))]
        stop_reason = "tool_use"
    elif reply.tool is not None:
        content = [_tool_block(*reply.tool)]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": reply.text or ""}]
        stop_reason = "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(5),
    }


def _bash_input(command: str) -> dict[str, Any]:
    return {"command": command, "description": "Run the command"}


def _tool_block(name: str, given: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": given,
    }


def _stream(model: str, reply: Reply) -> Iterator[bytes]:
    message = _message(model, reply)
    start = dict(message, content=[], stop_reason=None, usage=_usage(1))
    yield _sse("message_start", {"type": "message_start", "message": start})
    block = message["content"][0]
    if block["type"] == "tool_use":
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": dict(block, input={})},
        )
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    else:
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield _sse("ping", {"type": "ping"})
        text = block["text"]
        pieces = max(1, int(reply.stream_seconds * 10)) if reply.stream_seconds else 1
        if len(text) > 65536:
            pieces = max(pieces, len(text) // 65536)
        chunks = list(_chunks(text, pieces)) or [""]
        delay = reply.stream_seconds / len(chunks)
        for piece in chunks:
            if delay:
                time.sleep(delay)
            delta = {"type": "text_delta", "text": piece}
            yield _sse(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": 5},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})
