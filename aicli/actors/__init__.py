"""The actors: a supervisor, an actor per live session, and what they share.

- ``supervisor`` opens sessions, routes news to their actors and rations Claude
  processes; ``messages`` are what the actors ``tell`` one another; ``scheduler``
  is the one timer thread for delayed ``tell``s.
- ``session`` is the session actor; it composes its components, which know nothing
  of one another: ``session_state`` (its declared state), ``session_claim`` (this
  node's claim), ``task_taker`` (its queue), ``process_host`` (its Claude process),
  ``turn_recorder``, ``turn_approvals`` and ``idle_clock``. ``turn_starter``,
  ``stream_reader`` and ``turn_ender`` coordinate a turn through ``session_core``;
  ``turn`` is the running task, ``session_context`` what they share with the runtime.
- The CLI driver, which never touches storage: ``claude_process`` (one CLI process),
  ``stream`` (what its messages mean), ``claude_env`` and ``session_dirs`` (what it
  starts with), ``process_tree`` (finding its processes), ``claude_bin``,
  ``sandbox`` and ``executables`` (where the CLI and srt are, and srt's policy),
  ``mount_points`` (the dotfiles srt denies, made before it runs);
  ``approval_requests`` reads what the CLI asks.
- The API proxy between sandboxed CLIs and the Messages API: ``api_proxy``,
  ``proxy_relay``, ``proxy_upstream``.
- The node's life: ``node_lease``, ``fencer`` (processes die before the lease does),
  ``watchdog``, ``census`` (live processes), ``pruner`` (retention).
- Around tasks: ``notifier`` and ``event_tail`` (waking and feeding watchers),
  ``transcript_files`` and ``transcript_sync`` (a transcript follows its session),
  ``faults`` (the points a crash test strikes).

Pykka logs, at INFO and with a traceback, every exception an actor method
hands back to a caller that asked. Most of ours are refusals (no such
session, session closed, queue full, shutting down): answers, not crashes,
and a traceback per 404 or 409 buries the real ones. Importing this package
(anything under ``aicli.actors`` does) drops those records, for embedders as
well as ``aicli serve``. ``StorageError`` and ``IllegalTransition`` mean an
outage or a bug and keep their traceback, as does anything not an
``AicliError``.
"""

from __future__ import annotations

import logging

from aicli.errors import AicliError, IllegalTransition, StorageError


class _RefusalsAreNotCrashes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(error, AicliError)
            and not isinstance(error, StorageError | IllegalTransition)
            and str(record.msg).startswith("Exception returned from")
        )


logging.getLogger("pykka").addFilter(_RefusalsAreNotCrashes())
