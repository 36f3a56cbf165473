"""What data_prep's commands share: their flags parsed and the rest left for Beam, bad input as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from data_prep import options


def parse_flags(argv: list[str]) -> list[str]:
    """The command's flags are parsed; the others are returned (after the program name) for Beam."""
    try:
        return flags.FLAGS(argv, known_only=True)
    except flags.Error as e:
        sys.exit(f"error: {e}")


def command(job: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str]], None]:
    """A command's main: runs `job(argv)` (an API function's wrapper, which shows our lines and hides Beam's); a
    UserError exits 1 with one line."""

    def main(argv: Sequence[str]) -> None:
        try:
            job(argv)
        except options.UserError as e:
            sys.exit(f"error: {e}")

    return main


def run(main: Callable[[Sequence[str]], None]) -> None:
    app.run(main, flags_parser=parse_flags)
