"""A status line that log lines never break.

In a terminal the line is redrawn in place; a log line first clears it, is written whole, and the status is
drawn again below it. When the output is not a terminal (a file, a pipe, CI), the status is written as an
ordinary line every `every_s` seconds instead, so a log file holds no carriage returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

CLEAR = "\r\x1b[2K"


class StatusLine:
    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every_s, self.clock = every_s, clock
        self.text = ""
        self._drawn = False
        self._last_plain: float | None = None
        self._lock = threading.Lock()

    def _width(self) -> int:
        import shutil

        return max(20, shutil.get_terminal_size((120, 24)).columns - 1)

    def _draw(self) -> None:
        if self.text:
            self.out.write(CLEAR + self.text[: self._width()])
            self._drawn = True

    def show(self, text: str) -> None:
        """The new status: redrawn at once in a terminal, otherwise printed when `every_s` has passed."""
        with self._lock:
            self.text = text
            if self.tty:
                self._draw()
            else:
                now = self.clock()
                if self._last_plain is None or now - self._last_plain >= self.every_s:
                    self._last_plain = now
                    self.out.write(text + "\n")
            self.out.flush()

    def print(self, line: str) -> None:
        """One whole line above the status."""
        with self._lock:
            if self.tty and self._drawn:
                self.out.write(CLEAR)
            self.out.write(line.rstrip("\n") + "\n")
            if self.tty:
                self._draw()
            self.out.flush()

    def finish(self) -> None:
        """Leave the last status as an ordinary line (in a terminal) and stop drawing."""
        with self._lock:
            if self.tty and self._drawn:
                self.out.write("\n")
            self._drawn = False
            self.text = ""
            self.out.flush()
