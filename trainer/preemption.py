"""Graceful stop on SIGTERM (a preemption notice, a scheduler's shutdown): save, then exit with a restart code.

The signal only sets a flag; the loop checks it between step loops (all workers agree through an all-reduce), saves,
and the process exits with EXIT_CODE. Why not TF's PreemptionCheckpointHandler: BUILD_NOTES.md, "Training runs
survive interruptions".
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

from absl import logging

EXIT_CODE = 42  # PreemptionCheckpointHandler's default restart code off GCE; 143 would mean "killed by SIGTERM".


class Preempted(Exception):
    """Training stopped on a termination signal after saving a checkpoint; rerun the same command to resume."""


class StopRequest:
    """A context that turns SIGTERM into a flag (saving from inside a signal handler is unsafe)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None  # The handler SIGTERM had: a function, SIG_DFL or SIG_IGN.

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        logging.warning(
            "Signal %d received: saving a checkpoint after the current step loop, then exiting with code %d.",
            signum,
            EXIT_CODE,
        )
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        else:
            logging.warning("Training outside the main thread: SIGTERM cannot be caught, no checkpoint on preemption.")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
