"""The embedding API: everything aicli does, without HTTP.

``Runtime`` is a façade: each method hands its call to the controller of its
noun (``Sessions``, ``Tasks``, the ``ApprovalDesk``, ``Principals``, ``NodeLife``),
which ``composition`` builds with what it uses and starts in dependency order.
Callers live on their own threads (HTTP workers, an app's threads). The store is
the source of truth and each session's queue: a submit, a cancel of a pending
task and a close are written there directly, in one transaction each, and the
session's actor is then told to look (straight, if it lives here; else the
supervisor starts one). Callers read the store, wait on the notifier (never by
polling), and ask actors only to start or shut down, always with a timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aicli.actors.api_proxy import ApiProxy
from aicli.actors.claude_process import ClaudeProcess
from aicli.actors.faults import Faults
from aicli.actors.sandbox import Sandbox
from aicli.actors.session import ProcessFactory
from aicli.runtime import composition
from aicli.runtime.service_api import ServiceApi
from aicli.runtime.work_api import WorkApi
from aicli.settings import Settings
from aicli.storage import Store


class Runtime(WorkApi, ServiceApi):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        claude_bin: str,
        claude_env: Mapping[str, str] | None = None,
        *,
        api_proxy: ApiProxy,
        sandbox: Sandbox | None,
        process_factory: ProcessFactory = ClaudeProcess,
        faults: Faults | None = None,
    ) -> None:
        built = composition.compose(
            settings,
            store,
            claude_bin,
            claude_env,
            api_proxy=api_proxy,
            sandbox=sandbox,
            process_factory=process_factory,
            faults=faults,
        )
        self.settings = settings
        self.store = store
        self.claude_bin = claude_bin
        self.api_proxy = api_proxy
        self.sandbox = sandbox
        self.context = built.context
        self.notifier = built.context.notifier
        self.census = built.context.census
        self.scheduler = built.context.scheduler
        self.lease = built.context.lease
        self.metrics = built.context.metrics
        self.owner_prefix = built.context.owner_prefix
        self.peers = built.peers
        self.revocations = built.revocations
        self._gate = built.gate
        self._sessions = built.sessions
        self._tasks = built.tasks
        self._desk = built.desk
        self._principals = built.principals
        self._node = built.node
        self._reaper = built.reaper
        self._server_lock = built.server_lock
        self._lifecycle = built.lifecycle

    @classmethod
    def start(
        cls,
        *,
        claude_env: Mapping[str, str] | None = None,
        process_factory: ProcessFactory = ClaudeProcess,
        faults: Faults | None = None,
        **overrides: Any,
    ) -> Runtime:
        """Open the store, end what a crashed run left behind, and start the actors.

        Takes the settings of ``aicli serve`` as keyword arguments (defaults from
        ``AICLI_*``); ``claude_env`` is added to the environment of every CLI, and its
        Anthropic URL and key (else the server's) are where the credential proxy goes.
        With the sandbox on, ``SandboxUnavailable`` says what this machine lacks.
        ``process_factory`` makes the Claude processes (a test passes a stand-in)
        and ``faults`` arms crash seams (default: from ``AICLI_FAULTS``).
        """
        settings = Settings.resolve(overrides)
        with composition.acquire(settings, claude_env) as taken:
            runtime = cls(
                settings,
                taken.store,
                taken.claude_bin,
                claude_env,
                api_proxy=taken.api_proxy,
                sandbox=taken.sandbox,
                process_factory=process_factory,
                faults=faults,
            )
            runtime._server_lock.hold(taken.lock)
            runtime._lifecycle.start()
        return runtime

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def accepting(self) -> bool:
        """False until started, and once a shutdown or a stop begins: no new work is taken."""
        return self._gate.accepting

    @property
    def stopped(self) -> bool:
        """True once ``stop`` has begun: waits return at once and streams should end."""
        return self._gate.stopped

    @property
    def metrics_registry(self) -> Any:
        return self.metrics.registry

    def stop(self) -> None:
        """Stop every part in reverse order of start; no Claude process survives it."""
        self._lifecycle.stop()
