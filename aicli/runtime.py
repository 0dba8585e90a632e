"""The embedding API: everything aicli does, without HTTP.

``Runtime`` starts the parts in dependency order (store, notifier, supervisor,
which starts session actors) and stops them in reverse. Callers live on their
own threads (HTTP workers, an app's threads). The store is the source of
truth and each session's queue: a submit, a cancel of a pending task and a
close are written there directly, in one transaction each, and the session's
actor is then told (through the supervisor) to look. Callers read the store,
wait on the notifier (never by polling), and ask actors only to open a session
or shut down, always with a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import msgspec
import psutil
import pykka

from aicli import access, contract, validation
from aicli.actors import process_tree
from aicli.actors.api_proxy import ApiProxy, operator_upstream
from aicli.actors.census import CENSUS_KEY, ProcessCensus
from aicli.actors.claude_bin import claude_version, find_claude
from aicli.actors.claude_process import ClaudeProcess
from aicli.actors.event_tail import EventTails
from aicli.actors.faults import Faults
from aicli.actors.fencer import Fencer
from aicli.actors.messages import CancelRunning, CloseSession, Fence, Rescan, Wake
from aicli.actors.node_lease import LeaseState, NodeLease
from aicli.actors.notifier import Notifier, events_of
from aicli.actors.pruner import Pruner
from aicli.actors.sandbox import Sandbox, find_srt
from aicli.actors.scheduler import Scheduler
from aicli.actors.session import (
    CANCELLED_PENDING,
    SESSION_CLOSED_PENDING,
    ActorContext,
    ProcessFactory,
    announce,
)
from aicli.actors.supervisor import Supervisor, SupervisorProxy
from aicli.approval_desk import ApprovalDesk
from aicli.contract import (
    Approval,
    ApprovalDecision,
    Event,
    EventPage,
    Node,
    Page,
    Principal,
    PrincipalCreate,
    Session,
    SessionCreate,
    Task,
    TaskStatus,
    TaskSubmit,
)
from aicli.errors import (
    BudgetExceeded,
    PrincipalNotFound,
    StorageError,
    Unauthorized,
    Unavailable,
)
from aicli.metrics import Metrics
from aicli.peers import Peers
from aicli.settings import Settings, default_state_dir
from aicli.storage import Store, open_store, server_lock

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
PRINCIPALS_CHECK_S = 1.0
CANCEL_TIMEOUT = 15.0
REVOKED_PENDING = "Its principal was revoked before this task started."


class Runtime:
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
        self.settings = settings
        self.api_proxy = api_proxy
        self.sandbox = sandbox
        self.store = store
        self.claude_bin = claude_bin
        self.notifier = Notifier()
        self._event_tails = EventTails(store)
        self.census = ProcessCensus()
        self.scheduler = Scheduler()
        self.lease = LeaseState()
        self.metrics = Metrics(
            store.task_status_counts, lambda: len(self.census), store.approvals.pending_count
        )
        self.owner_prefix = owner_prefix(store.database_url)
        self.context = ActorContext(
            store=store,
            notifier=self.notifier,
            census=self.census,
            metrics=self.metrics,
            settings=settings,
            scheduler=self.scheduler,
            faults=Faults.from_environment() if faults is None else faults,
            claude_bin=claude_bin,
            claude_env=dict(claude_env or {}),
            owner_prefix=self.owner_prefix,
            lease=self.lease,
            answer_of=lambda approval_id: self._desk.answer_of(approval_id),
            api_proxy=api_proxy,
            state_dir=settings.state_dir or default_state_dir(os.environ),
            sandbox=sandbox,
            process_factory=process_factory,
        )
        self.accepting = False
        self._server_lock: server_lock.ServerLock | None = None  # taken by ``start``
        self._fencer: pykka.ActorRef[Fencer] | None = None
        self._node_lease: pykka.ActorRef[NodeLease] | None = None
        self._pruner: pykka.ActorRef[Pruner] | None = None
        self._node_ids: list[str] = []  # every node this runtime has been (a fence makes anew)
        self._nodes_seen: set[str] = set()  # the live nodes at the last renewal
        self._reaping = threading.Lock()
        self._supervisor: pykka.ActorRef[Supervisor] | None = None
        # Built once with the supervisor: a pykka proxy costs ~0.3 ms to build.
        self._supervisor_proxy: SupervisorProxy | None = None
        self._stopped = threading.Event()
        self._principals_seen = False
        self._principals_checked = -PRINCIPALS_CHECK_S
        self._desk = ApprovalDesk(store, self.notifier, self._tell)
        self.revocations = access.Revocations(self.notifier.nudge_all)
        self._sweeping = threading.Lock()
        self.peers = Peers(
            store.database_url,
            self.notifier,
            self._desk,
            self._tell_here,
            lambda principal_id: self.revocations.add((principal_id,)),
        )

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
        with contextlib.ExitStack() as undo:
            # Before anything touches the database: a second server must leave the first alone.
            lock = server_lock.acquire(settings.database_url)
            undo.callback(lock.release)
            claude_bin = find_claude(settings.claude_bin)
            sandbox = None
            if settings.sandbox == "on":
                sandbox = Sandbox(find_srt(), claude_bin)
                sandbox.check()
            upstream, auth = operator_upstream({**os.environ, **(claude_env or {})})
            api_proxy = ApiProxy(upstream, auth)
            api_proxy.start()
            undo.callback(api_proxy.stop)
            store = open_store(settings.database_url)
            undo.callback(store.close)
            runtime = cls(
                settings,
                store,
                claude_bin,
                claude_env,
                api_proxy=api_proxy,
                sandbox=sandbox,
                process_factory=process_factory,
                faults=faults,
            )
            runtime._server_lock = lock
            runtime._start()
            undo.pop_all()
        return runtime

    def _start(self) -> None:
        if self.store.is_postgres:  # only there can peers take this node's sessions over
            self._fencer = Fencer.start(self.scheduler, self.owner_prefix, self._fenced)
        self._node_lease = NodeLease.start(
            self.store,
            self.scheduler,
            self.lease,
            self._fencer,
            url=self.settings.node_url,
            ttl=self.settings.lease_ttl,
            sandboxed=self.sandbox is not None,
            live_processes=lambda: len(self.census),
            on_renewed=self._renewed,
        )
        node = self.lease.node
        if node is not None:
            self._node_ids.append(node.id)
        if node is not None and not self.store.is_postgres:
            # One server per SQLite file (``server_lock``): every other node is a dead run.
            self.store.ownership.forget_other_nodes(node.id)
        self.reap_leftovers()
        self.revocations.add(self.store.principals.revoked())
        self._supervisor = Supervisor.start(self.context)
        self._supervisor_proxy = cast(SupervisorProxy, self._supervisor.proxy())
        rescued = self._supervisor_proxy.recover().get(timeout=60)
        if rescued:
            log.warning("took over %d sessions that stopped nodes ran", len(rescued))
        if self.settings.retain_days > 0:
            self._pruner = Pruner.start(self.store, self.scheduler, self.settings.retain_days)
        self.peers.start()
        self.accepting = True

    def _renewed(self) -> None:
        """The lease holds (or was taken anew). With peers (PostgreSQL): look for work no
        live node runs, have every waiter look again (news may have been lost), and end
        what a node that died since the last look left running on this machine. One
        SQLite server did all that at its start (or its join), and nobody else changes
        its file."""
        node = self.lease.node
        if node is not None and node.id not in self._node_ids:
            self._node_ids.append(node.id)
            self._tell_here(Rescan())  # joined anew: start what waited meanwhile
        self._sweep_revocations_in_background()
        if not self.peers.active:
            return
        try:
            live = {n.id for n in self.store.nodes.live()}
            if self._nodes_seen - live:
                self._reap_in_background()
            self._nodes_seen = live
        except (StorageError, Unavailable) as exc:
            log.warning("could not look for dead nodes' processes: %s", exc)
        self.notifier.nudge_all()
        self._tell_here(Rescan())

    def _reap_in_background(self) -> None:
        """Killing waits for the processes to die: not on the lease's thread, which must
        renew in time. One reaper at a time; a death it misses, the next one sees."""
        if self._reaping.acquire(blocking=False):

            def reap() -> None:
                try:
                    self.reap_leftovers()
                except (StorageError, Unavailable) as exc:
                    log.warning("could not end dead nodes' processes: %s", exc)
                finally:
                    self._reaping.release()

            threading.Thread(target=reap, name="aicli-reaper", daemon=True).start()

    def _sweep_revocations_in_background(self) -> None:
        """Learn of revocations no signal brought, and close what a revoked principal still
        has open: off the lease's thread, one sweep at a time (the next catches up)."""
        if not self._sweeping.acquire(blocking=False):
            return

        def sweep() -> None:
            try:
                self.revocations.add(self.store.principals.revoked())
                for principal_id in self.store.principals.revoked_with_open_sessions():
                    _, closed = self.store.revoke_principal(principal_id, REVOKED_PENDING)
                    self._after_close(closed)
            except (StorageError, Unavailable) as exc:
                log.warning("could not look for revoked principals: %s", exc)
            finally:
                self._sweeping.release()

        threading.Thread(target=sweep, name="aicli-revocations", daemon=True).start()

    def _fenced(self, node_id: str) -> None:
        """From the fencer, its processes dead: nothing of this node may act on its claims."""
        self.lease.lose(node_id)
        self._tell_here(Fence())

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once ``stop`` has begun: waits return at once and streams should end."""
        return self._stopped.is_set()

    @property
    def metrics_registry(self) -> Any:
        return self.metrics.registry

    # Sessions

    def open_session(
        self,
        request: SessionCreate | None = None,
        /,
        *,
        principal: Principal | None = None,
        **fields: Any,
    ) -> Session:
        """Open a session from a ``SessionCreate`` or its fields as keyword arguments.

        Either way the body is checked here, once, so an embedder gets the errors
        an HTTP client gets; the workdir must exist (inside the workspace root,
        and inside the principal's own root if it has one). The session is the
        principal's, within its ``max_sessions``.
        """
        self._check_accepting()
        if request is None:
            request = contract.convert(fields, SessionCreate)
        clean = validation.session_fields(request, self.settings.workspace_root)
        if principal is not None:
            own_root = principal.workspace_root
            if own_root:
                validation.session_fields(request, own_root)
            clean["max_owned"] = principal.limits.max_sessions
        clean["owner"] = access.owner_of_new(principal)
        return self._with_process_state(self._ask(self._proxy().open_session(clean)))

    def get_session(self, session_id: str, *, principal: Principal | None = None) -> Session:
        access.check_session(self.store, principal, session_id)
        return self._with_process_state(self.store.get_session(session_id))

    def list_sessions(
        self,
        *,
        status: Sequence[str] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
        principal: Principal | None = None,
    ) -> Page:
        page = self.store.list_sessions(
            statuses=status,
            owner=access.list_owner(principal, owner),
            limit=limit,
            cursor=cursor,
            order=order,
        )
        return msgspec.structs.replace(page, data=self._with_process_states(page.data))

    def close_session(self, session_id: str, *, principal: Principal | None = None) -> Session:
        """Close: its pending tasks are cancelled at once, a running one is interrupted."""
        access.check_session(self.store, principal, session_id)
        closed = self.store.close_session(session_id, SESSION_CLOSED_PENDING)
        for running in self._after_close([(session_id, *closed)]):
            self.wait(running, timeout=self.settings.cancel_grace + 10)
        return self._with_process_state(self.store.get_session(session_id))

    def _after_close(self, closed: Sequence[tuple[str, list[str], str | None]]) -> list[str]:
        """Announce what closing sessions (``(id, cancelled, running)``) cancelled, and have
        their actors (here or on a peer) interrupt what runs; the running tasks' ids."""
        for session_id, cancelled, _ in closed:
            for task_id in cancelled:
                self.notifier.announce(events_of(task_id))
                self.notifier.announce(task_id)
                self.notifier.forget(task_id, events_of(task_id))
            with contextlib.suppress(Unavailable, pykka.ActorDeadError):
                self._tell(CloseSession(session_id))
        return [running for _, _, running in closed if running is not None]

    # Tasks

    def submit_task(
        self,
        session_id: str,
        request: TaskSubmit | str,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        principal: Principal | None = None,
        **options: Any,
    ) -> tuple[Task, bool]:
        """Accept a task: a ``TaskSubmit``, or its command with the other fields as keywords.

        The bool is False when ``idempotency_key`` matched an earlier task. The
        task is in the session's queue once this returns (committed, so it
        survives a crash); the session's actor is told to look at the queue.
        With ``wait``, the task is returned once terminal or after ``wait``
        seconds, whichever is first: one call from prompt to answer. A principal's
        submits stop at its ``budget_usd`` (``BudgetExceeded``) and its
        ``max_pending_per_session``, and the session owner's at its ``max_stored_bytes``
        (``StorageLimitExceeded``, checked in the store's write).
        """
        self._check_accepting()
        if not isinstance(request, TaskSubmit):
            request = contract.convert({"command": request, **options}, TaskSubmit)
        validation.command_fits(request.command, self.settings.max_command_chars)
        access.check_session(self.store, principal, session_id)
        max_pending = self.settings.max_pending_per_session
        if principal is not None:
            max_pending = self._principal_pending_limit(principal, max_pending)
        # Watched before it exists, so that a turn quicker than this call is not missed.
        task_id = contract.new_id()
        seen = self.notifier.version(task_id)
        task, created = self.store.create_task(
            session_id,
            request,
            idempotency_key=idempotency_key,
            max_pending=max_pending,
            task_id=task_id,
        )
        if not created:
            found = self._wait(task.id, wait, principal) if wait else self.get_task(task.id)
            return found, False
        announce(self.context, task, command_chars=len(task.command))
        # The task is accepted now; a server stopping meanwhile runs it at its next start.
        with contextlib.suppress(Unavailable, pykka.ActorDeadError):
            self._tell(Wake(session_id))
        if wait:
            return self._wait(task_id, wait, principal, known=(seen, task)), True
        return task, True

    def submit(
        self, session_id: str, command: str, *, wait: float | None = None, **options: Any
    ) -> Task:
        return self.submit_task(session_id, command, wait=wait, **options)[0]

    def get_task(self, task_id: str, *, principal: Principal | None = None) -> Task:
        access.check_task(self.store, principal, task_id)
        return self._with_queue_positions([self.store.get_task(task_id)])[0]

    def list_tasks(
        self,
        *,
        session_id: str | None = None,
        status: Sequence[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
        principal: Principal | None = None,
    ) -> Page:
        owner = access.list_owner(principal, owner)
        if session_id is not None:
            access.check_filter_session(self.store, principal, session_id)
        page = self.store.list_tasks(
            session_id=session_id,
            statuses=status,
            created_after=created_after,
            created_before=created_before,
            owner=owner,
            limit=limit,
            cursor=cursor,
            order=order,
        )
        return msgspec.structs.replace(page, data=self._with_queue_positions(page.data))

    def cancel(self, task_id: str, *, principal: Principal | None = None) -> Task:
        """Cancel a pending or running task; returns it once it has ended.

        A task that had already ended is returned as it is, so check ``status``:
        only ``cancelled`` means the cancel took effect (HTTP answers 409 otherwise).
        """
        access.check_task(self.store, principal, task_id)
        task = self.store.get_task(task_id)
        if task.is_terminal:
            return task
        cancelled = self.store.cancel_pending(task_id, CANCELLED_PENDING)
        if cancelled is not None:
            announce(self.context, cancelled)
            return cancelled
        self._tell(CancelRunning(task.session_id, task_id))
        task = self.wait(task_id, timeout=CANCEL_TIMEOUT)
        if not task.is_terminal:
            raise Unavailable(
                f"Task '{task_id}' did not stop within {CANCEL_TIMEOUT:g} s; try again.", 5
            )
        return task

    def wait(self, task_id: str, timeout: float, *, principal: Principal | None = None) -> Task:
        """The task once it is terminal, or as it is when ``timeout`` seconds have passed;
        ``Unauthorized`` as soon as ``principal`` is revoked."""
        access.check_task(self.store, principal, task_id)
        return self._wait(task_id, timeout, principal)

    def _wait(
        self,
        task_id: str,
        timeout: float,
        principal: Principal | None = None,
        known: tuple[int, Task] | None = None,
    ) -> Task:
        """``wait``; ``known`` is the task as read after its key's version was, saving a read."""
        deadline = time.monotonic() + timeout
        while True:
            self.revocations.check(principal)
            if known is None:
                seen = self.notifier.version(task_id)
                task = self.get_task(task_id)
            else:
                (seen, task), known = known, None
            remaining = deadline - time.monotonic()
            if task.is_terminal or remaining <= 0 or self.notifier.closed:
                return task
            self.notifier.wait(task_id, seen, remaining)

    def events(
        self,
        task_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        principal: Principal | None = None,
    ) -> list[Event]:
        """Events with ``seq > after``, at most ``limit``: a long log is read a page at a time.

        ``TaskNotFound`` for an unknown task: the store looks when no event comes back.
        """
        access.check_task(self.store, principal, task_id)
        self.revocations.check(principal)
        return self.store.list_events(task_id, after=after, limit=limit)

    def event_page(
        self,
        task_id: str,
        after: int = 0,
        limit: int = 1000,
        *,
        principal: Principal | None = None,
    ) -> EventPage:
        """Events with ``seq > after``: at most ``limit``, and fewer once their data passes
        ``paging.PAGE_BYTES`` (``has_more`` says whether more follow)."""
        access.check_task(self.store, principal, task_id)
        self.revocations.check(principal)
        events, more = self.store.event_page(task_id, after=after, limit=limit)
        return EventPage(data=events, has_more=more)

    def task_ended(self, task_id: str) -> bool:
        """Whether the task has ended (for a caller that checked it may see it)."""
        return self.store.task_ended(task_id)

    def check_task(self, task_id: str, *, principal: Principal | None = None) -> None:
        """``TaskNotFound`` unless ``principal`` may see the task (for everyone who sees all,
        the task's reads tell an unknown one)."""
        access.check_task(self.store, principal, task_id)

    def wait_for_events(
        self,
        task_id: str,
        after: int,
        timeout: float,
        limit: int | None = None,
        *,
        principal: Principal | None = None,
    ) -> list[Event]:
        """Events with ``seq > after`` (at most ``limit``), waiting up to ``timeout`` for one;
        ``Unauthorized`` as soon as ``principal`` (whose stream waits) is revoked.

        Read through the task's tail: however many wait, a new event is read once.
        """
        deadline = time.monotonic() + timeout
        key = events_of(task_id)
        while True:
            self.revocations.check(principal)
            seen = self.notifier.version(key)
            events = self._event_tails.after(task_id, after, limit, seen)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self.notifier.closed:
                return events
            self.notifier.wait(key, seen, remaining)

    # Approvals

    def approvals(
        self,
        *,
        session_id: str | None = None,
        task_id: str | None = None,
        status: Sequence[str] | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
        principal: Principal | None = None,
    ) -> Page:
        """A page of approvals the caller may see, newest first by default."""
        return self._desk.list(
            session_id=session_id,
            task_id=task_id,
            status=status,
            owner=owner,
            limit=limit,
            cursor=cursor,
            order=order,
            principal=principal,
        )

    def get_approval(self, approval_id: str, *, principal: Principal | None = None) -> Approval:
        return self._desk.get(approval_id, principal=principal)

    def decide(
        self,
        approval_id: str,
        decision: ApprovalDecision | str,
        *,
        principal: Principal | None = None,
        **fields: Any,
    ) -> Approval:
        """Allow or deny a pending approval: an ``ApprovalDecision``, or its ``decision``
        (``"allow"``, ``"deny"``) with the other fields as keywords."""
        if not isinstance(decision, ApprovalDecision):
            decision = contract.convert({"decision": decision, **fields}, ApprovalDecision)
        return self._desk.decide(approval_id, decision, principal=principal)

    # Nodes

    def nodes(self, *, principal: Principal | None = None) -> list[Node]:
        """The servers sharing this database whose lease lasts (admins only)."""
        access.require_admin(principal, "list nodes")
        return self.store.nodes.live()

    # Principals

    def principal_for(self, token: str | None) -> Principal | None:
        """The caller a bearer token names: ``None`` for the open service, else ``Unauthorized``.

        The configured token is compared in constant time; any other token is
        hashed and looked up, a wrong one as much as a right one, so the time a
        refusal takes says nothing about how near a guess came.
        """
        root = self.settings.api_token
        if root is not None and token and hmac.compare_digest(token.encode(), root.encode()):
            return access.ROOT
        found = self.store.principals.by_token(token) if token else None
        if found is not None:
            return found
        if root is None and not self._principals_exist():
            return None
        if not token:
            raise Unauthorized("This route needs an 'Authorization: Bearer <token>' header.")
        raise Unauthorized("The bearer token is not valid.")

    def me(self, principal: Principal | None) -> Principal:
        """The caller; in the open service, the built-in admin ``root``."""
        if principal is None or principal.id == access.ROOT.id:
            return access.ROOT
        return self.store.principals.get(principal.id)

    def create_principal(
        self, request: PrincipalCreate, *, principal: Principal | None = None
    ) -> Principal:
        """A new principal and its token, shown only in this answer (admins only)."""
        access.require_admin(principal, "create principals")
        if request.workspace_root is not None:
            request = msgspec.structs.replace(
                request,
                workspace_root=validation.principal_root(
                    request.workspace_root, self.settings.workspace_root
                ),
            )
        created = self.store.principals.create(request)
        self._principals_seen = True
        log.info("principal created", extra={"principal_id": created.id, "role": created.role})
        return created

    def list_principals(
        self,
        *,
        principal: Principal | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "desc",
    ) -> Page:
        access.require_admin(principal, "list principals")
        return self.store.principals.list(limit=limit, cursor=cursor, order=order)

    def get_principal(self, principal_id: str, *, principal: Principal | None = None) -> Principal:
        """A principal, for admins and for itself; to anyone else it does not exist."""
        if principal_id == access.ROOT.id and access.sees_all(principal):
            return access.ROOT
        if not access.sees_all(principal) and principal_id != principal.id:
            raise PrincipalNotFound(principal_id)
        return self.store.principals.get(principal_id)

    def revoke_principal(
        self, principal_id: str, *, principal: Principal | None = None
    ) -> Principal:
        """Revoke (admins only): its token stops working at the next request, and its work
        stops on every node. Its sessions close with its revocation, in one commit (pending
        tasks cancelled, so none of them runs), its running tasks are interrupted (their
        pending approvals expire) and its open streams and long-polls end (``Revocations``).
        Returns once its running tasks have ended, as ``close_session`` does.
        """
        access.require_admin(principal, "revoke principals")
        revoked, closed = self.store.revoke_principal(principal_id, REVOKED_PENDING)
        self.revocations.add((principal_id,))
        self.peers.revoked(principal_id)
        log.info(
            "principal revoked",
            extra={"principal_id": principal_id, "sessions_closed": len(closed)},
        )
        deadline = time.monotonic() + self.settings.cancel_grace + 10
        for running in self._after_close(closed):
            self.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        return revoked

    def _principals_exist(self) -> bool:
        """Whether the service is closed by principals: once one exists it stays so.

        Until then the answer is read at most once a second (principals created
        by ``aicli principals create`` in another process count within that).
        """
        if self._principals_seen:
            return True
        now = time.monotonic()
        if now >= self._principals_checked + PRINCIPALS_CHECK_S:
            self._principals_checked = now
            self._principals_seen = self.store.principals.count() > 0
        return self._principals_seen

    def _principal_pending_limit(self, principal: Principal, limit: int) -> int:
        """The pending limit for this principal's sessions; ``BudgetExceeded`` once it spent all."""
        budget = principal.limits.budget_usd
        if budget is not None and principal.total_cost_usd >= budget:
            raise BudgetExceeded(
                f"Principal '{principal.name}' has spent its budget of ${budget:g} "
                f"(${principal.total_cost_usd:.4f} so far); no new task is taken.",
                {"budget_usd": budget, "total_cost_usd": principal.total_cost_usd},
            )
        own = principal.limits.max_pending_per_session
        return limit if own is None else min(limit, own)

    # Service

    def readiness(self) -> dict[str, str]:
        try:
            self.store.ping()
        except StorageError as exc:
            raise Unavailable(f"The database does not answer: {exc.message.rstrip('.')}.") from exc
        if not self.accepting:
            raise Unavailable("The server is shutting down.")
        node = self.lease.node
        if node is None:
            raise Unavailable("This node holds no lease in the database; it is joining again.")
        return {
            "database": "ok",
            "claude": claude_version(self.claude_bin),
            "node": node.id,
            "sandbox": "off" if self.sandbox is None else "on",
        }

    def reap_leftovers(self) -> int:
        """End processes that dead runs on this database left behind (after a crash).

        A process counts as a leftover only if its environment carries this
        database's mark with the id of a node whose lease has ended; a live node's
        (this one's, or a peer's on this machine) are spared. A process recorded by
        pid must also have the recorded start time, so a reused pid is never hit, and
        any process must be older than the look at the live nodes.
        """
        read_at = time.time()  # a node that joins after this read is live, even if unlisted
        live = {node.id for node in self.store.nodes.live()}
        self._nodes_seen = live

        def dead_run(mark: str | None) -> bool:
            if not mark or not mark.startswith(self.owner_prefix):
                return False
            return mark[len(self.owner_prefix) :].split("/", 1)[0] not in live

        leftovers = {
            p.pid: p
            for p in process_tree.marked_processes(self.owner_prefix, prefix=True)
            if dead_run(process_tree.mark_of(p.pid)) and _started_before(p, read_at)
        }
        for pid, start_time, owner, _ in self.store.recorded_processes():
            if not dead_run(owner) or start_time >= read_at:
                continue
            process = _recorded_process(pid, start_time)
            if process is not None and dead_run(process_tree.mark_of(pid)):
                leftovers[pid] = process
            self.store.forget_process(pid, start_time)
        if leftovers:
            log.warning("ending %d processes left by an earlier run", len(leftovers))
            process_tree.kill_all(leftovers.values())
        return len(leftovers)

    def shutdown(self, grace: float | None = None) -> None:
        """Stop taking work, let running tasks finish for ``grace`` s, then interrupt them.

        Sessions start no new task meanwhile: pending tasks stay pending for the next start.
        """
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        supervisor = self._supervisor_proxy
        if supervisor is None:
            return
        try:
            self._ask(supervisor.drain_sessions())
        except Unavailable:
            log.warning("the supervisor did not answer the drain")
        for task in self._running_here():
            self.wait(task.id, timeout=max(0.0, deadline - time.monotonic()))
        try:
            self._ask(supervisor.shutdown_sessions())
        except Unavailable:
            log.warning("the supervisor did not answer the shutdown")
        cutoff = self.settings.cancel_grace + 10
        for task in self._running_here():
            self.wait(task.id, timeout=cutoff)
        end = time.monotonic() + cutoff
        while True:
            seen = self.notifier.version(CENSUS_KEY)
            remaining = end - time.monotonic()
            if not len(self.census) or remaining <= 0:
                return
            self.notifier.wait(CENSUS_KEY, seen, remaining)

    def _running_here(self) -> list[Task]:
        """The running tasks of the sessions this node holds (peers run the others)."""
        node = self.lease.node
        return [] if node is None else self.store.running_tasks(node.id)

    def stop(self) -> None:
        """Stop every actor in reverse order of start; no Claude process survives it."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.accepting = False
        supervisor = self._supervisor_proxy
        if supervisor is not None:
            try:
                supervisor.stop_sessions(timeout=10).get(timeout=120)
                supervisor.actor_ref.stop(timeout=10)
            except pykka.Timeout:
                log.warning("the actors did not stop in time; ending their processes anyway")
        # Session actors end their own trees; this catches whatever escaped them.
        for node_id in self._node_ids:
            mark = f"{self.owner_prefix}{node_id}/"
            process_tree.kill_all(process_tree.marked_processes(mark, prefix=True))
        for actor in (self._pruner, self._node_lease, self._fencer):
            if actor is not None:
                with contextlib.suppress(pykka.Timeout):
                    actor.stop(timeout=10)
        self.peers.close()
        self.scheduler.stop()
        self.notifier.close()
        self.api_proxy.stop()  # no CLI is left to call the API
        self.store.close()
        # Last, so the next server starts only once this one has let go of everything.
        if self._server_lock is not None:
            self._server_lock.release()

    # Helpers

    def _proxy(self) -> SupervisorProxy:
        if self._supervisor_proxy is None or self._stopped.is_set():
            raise Unavailable("The runtime is stopped.")
        return self._supervisor_proxy

    def _tell(self, message: object) -> None:
        """News for the supervisor, and for the peers' (the session may run on one of them);
        it is never asked, so this never waits."""
        if self._supervisor is None or self._stopped.is_set():
            raise Unavailable("The runtime is stopped.")
        self._supervisor.tell(message)
        self.peers.tell(message)

    def _tell_here(self, message: object) -> None:
        """News for this node's supervisor only, if it runs (from peers, the lease, the fence)."""
        supervisor = self._supervisor
        if supervisor is not None and not self._stopped.is_set():
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(message)

    def _ask(self, future: pykka.Future[Any]) -> Any:
        try:
            return future.get(timeout=ASK_TIMEOUT)
        except pykka.Timeout:
            raise Unavailable(
                f"An actor did not answer within {ASK_TIMEOUT:g} s, so the outcome is unknown: "
                "the request may still take effect. Retry with an Idempotency-Key where the "
                "route takes one, so that a retry cannot act twice.",
                1,
            ) from None

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise Unavailable("The server is shutting down and takes no new work.", 5)

    def _with_process_state(self, session: Session) -> Session:
        [shown] = self._with_process_states([session])
        return shown

    def _with_process_states(self, sessions: list[Session]) -> list[Session]:
        """``process_alive`` as the store records it, so that every node answers alike."""
        alive = self.store.ownership.with_live_process([s.id for s in sessions])
        return [msgspec.structs.replace(s, process_alive=s.id in alive) for s in sessions]

    def _with_queue_positions(self, tasks: list[Task]) -> list[Task]:
        sessions = {t.session_id for t in tasks if t.status == TaskStatus.PENDING}
        if not sessions:
            return tasks
        positions: dict[str, int] = {}
        for session_id in sessions:
            for index, task_id in enumerate(self.store.pending_task_ids(session_id)):
                positions[task_id] = index
        return [
            msgspec.structs.replace(t, queue_position=positions.get(t.id))
            if t.status == TaskStatus.PENDING
            else t
            for t in tasks
        ]


def owner_prefix(database_url: str) -> str:
    """A mark shared by every run on one database, so a new run can find an old one's children."""
    return f"aicli-{hashlib.sha256(database_url.encode()).hexdigest()[:12]}/"


def _started_before(process: psutil.Process, moment: float) -> bool:
    try:
        return process.create_time() < moment
    except psutil.NoSuchProcess:
        return False


def _recorded_process(pid: int, start_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        return process if abs(process.create_time() - start_time) < 0.01 else None
    except psutil.NoSuchProcess:
        return None
