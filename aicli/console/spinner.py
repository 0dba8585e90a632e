"""A progress line on a terminal (``⠋ running · 3s``), redrawn in place by a thread.

Only for a terminal: ``Spinner.for_stream`` gives a silent one when the stream
is not a tty, so piped output holds no ``\\r`` and no escape sequence. Whoever
writes to the terminal does so through ``write`` (or inside ``paused``), which
clears the line first; the next tick draws it again under the new text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TICK_S = 0.1
CLEAR = "\r\x1b[K"


class Spinner:
    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self.enabled = enabled
        self.state = "starting"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._shown = False
        self._started = time.monotonic()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_stream(cls, stream: TextIO) -> Spinner:
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(stream, tty)

    def start(self) -> Spinner:
        if self.enabled and self._thread is None:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._spin, name="aicli-spinner", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop drawing and clear the line (safe to call twice, or from a signal handler)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1)
        with self._lock:
            self._clear()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the line clear while the caller writes (to any stream of the terminal)."""
        with self._lock:
            self._clear()
            yield

    def write(self, stream: TextIO, text: str) -> None:
        with self.paused():
            stream.write(text)
            stream.flush()

    def _clear(self) -> None:
        if self._shown:
            self._stream.write(CLEAR)
            self._stream.flush()
            self._shown = False

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(TICK_S if frame else 0):
            elapsed = int(time.monotonic() - self._started)
            with self._lock:
                if self._stop.is_set():
                    return
                line = f"{FRAMES[frame % len(FRAMES)]} {self.state} · {elapsed}s"
                self._stream.write(f"\r{line}\x1b[K")
                self._stream.flush()
                self._shown = True
            frame += 1
