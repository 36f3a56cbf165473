"""The trainer's console scripts (setup.py's entry_points): `python -m trainer.main` and `python -m trainer.predict`
under shorter names."""

from __future__ import annotations

from data_prep import cli


def train_command() -> None:
    """imgcls-train: python -m trainer.main."""
    cli.run_as_main("trainer.main")


def predict_command() -> None:
    """imgcls-predict: python -m trainer.predict."""
    cli.run_as_main("trainer.predict")
