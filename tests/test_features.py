"""Training on a feature dataset: the same training as end to end on the frozen base, the head run through the
trainer (mirrored on 2 CPUs), and its export on image bytes."""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from feature_datasets import learnable_pixels, write_feature_dataset, write_image_dataset
from PIL import Image

from configs import catsdogs_vgg16_features
from trainer import checkpointing, errors, export, features, input_pipeline, models, predict, steps, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32  # VGG16's base turns 32x32 images into 1x1x512 features.
FEATURES_SHAPE = (1, 1, 512)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A random VGG16 base saved as a weights file, a 32 px image dataset (24 train, 11 validation) and its features
    by that base."""
    root = tmp_path_factory.mktemp("features")
    keras.utils.set_random_seed(0)
    base = models.vgg16_base((SIZE, SIZE, 3), None)
    weights = str(root / "vgg16_base.weights.h5")
    base.save_weights(weights)
    images = write_image_dataset(root / "images", {"train": [12, 12], "validation": [6, 5]}, size=SIZE)
    return types.SimpleNamespace(
        root=root,
        weights=weights,
        images=images,
        features=write_feature_dataset(images, root / "features", base, weights=weights),
    )


def _head_weights(model):
    return [w for name in models.HEAD_LAYERS for w in model.get_layer(name).get_weights()]


def _checkpointed_head(run_dir):
    head = models.build_model(models.HEAD_MODEL, FEATURES_SHAPE, 2)
    tf.train.Checkpoint(model=head).restore(checkpointing.best_or_latest_checkpoint(run_dir)).expect_partial()
    return head


def test_training_the_head_on_features_is_training_it_end_to_end_on_the_frozen_base(datasets, monkeypatch):
    """Same initial weights, the same batches (both input pipelines, same seed), no augmentation, dropout off: the
    trainer's own step gives the same losses and weights both ways."""
    monkeypatch.setattr(models, "HEAD_DROPOUT", 0.0)
    transfer = models.build_model("vgg16_transfer", (SIZE, SIZE, 3), 2, weights=datasets.weights)
    models.set_base_trainable(transfer, None)
    head = models.build_model(models.HEAD_MODEL, FEATURES_SHAPE, 2)
    models.copy_head(transfer, head)
    initial_head, base = _head_weights(head), [np.asarray(w) for w in transfer.get_layer(models.VGG16_BASE).weights]

    def train_steps(model, data_dir, num_steps=12):  # 2 passes over the 24 examples in batches of 4.
        info = input_pipeline.open_dataset(data_dir)
        input_fn = input_pipeline.make_input_fn(
            info,
            "train",
            training=True,
            image_size=(SIZE, SIZE),
            global_batch_size=4,
            normalization="vgg16",
            seed=3,
            deterministic=True,
        )
        strategy = tf.distribute.get_strategy()
        optimizer = steps.make_optimizer("rmsprop", 1e-3)
        optimizer.build(model.trainable_variables)
        loop = steps.make_train_loop(strategy, model, optimizer, global_batch_size=4, jit_compile=False)
        iterator = iter(strategy.distribute_datasets_from_function(input_fn))
        return [float(loop(iterator, tf.constant(1))["loss"]) for _ in range(num_steps)]

    on_features = train_steps(head, datasets.features)
    end_to_end = train_steps(transfer, datasets.images)
    np.testing.assert_allclose(on_features, end_to_end, rtol=1e-6)
    assert len(set(on_features)) == len(on_features), "every batch is a different one"
    for a, b, before in zip(_head_weights(head), _head_weights(transfer), initial_head, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert not np.array_equal(a, before)
    for a, b in zip(transfer.get_layer(models.VGG16_BASE).weights, base, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_models_and_datasets_of_the_other_kind_are_refused(datasets):
    config = catsdogs_vgg16_features.get_config()
    config.update(data_dir=datasets.images, model_dir="/unused", image_size=(SIZE, SIZE))
    with pytest.raises(errors.UserError, match="model vgg16_head trains on a feature dataset and .* holds images"):
        train.load_data(config)
    config.update(data_dir=datasets.features)
    assert train.load_data(config).input_shape == FEATURES_SHAPE
    config.model.name = "lenet5"
    with pytest.raises(errors.UserError, match="holds features of a frozen vgg16 base, which model vgg16_head trains"):
        train.load_data(config)


def _train_on_the_command_line(config_file, data_dir, model_dir, *flags):
    """`python -m trainer.main` on mirrored over 2 logical CPUs, at 32 px, batches of 8 (4 per replica)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.main",
            f"--config={config_file}",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--mixed_precision=float32",
            f"--config.image_size={SIZE},{SIZE}",
            "--global_batch_size=8",
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(model_dir, train.METRICS_FILE)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def head_run(datasets):
    """The features config: 2 epochs of 3 steps, validation on 11 examples (2 replicas, padded), export."""
    run_dir = str(datasets.root / "head")
    history = _train_on_the_command_line(
        "configs/catsdogs_vgg16_features.py", datasets.features, run_dir, "--epochs=2", "--learning_rate=1e-3"
    )
    assert [(r["phase"], r["epoch"], r["step"]) for r in history] == [("train", 1, 3), ("train", 2, 6)]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["val_accuracy"] <= 1 for r in history)
    return run_dir


@pytest.mark.slow
def test_the_head_trains_through_the_trainer_and_its_export_classifies_image_bytes(datasets, head_run):
    rng = np.random.default_rng(7)
    encoded = []
    for label, size in ((0, SIZE), (1, SIZE), (1, 45)):  # The last one is resized by the signature.
        buffer = io.BytesIO()
        Image.fromarray(learnable_pixels(label, size, rng)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    saved_model = os.path.join(head_run, export.EXPORT_SUBDIR, export.SAVED_MODEL_SUBDIR)
    outputs = predict.load(saved_model)(**{predict.INPUT: tf.constant(encoded)})

    base = models.vgg16_base((SIZE, SIZE, 3), datasets.weights)
    head = _checkpointed_head(head_run)
    images = tf.stack([input_pipeline.decode_resize(e, 3, SIZE, SIZE) for e in encoded])
    p = np.asarray(head(base(keras.applications.vgg16.preprocess_input(tf.cast(images, tf.float32)))))
    np.testing.assert_allclose(outputs[predict.PROBABILITIES].numpy(), np.concatenate([1 - p, p], -1), atol=1e-6)
    assert outputs[predict.CLASSES].numpy()[0].tolist() == [b"cat", b"dog"]

    keras_model = keras.models.load_model(os.path.join(head_run, export.EXPORT_SUBDIR, export.KERAS_FILE))
    assert keras_model.name == "vgg16_transfer"
    for a, b in zip(_head_weights(keras_model), _head_weights(head), strict=True):
        np.testing.assert_array_equal(a, b)


def test_export_rebuilds_only_the_recorded_base(datasets, tmp_path):
    info = input_pipeline.open_dataset(datasets.features)
    head = models.build_model(models.HEAD_MODEL, FEATURES_SHAPE, 2)

    def exporting(**spec):
        metadata = dataclasses.replace(info.metadata, features=dataclasses.replace(info.metadata.features, **spec))
        changed = input_pipeline.DatasetInfo(info.data_dir, metadata)
        return export.export_model(head, str(tmp_path / "export"), changed, (SIZE, SIZE), "vgg16")

    missing = str(tmp_path / "missing.weights.h5")
    with pytest.raises(FileNotFoundError, match=f"{missing}, the vgg16 weights file the features in .* does not exist"):
        exporting(weights=missing)
    with pytest.raises(errors.UserError, match=f"{re.escape(datasets.weights)} has sha256 .*, but the features"):
        exporting(weights_sha256="0" * 64)
    with pytest.raises(errors.UserError, match="randomly initialised vgg16 .* cannot be rebuilt"):
        exporting(weights="none", weights_sha256="")
    assert not os.path.exists(tmp_path / "export")
    random_base = dataclasses.replace(info.metadata.features, weights="none", weights_sha256="")
    metadata = dataclasses.replace(info.metadata, features=random_base)
    assert features.servable(info) and not features.servable(input_pipeline.DatasetInfo(info.data_dir, metadata))
