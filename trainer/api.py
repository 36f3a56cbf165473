"""The trainer in Python: training, evaluation and prediction as functions, for notebooks and scripts.

  import trainer
  run = trainer.train_model("configs/catsdogs_demo.py", data_dir="data/catsdogs", model_dir="runs/demo")
  report = trainer.evaluate_model(run.config)
  classify = trainer.load_export(run.export_dir)
  classify("cat.jpg")  # [('cat', 0.97), ('dog', 0.03)]

A config is a config file's path (what --config takes) or a ConfigDict; overrides are config fields by name, as
`python -m trainer.main` sets them with --FIELD or --config.FIELD (`epochs=3`, `strategy="off"`, and
`**{"fine_tune.epochs": 2}` for a nested field). The functions raise what the command reports as one line
(trainer.main.USER_ERRORS) and show our progress and epoch lines on stderr (data_prep.logs.shown). TensorFlow
configures its devices once per process: `num_cpu_devices` can only be repeated, not changed, in one session.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from typing import Any, TypeAlias, overload

import keras
import ml_collections
import tensorflow as tf

from data_prep import logs
from trainer import config_fields, export, predict, train
from trainer.errors import ConfigError

Config: TypeAlias = str | os.PathLike[str] | ml_collections.ConfigDict
Image: TypeAlias = str | os.PathLike[str] | bytes  # A file (local or gs://), or an encoded image.


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What train_model returns: the run's config (resolved, validated), its model, history and directories."""

    config: ml_collections.ConfigDict
    model: keras.Model  # As exported: restored to the best (else latest) checkpoint.
    history: list[dict[str, Any]]  # One record per epoch of the whole run (metrics.jsonl), resumed ones included.
    model_dir: str
    export_dir: str | None  # model_dir/export/saved_model; None when nothing was exported.


def load_config(config: Config, **overrides: Any) -> ml_collections.ConfigDict:
    """`config` with `overrides` applied, validated; a copy (a ConfigDict passed in is left as it is)."""
    if isinstance(config, ml_collections.ConfigDict):
        resolved = copy.deepcopy(config)
    else:
        resolved = _read_config_file(os.fspath(config))
    for name, value in overrides.items():
        if name not in config_fields.BY_NAME:
            raise ConfigError(f"unknown config field {name}: the fields are those of trainer/config_fields.py.")
        *parents, leaf = name.split(".")
        group = resolved
        for parent in parents:
            group = group[parent]
        try:
            group[leaf] = value
        except TypeError as e:  # ConfigDict keeps each field's type.
            raise ConfigError(f"{name}={value!r}: {e}") from None
    config_fields.validate(resolved)
    return resolved


def _read_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found (configs/*.py in this repository: see `--help`)")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def train_model(config: Config, **overrides: Any) -> TrainedRun:
    """`python -m trainer.main --config=CONFIG`: trains (resuming from model_dir's latest checkpoint), evaluates every
    epoch and exports; the mode must be train or train_and_eval (evaluate_model evaluates)."""
    resolved = load_config(config, **overrides)
    if resolved.mode == "eval":
        raise ConfigError("mode='eval': call evaluate_model for an evaluation")
    with logs.shown():
        model, history = train.run(resolved)
    saved_model = tf.io.gfile.join(resolved.model_dir, export.EXPORT_SUBDIR, export.SAVED_MODEL_SUBDIR)
    exported = tf.io.gfile.exists(tf.io.gfile.join(saved_model, "saved_model.pb"))
    return TrainedRun(resolved, model, history, resolved.model_dir, saved_model if exported else None)


def evaluate_model(config: Config, **overrides: Any) -> dict[str, Any]:
    """`python -m trainer.main --config=CONFIG --mode=eval`: evaluates the best (else latest) checkpoint on the
    test split and returns the report it writes to model_dir/eval/<split>.json (loss, accuracy, per_class,
    confusion_matrix, ...) with, under "mistakes", the list in <split>_mistakes.json (the most confidently wrong
    examples: filename, true, predicted, probability). Every worker of a multi-worker run returns it; only the chief
    writes it."""
    resolved = load_config(config, **{**overrides, "mode": "eval"})
    with logs.shown():
        _, [evaluation] = train.run(resolved)
    return {**evaluation["report"], "mistakes": evaluation["mistakes"]}


class Classifier:
    """An export as a function: `classify(image)` gives the `top_k` (class, probability) pairs, most probable first;
    `classify([image, ...])` one such list per image. An image is a file (local or gs://) or encoded bytes (JPEG,
    PNG, GIF, BMP, WebP); one that cannot be read is a FileNotFoundError or OSError, one that does not decode a
    ValueError."""

    def __init__(self, path: str):
        self.path = path
        self._signature = predict.load(path)

    @overload  # str and bytes are sequences too: the first match wins.
    def __call__(self, images: Image, top_k: int = ...) -> predict.Prediction: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, images: Sequence[Image], top_k: int = ...) -> list[predict.Prediction]: ...
    def __call__(self, images, top_k=3):
        if isinstance(images, (str, bytes, os.PathLike)):
            return predict.classify(self._signature, _encoded(images), top_k)
        return [predict.classify(self._signature, _encoded(image), top_k) for image in images]


def _encoded(image: Image) -> bytes:
    if isinstance(image, bytes):
        return image
    path = os.fspath(image)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except tf.errors.OpError as e:
        raise OSError(f"{path}: cannot read it ({str(e).splitlines()[0]})") from None


def load_export(path: str | os.PathLike[str]) -> Classifier:
    """The serving export at `path` (a run's model_dir/export/saved_model, TrainedRun.export_dir) as a Classifier,
    as `python -m trainer.predict --model=PATH` uses it."""
    return Classifier(os.fspath(path))
