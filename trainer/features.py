"""Feature datasets on the trainer's side: the frozen base their features came from, rebuilt and checked.

A feature dataset (`python -m data_prep.extract_features`) holds a VGG16 base's outputs, and `vgg16_head` trains on
them. Its metadata.json records the base: the weights file and its sha256, the input size and the normalization. From
that record `classifier` rebuilds the image classifier a trained head stands for (the export takes image bytes like
every other).
"""

from __future__ import annotations

import hashlib
import os

import keras
import tensorflow as tf

from data_prep import schema
from trainer import input_pipeline, models
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
