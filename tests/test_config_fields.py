"""The config field table: defaults, the one validation of a resolved config, its messages."""

import subprocess
import sys

import ml_collections
import pytest
from multiworker_train import make_config

from configs import default
from trainer import config_fields
from trainer.errors import ConfigError, UserError


def test_configs_default_is_the_tables_defaults():
    config = default.get_config()
    for field in config_fields.FIELDS:
        value = config
        for key in field.name.split("."):
            value = value[key]
        assert value == field.default, field.name
    assert config.to_dict() == config_fields.default_config().to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"strategy": "gpu"}, "--strategy='gpu': choose one of"),
        ({"mixed_precision": "float16"}, "--mixed_precision='float16': choose one of"),
        ({"normalization": "imagenet"}, "config.normalization='imagenet': choose one of"),
        ({"best_metric": "accuracy"}, "config.best_metric='accuracy': choose one of"),
        ({"cache": ""}, "config.cache='': must be non-empty"),
        ({"image_size": (0, 32)}, r"config.image_size=\(0, 32\): must be two positive integers"),
        ({"image_size": (32,)}, "must be two positive integers"),
        ({"global_batch_size": 0}, "--global_batch_size=0: must be > 0"),
        ({"epochs": -1}, "--epochs=-1: must be >= 0"),
        ({"seed": -1}, r"--seed=-1: must be in \[0, 2\*\*32\)"),
        ({"optimizer": "adamm"}, "config.optimizer='adamm': must be a keras.optimizers name"),
        ({"optimizer": "LossScaleOptimizer"}, "must be a keras.optimizers name"),  # Needs an inner optimizer.
        ({"checkpoints_to_keep": 0}, "config.checkpoints_to_keep=0: must be > 0"),
        ({"data_dir": ""}, "--data_dir is required"),
        ({"early_stopping_patience": 2, "mode": "train", "best_metric": "val_loss"}, "early_stopping_patience watches"),
        ({"init_head_from": "/head"}, "model lenet5 has no pretrained base: .*init_head_from .*vgg16_transfer only"),
    ],
)
def test_bad_values_are_named_with_how_to_set_them(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_fields.validate(make_config("/m", **overrides))


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("epochs", "5", "--epochs='5': must be of type int"),
        ("jit_compile", 1, "config.jit_compile=1: must be of type bool"),
        ("learning_rate", "0.1", "--learning_rate='0.1': must be of type float"),
    ],
)
def test_values_of_another_type_are_refused(name, value, message):
    """ConfigDict keeps a field's type once set; a config built from a plain dict does not."""
    fields = make_config("/m").to_dict()
    fields[name] = value
    with pytest.raises(ConfigError, match=message):
        config_fields.validate(ml_collections.ConfigDict(fields))


def test_good_values_pass():
    for overrides in (
        {"optimizer": "Adam", "cache": "/tmp/cache"},
        {"optimizer": "adamw", "learning_rate": 0},
        {"image_size": [28, 28], "best_metric": "", "early_stopping_patience": 0},
        {"learning_rate": 1, "seed": 2**32 - 1},
    ):
        config_fields.validate(make_config("/m", **overrides))


def test_transfer_fields_need_the_transfer_model():
    config = make_config("/m")
    config.model.weights = "imagenet"
    with pytest.raises(ConfigError, match="model lenet5 has no pretrained base: model.weights"):
        config_fields.validate(config)
    config.model.weights = "none"
    config_fields.validate(config)
    config.model.update(name="vgg16_transfer", weights="imagenet", freeze_base=True)
    config.fine_tune.epochs = 3
    config_fields.validate(config)


def test_unknown_and_missing_fields_are_refused():
    config = make_config("/m")
    config.epoch = 5  # A typo would otherwise be ignored.
    with pytest.raises(ConfigError, match="unknown config field epoch"):
        config_fields.validate(config)
    config = make_config("/m")
    del config.fine_tune["unfreeze_from"]
    with pytest.raises(ConfigError, match="lacks field fine_tune.unfreeze_from"):
        config_fields.validate(config)


def test_config_errors_are_user_errors_and_value_errors():
    assert issubclass(ConfigError, UserError) and issubclass(UserError, ValueError)


def test_validation_leaves_the_devices_uninitialized():
    """The optimizer check must not build an optimizer: its variables would initialize TensorFlow's devices, and
    --num_cpu_devices could no longer split the CPU."""
    script = (
        "from multiworker_train import make_config; from trainer import config_fields, distribution; "
        "config_fields.validate(make_config('/m', optimizer='rmsprop')); distribution.configure_cpu_devices(2); "
        "import tensorflow as tf; print(len(tf.config.list_logical_devices('CPU')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=__import__("os").path.dirname(__file__),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "2"
