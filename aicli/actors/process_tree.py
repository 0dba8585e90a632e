"""Finding and ending every process aicli started, including the ones that escaped.

The Claude CLI starts each Bash tool command with ``setsid``, so a tool is not
in the CLI's process group, and a CLI killed by SIGKILL leaves its tools
orphaned (re-parented to init). Walking descendants finds them while the CLI
lives; after that only the mark that aicli puts in every child's environment
(inherited by everything below it) still points at them. Both are used.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

import psutil

log = logging.getLogger(__name__)

MARK_VARIABLE = "AICLI_PROCESS_MARK"


def environ_has(pid: int, entry: bytes) -> bool:
    """Whether ``/proc/<pid>/environ`` holds ``entry`` (``KEY=value``) exactly."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return entry in handle.read().split(b"\0")
    except OSError:
        return False


def marked_processes(mark: str, prefix: bool = False) -> list[psutil.Process]:
    """Live processes whose environment carries our mark (or, with ``prefix``, starts with it)."""
    own = os.getpid()
    wanted = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for pid in psutil.pids():
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
        except OSError:
            continue
        if any(e == wanted or (prefix and e.startswith(wanted)) for e in entries):
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
    return found


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def signal_all(processes: Iterable[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def kill_all(processes: Iterable[psutil.Process], timeout: float = 3.0) -> None:
    """SIGKILL each process and reap what is ours to reap."""
    processes = list(processes)
    signal_all(processes, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=timeout)


def terminate_then_kill(processes: Iterable[psutil.Process], grace: float) -> None:
    """SIGTERM, give them ``grace`` seconds, then SIGKILL whatever is left."""
    processes = list(processes)
    signal_all(processes, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    if alive:
        log.warning("processes ignored SIGTERM, killing: %s", [p.pid for p in alive])
        kill_all(alive)
