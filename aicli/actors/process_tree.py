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

# Not AICLI_*: a sandboxed session sees its own environment, which holds none of aicli's
# settings, and a name that looks like one would say otherwise.
MARK_VARIABLE = "PROCESS_MARK"
# What versions before 1.2 called it: their leftovers are found after an upgrade too.
_MARK_PREFIXES = (f"{MARK_VARIABLE}=".encode(), b"AICLI_PROCESS_MARK=")


def mark_of(pid: int) -> str | None:
    """The aicli mark in a process's environment, or None (not ours, gone, or not readable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        for prefix in _MARK_PREFIXES:
            if entry.startswith(prefix):
                return entry[len(prefix) :].decode(errors="replace")
    return None


def marked_processes(mark: str, prefix: bool = False) -> list[psutil.Process]:
    """Live processes whose mark is ``mark`` (or, with ``prefix``, starts with it)."""
    own = os.getpid()
    found = []
    for pid in psutil.pids():
        if pid == own:
            continue
        found_mark = mark_of(pid)
        if found_mark is None:
            continue
        if found_mark == mark or (prefix and found_mark.startswith(mark)):
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
