"""data_prep in Python: the commands as functions, for notebooks and scripts.

  import data_prep
  report = data_prep.build_dataset(dataset="catsdogs", input_dir="raw", output_dir="data/catsdogs", image_size=80)
  grid, model_view = data_prep.show_examples("data/catsdogs")

Each function takes its command's flags as keyword arguments of the same names (`python -m data_prep.build --help`
lists them), returns the report the build wrote (`build_report.json`), raises `options.UserError` for bad input
(the commands print it as one line), and shows our progress and summary lines on stderr (`logs.shown`). The
commands are thin wrappers over these functions. Beam, TensorFlow and the trainer are imported only when a function
runs, so `import data_prep` stays light (Beam workers and the trainer import the package).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from data_prep import images, logs, options

# The image flags of data_prep.build, which BuildOptions holds as one ImageOptions (channels is the Keras sources').
_IMAGE_SETTINGS = tuple(f.name for f in dataclasses.fields(images.ImageOptions) if f.name != "channels")
BUILD_SETTINGS = tuple(f.name for f in dataclasses.fields(options.BuildOptions) if f.name != "image") + _IMAGE_SETTINGS
EXTRACT_SETTINGS = tuple(f.name for f in dataclasses.fields(options.ExtractOptions))


def build_dataset(*, dataset: str, output_dir: str, **settings: Any) -> dict[str, Any]:
    """`python -m data_prep.build`: builds a dataset at `output_dir` and returns its report.

    `settings` are the command's other flags by name, e.g. `input_dir="PetImages/.."`, `image_size=80`,
    `split="train:1000/class,validation:500/class,test:500/class"`, `overwrite=True`, `class_names=["a", "b"]`,
    `augmentation={"rotation": 0.05}` (or `["rotation=0.05"]`), and `beam_args=["--runner=DataflowRunner", ...]`
    for the flags the command passes on to Beam.
    """
    given = _checked("build_dataset", {"dataset": dataset, "output_dir": output_dir, **settings}, BUILD_SETTINGS)
    if isinstance(given.get("augmentation"), Mapping):
        given["augmentation"] = tuple(f"{name}={value}" for name, value in given["augmentation"].items())
    image = {name: given.pop(name) for name in _IMAGE_SETTINGS if name in given}
    try:
        image_options = images.ImageOptions(**image)
    except ValueError as e:
        raise options.UserError(str(e)) from None
    build_options = options.BuildOptions(image=image_options, **given)
    with logs.shown():
        from data_prep import driver  # Beam, whose import configures the root logger: undone by `shown`.

        return driver.build(build_options)


def extract_feature_dataset(*, data_dir: str, output_dir: str, **settings: Any) -> dict[str, Any]:
    """`python -m data_prep.extract_features`: writes the features of the image dataset at `data_dir` through a frozen
    base as a dataset at `output_dir` and returns its report.

    `settings` are the command's other flags by name, e.g. `weights="imagenet"` (or a weights file),
    `input_size=150`, `precision="float32"`, `augment_copies=2`, `overwrite=True`, and `beam_args=[...]`.
    """
    given = _checked(
        "extract_feature_dataset", {"data_dir": data_dir, "output_dir": output_dir, **settings}, EXTRACT_SETTINGS
    )
    extract_options = options.ExtractOptions(**given)
    with logs.shown():
        from data_prep import extract_features  # Beam (see build_dataset), and TensorFlow when it runs.

        return extract_features.extract(extract_options)


def show_examples(data_dir: str, **settings: Any) -> tuple[str, str | None]:
    """`python -m data_prep.show`: writes the PNG grids of the image dataset at `data_dir` (the first examples per
    class per split; the training ones as the model sees them) and returns their paths, the second None without a
    train split. In a notebook: `IPython.display.Image(path)`.

    `settings` are the command's other flags by name: `per_class=4`, `output="grid.png"`, `image_size`, `seed`,
    `max_classes`.
    """
    with logs.shown():
        from data_prep import show  # TensorFlow, through the trainer's input pipeline (augmentation as it applies it).

        return show.show(data_dir, **settings)


def _checked(function: str, given: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`given` with lists as tuples (the options are frozen); an unknown name is a TypeError listing the known."""
    if unknown := sorted(set(given) - set(names)):
        raise TypeError(f"{function}() got unknown settings {unknown}; the settings are {sorted(names)}")
    return {name: tuple(value) if isinstance(value, list) else value for name, value in given.items()}
