"""Errors that mean bad input, not a bug in the trainer.

`trainer.main` prints these as one line (`error: ...`) and exits 1; every other exception keeps its traceback, so
that a real bug is not mistaken for a user's mistake. They subclass ValueError, as the errors they replace did.
"""


class UserError(ValueError):
    """Input the user must fix: a dataset that does not fit the run, a model_dir written by another config, ..."""


class ConfigError(UserError):
    """A config field's value, or a combination of fields, is not allowed (see trainer/config_fields.py)."""
