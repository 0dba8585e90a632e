"""The composition root: every part of a runtime, built once and in dependency order.

The order is declared once, in ``_parts``: a start runs the parts' starts in
that order and a stop runs their stops in reverse (as Celery's bootsteps do),
so what a part needs is up before it and still up until it has stopped. The
first three parts (the server lock, the store and the credential proxy) come
taken: ``acquire`` takes them in the same order before the runtime is built.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pykka

from aicli import access
from aicli.actors.api_proxy import ApiProxy, operator_upstream
from aicli.actors.census import ProcessCensus
from aicli.actors.claude_bin import find_claude
from aicli.actors.faults import Faults
from aicli.actors.fencer import Fencer
from aicli.actors.messages import Answer
from aicli.actors.node_lease import LeaseState, NodeLease
from aicli.actors.notifier import Notifier
from aicli.actors.pruner import Pruner
from aicli.actors.sandbox import Sandbox, find_srt
from aicli.actors.scheduler import Scheduler
from aicli.actors.session import ActorContext, ProcessFactory
from aicli.approval_desk import ApprovalDesk
from aicli.metrics import Metrics
from aicli.peers import Peers
from aicli.runtime.gate import Gate
from aicli.runtime.node import NodeLife
from aicli.runtime.principals import Principals
from aicli.runtime.processes import Reaper, owner_prefix
from aicli.runtime.sessions import Sessions
from aicli.runtime.supervision import SupervisorLink
from aicli.runtime.tasks import Tasks
from aicli.settings import Settings, default_state_dir
from aicli.storage import Store, open_store, server_lock
from aicli.storage.secret_key import SecretKey

ACTOR_STOP_TIMEOUT = 10


@dataclass(frozen=True)
class Part:
    """``start`` None: the part comes started (taken by ``acquire``, or live once built)."""

    name: str
    start: Callable[[], None] | None
    stop: Callable[[], None]


class Lifecycle:
    def __init__(self, parts: Sequence[Part], gate: Gate) -> None:
        self._parts = parts
        self._gate = gate

    def start(self) -> None:
        """Start the parts in order; if one fails, stop it and those it came after, in
        reverse, and raise (what came started is ``acquire``'s to let go)."""
        begun: list[Part] = []
        try:
            for part in self._parts:
                if part.start is not None:
                    begun.append(part)
                    part.start()
        except BaseException:
            for part in reversed(begun):
                with contextlib.suppress(Exception):
                    part.stop()
            raise

    def stop(self) -> None:
        """Stop every part in reverse order of start, once; no Claude process survives it."""
        if not self._gate.stop():
            return
        for part in reversed(self._parts):
            part.stop()


class HeldLock:
    """The server lock ``Runtime.start`` took; a runtime built directly holds none."""

    def __init__(self) -> None:
        self._lock: server_lock.ServerLock | None = None

    def hold(self, lock: server_lock.ServerLock) -> None:
        self._lock = lock

    def release(self) -> None:
        # Last, so the next server starts only once this one has let go of everything.
        if self._lock is not None:
            self._lock.release()


class ActorPart:
    """An actor the runtime starts and stops (or does not, when ``make`` gives None)."""

    def __init__(self, make: Callable[[], pykka.ActorRef[pykka.Actor] | None]) -> None:
        self._make = make
        self.ref: pykka.ActorRef[pykka.Actor] | None = None

    def start(self) -> None:
        self.ref = self._make()

    def stop(self) -> None:
        if self.ref is not None:
            with contextlib.suppress(pykka.Timeout):
                self.ref.stop(timeout=ACTOR_STOP_TIMEOUT)


@dataclass(frozen=True)
class Taken:
    lock: server_lock.ServerLock
    claude_bin: str
    sandbox: Sandbox | None
    store: Store
    api_proxy: ApiProxy


@contextlib.contextmanager
def acquire(settings: Settings, claude_env: Mapping[str, str] | None) -> Iterator[Taken]:
    """Take the server lock, find the CLI (and the sandbox), open the store and start the
    credential proxy; let go of them in reverse if the body fails, else hand them over."""
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
        key = SecretKey(
            settings.database_url, key=settings.secret_key, key_file=settings.secret_key_file
        )
        store = open_store(settings.database_url, secret_key=key)
        undo.callback(store.close)
        api_proxy = ApiProxy(upstream, auth)
        api_proxy.start()
        undo.callback(api_proxy.stop)
        yield Taken(lock, claude_bin, sandbox, store, api_proxy)
        undo.pop_all()


@dataclass(frozen=True)
class Assembly:
    """A built runtime's parts, for the façade to delegate to and to show."""

    context: ActorContext  # the notifier, census, scheduler, lease and metrics among them
    revocations: access.Revocations
    peers: Peers
    desk: ApprovalDesk
    gate: Gate
    tasks: Tasks
    sessions: Sessions
    principals: Principals
    node: NodeLife
    reaper: Reaper
    server_lock: HeldLock
    lifecycle: Lifecycle


def compose(
    settings: Settings,
    store: Store,
    claude_bin: str,
    claude_env: Mapping[str, str] | None,
    *,
    api_proxy: ApiProxy,
    sandbox: Sandbox | None,
    process_factory: ProcessFactory,
    faults: Faults | None,
) -> Assembly:
    """Build every part, each given what it uses; started by ``Lifecycle.start``."""
    context = _actor_context(
        settings,
        store,
        claude_bin,
        claude_env,
        api_proxy=api_proxy,
        sandbox=sandbox,
        process_factory=process_factory,
        faults=faults,
        # Late: the desk and the principals are built below, with the context.
        answer_of=lambda approval_id: desk.answer_of(approval_id),
        own_credentials=lambda principal_id: principals.own_credentials(principal_id),
    )
    notifier, gate = context.notifier, Gate()
    # The desk and the peers tell the supervisor through the link, which tells the peers.
    desk = ApprovalDesk(store, notifier, lambda message: link.tell(message))
    revocations = access.Revocations(notifier.nudge_all)
    peers = Peers(
        store.database_url,
        notifier,
        desk,
        lambda message: link.tell_here(message),
        lambda principal_id: revocations.add((principal_id,)),
    )
    link = SupervisorLink(context, peers, gate)
    tasks = Tasks(context, link, gate, revocations)
    sessions = Sessions(store, settings, notifier, link, gate, tasks)
    principals = Principals(store, settings, revocations, peers, sessions.after_close, tasks)
    reaper = Reaper(store, context.owner_prefix)
    node = NodeLife(context, peers, revocations, link, gate, reaper, tasks, sessions.after_close)
    held = HeldLock()
    parts = _parts(context, api_proxy, held, peers, node, link, gate)
    return Assembly(
        context,
        revocations,
        peers,
        desk,
        gate,
        tasks,
        sessions,
        principals,
        node,
        reaper,
        held,
        Lifecycle(parts, gate),
    )


def _actor_context(
    settings: Settings,
    store: Store,
    claude_bin: str,
    claude_env: Mapping[str, str] | None,
    *,
    api_proxy: ApiProxy,
    sandbox: Sandbox | None,
    process_factory: ProcessFactory,
    faults: Faults | None,
    answer_of: Callable[[str], Answer | None],
    own_credentials: Callable[[str | None], Mapping[str, str] | None],
) -> ActorContext:
    """What the session actors share with the runtime; the runtime's parts use it too."""
    census = ProcessCensus()
    return ActorContext(
        store=store,
        notifier=Notifier(),
        census=census,
        metrics=Metrics(
            store.task_status_counts, lambda: len(census), store.approvals.pending_count
        ),
        settings=settings,
        scheduler=Scheduler(),
        faults=Faults.from_environment() if faults is None else faults,
        claude_bin=claude_bin,
        claude_env=dict(claude_env or {}),
        owner_prefix=owner_prefix(store.database_url),
        lease=LeaseState(),
        answer_of=answer_of,
        api_proxy=api_proxy,
        state_dir=settings.state_dir or default_state_dir(os.environ),
        sandbox=sandbox,
        process_factory=process_factory,
        own_credentials=own_credentials,
    )


def _parts(
    context: ActorContext,
    api_proxy: ApiProxy,
    held: HeldLock,
    peers: Peers,
    node: NodeLife,
    link: SupervisorLink,
    gate: Gate,
) -> list[Part]:
    """The parts in start order (stopped in reverse)."""
    settings, store, scheduler = context.settings, context.store, context.scheduler
    # Only with PostgreSQL can peers take this node's sessions over, and must it fence.
    fencer = ActorPart(
        lambda: (
            Fencer.start(scheduler, context.owner_prefix, node.fenced)
            if store.is_postgres
            else None
        )
    )
    node_lease = ActorPart(
        lambda: NodeLease.start(
            store,
            scheduler,
            context.lease,
            fencer.ref,
            url=settings.node_url,
            ttl=settings.lease_ttl,
            sandboxed=context.sandbox is not None,
            live_processes=lambda: len(context.census),
            on_renewed=node.renewed,
        )
    )
    pruner = ActorPart(
        lambda: (
            Pruner.start(store, scheduler, settings.retain_days)
            if settings.retain_days > 0
            else None
        )
    )
    return [
        Part("server lock", start=None, stop=held.release),
        Part("store", start=None, stop=lambda: store.close()),
        # Stopped once no CLI is left to call the API.
        Part("credential proxy", start=None, stop=lambda: api_proxy.stop()),
        Part("notifier", start=None, stop=context.notifier.close),
        Part("scheduler", start=None, stop=scheduler.stop),
        # Listening before the node takes requests; still passing news on while it drains.
        Part("peers", start=peers.start, stop=peers.close),
        Part("fencer", start=fencer.start, stop=fencer.stop),
        Part("node lease", start=node_lease.start, stop=node_lease.stop),
        Part("pruner", start=pruner.start, stop=pruner.stop),
        # Its start ends what dead runs left behind; its stop, what escaped this run's actors.
        Part("node", start=node.arrive, stop=node.leave),
        Part("supervisor", start=link.start, stop=link.stop),
        Part("gate", start=gate.open, stop=gate.close),
    ]
