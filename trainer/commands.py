"""The trainer's console scripts (setup.py's entry_points): `python -m trainer.main` and `python -m trainer.predict`
under shorter names."""

from __future__ import annotations

import runpy


def train_command() -> None:
    """imgcls-train: python -m trainer.main."""
    runpy.run_module("trainer.main", run_name="__main__", alter_sys=True)  # As data_prep.cli.run_as_main.


def predict_command() -> None:
    """imgcls-predict: python -m trainer.predict."""
    runpy.run_module("trainer.predict", run_name="__main__", alter_sys=True)
