"""Training on a feature dataset: the same training as end to end on the frozen base, the head run through the
trainer (mirrored on 2 CPUs), its export on image bytes, and a vgg16_transfer run started from its head."""

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from feature_datasets import learnable_pixels, write_feature_dataset, write_image_dataset
from PIL import Image

from configs import catsdogs_vgg16, catsdogs_vgg16_features
from trainer import (
    checkpointing,
    config_fields,
    errors,
    evaluate,
    export,
    features,
    input_pipeline,
    models,
    predict,
    steps,
    train,
)

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
def test_eval_on_features_lists_the_mistakes_by_file_name_without_a_grid(datasets, head_run):
    """A feature dataset's records hold no image: --mode=eval (2 replicas) writes the mistakes JSON, not the PNG."""
    _train_on_the_command_line(
        "configs/catsdogs_vgg16_features.py",
        datasets.features,
        head_run,
        "--mode=eval",
        "--config.test_split=validation",
    )
    eval_dir = os.path.join(head_run, evaluate.REPORT_SUBDIR)
    with open(os.path.join(eval_dir, "validation.json")) as f:
        confusion = np.array(json.load(f)["confusion_matrix"])
    with open(os.path.join(eval_dir, "validation_mistakes.json")) as f:
        mistakes = json.load(f)
    info = input_pipeline.open_dataset(datasets.features)
    filenames = {e.filename for e in input_pipeline.read_examples(info, "validation", range(11)).values()}
    assert len(mistakes) == confusion.sum() - np.trace(confusion)
    assert all(m["filename"] in filenames and m["true"] != m["predicted"] for m in mistakes)
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    assert all(0.5 <= m["probability"] <= 1.0 for m in mistakes)
    assert not os.path.exists(os.path.join(eval_dir, "validation_mistakes.png"))


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


def _fine_tune_config(datasets, model_dir, **overrides):
    config = catsdogs_vgg16.get_config()
    config.update(
        {
            "data_dir": datasets.images,
            "model_dir": str(model_dir),
            "strategy": "off",
            "mixed_precision": "float32",
            "image_size": (SIZE, SIZE),
            "global_batch_size": 8,
            "epochs": 0,
            **overrides,
        }
    )
    config.model.weights = datasets.weights
    config.fine_tune.update(epochs=0, learning_rate=1e-3)
    return config


def _train(config):
    config_fields.validate(config)
    return train.train_and_evaluate(config, tf.distribute.get_strategy(), train.load_data(config))


@pytest.mark.slow
def test_init_head_from_starts_vgg16_transfer_from_exactly_the_trained_head(datasets, head_run, tmp_path):
    trained_head = _head_weights(_checkpointed_head(head_run))
    model, history = _train(_fine_tune_config(datasets, tmp_path / "zero", init_head_from=head_run))
    assert history == []
    for a, b in zip(_head_weights(model), trained_head, strict=True):
        np.testing.assert_array_equal(a, b)
    base = models.vgg16_base((SIZE, SIZE, 3), datasets.weights)
    for a, b in zip(model.get_layer(models.VGG16_BASE).weights, base.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    config = _fine_tune_config(datasets, tmp_path / "fine_tune", init_head_from=head_run)
    config.fine_tune.epochs = 1
    model, history = _train(config)  # Phase 1 has no epochs: fine-tuning starts from the trained head.
    assert [(r["phase"], r["epoch"], r["step"]) for r in history] == [("fine_tune", 1, 3)]
    fine_tuned = _head_weights(model)
    assert not any(np.array_equal(a, b) for a, b in zip(fine_tuned, trained_head, strict=True))
    resumed, _ = _train(config)  # A run that has a checkpoint restores it, not the head run's head.
    for a, b in zip(_head_weights(resumed), fine_tuned, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_init_head_from_refuses_another_base_other_images_and_other_runs(datasets, head_run, tmp_path):
    def refused(message, error=errors.UserError, **overrides):
        weights = overrides.pop("weights", datasets.weights)
        config = _fine_tune_config(datasets, tmp_path / "run", **overrides)
        config.model.weights = weights
        with pytest.raises(error, match=message):
            _train(config)

    sha = features.sha256_file(datasets.weights)
    keras.utils.set_random_seed(1)
    other = str(tmp_path / "other.weights.h5")
    models.vgg16_base((SIZE, SIZE, 3), None).save_weights(other)
    for weights, ours in ((other, features.sha256_file(other)), ("none", "-")):
        refused(
            re.escape(
                f"init_head_from={head_run}: the head was trained on features of vgg16 with weights "
                f"'{datasets.weights}' (sha256 {sha}), this run's base has weights '{weights}' (sha256 {ours}): set "
                "--config.model.weights to the file the features were extracted with."
            ),
            init_head_from=head_run,
            weights=weights,
        )
    refused(
        re.escape(f"init_head_from={head_run}: {datasets.features} holds vgg16 features of 32x32 images normalized")
        + ".*the config says image_size=\\(40, 40\\)",
        init_head_from=head_run,
        image_size=(40, 40),
    )
    not_a_head = tmp_path / "not_a_head"
    _train(_fine_tune_config(datasets, not_a_head))
    refused(f"is a run of model vgg16_transfer, not of {models.HEAD_MODEL}", init_head_from=str(not_a_head))
    refused("config.json not found: .* is not the model_dir of a training run", FileNotFoundError, init_head_from="/x")
    moved = tmp_path / "moved_head"
    for subdir in (checkpointing.BEST_SUBDIR, train.CHECKPOINT_SUBDIR):
        shutil.copytree(os.path.join(head_run, subdir), moved / subdir)
    with open(os.path.join(head_run, train.CONFIG_FILE)) as f:
        (moved / train.CONFIG_FILE).write_text(json.dumps({**json.load(f), "data_dir": str(tmp_path / "gone")}))
    refused(
        "its feature dataset .*gone records the head's base: .*metadata.json not found",
        FileNotFoundError,
        init_head_from=str(moved),
    )
    assert not os.path.exists(tmp_path / "run" / train.CHECKPOINT_SUBDIR), "refused before training"


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


@pytest.mark.slow
def test_the_tutorials_second_step_fine_tunes_from_the_head_on_the_command_line(datasets, head_run, tmp_path):
    history = _train_on_the_command_line(
        "configs/catsdogs_vgg16.py",
        datasets.images,
        str(tmp_path / "run"),
        f"--config.model.weights={datasets.weights}",
        f"--config.init_head_from={head_run}",
        "--epochs=0",
        "--config.fine_tune.epochs=1",
        "--config.fine_tune.learning_rate=1e-3",
    )
    assert [(r["phase"], r["epoch"], r["step"]) for r in history] == [("fine_tune", 1, 3)]
    assert os.path.exists(tmp_path / "run" / export.EXPORT_SUBDIR / export.SAVED_MODEL_SUBDIR / "saved_model.pb")
