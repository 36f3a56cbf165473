"""Mirrored (2 logical CPUs) and multi-worker (2 local processes) training, each in fresh processes.

Logical CPU devices and TF_CONFIG must be set before TensorFlow initializes, so every run is
a subprocess of tests/multiworker_train.py; the one-device reference runs in this process.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import free_ports
from multiworker_train import make_config, make_data

from trainer import checkpointing, history, summaries, train

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiworker_train.py")
# Against the one-device run, 2 replicas differ by rounding only: measured at most 3e-8 on the weights and 8e-8
# relative on val_loss, with TF_ENABLE_ONEDNN_OPTS=1 and =0 (BUILD_NOTES.md); the tolerances leave a margin of 10-30x.
WEIGHTS_ATOL, VAL_LOSS_REL = 1e-6, 1e-6


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run (lenet5, SGD, no dropout) on the default strategy."""
    model, history = train.train_and_evaluate(
        make_config(str(tmp_path_factory.mktemp("reference"))), tf.distribute.get_strategy(), make_data(8)
    )
    return [np.asarray(w) for w in model.weights], history


def _start(tmp_path, name, *args, model_dir=None, env=None):
    out = tmp_path / f"{name}.npz"
    command = [sys.executable, SCRIPT, f"--out={out}", f"--model_dir={model_dir or tmp_path / name}", *args]
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, out


def _finish(process, out):
    """{run: (weights of each local replica, history)} from one script process."""
    log, _ = process.communicate(timeout=240)
    assert process.returncode == 0, log[-3000:]
    result = np.load(out)
    runs = {}
    for key in result.files:
        run, *rest = key.split("/")
        weights, history = runs.setdefault(run, ({}, []))
        if rest == ["history"]:
            history.extend(json.loads(str(result[key])))
        else:
            weight, replica = (int(n) for n in rest)
            weights.setdefault(replica, {})[weight] = result[key]
    return {
        run: ([[copy[i] for i in sorted(copy)] for _, copy in sorted(weights.items())], history)
        for run, (weights, history) in runs.items()
    }


def _assert_same(weights, expected, atol):
    assert len(weights) == len(expected)
    for a, b in zip(weights, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=atol)


def _without_timing(history):
    return [{k: v for k, v in record.items() if k != "images_per_second"} for record in history]


def test_mirrored_on_two_cpus_keeps_replicas_in_sync_and_matches_one_device(tmp_path, reference):
    # lenet5 (no dropout) must match the one-device run, with and without XLA; cifar_cnn adds
    # synchronized BatchNorm and dropout under float16 loss scaling.
    results = _finish(
        *_start(
            tmp_path,
            "mirrored",
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--run=lenet5",
            "--run=lenet5:jit",
            "--run=cifar_cnn:mixed_float16",
        )
    )
    expected_weights, expected_history = reference
    assert sorted(results) == ["cifar_cnn:mixed_float16", "lenet5", "lenet5:jit"]
    for name, (replicas, records) in results.items():
        assert len(replicas) == 2, name
        _assert_same(replicas[1], replicas[0], atol=0)
        assert len(records) == 2 and all(r["val_accuracy"] > 0.5 for r in records), name
    for name in ("lenet5", "lenet5:jit"):
        replicas, history = results[name]
        _assert_same(replicas[0], expected_weights, atol=WEIGHTS_ATOL)
        assert history[-1]["val_loss"] == pytest.approx(expected_history[-1]["val_loss"], rel=VAL_LOSS_REL)


def test_multi_worker_mirrored_on_two_processes(tmp_path, reference):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    shared_dir = tmp_path / "shared"  # One model_dir for both workers, as a bucket would be.
    runs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        runs.append(
            _start(
                tmp_path,
                f"worker{index}",
                "--strategy=multi_worker_mirrored",
                model_dir=shared_dir,
                env={"TF_CONFIG": tf_config},
            )
        )
    (((chief,), chief_history),) = _finish(*runs[0]).values()
    (((other,), other_history),) = _finish(*runs[1]).values()
    _assert_same(other, chief, atol=0)
    _assert_same(chief, reference[0], atol=WEIGHTS_ATOL)
    assert _without_timing(chief_history) == _without_timing(other_history)
    assert chief_history[-1]["val_loss"] == pytest.approx(reference[1][-1]["val_loss"], rel=VAL_LOSS_REL)
    model_dir = shared_dir / "lenet5"
    # Only the chief's files (tests/test_resume.py also checks that no worker's temporary folder is left).
    assert sorted(os.listdir(model_dir)) == sorted(
        [
            checkpointing.BEST_SUBDIR,
            train.CHECKPOINT_SUBDIR,
            train.CONFIG_FILE,
            history.CSV_FILE,
            history.PLOT_FILE,
            train.METRICS_FILE,
            summaries.SUMMARY_SUBDIR,
        ]
    )
    assert tf.train.latest_checkpoint(str(model_dir / train.CHECKPOINT_SUBDIR)).endswith("ckpt-16")
    with open(model_dir / train.METRICS_FILE) as f:
        assert len(f.readlines()) == 2  # Written by the chief only.
