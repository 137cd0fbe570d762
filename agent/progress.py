"""Progress of long list scans, shown on a terminal only (never in journald or --json)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TerminalProgress:
    """`reading /users: 41,958 items, 42 pages` rewritten in place, at most 5 times a second."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._last = 0.0
        self._shown = False

    def __call__(self, path: str, pages: int, items: int, done: bool) -> None:
        now = time.monotonic()
        if not done and now - self._last < 0.2:
            return
        self._last = now
        end = "\n" if done and self._shown else ""
        if done and not self._shown:
            return  # a one-page list needs no progress line
        self._stream.write(f"\rreading {path}: {items:,} items, {pages} pages\x1b[K{end}")
        self._stream.flush()
        self._shown = not done


def terminal_progress() -> TerminalProgress | None:
    return TerminalProgress() if sys.stderr.isatty() else None
