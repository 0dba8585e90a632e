"""The nouns of the API as it answers them: sessions, tasks, events, principals, approvals, nodes.

These are also the values the whole program passes around (the store returns them,
actors send them, the runtime hands them to embedders), so they are frozen: a
value read once can be shared between threads and cached without copying. A
docstring here is the schema's ``description`` in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from aicli.contract.clock import Timestamp
from aicli.contract.enums import (
    TERMINAL_STATUSES,
    ApprovalKind,
    ApprovalMode,
    ApprovalStatus,
    CredentialKind,
    PermissionMode,
    Role,
    SessionStatus,
    TaskStatus,
)
from aicli.contract.fields import DEFAULT_APPROVAL_TIMEOUT_S
from aicli.contract.requests import PrincipalLimits

_VALUE = {"frozen": True, "kw_only": True}


class SessionSettings(Struct, **_VALUE):
    """What a client chose when opening a session: all that shapes the Claude command line.

    Kept apart from ``Session`` so that the process that builds the command line
    (``actors.claude_process``) is handed only what it may use, not the session's
    state and counters.
    """

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
    # 1.2: the only tools its CLI offers (``--tools``), from its owner's policy; None: all.
    tools: tuple[str, ...] | None = None


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
    # 1.2: what its sandbox reaches besides the workdir and the API; the tools its Claude has
    # (its owner's policy when it was opened; null: all).
    network_domains: tuple[str, ...] = ()
    read_paths: tuple[str, ...] = ()
    tools: tuple[str, ...] | None = None
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
            network_domains=self.network_domains,
            read_paths=self.read_paths,
            tools=self.tools,
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
        """The data of the ``status`` event of this state: the status, and any error.

        Built in one place so that the event the store appends and the line the
        session logs say the same.
        """
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
    own_credentials: bool = False  # 1.2: its sessions use Anthropic credentials of its own


class Credentials(Struct, **_VALUE):
    """1.2: a principal's own Anthropic credential as the API shows it: never the secret."""

    kind: CredentialKind
    set_at: Timestamp


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
