"""Feature datasets on the trainer's side: the frozen base their features came from, rebuilt and checked.

A feature dataset (`python -m data_prep.extract_features`) holds a VGG16 base's outputs, and `vgg16_head` trains on
them. Its metadata.json records the base: the weights file and its sha256, the input size and the normalization. From
that record `classifier` rebuilds the image classifier a trained head stands for (the export takes image bytes like
every other), and `init_head` starts a vgg16_transfer run from a head run (config.init_head_from) once the base, the
images and the classes are checked to be the same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from data_prep import schema
from trainer import checkpointing, input_pipeline, models
from trainer.errors import UserError

RANDOM_WEIGHTS = ("", "none")  # A base's recorded weights when it was randomly initialised: nothing to rebuild it.
BASE_CHANNELS = 3  # VGG16 takes RGB.


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def servable(info: input_pipeline.DatasetInfo) -> bool:
    """Whether an export can rebuild the base of this feature dataset (not a random one) or needs none (images)."""
    return info.metadata.features is None or info.metadata.features.weights not in RANDOM_WEIGHTS


def base_weights_file(spec: schema.FeatureSpec, data_dir: str) -> str:
    """The local weights file of the base `spec` (of the feature dataset `data_dir`) records, checked by sha256.

    The recorded path, or, for the ImageNet file extracted on another machine (a Dataflow worker), the same file in
    this machine's Keras cache. A missing file is a FileNotFoundError, a different one a UserError; both name it.
    """
    if spec.base_model != models.VGG16_BASE:
        raise UserError(
            f"{data_dir} holds features of base {spec.base_model!r}; the trainer builds {models.VGG16_BASE}."
        )
    if spec.weights in RANDOM_WEIGHTS:
        raise UserError(
            f"{data_dir} holds features of a randomly initialised {spec.base_model} (weights {spec.weights!r}), "
            "which was not saved and cannot be rebuilt: extract with --weights=imagenet or a weights file."
        )
    path = spec.weights
    if not os.path.isfile(path) and os.path.basename(path) == models.VGG16_NOTOP_WEIGHTS_FILE:
        path = models.vgg16_weights_file("imagenet")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{spec.weights}, the {spec.base_model} weights file the features in {data_dir} were extracted with "
            f"(sha256 {spec.weights_sha256}), does not exist: put that file there."
        )
    digest = sha256_file(path)
    if digest != spec.weights_sha256:
        raise UserError(
            f"{path} has sha256 {digest}, but the features in {data_dir} were extracted with {spec.weights} of sha256 "
            f"{spec.weights_sha256}: put that file at {path}, or extract the features again with this one."
        )
    return path


def classifier(head: keras.Model, info: input_pipeline.DatasetInfo) -> keras.Model:
    """The image classifier that `head` (a vgg16_head trained on `info`'s features) stands for: vgg16_transfer with
    the base the features came from (its weights file checked by sha256) and this head."""
    spec = info.metadata.features
    assert spec is not None, f"{info.data_dir} holds images"
    height, width = spec.input_size
    model = models.vgg16_transfer(
        (height, width, BASE_CHANNELS), info.num_classes, base_weights_file(spec, info.data_dir)
    )
    models.copy_head(head, model)
    return model


def init_head(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    run_config: Mapping[str, Any],
    class_names: Sequence[str],
) -> str:
    """Sets the head of `model` (vgg16_transfer, built from `config`) to the trained head of the vgg16_head run
    config.init_head_from (whose config.json is `run_config`): its best, else latest, checkpoint.

    Refused (UserError) unless that run's feature dataset was extracted from the images this run sees (image_size,
    normalization), by the base this run builds (base model and the sha256 of its weights file: a head trained on
    another base's features would start fine-tuning from noise), for the same classes. Returns the checkpoint.
    """
    run_dir = config.init_head_from
    where = f"init_head_from={run_dir}"
    if run_config["model"]["name"] != models.HEAD_MODEL:
        raise UserError(
            f"{where} is a run of model {run_config['model']['name']}, not of {models.HEAD_MODEL} (a head trained on "
            "a feature dataset, e.g. with configs/catsdogs_vgg16_features.py)."
        )
    checkpoint = checkpointing.best_or_latest_checkpoint(run_dir)
    if not checkpoint:
        raise FileNotFoundError(f"{where}: no checkpoint in its best/ or checkpoints/; train the head there first.")
    data_dir = run_config["data_dir"]
    try:
        info = input_pipeline.DatasetInfo(data_dir, schema.DatasetMetadata.read(data_dir))
        spec = input_pipeline.check_feature_images(info, config.image_size, config.normalization)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{where}: its feature dataset {data_dir} records the head's base: {e}") from None
    except ValueError as e:  # UserError, or the contract's MetadataError.
        raise UserError(f"{where}: {e}") from None
    if tuple(info.class_names) != tuple(class_names):
        raise UserError(f"{where}: its classes {list(info.class_names)} are not this dataset's {list(class_names)}.")
    _check_same_base(spec, config.model.weights, where)
    head = models.vgg16_head(spec.shape, len(class_names))
    tf.train.Checkpoint(model=head).restore(checkpoint).assert_existing_objects_matched().expect_partial()
    models.copy_head(head, model)
    logging.info("Head initialised from %s (features of %s in %s).", checkpoint, spec.weights, info.data_dir)
    return checkpoint


def _check_same_base(spec: schema.FeatureSpec, weights: str, where: str) -> None:
    """The base `weights` (config.model.weights) must be the one the features were extracted with."""
    if spec.weights in RANDOM_WEIGHTS:
        raise UserError(
            f"{where}: the head was trained on features of a randomly initialised {spec.base_model}, which was not "
            "saved: no other run can have its base."
        )
    ours = "" if weights in RANDOM_WEIGHTS else sha256_file(models.vgg16_weights_file(weights))
    if spec.base_model != models.VGG16_BASE or ours != spec.weights_sha256:
        raise UserError(
            f"{where}: the head was trained on features of {spec.base_model} with weights {spec.weights!r} (sha256 "
            f"{spec.weights_sha256}), this run's base has weights {weights!r} (sha256 {ours or '-'}): set "
            "--config.model.weights to the file the features were extracted with."
        )
