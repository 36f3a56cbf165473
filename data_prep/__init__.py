"""Apache Beam jobs that build TFDS-compatible TFRecord datasets from image folders and the Keras datasets.

The Python API (data_prep/api.py): `data_prep.build_dataset(...)`, `data_prep.extract_feature_dataset(...)` and
`data_prep.show_examples(...)`, the commands `python -m data_prep.build`, `data_prep.extract_features` and
`data_prep.show` as functions. They are
imported on first use: Beam workers and the trainer import this package, which must stay light.
"""

from typing import Any

from data_prep import logs

logs.hide_library_noise()

__all__ = ["build_dataset", "extract_feature_dataset", "show_examples"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from data_prep import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
