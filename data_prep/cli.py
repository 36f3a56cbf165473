"""What the commands share: their flags parsed (the rest left for Beam), `--help` as a success, bad input as one
line, and the console scripts of setup.py's entry_points."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from data_prep import logs, options


def parse_flags(argv: list[str]) -> list[str]:
    """The command's flags are parsed; the others are returned (after the program name) for Beam."""
    logs.help_if_asked(argv)
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


def run_as_main(module: str) -> None:
    """`python -m module` under a console script's name: the module runs as __main__, where its flags are defined
    and absl finds the docstring it prints as the help (the script's own __main__ is pip's wrapper)."""
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def build_command() -> None:
    """imgcls-build: python -m data_prep.build."""
    run_as_main("data_prep.build")


def extract_features_command() -> None:
    """imgcls-extract-features: python -m data_prep.extract_features."""
    run_as_main("data_prep.extract_features")


def show_command() -> None:
    """imgcls-show: python -m data_prep.show."""
    run_as_main("data_prep.show")
