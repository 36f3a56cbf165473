"""End to end: data_prep builds a learnable photo dataset, `trainer.main` learns it on 2 replicas."""

import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import build_folder

from configs import mnist_cnn
from data_prep import images, sample_data
from trainer import distribution, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_small_cnn_learns_generated_photos_with_mirrored_strategy(tmp_path):
    raw = tmp_path / "raw" / "PetImages"
    sample_data.write_sample_folder(str(raw), images_per_class=150, min_side=40, max_side=64, include_broken=False)
    data_dir, model_dir = tmp_path / "data", tmp_path / "run"
    build_folder(
        raw.parent,
        data_dir,
        dataset="imagefolder",
        split="train:60,validation:40",
        image_options=images.ImageOptions(image_size=32, resize_policy="exact"),
    )

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.main",
            "--config=configs/mnist_cnn.py",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--epochs=8",
            "--global_batch_size=16",
            "--config.image_size=(32, 32)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    number = r"\d+\.\d+"  # The per-epoch log line, whole.
    assert re.search(
        rf"epoch 8/8 \(train\): train_loss={number} train_accuracy={number} val_loss={number} "
        rf"val_accuracy={number} images/s={number}",
        result.stderr,
    )
    with open(model_dir / train.METRICS_FILE) as f:
        history = [json.loads(line) for line in f]
    assert len(history) == 8
    assert history[-1]["val_accuracy"] >= 0.9
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    with open(model_dir / train.CONFIG_FILE) as f:
        resolved = json.load(f)
    auto = distribution.resolve_precision("auto", "mirrored")  # This machine's: mixed_bfloat16 on AMX with oneDNN.
    assert f"precision {auto.policy} ({auto.reason})." in result.stderr
    assert (resolved["strategy"], resolved["mixed_precision"], resolved["image_size"]) == (
        "mirrored",
        auto.policy,
        [32, 32],
    )

    # The checkpoint written on 2 replicas evaluates the same on one device.
    config = mnist_cnn.get_config()
    config.update(
        data_dir=str(data_dir),
        model_dir=str(model_dir),
        mode="eval",
        strategy="off",
        image_size=(32, 32),
        global_batch_size=16,
        test_split="validation",
        eval_checkpoint=tf.train.latest_checkpoint(str(model_dir / train.CHECKPOINT_SUBDIR)),
    )
    _, (record,) = train.run(config)
    assert record["val_accuracy"] == pytest.approx(history[-1]["val_accuracy"])
    assert record["val_loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-4)
    with open(model_dir / train.CONFIG_FILE) as f:
        assert json.load(f) == resolved  # Evaluation records its config apart.
    with open(model_dir / train.EVAL_CONFIG_FILE) as f:
        assert json.load(f)["mode"] == "eval"
