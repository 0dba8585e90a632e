"""The API of aicli, declared once: every request and response body as a typed struct.

These structs are the values the whole program passes around (the store
returns them, actors send them, the runtime hands them to embedders), and the
one definition drives everything else: ``msgspec`` validates request bodies
against them while decoding (HTTP) or converting (embedders' keyword
arguments), encodes responses from them, and writes the JSON Schemas of the
OpenAPI document from them. A bound, pattern or enum written here is enforced
and documented at once, so the two cannot drift apart.

Text that reaches the database or a command line must not hold a NUL
(PostgreSQL and ``execve`` refuse it), so every string pattern excludes it.
Strings passed to the CLI as one argument are capped at 25,000 characters,
which is at most 100,000 bytes of UTF-8, well inside Linux's 128 KiB per
argument. "Blank" means ASCII whitespace only, the same in Python and in the
ECMAScript regexes of JSON Schema.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import typing
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from aicli.errors import InvalidRequest

# Enumerations


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class SessionStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    CLOSED = "closed"


class PermissionMode(StrEnum):
    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    BYPASS_PERMISSIONS = "bypassPermissions"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class ApprovalMode(StrEnum):
    OFF = "off"
    ASK = "ask"


class ApprovalKind(StrEnum):
    TOOL = "tool"
    QUESTION = "question"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    EXPIRED = "expired"


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


# Times


# An aware UTC time; the API writes it as RFC 3339 with microseconds and a ``Z``.
WRITTEN_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
Timestamp = Annotated[datetime, Meta(tz=True, extra_json_schema={"pattern": WRITTEN_TIME})]


def utcnow() -> datetime:
    """Now, never on a whole second.

    msgspec writes a time's fraction only when it has one, natively and fast
    (a hook per time cost a page of 50 tasks 0.3 ms); every time the API shows
    comes from here, so one microsecond later keeps the promise of six digits.
    """
    now = datetime.now(UTC)
    return now if now.microsecond else now.replace(microsecond=1)


_id_lock = threading.Lock()
_last_id_ns = 0


def new_id() -> str:
    """A URL-safe id whose sort order is creation order.

    The first 16 hex digits are a strictly increasing nanosecond clock (per
    process), so ordering by id alone reproduces acceptance order even when two
    rows share a microsecond timestamp.
    """
    global _last_id_ns
    with _id_lock:
        now = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = now
    return f"{now:016x}{os.urandom(8).hex()}"


# Strings

NO_NUL = "^[^\x00]*$"
# At least one character that is neither NUL nor ASCII whitespace, and no NUL anywhere.
NOT_BLANK = "^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$"
MAX_ARGUMENT_CHARS = 25_000
MAX_COMMAND_CHARS = 100_000
MAX_TURNS = 10_000
# A week: far beyond any real turn.
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_APPROVAL_TIMEOUT_S = 604_800.0
DEFAULT_APPROVAL_TIMEOUT_S = 3600.0

Text = Annotated[str, Meta(pattern=NO_NUL)]
Argument = Annotated[str, Meta(max_length=MAX_ARGUMENT_CHARS, pattern=NO_NUL)]
NonBlankArgument = Annotated[str, Meta(max_length=MAX_ARGUMENT_CHARS, pattern=NOT_BLANK)]
ToolName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
ToolList = Annotated[list[ToolName], Meta(max_length=100)]
Metadata = dict[Annotated[str, Meta(max_length=256, pattern=NO_NUL)], Text]
Command = Annotated[str, Meta(min_length=1, max_length=MAX_COMMAND_CHARS, pattern=NOT_BLANK)]
Workdir = Annotated[str, Meta(min_length=1, max_length=4096, pattern=NOT_BLANK)]
Seconds = Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S)]
WholeNumber = Annotated[float, Meta(ge=1, le=MAX_TURNS, multiple_of=1)]


# Requests

_REQUEST = {"forbid_unknown_fields": True, "frozen": True, "kw_only": True}


class SessionCreate(Struct, **_REQUEST):
    """``POST /sessions``: only ``workdir`` is required; ``null`` means not given."""

    workdir: Workdir
    model: NonBlankArgument | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: ToolList | None = None
    disallowed_tools: ToolList | None = None
    append_system_prompt: Argument | None = None
    # A whole number; JSON Schema counts 5.0 as an integer too, so it is taken as one.
    max_turns: WholeNumber | None = None
    metadata: Metadata | None = None
    # 1.1: "ask" has each tool use the session's permissions do not allow wait for a person.
    approvals: ApprovalMode | None = None
    approval_timeout_s: Annotated[float, Meta(gt=0, le=MAX_APPROVAL_TIMEOUT_S)] | None = None


class TaskSubmit(Struct, **_REQUEST):
    """``POST /sessions/{id}/tasks``."""

    command: Command
    timeout_s: Seconds | None = None
    metadata: Metadata | None = None


# A count of a limit: whole, as JSON may write it (5 or 5.0), and one a database can hold.
LimitCount = Annotated[float, Meta(ge=0, le=1_000_000_000, multiple_of=1)]
# 1.2: characters of stored text (prompts, answers, metadata, event data). The cap sits
# well under 2**53, so that no JSON number past it rounds down to it as a float.
StoredBytes = Annotated[float, Meta(ge=0, le=1_000_000_000_000_000, multiple_of=1)]


class PrincipalLimits(Struct, **_REQUEST):
    max_sessions: LimitCount | None = None
    max_pending_per_session: LimitCount | None = None
    budget_usd: Annotated[float, Meta(ge=0, le=1e12)] | None = None
    max_stored_bytes: StoredBytes | None = None


class PrincipalCreate(Struct, **_REQUEST):
    """``POST /principals`` (1.1)."""

    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
    role: Role = Role.USER
    workspace_root: Workdir | None = None
    limits: PrincipalLimits | None = None


class ApprovalDecision(Struct, **_REQUEST):
    """``POST /approvals/{id}`` (1.1)."""

    decision: Decision
    message: Argument | None = None
    updated_input: dict[str, Any] | None = None
    answers: dict[Text, Text] | None = None
    remember: bool = False


# Query parameters (and the one header read like them): each route's as a struct, read by
# ``query``. A pattern in ``extra_json_schema`` is documented only: ``aicli.validation`` reads
# those fields (a comma list, RFC 3339 as clients write it), and ids are looked up, not matched.

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A page of an event log: events are small and read in order, so pages can be long.
MAX_EVENT_LIMIT = 1000
MAX_WAIT_S = 60.0
# Fits the database's 32-bit integer columns; larger numbers are refused, not stored.
MAX_SEQ = 2**31 - 1
ORDERS = ("desc", "asc")
ID = "^[A-Za-z0-9_-]{1,64}$"
CURSOR = "^[A-Za-z0-9_-]{1,200}$"  # what aicli.storage.paging takes
# What validation.parse_time reads: RFC 3339 (whose format says which days exist), bar the year
# 0 and the two days that an offset can push out of the years 1 to 9999.
TIME = (
    r"^(?!0000|0001-01-01|9999-12-31)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _statuses(kind: type[StrEnum]) -> dict[str, Any]:
    """A comma list, blanks allowed around items (the ASCII ones: the parser takes more)."""
    one = rf"[ \t]*({'|'.join(kind)})[ \t]*"
    return {"pattern": f"^{one}(,{one})*$"}


def _since(text: str) -> Any:
    return Annotated[
        str, Meta(description=text, extra_json_schema={"format": "date-time", "pattern": TIME})
    ]


Limit = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_LIMIT,
        description="The most rows a page holds (1.2: fewer once they hold about 4 MiB of"
        " text; has_more and next_cursor then go on).",
    ),
]
Cursor = Annotated[
    str,
    Meta(
        min_length=1,
        description="The next_cursor of the page before.",
        extra_json_schema={"pattern": CURSOR},
    ),
]
Order = Annotated[Literal["desc", "asc"], Meta(description="desc: newest first.")]
TaskStatuses = Annotated[
    str, Meta(description="Only tasks in these statuses.", extra_json_schema=_statuses(TaskStatus))
]
After = _since("Only tasks created after this.")
Before = _since("Only tasks created before this.")
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]

_QUERY = {"forbid_unknown_fields": True, "frozen": True, "kw_only": True}


# 1.1: admins may narrow lists to one principal's work (a user's are its own anyway).
Owner = Annotated[
    str,
    Meta(
        description="Only the work of this principal (admins; a user may name only itself).",
        pattern="^[A-Za-z0-9_-]{1,64}$",
    ),
]


class SessionListQuery(Struct, **_QUERY):
    """``GET /sessions``."""

    status: (
        Annotated[str, Meta(description="Only these.", extra_json_schema=_statuses(SessionStatus))]
        | None
    ) = None
    owner: Owner | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class ApprovalListQuery(Struct, **_QUERY):
    """``GET /approvals`` (1.1)."""

    session_id: (
        Annotated[str, Meta(description="Only this session's.", extra_json_schema={"pattern": ID})]
        | None
    ) = None
    task_id: (
        Annotated[str, Meta(description="Only this task's.", extra_json_schema={"pattern": ID})]
        | None
    ) = None
    status: (
        Annotated[str, Meta(description="Only these.", extra_json_schema=_statuses(ApprovalStatus))]
        | None
    ) = None
    owner: Owner | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class PrincipalListQuery(Struct, **_QUERY):
    """``GET /principals`` (1.1): pages only."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class SessionTaskListQuery(Struct, **_QUERY):
    """``GET /sessions/{id}/tasks``."""

    status: TaskStatuses | None = None
    created_after: After | None = None
    created_before: Before | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class TaskListQuery(Struct, **_QUERY):
    """``GET /tasks``."""

    session_id: (
        Annotated[
            str, Meta(description="Only this session's tasks.", extra_json_schema={"pattern": ID})
        ]
        | None
    ) = None
    status: TaskStatuses | None = None
    owner: Owner | None = None
    created_after: After | None = None
    created_before: Before | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None
    order: Order = ORDERS[0]


class TaskWaitQuery(Struct, **_QUERY):
    """``GET /tasks/{id}``: seconds to hold the answer until the task is terminal."""

    wait: Annotated[float, Meta(ge=0, le=MAX_WAIT_S, description="Seconds to wait.")] = 0.0


class EventQuery(Struct, **_QUERY):
    """``GET /tasks/{id}/events``: checked in either form; only JSON pages by ``limit``."""

    after: Annotated[Seq, Meta(description="Only events with a greater seq.")] = 0
    limit: Annotated[
        int,
        Meta(
            ge=1,
            le=MAX_EVENT_LIMIT,
            description="JSON: the most events a page holds (1.2: fewer once their data is"
            " about 4 MiB; has_more then says so).",
        ),
    ] = MAX_EVENT_LIMIT


class EventHeaders(Struct, rename={"last_event_id": "Last-Event-ID"}, **_QUERY):
    """``GET /tasks/{id}/events``: a stream resumes after this seq."""

    last_event_id: Annotated[Seq, Meta(description="SSE: resume after this seq.")] | None = None


# Responses

_VALUE = {"frozen": True, "kw_only": True}


class SessionSettings(Struct, **_VALUE):
    """What a client chose when opening a session: it shapes the Claude command line."""

    workdir: str
    model: str | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    max_turns: int | None = None
    approvals: ApprovalMode = ApprovalMode.OFF
    # 1.2: what the session's sandbox lets its Claude reach beyond its workdir and the API.
    network_domains: tuple[str, ...] = ()
    read_paths: tuple[str, ...] = ()


class TaskCounts(Struct, **_VALUE):
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class ApprovalRule(Struct, **_VALUE):
    """1.1: a use of ``tool_name`` with exactly ``input`` runs without asking anyone.

    Exactly, not by the CLI's suggested pattern (``echo hi *``): a pattern would
    also match compound commands (``echo hi; rm -rf ~``) the person never saw.
    Only a ``description`` may differ: a label Claude writes for people, which
    changes nothing that runs.
    """

    tool_name: str
    input: dict[str, Any]
    approval_id: str
    created_at: Timestamp

    def allows(self, tool_name: str, given: dict[str, Any]) -> bool:
        return tool_name == self.tool_name and _what_runs(given) == _what_runs(self.input)


def _what_runs(given: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in given.items() if key != "description"}


class Session(Struct, **_VALUE):
    id: str
    status: SessionStatus
    workdir: str
    model: str | None = None
    permission_mode: PermissionMode | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    max_turns: int | None = None
    metadata: dict[str, str] = {}
    approvals: ApprovalMode = ApprovalMode.OFF  # 1.1
    approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S  # 1.1
    # 1.1: tool uses allowed for the rest of the session by a decision with ``remember``.
    approval_rules: tuple[ApprovalRule, ...] = ()
    claude_session_id: str | None = None
    owner: str | None = None  # 1.1: the principal that opened it (null: version 1, no principals)
    node: str | None = None  # 1.1: the id of the node running it now (null: none does)
    process_alive: bool = False
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    last_active_at: Timestamp | None = None
    task_counts: TaskCounts = TaskCounts()
    total_cost_usd: float = 0.0

    @property
    def settings(self) -> SessionSettings:
        return SessionSettings(
            workdir=self.workdir,
            model=self.model,
            permission_mode=self.permission_mode,
            allowed_tools=self.allowed_tools,
            disallowed_tools=self.disallowed_tools,
            append_system_prompt=self.append_system_prompt,
            max_turns=self.max_turns,
            approvals=self.approvals,
        )


class Usage(Struct, **_VALUE):
    input_tokens: int = 0
    output_tokens: int = 0


# Positional too: the store builds it from a row. Weakly referenced: ``storage.ended``.
class Task(Struct, frozen=True, weakref=True):
    id: str
    session_id: str
    command: str
    status: TaskStatus
    output: str | None = None
    error: str | None = None
    created_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    queue_position: int | None = None
    timeout_s: float | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    usage: Usage | None = None
    metadata: dict[str, str] = {}
    awaiting_approval: str | None = None  # 1.1: the id of the approval its turn waits for

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def status_event(self) -> dict[str, Any]:
        """The data of the ``status`` event of this state: the status, and any error."""
        data: dict[str, Any] = {"status": self.status}
        if self.error:
            data["error"] = self.error
        return data


class Event(Struct, **_VALUE):
    seq: int
    type: str
    created_at: Timestamp
    data: dict[str, Any]


# The built-in admin whose token is the configured API token; it has no row.
ROOT_PRINCIPAL_ID = "root"


class Principal(Struct, **_VALUE):
    """1.1: a user or a program with its own bearer token (``token`` only when created)."""

    id: str
    name: str
    role: Role
    workspace_root: str | None
    limits: PrincipalLimits
    created_at: Timestamp
    revoked_at: Timestamp | None = None
    total_cost_usd: float = 0.0
    token: str | None = None
    stored_bytes: int = 0  # 1.2: what its sessions store now, as ``max_stored_bytes`` counts


class Approval(Struct, **_VALUE):
    """1.1: a tool use or a question waiting for a person."""

    id: str
    session_id: str
    task_id: str
    kind: ApprovalKind
    tool_name: str
    input: dict[str, Any]
    suggestions: list[Any]
    status: ApprovalStatus
    message: str | None
    created_at: Timestamp
    decided_at: Timestamp | None = None
    decided_by: str | None = None


class Node(Struct, **_VALUE):
    """1.1: one ``aicli serve`` process sharing the database."""

    id: str
    url: str | None
    started_at: Timestamp
    expires_at: Timestamp
    sessions: int
    live_processes: int
    # 1.2: whether the node runs its sessions' Claude inside the sandbox (``--sandbox``).
    sandboxed: bool = False


class NodeList(Struct, **_VALUE):
    """``GET /nodes`` (1.1): every node, in one answer (there are a handful)."""

    data: list[Node]


T = TypeVar("T")


class Page(Struct, Generic[T], **_VALUE):
    """One page of a keyset-paginated list; pass ``next_cursor`` back for the next."""

    data: list[T]
    has_more: bool
    next_cursor: str | None


class EventPage(Struct, **_VALUE):
    """A page of a task's event log; continue with ``after=`` the last ``seq``."""

    data: list[Event]
    has_more: bool


class ErrorDetail(Struct, **_VALUE):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(Struct, **_VALUE):
    error: ErrorDetail


# The ``error.code`` an HTTP status stands for when nothing more is known: the server
# gives it to the errors Falcon raises itself, a client to an answer without our body.
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "budget_exceeded",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    429: "too_many_requests",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


# Encoding and decoding


encoder = msgspec.json.Encoder()
encode = encoder.encode
S = TypeVar("S")
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decode(raw: bytes, kind: type[S]) -> S:
    """A request body as ``kind``: ``InvalidRequest`` names what is wrong, and where.

    Raises ``msgspec.DecodeError`` for bytes that are not JSON at all.
    """
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        given = msgspec.json.decode(raw)  # DecodeError if it is not JSON: that comes first
        raise invalid(exc, kind, given) from None


def convert(fields: Any, kind: type[S]) -> S:
    """Keyword arguments of an embedder as ``kind``, with the errors an HTTP client gets.

    JSON cannot carry half a surrogate pair, so HTTP bodies never hold one; a
    Python string can, and no database or command line would take it.
    """
    try:
        encode(fields)
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        raise InvalidRequest(
            "A text field holds an unpaired surrogate or a value that is not JSON; "
            "text must be valid Unicode."
        ) from None
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc, kind, fields) from None


# How a query string spells a number: msgspec's own reading of strings takes 1e2 and 1.0
# for an integer and refuses 007 and .5, so these are read here and msgspec checks the rest.
_SPELLED = {
    int: re.compile(r"[0-9]+"),
    float: re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"),
}
# Each query parameter's rule as the API words it; the others are worded as body fields are.
_QUERY_RULES = {
    "limit": "an integer from 1 to {maximum}",
    "order": " or ".join(f"'{order}'" for order in ORDERS),
    "wait": "a number of seconds from 0 to {maximum:g}",
    "after": "an integer >= 0 and <= {maximum}",
    "Last-Event-ID": "an integer >= 0 and <= {maximum}",
}


def query(given: dict[str, str], kind: type[S]) -> S:
    """Query parameters (names checked already, see ``aicli.http.query``) as ``kind``.

    Numbers are spelled in ASCII digits (a ``seq`` with blanks around it, as ever); a
    number too long to be in range stays text, which ``kind`` refuses like any other.
    """
    fields: dict[str, Any] = dict(given)
    for name, number in _numbers(kind).items():
        text = given.get(name)
        if text is None:
            continue
        if name in ("after", "Last-Event-ID"):
            text = text.strip()
        # int() takes at most 4300 digits; 30 are more than any bound.
        if _SPELLED[number].fullmatch(text) and (number is float or len(text.lstrip("0")) <= 30):
            fields[name] = number(text)
    try:
        return msgspec.convert(fields, kind, strict=True)
    except msgspec.ValidationError as exc:
        name = str(exc).partition(" - at `$.")[2].removesuffix("`")
        rule = _QUERY_RULES.get(name)
        if rule is None or name not in given:
            raise invalid(exc, kind, given) from None
        rule = rule.format(**query_schemas(kind)[name])
        raise InvalidRequest(
            f"'{name}' must be {rule}, not {given[name]!r}.", {"field": name}
        ) from None


@functools.cache
def _numbers(kind: type) -> dict[str, type]:
    """The fields of ``kind`` that hold a number, by name as given, and the number's type."""
    found = {}
    numbers = {msgspec.inspect.IntType: int, msgspec.inspect.FloatType: float}
    for field in msgspec.inspect.type_info(kind).fields:
        for option in getattr(field.type, "types", (field.type,)):
            while isinstance(option, msgspec.inspect.Metadata):  # Annotated
                option = option.type
            if type(option) in numbers:
                found[field.encode_name] = numbers[type(option)]
    return found


@functools.cache
def query_schemas(kind: type) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each field of a query struct, without ``null``: a parameter's."""
    _, components = msgspec.json.schema_components([kind])
    found = {}
    for name, schema in components[kind.__name__]["properties"].items():
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        found[name] = {
            **options[0],
            **({} if schema.get("default") is None else {"default": schema["default"]}),
        }
    return found


# msgspec's words for types and patterns, as people read them.
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_JSON_NAMES = {**_TYPE_NAMES, "int": "a number"}  # what a client sent, in JSON's terms
_PATTERN_RULES = {
    NO_NUL: "must not hold a NUL character",
    NOT_BLANK: "must not be empty or only whitespace, nor hold a NUL character",
}
# The same patterns by the text msgspec quotes them with.
_PATTERNS = {repr(pattern)[1:-1]: pattern for pattern in (NO_NUL, NOT_BLANK)}
_UNITS = {"timeout_s": "a number of seconds"}
_TICKED = re.compile(r"`([^`]+)`")
_REGEX = re.compile(r"matching regex '(.*)'$", re.DOTALL)
_LONGEST = re.compile(r"of length <= (\d+)")
_MAP_KEY = re.compile(r"`key` in `\$\.([A-Za-z_]+)`")
_NOUNS = {"SessionCreate": "session", "TaskSubmit": "task"}


def _named(match: re.Match[str], names: dict[str, str] = _TYPE_NAMES) -> str:
    return " or ".join(names.get(t.strip(), t.strip()) for t in match.group(1).split("|"))


def _bad_key(said: str, name: str, given: Any) -> InvalidRequest:
    """A key of the map ``name`` that its rule refuses: the first such key, and the rule."""
    quoted = _REGEX.search(said)
    pattern = _PATTERNS.get(quoted.group(1)) if quoted else None
    keys = given.get(name) if isinstance(given, dict) else None
    bad = [key for key in keys or () if pattern and not re.search(pattern, key)]
    which = f" {_shown(bad[0])}" if bad else ""
    rule = _PATTERN_RULES[pattern] if pattern else "is invalid"
    return InvalidRequest(f"'{name}' key{which} {rule}.", {"field": name})


def invalid(exc: msgspec.ValidationError, kind: type, given: Any) -> InvalidRequest:
    """msgspec's error in the API's words: the field by name, what it must be, what it was."""
    said, _, where = str(exc).partition(" - at ")
    fields = getattr(kind, "__struct_fields__", ())
    if "unknown field" in said and where:  # inside a nested object: name it by its path
        inner = _TICKED.search(said)
        path = f"{where.strip('`').removeprefix('$.')}.{inner.group(1) if inner else '?'}"
        return InvalidRequest(f"Unknown field '{path}'.", {"field": path})
    if "unknown field" in said and isinstance(given, dict):
        unknown = sorted(str(name) for name in given if name not in fields)
        noun = _NOUNS.get(kind.__name__, kind.__name__)
        names = ", ".join(f"'{name}'" for name in unknown)
        return InvalidRequest(
            f"Unknown {noun} field{'s' if len(unknown) > 1 else ''} {names}; "
            f"allowed: {', '.join(fields)}.",
            {"field": unknown[0], "unknown_fields": unknown, "allowed_fields": list(fields)},
        )
    if "missing required field" in said:
        name = said.split("`")[1]
        return InvalidRequest(f"'{name}' is required.", {"field": name})
    key_of = _MAP_KEY.fullmatch(where.strip())
    if key_of is not None:  # a map's key: msgspec says "`key` in `$.metadata`"
        return _bad_key(said, key_of.group(1), given)
    spot = where.strip("`").removeprefix("$.")
    name = re.split(r"[\[.]", spot, maxsplit=1)[0] if where else ""
    if not name:
        got = _TICKED.search(said.split("got", 1)[-1])
        what = _named(got, _JSON_NAMES) if got else "something else"
        return InvalidRequest(f"The request body must be a JSON object, not {what}.")
    value = given.get(name, ...) if isinstance(given, dict) else ...
    if spot.endswith("[...]") and isinstance(value, dict):  # a map's value: name its key
        key = next((k for k, v in value.items() if not isinstance(v, str)), None)
        spot, value = (f"{name}.{key}", value[key]) if key is not None else (spot, ...)
    elif spot != name:
        value = ...
    details = {"field": name}
    if said.startswith("Invalid enum value"):
        allowed = _enum_values(kind, name)
        return InvalidRequest(
            f"'{spot}' must be one of {', '.join(allowed)}, not {_shown(value)}.",
            {**details, "allowed": allowed},
        )
    wanted, _, got = said.removeprefix("Expected ").partition(", got ")
    pattern = _REGEX.search(wanted)
    if pattern is not None:
        return InvalidRequest(
            f"'{spot}' {_PATTERN_RULES.get(_PATTERNS.get(pattern.group(1), ''), 'is invalid')}.",
            details,
        )
    if value == "":
        return InvalidRequest(f"'{spot}' must not be empty.", details)
    longest = _LONGEST.search(wanted)
    if longest is not None and isinstance(value, str | list):
        unit = "characters" if isinstance(value, str) else "items"
        return InvalidRequest(
            f"'{spot}' has {len(value)} {unit}; the most allowed is {longest.group(1)}.", details
        )
    if spot == name:  # say the whole rule, bounds and all
        wanted = _rules(kind).get(name, wanted)
    wanted = _TICKED.sub(_named, wanted).replace(".0 ", " ").removesuffix(".0")
    if name in _UNITS:
        wanted = wanted.replace("a number", _UNITS[name], 1)
    if got:
        was = _TICKED.sub(lambda m: _named(m, _JSON_NAMES), got)
    else:
        was = "" if value is ... else _shown(value)
    return InvalidRequest(f"'{spot}' must be {wanted}{f', not {was}' if was else ''}.", details)


@functools.cache
def _rules(kind: type) -> dict[str, str]:
    """Each field's rule in words, from the JSON Schema msgspec writes for ``kind``."""
    _, components = msgspec.json.schema_components([kind])
    rules = {}
    for name, schema in components[kind.__name__].get("properties", {}).items():
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        if len(options) == 1 and "type" in options[0]:
            rules[name] = _rule(options[0])
    return rules


_KINDS = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}


def _rule(schema: dict[str, Any]) -> str:
    kind = "integer" if schema.get("multipleOf") == 1 else schema["type"]
    words = [_TYPE_NAMES.get(_KINDS.get(kind, kind), kind)]
    for key, sign in (
        ("exclusiveMinimum", ">"),
        ("minimum", ">="),
        ("exclusiveMaximum", "<"),
        ("maximum", "<="),
    ):
        if key in schema:
            words.append(f"{'and ' if len(words) > 1 else ''}{sign} {schema[key]:g}")
    return " ".join(words)


def _enum_values(kind: type, name: str) -> list[str]:
    hint = typing.get_type_hints(kind).get(name)
    for option in (*typing.get_args(hint), hint):
        if isinstance(option, type) and issubclass(option, StrEnum):
            return [member.value for member in option]
    return []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
