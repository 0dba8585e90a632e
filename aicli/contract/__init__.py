"""The API of aicli, declared once: every request and response body as a typed struct.

These structs are the values the whole program passes around (the store
returns them, actors send them, the runtime hands them to embedders), and the
one definition drives everything else: ``msgspec`` validates request bodies
against them while decoding (HTTP) or converting (embedders' keyword
arguments), encodes responses from them, and writes the JSON Schemas of the
OpenAPI document from them. A bound, pattern or enum written here is enforced
and documented at once, so the two cannot drift apart.

One module per concept: ``enums``, ``clock`` (times and ids), ``fields`` (the
bounded types bodies are made of), ``requests``, ``queries``, ``resources``,
``envelopes`` (pages and the error body), ``codec`` and ``wording`` (refusals in
the API's words). The rest of the program imports from here, ``aicli.contract``,
so that where a name lives inside the package is the package's own business.
"""

from __future__ import annotations

from aicli.contract.clock import WRITTEN_TIME, Timestamp, new_id, utcnow
from aicli.contract.codec import convert, decode, encode, query
from aicli.contract.enums import (
    TERMINAL_STATUSES,
    ApprovalKind,
    ApprovalMode,
    ApprovalStatus,
    CredentialKind,
    Decision,
    PermissionMode,
    Role,
    SessionStatus,
    TaskStatus,
)
from aicli.contract.envelopes import (
    STATUS_CODES,
    ErrorBody,
    ErrorDetail,
    EventPage,
    NodeList,
    Page,
)
from aicli.contract.fields import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    MAX_APPROVAL_TIMEOUT_S,
    MAX_ARGUMENT_CHARS,
    MAX_COMMAND_CHARS,
    MAX_SECRET_CHARS,
    MAX_TIMEOUT_S,
    MAX_TURNS,
)
from aicli.contract.queries import (
    CURSOR,
    DEFAULT_LIMIT,
    ID,
    MAX_EVENT_LIMIT,
    MAX_LIMIT,
    MAX_SEQ,
    MAX_WAIT_S,
    ORDERS,
    TIME,
    ApprovalListQuery,
    EventHeaders,
    EventQuery,
    PrincipalListQuery,
    SessionListQuery,
    SessionTaskListQuery,
    TaskListQuery,
    TaskWaitQuery,
    query_schemas,
)
from aicli.contract.requests import (
    ApprovalDecision,
    CredentialsSet,
    PrincipalCreate,
    PrincipalLimits,
    PrincipalUpdate,
    SessionCreate,
    SessionPolicy,
    TaskSubmit,
)
from aicli.contract.resources import (
    ROOT_PRINCIPAL_ID,
    Approval,
    ApprovalRule,
    Credentials,
    Event,
    Node,
    Principal,
    Session,
    SessionSettings,
    Task,
    TaskCounts,
    Usage,
)
from aicli.contract.wording import invalid

__all__ = [
    "CURSOR",
    "DEFAULT_APPROVAL_TIMEOUT_S",
    "DEFAULT_LIMIT",
    "ID",
    "MAX_APPROVAL_TIMEOUT_S",
    "MAX_ARGUMENT_CHARS",
    "MAX_COMMAND_CHARS",
    "MAX_EVENT_LIMIT",
    "MAX_LIMIT",
    "MAX_SECRET_CHARS",
    "MAX_SEQ",
    "MAX_TIMEOUT_S",
    "MAX_TURNS",
    "MAX_WAIT_S",
    "ORDERS",
    "ROOT_PRINCIPAL_ID",
    "STATUS_CODES",
    "TERMINAL_STATUSES",
    "TIME",
    "WRITTEN_TIME",
    "Approval",
    "ApprovalDecision",
    "ApprovalKind",
    "ApprovalListQuery",
    "ApprovalMode",
    "ApprovalRule",
    "ApprovalStatus",
    "CredentialKind",
    "Credentials",
    "CredentialsSet",
    "Decision",
    "ErrorBody",
    "ErrorDetail",
    "Event",
    "EventHeaders",
    "EventPage",
    "EventQuery",
    "Node",
    "NodeList",
    "Page",
    "PermissionMode",
    "Principal",
    "PrincipalCreate",
    "PrincipalLimits",
    "PrincipalListQuery",
    "PrincipalUpdate",
    "Role",
    "Session",
    "SessionCreate",
    "SessionListQuery",
    "SessionPolicy",
    "SessionSettings",
    "SessionStatus",
    "SessionTaskListQuery",
    "Task",
    "TaskCounts",
    "TaskListQuery",
    "TaskStatus",
    "TaskSubmit",
    "TaskWaitQuery",
    "Timestamp",
    "Usage",
    "convert",
    "decode",
    "encode",
    "invalid",
    "new_id",
    "query",
    "query_schemas",
    "utcnow",
]
