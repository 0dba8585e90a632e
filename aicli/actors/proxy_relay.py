"""One client connection of the API proxy: each request's token checked, then relayed upstream.

The client is a sandboxed Claude CLI holding a capability token instead of a
key. Its request goes on with the token's credentials in place of its own
auth headers, body and answer passing through as they come (a streamed answer
reaches the CLI event by event). Refusals and upstream failures are answered
the way the Messages API answers errors, with ``x-should-retry: false``: the
CLI would otherwise retry them for minutes.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Sequence

import h11

from aicli.actors.proxy_upstream import RECV_BYTES, Link, Upstream

QUICKACK = getattr(socket, "TCP_QUICKACK", None)

log = logging.getLogger(__name__)

Headers = Sequence[tuple[bytes, bytes]]
# Token -> the auth headers it stands for; None: no such token (or revoked). It may raise
# ``Refused`` instead, which answers the request.
Grants = Callable[[str], Headers | None]

# RFC 9110 7.6.1: meaningful for one connection only. Framing (content-length,
# chunked) is redone by h11 on each side.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced on the way up: the client's auth (its token), the host it dialled,
# and Expect (the proxy answers 100-continue itself).
REPLACED = frozenset({b"x-api-key", b"authorization", b"host", b"expect"})
# What the CLI needs of the API (measured: it asks for nothing else that it cannot
# do without), and so all a capability token is good for.
MESSAGES_API = (b"/v1/messages", b"/v1/messages/count_tokens")
CLIENT_IDLE_S = 300.0
MAX_HEAD_BYTES = 65536
# A refused request's body is read and dropped (up to this much) so that the
# refusal reaches the client instead of a reset, and the connection stays usable.
DRAIN_BYTES = 16 * 1024 * 1024
# A request body is kept (up to this much) until the answer starts, to send
# it again on a fresh link if the first one is cut before answering.
REPLAY_BYTES = 8 * 1024 * 1024


class Refused(Exception):
    """A request answered by the proxy itself, with an error the way the API words one
    (``Grants`` may raise it too)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def serve_client(sock: socket.socket, grants: Grants, upstream: Upstream) -> None:
    """Serve requests on ``sock`` until the client leaves, a side fails, or the proxy stops."""
    sock.settimeout(CLIENT_IDLE_S)
    client = _Client(sock, grants, upstream)
    try:
        client.serve()
    except (OSError, h11.ProtocolError) as exc:
        log.debug("api proxy: client connection ended: %r", exc)
    finally:
        sock.close()


class _Client:
    def __init__(self, sock: socket.socket, grants: Grants, upstream: Upstream) -> None:
        self.sock = sock
        self.grants = grants
        self.upstream = upstream
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    def serve(self) -> None:
        while True:
            try:
                request = self._event()
            except h11.RemoteProtocolError as exc:
                if self.http.our_state is h11.SEND_RESPONSE:
                    self._answer_error(exc.error_status_hint, "invalid_request_error", str(exc))
                return
            if type(request) is not h11.Request:
                return
            self._exchange(request)
            if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
                return
            self.http.start_next_cycle()

    def _exchange(self, request: h11.Request) -> None:
        try:
            auth = self._auth_of(request)
            if not _messages_api(request.target):
                raise Refused(
                    400,
                    "invalid_request_error",
                    "The API proxy only forwards the Messages API: "
                    + ", ".join(p.decode() for p in MESSAGES_API),
                )
            link, response = self._forward(request, auth)
        except Refused as refusal:
            level = logging.WARNING if refusal.status >= 500 else logging.INFO
            log.log(level, "api proxy: %s %s: %s", refusal.status, request.target[:200], refusal)
            self._answer_refusal(refusal)
            return
        try:
            self._relay(link, response)
        except BaseException:
            self.upstream.discard(link)
            raise
        self.upstream.release(link)

    def _auth_of(self, request: h11.Request) -> Headers:
        token = _token(request.headers)
        auth = self.grants(token) if token else None
        if auth is None:
            raise Refused(
                401, "authentication_error", "invalid capability token for the aicli API proxy"
            )
        return auth

    def _forward(self, request: h11.Request, auth: Headers) -> tuple[Link, h11.Response]:
        """Send the request upstream as its body arrives; the link and the answer's head."""
        outgoing = h11.Request(
            method=request.method,
            target=self.upstream.prefix + request.target,
            headers=_request_headers(request.headers, auth, self.upstream.host_header),
        )
        link = self._acquire()
        if self.http.client_is_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            kept, failed = self._pass_body(link, outgoing)
            if failed is None:
                try:
                    return link, _response_head(link)
                except (OSError, h11.ProtocolError) as exc:
                    failed = exc
        except BaseException:
            self.upstream.discard(link)
            raise
        self.upstream.discard(link)
        # A connection cut before the answer began (a kept link the server had closed, a
        # new one its backlog dropped) gets one more try, as the SDK would try it again;
        # a timeout does not, since the API may be working on it.
        if kept is None or not isinstance(failed, ConnectionError | h11.RemoteProtocolError):
            raise Refused(502, "api_error", f"the API failed to answer: {failed!r}")
        return self._replay(outgoing, kept)

    def _pass_body(
        self, link: Link, outgoing: h11.Request
    ) -> tuple[list[bytes] | None, OSError | None]:
        """Send the request on as its body arrives: the body kept for a replay (None: too
        big), and what failed upstream. A failed upstream stops the sending, not the reading."""
        kept: list[bytes] | None = []
        size = 0
        failed = _try_send(link, outgoing)
        while type(event := self._event()) is not h11.EndOfMessage:
            if type(event) is not h11.Data:
                continue
            size += len(event.data)
            if kept is not None and size <= REPLAY_BYTES:
                kept.append(event.data)
            else:
                kept = None
            if failed is None:
                failed = _try_send(link, h11.Data(data=event.data))
        if failed is None:
            failed = _try_send(link, h11.EndOfMessage())
        return kept, failed

    def _acquire(self) -> Link:
        try:
            return self.upstream.acquire()
        except OSError as exc:
            raise Refused(502, "api_error", f"the API proxy cannot reach the API: {exc}") from exc

    def _replay(self, outgoing: h11.Request, body: list[bytes]) -> tuple[Link, h11.Response]:
        link = self._acquire()
        try:
            link.send(outgoing)
            for data in body:
                link.send(h11.Data(data=data))
            link.send(h11.EndOfMessage())
            return link, _response_head(link)
        except (OSError, h11.ProtocolError) as exc:
            self.upstream.discard(link)
            raise Refused(502, "api_error", f"the API failed to answer: {exc!r}") from exc

    def _relay(self, link: Link, response: h11.Response) -> None:
        """Pass the answer on as it comes; a failure on either side ends both connections."""
        self._send(
            h11.Response(
                status_code=response.status_code,
                reason=response.reason,
                headers=_end_to_end(response.headers, HOP_BY_HOP),
            )
        )
        while True:
            event = link.next_event()
            if type(event) is h11.Data:
                self._send(event)
            elif type(event) is h11.EndOfMessage:
                self._send(h11.EndOfMessage())
                return

    def _answer_refusal(self, refusal: Refused) -> None:
        """Drop what is left of the request's body, then answer; too big a body closes."""
        drained = self.http.their_state is not h11.SEND_BODY or self._drain()
        self._answer_error(refusal.status, refusal.kind, refusal.message, close=not drained)

    def _answer_error(self, status: int, kind: str, message: str, close: bool = False) -> None:
        body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-should-retry", b"false"),
        ]
        if close:
            headers.append((b"connection", b"close"))
        self._send(h11.Response(status_code=status, headers=headers))
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _drain(self) -> bool:
        if self.http.client_is_waiting_for_100_continue:
            return False
        left = DRAIN_BYTES
        while left > 0:
            event = self._event()
            if type(event) is h11.EndOfMessage:
                return True
            if type(event) is h11.Data:
                left -= len(event.data)
        return False

    def _event(self) -> h11.Event:
        while True:
            event = self.http.next_event()
            if event is not h11.NEED_DATA:
                return event
            if QUICKACK is not None:
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            self.http.receive_data(self.sock.recv(RECV_BYTES))

    def _send(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.sock.sendall(data)


def _try_send(link: Link, event: h11.Event) -> OSError | None:
    try:
        link.send(event)
    except OSError as exc:
        return exc
    return None


def _token(headers: Headers) -> str | None:
    bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip().decode("latin-1")
    return bearer


def _messages_api(target: bytes) -> bool:
    """Origin-form, and a path of the Messages API, exactly (a query may follow).

    Absolute-form (``http://elsewhere/``) and authority-form targets would make the
    proxy an open relay carrying the operator's key, and any other path of the API (the
    Files API, message batches, models) would let a tenant use the operator's key for
    what it was never given, such as reading what other users of that key stored there.
    Exact bytes, so no dot segment or percent-encoding climbs out of the prefix.
    """
    return target.split(b"?", 1)[0] in MESSAGES_API


def _end_to_end(headers: Headers, drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """The headers meant for the far side: no hop-by-hop ones, nor those ``Connection`` names."""
    for name, value in headers:
        if name == b"connection":
            drop = drop | {token.strip().lower() for token in value.split(b",")}
    return [(name, value) for name, value in headers if name not in drop]


def _request_headers(headers: Headers, auth: Headers, host: bytes) -> list[tuple[bytes, bytes]]:
    forwarded = [(b"host", host), *_end_to_end(headers, HOP_BY_HOP | REPLACED), *auth]
    if any(name == b"transfer-encoding" for name, _ in headers):
        # h11 frames a request without Content-Length as empty unless told it is chunked.
        forwarded.append((b"transfer-encoding", b"chunked"))
    return forwarded


def _response_head(link: Link) -> h11.Response:
    while True:
        event = link.next_event()
        if type(event) is h11.Response:
            return event
        if type(event) is not h11.InformationalResponse:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} from the API")
