"""Progress within an epoch on the chief: a bar where stderr shows one live (a terminal, a Jupyter notebook), else a
log line every `progress_every_s` seconds (CI, cloud logs); 0 shows neither.

Updated between step loops from the sums each `steps_per_loop`-step call returns anyway: nothing runs inside the
tf.function, so a step costs the same with or without it, and the bar moves once per call. Bar and lines say the
same: steps, the epoch's running loss and accuracy, images/s and the ETA, both measured from the end of the epoch's
first call (which, in a phase's first epoch, holds the tracing).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TextIO

import tqdm
from absl import logging

from data_prep import display

SUMS = ("loss", "correct", "count")  # The train loop's sums (trainer/steps.py) the running metrics are made of.


class EpochProgress:
    """One epoch at a time: `with progress.epoch(...)`, and `update` after every step loop within it."""

    def __init__(
        self, every_s: float, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s, self._clock = every_s, clock
        self._stream = sys.stderr if stream is None else stream
        self._live = every_s > 0 and display.live(self._stream)
        self._bar: tqdm.tqdm | None = None
        self._title, self._total, self._sums = "", 0, dict.fromkeys(SUMS, 0.0)
        self._since = (0.0, 0, 0.0)  # (time, steps done, images done) the rates are measured from.
        self._first, self._last_line = True, 0.0

    @contextlib.contextmanager
    def epoch(self, title: str, done: int, total: int, sums: Mapping[str, float]) -> Iterator[None]:
        """An epoch begins, or resumes at step `done` of `total` with the sums of the steps before; its bar is
        cleared when it ends, however it ends (a SIGTERM stop, a NaN loss)."""
        if not self._every_s:
            yield
            return
        now = self._clock()
        self._title, self._total, self._sums = title, total, {key: float(sums[key]) for key in SUMS}
        self._since, self._first, self._last_line = (now, done, self._sums["count"]), True, now
        if self._live:
            self._bar = display.bar(self._stream, total, title, initial=done)
        try:
            yield
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def update(self, done: int, totals: Mapping[str, float]) -> None:
        """After a step loop: `done` steps of the epoch, `totals` the loop's sums."""
        if not self._every_s:
            return
        now = self._clock()
        for key in SUMS:
            self._sums[key] += totals[key]
        text = self._describe(now, done)
        if self._first:  # Rates from here on leave out the first call, and with it any tracing.
            self._since, self._first = (now, done, self._sums["count"]), False
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            drawn = self._bar.update(done - self._bar.n)  # Drawn unless within tqdm's minimum interval (0.1 s).
            if done == self._total and not drawn:
                self._bar.refresh()  # The bar is seen to reach the total.
        elif done < self._total and now - self._last_line >= self._every_s:  # At the end, the epoch's line says it.
            self._last_line = now
            logging.info("%s: step %d/%d (%d%%), %s", self._title, done, self._total, 100 * done // self._total, text)

    def _describe(self, now: float, done: int) -> str:
        sums = self._sums
        since, steps_since, images_since = self._since
        seconds = max(now - since, 1e-9)
        eta = display.eta(self._total - done, (done - steps_since) / seconds)
        return (
            f"loss={sums['loss'] / sums['count']:.4f} accuracy={sums['correct'] / sums['count']:.4f}, "
            f"{(sums['count'] - images_since) / seconds:.1f} images/s, ETA {eta}"
        )
