"""Progress of a long tool (validate, bench, export) on stderr, drawn only when stderr is a terminal:
piped or logged runs stay quiet, and stdout (tables, JSON) is never touched."""

from __future__ import annotations

import sys
from typing import TextIO

_WIDTH = 30


def note(message: str, stream: TextIO | None = None) -> None:
    """A stage starting, as a line of its own, on a terminal only."""
    stream = stream or sys.stderr
    if stream.isatty():
        stream.write(f"\r{message}\n")
        stream.flush()


class Progress:
    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total, self.what, self.done = max(total, 1), what, 0

    def step(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        if not self.enabled:
            return
        filled = _WIDTH * self.done // self.total
        self.stream.write(f"\r{self.what} [{'#' * filled}{'.' * (_WIDTH - filled)}] {self.done}/{self.total}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()
