"""Checkpoints of a training run: where they live in model_dir, the state they carry, chief-only writes.

  model_dir/checkpoints/ckpt-<step>.*  every `checkpoint_every_steps`, at each epoch end and on SIGTERM:
                                       model, optimizer (of the current phase) and TrainState.
  model_dir/best/ckpt-<step>.*         the model with the best `best_metric` so far, and best.json.

Under MultiWorkerMirroredStrategy every worker must take part in each save; only
the chief writes to model_dir, the others to a temporary folder deleted right after.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import keras
import tensorflow as tf

from trainer import distribution, files

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
BEST_INFO_FILE = "best.json"


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where training is, saved with every checkpoint so a restart continues at the same step.

    `phase` is the phase the next step belongs to (len(phases) once training is
    over, early stopping included); `phase_start_epoch` is the epoch it began at.
    `epoch_*` sum the current epoch's steps so far, so a mid-epoch resume logs
    the whole epoch's training metrics.
    """

    epoch: tf.Variable
    step: tf.Variable
    phase: tf.Variable
    phase_start_epoch: tf.Variable
    best_value: tf.Variable
    best_epoch: tf.Variable
    epoch_loss: tf.Variable
    epoch_correct: tf.Variable
    epoch_count: tf.Variable

    @classmethod
    def create(cls, best_mode: str) -> TrainState:
        def counter(name):
            return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)

        def total(name, value=0.0):
            return tf.Variable(value, dtype=tf.float64, trainable=False, name=name)

        return cls(
            epoch=counter("epoch"),
            step=counter("step"),
            phase=counter("phase"),
            phase_start_epoch=counter("phase_start_epoch"),
            best_value=total("best_value", -math.inf if best_mode == "max" else math.inf),
            best_epoch=counter("best_epoch"),
            epoch_loss=total("epoch_loss"),
            epoch_correct=total("epoch_correct"),
            epoch_count=total("epoch_count"),
        )

    def variables(self) -> dict[str, tf.Variable]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def steps_into_epoch(self, steps_per_epoch: int) -> int:
        return int(self.step.numpy()) - int(self.epoch.numpy()) * steps_per_epoch

    def steps_into_phase(self, steps_per_epoch: int) -> int:
        return int(self.step.numpy()) - int(self.phase_start_epoch.numpy()) * steps_per_epoch


def restore_state(path: str, model: keras.Model, state: TrainState) -> None:
    """Restores the model and the counters; the optimizer waits until its phase has built it."""
    status = tf.train.Checkpoint(model=model, **state.variables()).restore(path)
    status.assert_existing_objects_matched().expect_partial()


def restore_optimizer(path: str, optimizer: keras.optimizers.Optimizer) -> None:
    tf.train.Checkpoint(optimizer=optimizer).restore(path).assert_existing_objects_matched().expect_partial()


def make_manager(
    checkpoint: tf.train.Checkpoint, directory: str, strategy: tf.distribute.Strategy, is_chief: bool, max_to_keep: int
) -> tf.train.CheckpointManager:
    if not is_chief:
        directory = tf.io.gfile.join(
            os.path.dirname(directory), f"tmp_worker{distribution.worker_id(strategy)}", os.path.basename(directory)
        )
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def save(manager: tf.train.CheckpointManager, step: int, is_chief: bool) -> str:
    """Saves as ckpt-<step>; a non-chief worker then deletes its temporary copy."""
    path = manager.save(checkpoint_number=step)
    if not is_chief:
        tf.io.gfile.rmtree(os.path.dirname(manager.directory))
    return path


def write_best_info(model_dir: str, info: dict) -> None:
    content = json.dumps(info, indent=2, sort_keys=True)
    files.write_atomic(tf.io.gfile.join(model_dir, BEST_SUBDIR, BEST_INFO_FILE), content)


def latest_checkpoint(model_dir: str) -> str | None:
    return tf.train.latest_checkpoint(tf.io.gfile.join(model_dir, CHECKPOINT_SUBDIR))


def best_or_latest_checkpoint(model_dir: str) -> str | None:
    """The best model's checkpoint if best-model tracking ran, else the latest; restore with
    `tf.train.Checkpoint(model=model).restore(path).expect_partial()`."""
    return tf.train.latest_checkpoint(tf.io.gfile.join(model_dir, BEST_SUBDIR)) or latest_checkpoint(model_dir)


def finished_at(model_dir: str, num_phases: int) -> tuple[int, int] | None:
    """(epoch, step) at which the run in model_dir ended its last phase, from its latest checkpoint; None if it has
    not (or has no checkpoint). Rerunning such a run trains nothing."""
    path = latest_checkpoint(model_dir)
    if path is None:
        return None
    reader = tf.train.load_checkpoint(path)
    epoch, step, phase = (
        int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")) for name in ("epoch", "step", "phase")
    )
    return (epoch, step) if phase >= num_phases else None
