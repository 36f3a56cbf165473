"""The Python API in-process, as a notebook runs it, with our lines shown."""

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import FAST_BEAM_ARGS, root_logger
from folder_files import write_photos

import data_prep
from data_prep import api, options, schema

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


def test_build_dataset_takes_the_flags_by_name_and_returns_the_report(built):
    out, report = built
    assert report == json.loads((out / schema.REPORT_FILE).read_text())
    assert report["counts"]["written"] == 2 * PER_CLASS
    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.image.image_size == 32 and metadata.source["split"] == "train:50,validation:25,test:25"
    assert metadata.augmentation.rotation == 0.05 and not metadata.augmentation.horizontal_flip


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
