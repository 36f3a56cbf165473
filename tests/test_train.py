"""The training loop on one device with in-memory data: metrics, evaluation, checkpoints, precision, phases."""

import json
import os
import re
import shutil
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from multiworker_train import make_arrays, make_config, make_data

from trainer import config_fields, distribution, models, steps, train


@pytest.fixture
def policy():
    """Sets a Keras dtype policy for one test and restores float32 after it."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def _weights(model):
    return [np.asarray(w) for w in model.weights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """lenet5, 2 epochs of 8 steps run as 3+3+2 steps per call, evaluated on 33 examples (a last batch of 1)."""
    config = make_config(str(tmp_path_factory.mktemp("run")))
    model, history = train.train_and_evaluate(config, tf.distribute.get_strategy(), make_data(8))
    return config, model, history


def test_training_learns_and_logs_every_epoch(trained):
    config, _, history = trained
    assert [(r["phase"], r["epoch"], r["step"]) for r in history] == [("train", 1, 8), ("train", 2, 16)]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["val_accuracy"] >= 0.9
    with open(os.path.join(config.model_dir, train.METRICS_FILE)) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    with open(os.path.join(config.model_dir, train.CONFIG_FILE)) as f:
        assert json.load(f)["model"]["name"] == "lenet5"


def test_checkpoint_holds_model_optimizer_and_counters(trained):
    config, model, _ = trained
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, train.CHECKPOINT_SUBDIR))
    assert latest.endswith("ckpt-16")  # Numbered by step.
    reader = tf.train.load_checkpoint(latest)
    assert [reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE") for name in ("epoch", "step", "phase")] == [
        2,
        16,
        1,
    ]  # Phase 1 of 1: training is over.
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 16
    restored = models.build_model("lenet5", (16, 16, 1), 2)
    tf.train.Checkpoint(model=restored).restore(latest).expect_partial()
    for a, b in zip(_weights(model), _weights(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_evaluation_counts_each_example_once_including_the_partial_batch(trained):
    config, model, history = trained
    images, labels = make_arrays(33, seed=2)
    probs = np.asarray(model(images, training=False))[:, 0]
    expected_loss = np.mean(
        np.asarray(keras.losses.binary_crossentropy(labels[:, None].astype(np.float32), probs[:, None]))
    )
    expected_accuracy = np.mean((probs > 0.5) == labels)
    assert history[-1]["val_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert history[-1]["val_accuracy"] == pytest.approx(expected_accuracy)

    eval_config = config.copy_and_resolve_references()  # The fixture's config stays the training run's.
    eval_config.mode = "eval"
    eval_config.eval_checkpoint = tf.train.latest_checkpoint(os.path.join(config.model_dir, train.CHECKPOINT_SUBDIR))
    _, (record,) = train.train_and_evaluate(eval_config, tf.distribute.get_strategy(), make_data(8))
    assert record["checkpoint"].endswith("ckpt-16")
    assert record["val_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_a_checkpoint_whose_counters_do_not_fit_the_config_is_refused(trained, tmp_path):
    """The trained run ended at step 16 after 2 epochs of 8 steps; with 16 steps per epoch (twice the data) its
    step would be 16 steps before its epoch's start."""
    config, _, _ = trained
    model_dir = tmp_path / "run"
    shutil.copytree(os.path.join(config.model_dir, train.CHECKPOINT_SUBDIR), model_dir / train.CHECKPOINT_SUBDIR)
    before = sorted(os.listdir(model_dir / train.CHECKPOINT_SUBDIR))
    latest = tf.train.latest_checkpoint(str(model_dir / train.CHECKPOINT_SUBDIR))
    message = (
        f"{latest} (epoch 2, step 16, phase 1) does not fit this config (16 steps per epoch, 1 phases): "
        "resume with the run's own config.json, or train in a new --model_dir."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        train.train_and_evaluate(make_config(str(model_dir)), tf.distribute.get_strategy(), make_data(8, num_train=128))
    assert sorted(os.listdir(model_dir / train.CHECKPOINT_SUBDIR)) == before


def test_evaluation_refuses_a_split_of_the_wrong_size(tmp_path):
    data = make_data(8)
    data = train.Data(**{**data.__dict__, "eval_examples": 40})
    with pytest.raises(RuntimeError, match="saw 33 examples, the split has 40"):
        train.train_and_evaluate(make_config(str(tmp_path), epochs=1), tf.distribute.get_strategy(), data)


def test_one_device_and_xla_match_the_default_strategy(trained, tmp_path):
    _, reference, _ = trained
    one_device, _ = train.train_and_evaluate(
        make_config(str(tmp_path / "one")), distribution.make_strategy("one_device"), make_data(8)
    )
    jit, _ = train.train_and_evaluate(
        make_config(str(tmp_path / "jit"), jit_compile=True), tf.distribute.get_strategy(), make_data(8)
    )
    for a, b, c in zip(_weights(reference), _weights(one_device), _weights(jit), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)
        np.testing.assert_allclose(c, a, atol=1e-4)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(policy, tmp_path, precision):
    policy(precision)
    optimizer = steps.make_optimizer("sgd", 0.1)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    config = make_config(str(tmp_path), epochs=1, mixed_precision=precision)
    model, history = train.train_and_evaluate(config, tf.distribute.get_strategy(), make_data(8))
    assert model.layers[0].compute_dtype == precision.split("_")[1]
    assert model.layers[-1].compute_dtype == "float32"
    assert np.isfinite(history[0]["train_loss"]) and history[0]["val_accuracy"] > 0.5
    reader = tf.train.load_checkpoint(os.path.join(tmp_path, train.CHECKPOINT_SUBDIR, "ckpt-8"))
    has_loss_scale = any("dynamic_scale" in name for name in reader.get_variable_to_shape_map())
    assert has_loss_scale == (precision == "mixed_float16")


def test_vgg16_two_phases_train_the_head_then_block5(tmp_path):
    config = make_config(str(tmp_path), mode="train", epochs=1, optimizer="rmsprop", learning_rate=1e-3)
    config.model.update(name="vgg16_transfer", weights="none", freeze_base=True)
    config.fine_tune.update(epochs=1, learning_rate=1e-3)
    data = make_data(8, num_train=16, image_shape=(32, 32, 3))

    def build():
        keras.utils.set_random_seed(config.seed)
        return models.build_model("vgg16_transfer", (32, 32, 3), 2, weights="none")

    initial = build()
    np.testing.assert_array_equal(_weights(initial)[0], _weights(build())[0])  # Same seed, same initial weights.
    _, history = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    assert [(r["phase"], r["epoch"]) for r in history] == [("train", 1), ("fine_tune", 2)]

    def changed_layers(before, after_checkpoint):
        after = build()
        tf.train.Checkpoint(model=after).restore(
            os.path.join(tmp_path, train.CHECKPOINT_SUBDIR, after_checkpoint)
        ).expect_partial()
        names = []
        for layer_before, layer_after in zip(_all_layers(before), _all_layers(after), strict=True):
            if any(
                not np.array_equal(a, b) for a, b in zip(_weights(layer_before), _weights(layer_after), strict=True)
            ):
                names.append(layer_before.name)
        return after, names

    after_phase1, changed = changed_layers(initial, "ckpt-2")  # 2 steps per epoch.
    assert changed == ["head_dense", "predictions"]
    _, changed = changed_layers(after_phase1, "ckpt-4")
    assert changed == ["block5_conv1", "block5_conv2", "block5_conv3", "head_dense", "predictions"]
    for checkpoint, next_phase in (("ckpt-2", 1), ("ckpt-4", 2)):
        reader = tf.train.load_checkpoint(os.path.join(tmp_path, train.CHECKPOINT_SUBDIR, checkpoint))
        assert reader.get_tensor("phase/.ATTRIBUTES/VARIABLE_VALUE") == next_phase


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        elif layer.weights:
            yield layer


def test_phases_and_config_checks():
    config = make_config("/tmp/unused")
    assert [p.name for p in train.phases(config)] == ["train"]
    config.model.update(name="vgg16_transfer", freeze_base=True)
    config.fine_tune.epochs = 3
    assert [(p.name, p.epochs, p.unfreeze_from) for p in train.phases(config)] == [
        ("train", 2, None),
        ("fine_tune", 3, "block5_conv1"),
    ]
    config.epochs = 0
    assert [p.name for p in train.phases(config)] == ["fine_tune"]
    config_fields.validate(config)
    config.model.name = "lenet5"
    with pytest.raises(ValueError, match="vgg16_transfer only"):
        config_fields.validate(config)
    with pytest.raises(ValueError, match="--mode='predict'"):
        config_fields.validate(make_config("/tmp/unused", mode="predict"))
    with pytest.raises(ValueError, match="--model_dir is required"):
        config_fields.validate(make_config(""))


def test_xla_with_synchronized_batch_norm_on_several_replicas_is_refused():
    model = models.build_model("cifar_cnn", (32, 32, 3), 10)
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ValueError, match="synchronized BatchNormalization"):
        steps.make_train_loop(two_replicas, model, keras.optimizers.SGD(), global_batch_size=8, jit_compile=True)
