"""The command line: config files, flag overrides, the resolved config, clear failures."""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from multiworker_train import make_config

from trainer import api, config_fields, distribution, errors, input_pipeline, main, models, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if os.path.basename(p) not in ("__init__.py", "default.py")
)


@pytest.fixture
def parse(monkeypatch):
    """Parses a command line into fresh flags (config_flags reads --config.* overrides from sys.argv)."""

    def parse_args(*args):
        argv = ["trainer.main", *args]
        monkeypatch.setattr(sys, "argv", argv)
        flag_values = flags.FlagValues()
        main.define_flags(flag_values)
        flag_values(argv)
        return flag_values

    return parse_args


def test_flags_override_config_file_and_config_fields(parse):
    flag_values = parse(
        "--config=configs/catsdogs_vgg16.py",
        "--data_dir=/data",
        "--model_dir=/run",
        "--config.global_batch_size=7",
        "--epochs=3",
        "--learning_rate=0.5",
        "--config.fine_tune.epochs=2",
        "--strategy=multi_worker_mirrored",
        "--mixed_precision=mixed_bfloat16",
        "--seed=4",
    )
    config = main.resolve_config(flag_values)
    assert config.epochs == 3 and config.global_batch_size == 7  # Over the file's 30 and 20.
    assert config.learning_rate == 0.5 and config.fine_tune.epochs == 2
    assert (config.data_dir, config.model_dir, config.seed) == ("/data", "/run", 4)
    assert (config.strategy, config.mixed_precision) == ("multi_worker_mirrored", "mixed_bfloat16")
    assert config.model.name == "vgg16_transfer" and config.optimizer == "rmsprop"  # From the file.
    assert flag_values.config.epochs == 30  # The parsed file config itself is left as given.


def test_a_short_flag_and_its_config_override_must_agree(parse):
    with pytest.raises(errors.ConfigError, match=r"--epochs=3 and --config.epochs=7 set the same field differently"):
        main.resolve_config(
            parse("--config=configs/mnist_cnn.py", "--data_dir=/d", "--model_dir=/m", "--config.epochs=7", "--epochs=3")
        )
    config = main.resolve_config(
        parse(
            "--config=configs/mnist_cnn.py",
            "--data_dir=/d",
            "--model_dir=/m",
            "--config.epochs=7",
            "--epochs=7",
            "--config.data_dir=/d",
        )
    )
    assert (config.epochs, config.data_dir) == (7, "/d")


def test_short_flags_come_from_the_field_table(parse):
    flag_values = parse("--config=configs/mnist_cnn.py")
    for field in config_fields.FLAG_FIELDS:
        assert field.help in flag_values[field.name].help
        assert flag_values[field.name].value is None  # Not given: the config file's value stays.
    assert sorted(field.name for field in config_fields.FLAG_FIELDS) == sorted(
        [
            "data_dir",
            "model_dir",
            "strategy",
            "tpu",
            "num_cpu_devices",
            "mixed_precision",
            "mode",
            "epochs",
            "global_batch_size",
            "learning_rate",
            "seed",
        ]
    )  # The flags README.md and the configs' docstrings use.
    assert flag_values["strategy"].parser.enum_values == list(distribution.STRATEGIES)
    assert "early_stopping_patience=0: Ends a phase" in flag_values["config"].help


def test_only_user_errors_become_one_line(monkeypatch, parse):
    monkeypatch.setattr(main, "resolve_config", lambda: make_config("/m", mode="train"))

    def fail_with(error):
        def run(config):
            raise error

        monkeypatch.setattr(api, "train_model", run)

    fail_with(errors.UserError("the dataset has 1 class"))
    with pytest.raises(SystemExit, match="^error: the dataset has 1 class$"):
        main.main(["trainer.main"])
    fail_with(ValueError("a bug"))  # Not bad input: keeps its traceback.
    with pytest.raises(ValueError, match="a bug"):
        main.main(["trainer.main"])


def test_the_command_is_the_api_by_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(api, "train_model", lambda config: calls.append(("train_model", config.mode)))
    monkeypatch.setattr(api, "evaluate_model", lambda config: calls.append(("evaluate_model", config.mode)))
    for mode in ("train_and_eval", "train", "eval"):
        monkeypatch.setattr(main, "resolve_config", lambda mode=mode: make_config("/m", mode=mode))
        main.main(["trainer.main"])
    assert calls == [("train_model", "train_and_eval"), ("train_model", "train"), ("evaluate_model", "eval")]


def test_unset_flags_keep_the_config_values(parse):
    config = main.resolve_config(parse("--config=configs/mnist_lenet5.py", "--data_dir=/d", "--model_dir=/m"))
    assert (config.epochs, config.global_batch_size, config.strategy) == (15, 128, "mirrored")


def test_missing_or_bad_flags_are_rejected(parse):
    with pytest.raises(ValueError, match="--data_dir is required"):
        main.resolve_config(parse("--config=configs/mnist_cnn.py", "--model_dir=/m"))
    with pytest.raises(flags.IllegalFlagValueError):
        parse("--config=configs/mnist_cnn.py", "--strategy=horovod")
    with pytest.raises(flags.IllegalFlagValueError):
        parse("--data_dir=/d")  # --config is required.


def test_a_dataset_the_reader_refuses_is_bad_input(monkeypatch):
    def refuse(data_dir, **_):
        raise ValueError(f"{data_dir}/metadata.json lacks or mangles field 'splits'")

    monkeypatch.setattr(input_pipeline, "open_dataset", refuse)
    with pytest.raises(errors.UserError, match="/d/metadata.json lacks or mangles field"):
        train.load_data(make_config("/m", data_dir="/d"))


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_experiment_configs_are_valid_and_documented(parse, path):
    config = main.resolve_config(parse(f"--config={os.path.join(REPO, path)}", "--data_dir=/d", "--model_dir=/m"))
    assert config.normalization in input_pipeline.NORMALIZATIONS
    with open(os.path.join(REPO, path)) as f:
        source = f.read()
    assert f"--config={path}" in source and "%" in source  # The command and the literature's accuracy.
    if models.takes_features(config.model.name):
        models.build_model(config.model.name, (4, 4, 512), 10)  # VGG16's base at 150 px.
    elif config.model.name != "vgg16_transfer":
        channels = 1 if "mnist" in path else 3
        models.build_model(config.model.name, (*config.image_size, channels), 10)


@pytest.mark.slow
def test_tpu_without_a_tpu_fails_with_a_message_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.main",
            "--config=configs/mnist_cnn.py",
            f"--data_dir={tmp_path}",
            f"--model_dir={tmp_path / 'run'}",
            "--strategy=tpu",
            "--tpu=local",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1
    assert "error: --strategy=tpu: no TPU reachable with --tpu='local'" in result.stderr
    assert "Traceback" not in result.stderr
