"""A tf.data input pipeline and a custom tf.distribute training loop for image classifiers.

The Python API (trainer/api.py): `trainer.train_model(config, **overrides)`, `trainer.evaluate_model(...)` and
`trainer.load_export(path)`, the commands `python -m trainer.main` and `python -m trainer.predict` as functions.
They are imported on first use, so that `python -m trainer.predict` does not load the training code.
"""

from typing import Any

from data_prep import logs

logs.hide_library_noise()
logs.import_tensorflow()

__all__ = ["train_model", "evaluate_model", "load_export"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from trainer import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
