"""How progress reaches a person: a bar where the stream shows one redrawn in place (a terminal, a Jupyter
notebook), log lines elsewhere (CI, cloud logs, files). Both packages use it; it imports neither Beam nor TensorFlow.

The bar is tqdm's, used as a renderer only: it draws when its owner updates it (no refresh thread), on the stream
given, fitted to the terminal's width, and as plain text with carriage returns, which Jupyter's front ends redraw
in place as a terminal does. Not Keras's Progbar: it writes to stdout and draws in place on every POSIX system,
terminal or not. Not rich: a live display in Jupyter needs ipywidgets, which is not installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TextIO

import tqdm


def live(stream: TextIO) -> bool:
    """Whether `stream` shows a bar redrawn in place: a terminal, or a Jupyter kernel's stream (ipykernel's
    OutStream is not a TTY, but notebooks, JupyterLab, VS Code and Colab render its carriage returns)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or type(stream).__module__.startswith("ipykernel.")


def duration(seconds: float) -> str:
    """`m:ss` under an hour, `h:mm:ss` from there: how an ETA is written (as tqdm and Keras write theirs)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta(remaining: float, per_second: float) -> str:
    """The time `remaining` units take at `per_second`, as `duration` writes it; `?` before anything was done."""
    return duration(remaining / per_second) if per_second > 0 else "?"


class _Bar(tqdm.tqdm):
    """Clears itself before a log line is written (a library's warning from a worker thread, say), so the line
    starts at the margin instead of after the bar; the bar is drawn again at its owner's next update."""

    monitor_interval = 0  # No monitor thread either: nothing runs between its owner's updates.

    def __init__(self, **kwargs: Any) -> None:
        self._handlers = list(logging.getLogger().handlers)  # absl's, under absl.app.run; pytest's, in tests.
        self._cleared_for: logging.LogRecord | None = None
        super().__init__(**kwargs)
        for handler in self._handlers:
            handler.addFilter(self._clear_for)  # Last, so it runs once the handler's own filters let a line through.

    def _clear_for(self, record: logging.LogRecord) -> bool:
        if record is not self._cleared_for:  # Once per line, however many handlers write it.
            self._cleared_for = record
            self.clear()
        return True

    def close(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._clear_for)
        super().close()


def bar(stream: TextIO, total: int, title: str, initial: int = 0) -> tqdm.tqdm:
    """A bar of `total` units on `stream`: `title`, percentage, bar, counts, then the owner's text (set with
    `set_postfix_str`). `close()` clears it, so the log line that follows takes its place.

    On a terminal that reports its size, the line is cut to its width (a wrapped line is not redrawn in place). A
    pseudo-terminal that reports none (0 x 0, as `script` or `docker run -t` may give) would make tqdm draw nothing:
    there, and in notebooks, the line is left whole.
    """
    sized = min(_size(stream)) > 0
    return _Bar(
        total=total,
        initial=initial,
        desc=title,
        file=stream,
        leave=False,
        dynamic_ncols=sized,
        ncols=None if sized else 1000,
        nrows=None if sized else 1000,
        bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}{postfix}",
    )


def _size(stream: TextIO) -> tuple[int, int]:
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # Not a file descriptor (io.UnsupportedOperation), not a terminal.
        return (0, 0)
