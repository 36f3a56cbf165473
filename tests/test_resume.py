"""Surviving interruptions: kill -9 and SIGTERM of `python -m trainer.main` then the same command, chief-only
writes on 2 local workers and kill -9 of one of them, the NaN stop, best model and early stopping, and the
metrics of an epoch that was interrupted and resumed.

The process tests wait for a checkpoint file to appear (polling the directory), then signal the process.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import build_folder, free_ports
from multiworker_train import make_config, make_data
from tensorflow.core.protobuf import trackable_object_graph_pb2

from data_prep import images, sample_data
from trainer import checkpointing, export, history, input_pipeline, main, models, preemption, steps, summaries, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, BATCH, KEEP = 3, 4, 2
# Every step is checkpointed, so a signal can land anywhere, mid-save included.
COMMAND = [
    sys.executable,
    "-m",
    "trainer.main",
    "--config=configs/mnist_cnn.py",
    f"--epochs={EPOCHS}",
    f"--global_batch_size={BATCH}",
    "--config.image_size=(32, 32)",
    "--config.steps_per_loop=1",
    "--config.checkpoint_every_steps=1",
    f"--config.checkpoints_to_keep={KEEP}",
]
FINISHED_RUN = {
    checkpointing.BEST_SUBDIR,
    checkpointing.CHECKPOINT_SUBDIR,
    train.CONFIG_FILE,
    history.CSV_FILE,
    history.PLOT_FILE,
    history.METRICS_FILE,
    summaries.SUMMARY_SUBDIR,
    export.EXPORT_SUBDIR,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """44 training images of 32x32 (11 steps of 4 per epoch), 33 for validation; returns (dir, steps per epoch)."""
    root = tmp_path_factory.mktemp("resume")
    sample_data.write_sample_folder(
        str(root / "raw" / "PetImages"), images_per_class=40, min_side=40, max_side=64, include_broken=False
    )
    build_folder(
        root / "raw",
        root / "data",
        split="train:70,validation:30",
        image_options=images.ImageOptions(image_size=32, resize_policy="exact"),
    )
    info = input_pipeline.open_dataset(str(root / "data"))
    return root / "data", input_pipeline.steps_per_epoch(info, "train", BATCH)


def _start(data_dir, model_dir, *args, env=None):
    return subprocess.Popen(
        [*COMMAND, f"--data_dir={data_dir}", f"--model_dir={model_dir}", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_checkpoint(process, model_dir, timeout=120):
    """Polls for the CheckpointManager's index file, written after a checkpoint's data."""
    index = model_dir / checkpointing.CHECKPOINT_SUBDIR / "checkpoint"
    deadline = time.monotonic() + timeout
    while not index.exists():
        assert process.poll() is None, f"training ended before its first checkpoint:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def _finish(process, expected_code):
    """The process's output once it ends with `expected_code`: a literal, as the codes are documented to users
    (trainer/main.py: 0 done, 1 error, 42 stopped by SIGTERM, restart it), whatever the constants in the code say."""
    log, _ = process.communicate(timeout=180)
    assert process.returncode == expected_code, log[-3000:]
    return log


def _state(path):
    reader = tf.train.load_checkpoint(path)
    values = {name: int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")) for name in ("step", "epoch", "phase")}
    values["iterations"] = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    return values


def _assert_finished(model_dir, steps_per_epoch):
    """The same end as an uninterrupted run: the last step, one history row per epoch, the curves;
    of the checkpoints of every step, only the KEEP newest remain."""
    total = EPOCHS * steps_per_epoch
    final = checkpointing.latest_checkpoint(str(model_dir))
    assert final.endswith(f"ckpt-{total}")
    newest = [f"ckpt-{step}" for step in range(total - KEEP + 1, total + 1)]
    checkpoint_dir = model_dir / checkpointing.CHECKPOINT_SUBDIR
    kept = tf.train.get_checkpoint_state(str(checkpoint_dir)).all_model_checkpoint_paths
    assert [os.path.basename(path) for path in kept] == newest
    assert {name.split(".")[0] for name in os.listdir(checkpoint_dir)} == {"checkpoint", *newest}
    assert _state(final) == {"step": total, "epoch": EPOCHS, "phase": 1, "iterations": total}
    with open(model_dir / history.METRICS_FILE) as f:
        assert [(r["epoch"], r["step"]) for r in map(json.loads, f)] == [
            (e, e * steps_per_epoch) for e in range(1, EPOCHS + 1)
        ]
    with open(model_dir / history.CSV_FILE) as f:
        assert [line.split(",")[:3] for line in f.read().splitlines()[1:]] == [
            [str(e), "train", str(e * steps_per_epoch)] for e in range(1, EPOCHS + 1)
        ]
    assert (model_dir / history.PLOT_FILE).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_at_the_last_checkpoint(dataset, tmp_path):
    data_dir, steps_per_epoch = dataset
    model_dir = tmp_path / "run"
    process = _start(data_dir, model_dir)
    _wait_for_checkpoint(process, model_dir)
    process.kill()
    _finish(process, -signal.SIGKILL)
    killed_at = checkpointing.latest_checkpoint(str(model_dir))
    state = _state(killed_at)
    assert 0 < state["step"] < EPOCHS * steps_per_epoch
    assert state == {
        "step": state["step"],
        "epoch": state["step"] // steps_per_epoch,
        "phase": 0,
        "iterations": state["step"],
    }

    log = _finish(_start(data_dir, model_dir), 0)
    assert f"Resuming from {killed_at}: phase 0, epoch {state['epoch']}, step {state['step']}." in log
    _assert_finished(model_dir, steps_per_epoch)


@pytest.mark.slow
def test_sigterm_saves_exits_42_and_the_rerun_completes(dataset, tmp_path):
    data_dir, steps_per_epoch = dataset
    model_dir = tmp_path / "run"
    process = _start(data_dir, model_dir)
    _wait_for_checkpoint(process, model_dir)
    process.send_signal(signal.SIGTERM)
    log = _finish(process, 42)
    step = int(re.search(r"preempted: stopped by a termination signal at step (\d+)", log).group(1))
    saved = checkpointing.latest_checkpoint(str(model_dir))
    assert saved.endswith(f"ckpt-{step}") and _state(saved)["step"] == step < EPOCHS * steps_per_epoch

    log = _finish(_start(data_dir, model_dir), 0)
    assert f"Resuming from {saved}:" in log
    _assert_finished(model_dir, steps_per_epoch)
    tags = {writer: _summary_tags(model_dir / summaries.SUMMARY_SUBDIR / writer) for writer in ("train", "validation")}
    assert tags == {
        "train": {"loss", "accuracy", "learning_rate", "images_per_second", "augmented_inputs"},
        "validation": {"loss", "accuracy"},
    }


def _summary_tags(directory):
    return {
        value.tag
        for path in tf.io.gfile.glob(str(directory / "events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(path)
        for value in event.summary.value
    }


def _start_workers(data_dir, model_dir):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    return [
        _start(
            data_dir,
            model_dir,
            "--strategy=multi_worker_mirrored",
            env={"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})},
        )
        for index in range(2)
    ]


def _all_paths(directory):
    return {
        os.path.relpath(os.path.join(root, name), directory)
        for root, dirs, files in os.walk(directory)
        for name in dirs + files
    }


@pytest.mark.slow
def test_two_workers_stop_together_on_one_sigterm_and_only_the_chief_writes(dataset, tmp_path):
    data_dir, steps_per_epoch = dataset
    model_dir = tmp_path / "shared"  # One model_dir for both workers, as a bucket would be.
    chief, other = _start_workers(data_dir, model_dir)
    _wait_for_checkpoint(chief, model_dir)
    other.send_signal(signal.SIGTERM)  # Only the non-chief is told; the chief must stop at the same step.
    steps = [re.search(r"at step (\d+)", _finish(p, 42)).group(1) for p in (chief, other)]
    assert steps[0] == steps[1]
    assert checkpointing.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{steps[0]}")
    assert not any("tmp_worker" in path for path in _all_paths(model_dir))

    for process in _start_workers(data_dir, model_dir):
        _finish(process, 0)
    assert set(os.listdir(model_dir)) == FINISHED_RUN
    assert not any("tmp_worker" in path for path in _all_paths(model_dir))
    _assert_finished(model_dir, steps_per_epoch)


@pytest.mark.slow
def test_kill_9_of_the_non_chief_ends_the_chief_and_restarting_both_finishes_the_run(dataset, tmp_path):
    data_dir, steps_per_epoch = dataset
    model_dir = tmp_path / "shared"
    chief, other = _start_workers(data_dir, model_dir)
    _wait_for_checkpoint(chief, model_dir)
    other.kill()
    _finish(other, -signal.SIGKILL)
    try:  # The chief's next collective op fails and it exits on its own (measured: 3-7 s later).
        log, _ = chief.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        chief.kill()
        pytest.fail(
            f"the chief did not exit within 120 s of the non-chief's kill -9:\n{chief.communicate()[0][-3000:]}"
        )
    assert chief.returncode > 0 and chief.returncode != 42, log[-3000:]
    saved = checkpointing.latest_checkpoint(str(model_dir))
    assert 0 < _state(saved)["step"] < EPOCHS * steps_per_epoch

    for process in _start_workers(data_dir, model_dir):  # The same command for both.
        assert f"Resuming from {saved}:" in _finish(process, 0)
    assert set(os.listdir(model_dir)) == FINISHED_RUN
    assert not any("tmp_worker" in path for path in _all_paths(model_dir))
    _assert_finished(model_dir, steps_per_epoch)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    """What a user relies on: the run stops with one line saying NaN or Inf at a step, and the last good
    checkpoint it names is kept, restorable and the newest. Which check fires, and at which step, is not asserted:
    without oneDNN the loss of step 5 is NaN; with it a ReLU may turn the NaN into 0, so the loss stays finite
    and the NaN shows in the weights at the next save (step 6)."""
    clean = make_data(8)

    def poisoned_input_fn(context):
        """NaN images from batch 5 on: with batch 0 logged as images, training step 5 sees the first."""
        return (
            clean.train_input_fn(context)
            .enumerate()
            .map(lambda i, batch: (tf.where(i >= 5, np.nan, batch[0]), batch[1]))
        )

    config = make_config(str(tmp_path), steps_per_loop=2, checkpoint_every_steps=2)
    poisoned = train.Data(**{**clean.__dict__, "train_input_fn": poisoned_input_fn})
    with pytest.raises(train.NonFiniteLossError) as error:
        train.train_and_evaluate(config, tf.distribute.get_strategy(), poisoned)
    message = str(error.value)
    match = re.fullmatch(
        r"[^\n]*NaN or Inf \w+ step (\d+) \(epoch 1, phase train\); stopped without saving\. "
        r"Last good checkpoint: (\S+)\. Lower the learning rate or check the data\.",
        message,
    )
    assert match, message
    failed_at, last_good = int(match.group(1)), match.group(2)
    assert failed_at >= 5  # No step before the poisoned data is blamed.
    assert train.NonFiniteLossError in main.USER_ERRORS  # The command prints this one line and exits 1.
    assert checkpointing.latest_checkpoint(str(tmp_path)) == last_good
    assert _state(last_good)["step"] < failed_at
    saved = {name.split(".")[0] for name in os.listdir(tmp_path / checkpointing.CHECKPOINT_SUBDIR)} - {"checkpoint"}
    assert max(int(name.split("-")[1]) for name in saved) == _state(last_good)["step"]  # Nothing saved after it.
    assert not (tmp_path / checkpointing.BEST_SUBDIR).exists() or not os.listdir(tmp_path / checkpointing.BEST_SUBDIR)
    model = models.build_model("lenet5", (16, 16, 1), 2)
    tf.train.Checkpoint(model=model).restore(last_good).assert_existing_objects_matched().expect_partial()
    assert all(np.isfinite(np.asarray(w)).all() for w in model.weights)


def test_best_model_early_stopping_and_rerunning_a_finished_run(tmp_path):
    config = make_config(str(tmp_path), epochs=40, early_stopping_patience=2)  # best_metric val_accuracy, max.
    _, records = train.train_and_evaluate(config, tf.distribute.get_strategy(), make_data(8))
    accuracies = [r["val_accuracy"] for r in records]
    best = records[int(np.argmax(accuracies))]  # The first epoch reaching the maximum.
    assert len(records) < 40 and records[-1]["epoch"] == best["epoch"] + 2
    assert all(a <= best["val_accuracy"] for a in accuracies)

    with open(tmp_path / checkpointing.BEST_SUBDIR / checkpointing.BEST_INFO_FILE) as f:
        info = json.load(f)
    assert (info["metric"], info["value"], info["epoch"], info["step"]) == (
        "val_accuracy",
        best["val_accuracy"],
        best["epoch"],
        best["step"],
    )
    assert checkpointing.best_or_latest_checkpoint(str(tmp_path)) == info["checkpoint"]
    assert info["checkpoint"].endswith(f"ckpt-{best['step']}")
    model = models.build_model("lenet5", (16, 16, 1), 2)
    tf.train.Checkpoint(model=model).restore(info["checkpoint"]).expect_partial()
    data = make_data(8)
    assert steps.make_evaluator(tf.distribute.get_strategy(), model, data)()["val_accuracy"] == best["val_accuracy"]

    # The run is over: the same call restores it, trains nothing and returns the history from the files.
    last = checkpointing.latest_checkpoint(str(tmp_path))
    _, again = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    assert again == records
    assert checkpointing.latest_checkpoint(str(tmp_path)) == last


def _stopping_agreement(stop_at_call):
    """A stand-in for train._make_any_worker: as if a termination signal arrived before its `stop_at_call`-th
    check (one check per `steps_per_loop` steps)."""

    def make_any_worker(strategy):
        calls = []

        def any_worker(flag):
            calls.append(flag)
            return tf.constant(float(len(calls) == stop_at_call))

        return any_worker

    return make_any_worker


@pytest.mark.slow
@pytest.mark.parametrize("stop_after_step, restored", [(3, (1, 1, 3, 1)), (2, (0, 0, 2, 2))])
def test_vgg16_resumes_in_its_phase_with_that_phase_optimizer(tmp_path, monkeypatch, stop_after_step, restored):
    """2 steps per epoch: phase train (epoch 1, steps 1-2, head only), fine_tune (epochs 2-3, steps 3-6).

    The stop lands mid-fine_tune (step 3) or at the phase boundary (step 2, before the epoch's end is
    recorded). Signals are simulated here by the cross-worker agreement (the real path is tested above).
    """
    model_dir = tmp_path / "run"
    config = make_config(
        str(model_dir), epochs=1, steps_per_loop=1, checkpoint_every_steps=0, optimizer="rmsprop", learning_rate=1e-3
    )
    config.model.update(name="vgg16_transfer", weights="none", freeze_base=True)
    config.fine_tune.update(epochs=2, learning_rate=1e-3)
    data = make_data(8, num_train=16, image_shape=(32, 32, 3))

    with monkeypatch.context() as patch:
        patch.setattr(train, "_make_any_worker", _stopping_agreement(stop_after_step))
        with pytest.raises(preemption.Preempted, match=f"at step {stop_after_step} "):
            train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    saved = checkpointing.latest_checkpoint(str(model_dir))
    assert saved.endswith(f"ckpt-{stop_after_step}")
    state = _state(saved)
    assert (state["phase"], state["epoch"], state["step"], state["iterations"]) == restored

    # The weights of the rerun's model right after its restore, written as a checkpoint of their own.
    restored_models = []
    restore_state = checkpointing.restore_state

    def restore_and_record(path, model, train_state):
        restore_state(path, model, train_state)
        restored_models.append((path, tf.train.Checkpoint(model=model).write(str(tmp_path / "restored" / "model"))))

    monkeypatch.setattr(checkpointing, "restore_state", restore_and_record)
    _, records = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    assert [path for path, _ in restored_models] == [saved]
    model_paths = [
        key.split("/.ATTRIBUTES/")[0]
        for key in tf.train.load_checkpoint(restored_models[0][1]).get_variable_to_shape_map()
        if key.startswith("model/")
    ]
    restored_weights, saved_weights = (_values_at(path, model_paths) for path in (restored_models[0][1], saved))
    assert len(model_paths) == 30  # VGG16's 13 convolutions and the 2 dense layers of the head, kernel and bias.
    assert [path for path in model_paths if not np.array_equal(restored_weights[path], saved_weights[path])] == []
    assert [(r["phase"], r["epoch"], r["step"]) for r in records] == [
        ("train", 1, 2),
        ("fine_tune", 2, 4),
        ("fine_tune", 3, 6),
    ]
    # The fine_tune optimizer ran all 4 of its steps: restored after 1, fresh at the boundary.
    assert _state(checkpointing.latest_checkpoint(str(model_dir))) == {
        "step": 6,
        "epoch": 3,
        "phase": 2,
        "iterations": 4,
    }


def _values_at(checkpoint, object_paths):
    """The values of the variables at these object paths ('model/_operations/3/_kernel') in `checkpoint`.

    A variable the model and the optimizer share is saved once, under whichever path the saver reached
    first (trainable ones under `optimizer/_trainable_variables/`), so the object graph, not the key, says where
    each one is.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    )

    def value(object_path):
        node = graph.nodes[0]
        for name in object_path.split("/"):
            node = graph.nodes[next(child.node_id for child in node.children if child.local_name == name)]
        (key,) = (attribute.checkpoint_key for attribute in node.attributes if attribute.name == "VARIABLE_VALUE")
        return reader.get_tensor(key)

    return {path: value(path) for path in object_paths}


def _same_batch_data():
    """4 steps per epoch, every one on the same 8 examples: a run that restarts its input (as a resume does, and
    without the first batch a fresh run logs as images) trains on the very batches an uninterrupted run does."""
    data = make_data(8, num_train=8)
    return train.Data(**{**data.__dict__, "train_steps_per_epoch": 4})


def _same_batch_config(model_dir):
    return make_config(str(model_dir), epochs=2, steps_per_loop=1, checkpoint_every_steps=0)


@pytest.fixture(scope="module")
def uninterrupted_same_batch_run(tmp_path_factory):
    _, records = train.train_and_evaluate(
        _same_batch_config(tmp_path_factory.mktemp("uninterrupted")), tf.distribute.get_strategy(), _same_batch_data()
    )
    return records


@pytest.mark.parametrize("stop_at_step", [2, 4, 7])
def test_a_resumed_epoch_logs_the_loss_and_accuracy_of_all_its_steps(
    tmp_path, monkeypatch, uninterrupted_same_batch_run, stop_at_step
):
    """The interrupted epoch's history row sums its steps before the stop (restored from the checkpoint) and those
    after it, so it equals an uninterrupted run's row; a resume that lost the partial sums would log less.

    Stopped mid-epoch 1, at its last step (before its end is recorded), and mid-epoch 2 (after the sums were reset).
    """
    config, data = _same_batch_config(tmp_path), _same_batch_data()
    with monkeypatch.context() as patch:
        patch.setattr(train, "_make_any_worker", _stopping_agreement(stop_at_step))
        with pytest.raises(preemption.Preempted, match=f"at step {stop_at_step} "):
            train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    saved = tf.train.load_checkpoint(checkpointing.latest_checkpoint(str(tmp_path)))
    partial = {
        name: saved.get_tensor(f"epoch_{name}/.ATTRIBUTES/VARIABLE_VALUE") for name in ("loss", "correct", "count")
    }
    steps_into_epoch = (stop_at_step - 1) % 4 + 1
    assert partial["count"] == 8 * steps_into_epoch
    assert partial["loss"] > 0 and partial["correct"] > 0  # Sums that a resume could lose.

    _, records = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    expected = uninterrupted_same_batch_run
    assert (
        [(r["phase"], r["epoch"], r["step"]) for r in records]
        == [(r["phase"], r["epoch"], r["step"]) for r in expected]
        == [("train", 1, 4), ("train", 2, 8)]
    )
    for row, expected_row in zip(records, expected, strict=True):
        for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert row[metric] == pytest.approx(expected_row[metric], rel=1e-6), (row["epoch"], metric)
