"""Progress of long work on stderr: a redrawn line on a terminal, plain lines otherwise.

Kept in-house on purpose: the contract (a bar on a TTY, one plain line at most every
few seconds when piped, nothing on stdout) is twenty lines, and a progress library
would cost every short command its import time.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report a running count (of a known or unknown total) without flooding logs."""

    def __init__(
        self, label: str, total: int | None = None, stream: TextIO | None = None, every: float = 2.0
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = time.monotonic()
        self._last_report = self.started
        self.count = 0

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now - self._last_report >= self.every:
            self._last_report = now
            self._emit(final=False)

    def finish(self) -> None:
        if self.count and (self.tty or time.monotonic() - self.started >= self.every):
            self._emit(final=True)

    def _emit(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{self.count / elapsed:,.0f}/s"
        if self.total:
            share = min(self.count / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"{self.label} [{bar:<30}] {self.count:,}/{self.total:,} {rate}"
        else:
            text = f"{self.label}: {self.count:,} {rate}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
