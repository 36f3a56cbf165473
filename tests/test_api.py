"""The Python API in-process, as a notebook runs it: build -> train -> evaluate -> predict, with our lines shown."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from conftest import FAST_BEAM_ARGS, root_logger
from folder_files import write_photos
from PIL import Image

import data_prep
import trainer
from data_prep import api, options, schema
from trainer import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_CLASS = 16


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_photos(root, [f"{name}/{i}.png" for name in ("Cat", "Dog") for i in range(PER_CLASS)], size=(40, 40))
    return root


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("datasets") / "catsdogs"
    report = data_prep.build_dataset(
        dataset="catsdogs",
        input_dir=str(raw),
        output_dir=str(out),
        image_size=32,
        split="train:50,validation:25,test:25",
        augmentation={"rotation": 0.05, "horizontal_flip": False},
        beam_args=list(FAST_BEAM_ARGS),
    )
    return out, report


def test_importing_data_prep_loads_neither_beam_nor_tensorflow_and_the_api_survives_the_commands_modules():
    code = (
        "import sys, data_prep\n"
        "print(sorted({'apache_beam', 'tensorflow', 'PIL'} & set(sys.modules)))\n"
        "import data_prep.build, data_prep.extract_features\n"  # Modules named like the commands, not the functions.
        "print(callable(data_prep.build_dataset), callable(data_prep.extract_feature_dataset))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.split("\n")[:2] == ["[]", "True True"]


def test_the_predict_command_loads_no_training_code_until_the_api_is_used():
    code = (
        "import sys, trainer.predict\n"
        "print('trainer.train' in sys.modules, 'trainer.api' in sys.modules)\n"
        "print(callable(trainer.train_model), 'trainer.train' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.split("\n")[:2] == ["False False", "True True"]


def test_build_dataset_takes_the_flags_by_name_and_returns_the_report(built):
    out, report = built
    assert report == json.loads((out / schema.REPORT_FILE).read_text())
    assert report["counts"]["written"] == 2 * PER_CLASS
    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.image.image_size == 32 and metadata.source["split"] == "train:50,validation:25,test:25"
    assert metadata.augmentation.rotation == 0.05 and not metadata.augmentation.horizontal_flip


def test_show_examples_writes_the_two_grids_and_says_so(built, tmp_path, capsys):
    out, _ = built
    with root_logger():
        grid, model_view = data_prep.show_examples(str(out), per_class=2, output=str(tmp_path / "grid.png"))
    assert (grid, model_view) == (str(tmp_path / "grid.png"), str(tmp_path / "grid_augmented.png"))
    assert all(Image.open(path).format == "PNG" for path in (grid, model_view))
    err = capsys.readouterr().err
    assert f"wrote {grid}" in err and f"wrote {model_view}" in err
    with pytest.raises(TypeError, match="per_clas"):
        data_prep.show_examples(str(out), per_clas=2)


def test_build_dataset_refuses_unknown_settings_and_bad_input_as_the_command_does(raw, tmp_path):
    with pytest.raises(TypeError, match=r"unknown settings \['image_sise'\]; the settings are .*'image_size'"):
        api.build_dataset(dataset="catsdogs", output_dir=str(tmp_path / "o"), input_dir=str(raw), image_sise=3)
    with pytest.raises(options.UserError, match="--jpeg_quality=0: must be in 1..100"):
        api.build_dataset(dataset="catsdogs", output_dir=str(tmp_path / "o"), input_dir=str(raw), jpeg_quality=0)
    with pytest.raises(options.UserError, match="--input_dir is required"):
        api.build_dataset(dataset="imagefolder", output_dir=str(tmp_path / "o"))
    with pytest.raises(options.UserError, match="--data_dir and --output_dir are required"):
        api.extract_feature_dataset(data_dir="", output_dir=str(tmp_path / "f"))
    assert not (tmp_path / "o").exists()


def test_in_a_notebook_the_build_shows_our_lines_once_and_leaves_logging_as_it_was(raw, tmp_path, capsys):
    with root_logger():
        data_prep.build_dataset(
            dataset="catsdogs",
            input_dir=str(raw),
            output_dir=str(tmp_path / "o"),
            image_size=32,
            beam_args=FAST_BEAM_ARGS,
        )
    lines = capsys.readouterr().err.splitlines()
    built_lines = [line for line in lines if f"] built {tmp_path / 'o'}: files_seen=" in line]
    assert len(built_lines) == 1 and built_lines[0].startswith("I")  # absl's format, as on the command line.
    assert [line for line in lines if "] splits: train=" in line]
    assert not [line for line in lines if "apache_beam" in line or "Running" in line], "Beam's INFO lines stay hidden"
    assert logging.getLogger("data_prep").level == logging.NOTSET and not logging.getLogger("data_prep").handlers
    assert logging.getLogger("apache_beam").level == logging.NOTSET


@pytest.fixture(scope="module")
def run(built, tmp_path_factory):
    out, _ = built
    return trainer.train_model(
        os.path.join(REPO, "configs", "catsdogs_demo.py"),
        data_dir=str(out),
        model_dir=str(tmp_path_factory.mktemp("runs") / "demo"),
        strategy="off",
        image_size=(48, 48),  # The four-block CNN needs 48 px.
        epochs=2,
        global_batch_size=4,
        **{"fine_tune.epochs": 0},  # A nested field, by its dotted name.
    )


@pytest.mark.slow  # Trains a model.
def test_train_model_returns_the_history_model_and_paths(run, built):
    assert [record["epoch"] for record in run.history] == [1, 2]
    assert all(0 <= record["val_accuracy"] <= 1 for record in run.history)
    assert run.config.epochs == 2 and run.config.global_batch_size == 4 and run.config.strategy == "off"
    assert run.export_dir == os.path.join(run.model_dir, "export", "saved_model")
    assert os.path.exists(os.path.join(run.export_dir, "saved_model.pb"))
    assert run.model.input_shape[1:] == (48, 48, 3)


@pytest.mark.slow  # Trains a model.
def test_evaluate_model_returns_the_report_it_writes(run, built):
    _, build_report = built
    report = trainer.evaluate_model(run.config)
    assert report["split"] == "test" and report["num_examples"] == build_report["splits"]["test"]
    with open(os.path.join(run.model_dir, "eval", "test.json")) as f:
        assert {k: v for k, v in report.items() if k != "mistakes"} == json.load(f)
    with open(os.path.join(run.model_dir, "eval", "test_mistakes.json")) as f:
        assert report["mistakes"] == json.load(f)
    wrong = report["num_examples"] - sum(report["confusion_matrix"][k][k] for k in range(2))
    assert len(report["mistakes"]) == min(wrong, 20)
    assert sum(map(sum, report["confusion_matrix"])) == report["num_examples"]


@pytest.mark.slow  # Trains a model.
def test_load_export_classifies_paths_and_bytes(run, raw, tmp_path):
    classify = trainer.load_export(run.export_dir)
    cat = raw / "Cat" / "0.png"
    by_path = classify(str(cat))
    assert [name for name, _ in sorted(by_path)] == ["cat", "dog"]
    assert sum(p for _, p in by_path) == pytest.approx(1, abs=1e-5)
    assert classify([cat, cat.read_bytes()], top_k=1) == [by_path[:1], by_path[:1]]
    with pytest.raises(FileNotFoundError, match="no such file"):
        classify(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="cannot be decoded"):
        classify(b"<html>not an image</html>")


@pytest.mark.slow  # Trains a model.
def test_config_overrides_are_field_names_checked_like_flags(run):
    with pytest.raises(errors.ConfigError, match="unknown config field epoch:"):
        trainer.train_model(run.config, epoch=3)
    with pytest.raises(errors.ConfigError, match="--epochs=-1: must be >= 0"):
        trainer.train_model(run.config, epochs=-1)
    with pytest.raises(errors.ConfigError, match="call evaluate_model"):
        trainer.train_model(run.config, mode="eval")
    with pytest.raises(FileNotFoundError, match="config file configs/nope.py not found"):
        trainer.train_model("configs/nope.py")
    assert run.config.epochs == 2, "the ConfigDict passed in is left as it is"


@pytest.mark.slow  # Trains a model.
def test_in_a_notebook_training_shows_each_epoch_line_once(run, tmp_path, capsys):
    with root_logger():
        trainer.train_model(run.config, model_dir=str(tmp_path / "again"), epochs=1)
    err = capsys.readouterr().err
    assert err.count("] epoch 1/1 (train): train_loss=") == 1, err[-3000:]
    assert err.count("] Strategy off with 1 replicas") == 1


@pytest.mark.slow  # A fresh Python builds a dataset and trains a model.
def test_in_a_fresh_notebook_the_build_then_training_print_as_the_commands_do(raw, tmp_path):
    """Beam's first import configures the root logger; the lines of the build and of a training after it keep
    absl's format, and the root logger ends as it was."""
    code = f"""
import logging, data_prep, trainer
data_prep.build_dataset(dataset="catsdogs", input_dir={str(raw)!r}, output_dir={str(tmp_path / "d")!r},
                        image_size=48, beam_args={list(FAST_BEAM_ARGS)!r})
trainer.train_model({os.path.join(REPO, "configs", "catsdogs_demo.py")!r}, data_dir={str(tmp_path / "d")!r},
                    model_dir={str(tmp_path / "r")!r}, strategy="off", image_size=(48, 48), epochs=1)
print(logging.root.handlers)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0 and result.stdout == "[]\n", result.stderr[-3000:]
    ours = [line for line in result.stderr.splitlines() if "built " in line or "epoch 1/1 (train)" in line]
    assert len(ours) == 2 and all(re.match(r"I\d{4} .*\] (built |epoch 1/1)", line) for line in ours), ours
