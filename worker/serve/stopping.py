"""A stop request (SIGTERM, SIGINT) held as a flag from the first line of a `run` process.

Python's default SIGTERM ends a process by the signal: a supervisor then records a crash, and anything
half-built (a model compiling, OpenVINO's threads) is torn down in no order. So `run` installs this
before it imports OpenVINO or loads a model, and every stage asks it: a stop during start-up is
honoured once the stage in hand ends (a compile cannot be interrupted), and the process exits 0 after
an orderly shutdown. Once RQ's loop runs, RQ's own handlers take over (warm, then cold shutdown);
`forward` hands a stop that came before them on.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._forward: Callable[[], None] | None = None

    def install(self) -> StopRequest:
        """Take SIGTERM and SIGINT in this (main) thread; returns self."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame) -> None:
        first = not self.requested
        self.requested, self.signal_name = True, signal.Signals(signum).name
        if first:
            log.info("%s received: stopping once the step in hand ends", self.signal_name)
        if self._forward is not None:
            self._forward()

    def forward(self, to: Callable[[], None] | None) -> None:
        """Also call `to` on a stop (now, if one came already); None stops forwarding."""
        self._forward = to
        if to is not None and self.requested:
            to()


def catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a SIGTERM handler installed (SigCgt in /proc/PID/status): a `run` process
    that does has its stop request in place, so a stop from then on is a clean exit."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)
