"""One HTTP exchange with aicli: sent, sent again where that is safe, and decoded.

The ``Client`` says what to ask; this says how: the connection pool, the
timeouts, the retry policy of ``aicli.client.retries``, the answer decoded as
the contract's struct and an error answer raised as the runtime's exception.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

import httpx
import msgspec

from aicli.client import errors, retries
from aicli.contract import encode
from aicli.errors import AicliError, InvalidRequest, NotFound, Unavailable

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decode(response: httpx.Response, kind: Any) -> Any:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(response.content)
    except msgspec.MsgspecError as ex:
        raise errors.not_ours(response.url, ex) from None


def _version() -> str:
    """The installed version: ``aicli.__version__`` is no import for import-linter, which
    counts the root package's lazy import of the runtime as one."""
    try:
        return metadata.version("aicli")
    except metadata.PackageNotFoundError:
        return "unknown"


def _body(value: Any) -> bytes:
    """JSON for a request; a value JSON cannot hold is the caller's mistake, as in the runtime."""
    try:
        return encode(value)
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        raise InvalidRequest(
            "A text field holds an unpaired surrogate or a value that is not JSON; "
            "text must be valid Unicode."
        ) from None


class Wire:
    """The pool to one service; ``timeout`` bounds each request, ``retries`` its repeats."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        transport: httpx.BaseTransport | None,
    ) -> None:
        headers = {"User-Agent": f"aicli-client/{_version()}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        kind: Any,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        safe: bool = True,
        not_found: type[NotFound] = NotFound,
    ) -> Any:
        """One call, sent again as its policy allows; the answer as ``kind``, or its error.

        ``safe``: sending it twice does what sending it once does (see ``retries``).
        """
        policy = retries.Policy(self.retries, safe)
        content = None if body is None else _body(body)
        send_headers = dict(headers or {})
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=send_headers,
                    timeout=self.timeout if timeout is None else timeout,
                )
            except httpx.TransportError as ex:
                if attempt >= policy.retries or not policy.after_error(ex):
                    raise self.unreachable(ex) from ex
                time.sleep(retries.delay(attempt))
                attempt += 1
                continue
            if response.status_code < 400:
                return _decode(response, kind)
            error = errors.from_response(response, not_found=not_found)
            if attempt >= policy.retries or not policy.after_status(response.status_code):
                raise error
            time.sleep(retries.delay(attempt, getattr(error, "retry_after", None)))
            attempt += 1

    @contextlib.contextmanager
    def stream(
        self, path: str, headers: Mapping[str, str], silence_s: float
    ) -> Iterator[httpx.Response]:
        """A streamed answer, open; an error answer is raised before it is handed out.

        ``silence_s`` is how long the stream may send nothing before it counts as dead.
        """
        timeout = httpx.Timeout(self.timeout, read=silence_s)
        with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                raise errors.from_response(response)
            yield response

    def unreachable(self, error: Exception) -> AicliError:
        """``error`` as the caller sees it: the API's own errors as they are, and a
        failure to reach the service as ``Unavailable``, naming it."""
        if isinstance(error, AicliError):
            return error
        detail = str(error) or type(error).__name__
        return Unavailable(
            f"Could not reach aicli at {self.base_url}: {detail}.", details={"url": self.base_url}
        )
