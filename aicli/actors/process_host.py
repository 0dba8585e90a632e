"""The session's Claude process, one generation at a time: prepared, started, stopped,
killed, and forgotten.

A generation's process is prepared on this node (the session's own directories, its
environment, its sandbox launch and its token at the API proxy), started, and recorded
in the store so a restart finds it. Stopping or killing it never waits: the thread
that does it reports back to the actor as the process's exit. From the moment a stop
or kill is decided (``process_ending``) nothing more may be sent to that process.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pykka

from aicli.actors.census import CENSUS_KEY
from aicli.actors.claude_env import session_environment
from aicli.actors.claude_process import ClaudeLike, ProcessExit
from aicli.actors.messages import ProcessExited, StreamMessage, ToolsSwept
from aicli.actors.sandbox import Launch
from aicli.actors.session_context import SESSION_LOG, ActorContext, tell_quietly
from aicli.actors.session_dirs import SessionDirs
from aicli.actors.transcript_sync import TranscriptSync
from aicli.contract import Session
from aicli.errors import CredentialsUnavailable, StorageError, Unavailable

log = logging.getLogger(SESSION_LOG)


class ProcessHost:
    def __init__(
        self,
        context: ActorContext,
        session_id: str,
        dirs: SessionDirs,
        transcript: TranscriptSync | None,
    ) -> None:
        self.ctx = context
        self.session_id = session_id
        self.dirs = dirs
        self.transcript = transcript
        self.process: ClaudeLike | None = None
        self.generation = 0
        self.process_ending = False  # this generation's process is being stopped or killed
        self.process_cost = 0.0  # what the live process has cost so far, by its own count
        self.api_token: str | None = None  # the live process's capability at the API proxy
        self.launch: Launch | None = None  # how the live process was sandboxed

    @property
    def live_process(self) -> ClaudeLike | None:
        """The process, unless it is on its way out: then nothing more may be sent to it."""
        return None if self.process_ending else self.process

    def spawn(self, session: Session, node_id: str | None, ref: pykka.ActorRef[Any]) -> str | None:
        """Start a process for the next task; why that cannot work (None: it started)."""
        self.generation += 1
        self.process_ending = False
        generation = self.generation

        def on_message(message: dict[str, Any]) -> None:
            tell_quietly(ref, StreamMessage(generation, message))

        def on_exit(exit_: ProcessExit) -> None:
            tell_quietly(ref, ProcessExited(generation, exit_))

        try:
            own = self.ctx.own_credentials(session.owner)
        except CredentialsUnavailable as exc:  # sealed with a key this node does not hold
            return exc.message
        self.api_token = token = self.ctx.api_proxy.grant(own)
        env = session_environment(
            os.environ,
            self.ctx.claude_env,
            self.dirs,
            self.ctx.api_proxy.url,
            token,
            sandboxed=self.ctx.sandbox is not None,
        )
        try:
            launcher = self._prepare_launch(session, env)
        except OSError as exc:
            log.error("session %s: cannot prepare its directories: %s", self.session_id, exc)
            self.let_go_of_access()
            return f"The session's directories could not be prepared: {exc}."
        sandbox = self.ctx.sandbox
        process = self.ctx.process_factory(
            claude_bin=self.ctx.claude_bin if sandbox is None else sandbox.claude_bin,
            settings=session.settings,
            on_message=on_message,
            on_exit=on_exit,
            resume=self._resume_from(session),
            owner=f"{self.ctx.owner_prefix}{node_id}",
            base_env=env,
            launcher=launcher,
        )
        try:
            process.start()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument
            log.error("session %s: cannot start Claude: %s", self.session_id, exc)
            self.let_go_of_access()
            return f"The Claude process could not be started: {exc}."
        self._started(process, node_id)
        return None

    def _prepare_launch(self, session: Session, env: dict[str, str]) -> list[str]:
        """The session's directories, and its sandbox's launcher (its environment into
        ``env``); none without a sandbox."""
        self.dirs.create()
        sandbox = self.ctx.sandbox
        if sandbox is None:
            return []
        settings = session.settings
        self.launch = sandbox.launch(  # anew each time: the policy may have changed
            policy_file=self.dirs.policy,
            workdir=session.workdir,
            session_dir=self.dirs.root,
            read_paths=settings.read_paths,
            network_domains=settings.network_domains,
            api_port=self.ctx.api_proxy.port,
        )
        env.update(self.launch.env)
        return self.launch.launcher

    def _resume_from(self, session: Session) -> str | None:
        """The conversation to resume, if its transcript is here (brought from the store
        when the session moved between nodes)."""
        resume = session.claude_session_id
        moving = resume and self.transcript is not None
        if moving and not self.transcript.before_resume(session.workdir, resume):
            log.warning(
                "session %s: no transcript of its conversation here or stored; starting a new one",
                self.session_id,
            )
            resume = None
        return resume

    def _started(self, process: ClaudeLike, node_id: str | None) -> None:
        self.process = process
        self.process_cost = 0.0
        self.ctx.census.add(self.session_id)
        if process.pid is not None:
            started = process.start_time or 0.0
            self.ctx.store.record_process(
                process.pid,
                started,
                process.mark,
                "claude",
                session_id=self.session_id,
                node_id=node_id,
            )

    def exited(self) -> ClaudeLike | None:
        """This generation's process is gone: the next one starts from nothing."""
        process, self.process = self.process, None
        self.process_ending = False
        return process

    def retire(self) -> None:
        """Kill this generation's process: whatever it still says belongs to no task."""
        if self.process is not None and not self.process_ending:
            self.kill()

    def kill(self) -> None:
        if self.process is not None:
            self.process_ending = True  # before the thread runs: nothing more may be sent to it
            threading.Thread(target=self.process.kill, daemon=True).start()

    def stop(self) -> None:
        if self.process is not None and self.process.alive:
            self.process_ending = True  # before the thread runs: nothing more may be sent to it
            threading.Thread(target=self.process.stop, daemon=True).start()

    def kill_now(self, *, fenced: bool) -> None:
        """The actor stops: its process dies with it (on the actor's thread, as nothing
        waits for it now)."""
        if self.process is not None:
            if self.process.alive:
                self.process.kill()
            self.forget(self.process, fenced=fenced)

    def sweep_tools(self, ref: pykka.ActorRef[Any]) -> None:
        """End tools an interrupted turn detached (``setsid cmd &``) before the next task starts."""
        process = self.process
        assert process is not None

        def sweep() -> None:
            try:
                process.end_detached_tools()
            finally:
                tell_quietly(ref, ToolsSwept())

        threading.Thread(target=sweep, daemon=True).start()

    def forget(self, process: ClaudeLike, *, fenced: bool) -> None:
        """Best effort: a row left behind only makes the next start look for a dead pid."""
        self.let_go_of_access()
        self.ctx.census.discard(self.session_id)
        self.ctx.notifier.announce(CENSUS_KEY)
        if process.pid is not None and not fenced:  # fenced: the database may not answer
            try:
                self.ctx.store.forget_process(process.pid, process.start_time or 0.0)
            except (StorageError, Unavailable) as exc:
                log.warning(
                    "session %s: could not forget process %s: %s", self.session_id, process.pid, exc
                )

    def let_go_of_access(self) -> None:
        """The process is gone: so is what it could reach (its API token, srt's scratch)."""
        if self.api_token is not None:
            self.ctx.api_proxy.revoke(self.api_token)
            self.api_token = None
        if self.launch is not None:
            self.launch.cleanup()
            self.launch = None
