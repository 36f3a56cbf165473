"""The training driver: phases, epochs of `steps_per_loop`-step calls, evaluation, checkpoints, export.

A custom tf.distribute loop around a Keras 3 model and optimizer (why not `model.fit`: BUILD_NOTES.md, "The loop");
the per-replica steps are built in trainer/steps.py. `run` is what `python -m trainer.main` calls with a validated
config; `train_and_evaluate` takes a strategy and a `Data` directly (tests, other drivers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from trainer import (
    checkpointing,
    distribution,
    export,
    features,
    files,
    input_pipeline,
    models,
    preemption,
    progress,
    steps,
    summaries,
)
from trainer import evaluate as evaluation
from trainer import history as history_lib
from trainer.checkpointing import CHECKPOINT_SUBDIR
from trainer.data import Data, InputFn
from trainer.errors import UserError
from trainer.history import METRICS_FILE  # noqa: F401  (re-exported: the model_dir layout)

CONFIG_FILE = "config.json"
EVAL_CONFIG_FILE = "config_eval.json"  # --mode=eval keeps the training run's config.json.


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    optimizer: str
    learning_rate: float
    unfreeze_from: str | None  # Transfer models: see models.set_base_trainable.


def phases(config: ml_collections.ConfigDict) -> list[Phase]:
    result = [
        Phase(
            "train",
            config.epochs,
            config.optimizer,
            config.learning_rate,
            None if config.model.freeze_base else models.WHOLE_BASE,
        )
    ]
    if config.fine_tune.epochs:
        result.append(
            Phase(
                "fine_tune",
                config.fine_tune.epochs,
                config.fine_tune.optimizer,
                config.fine_tune.learning_rate,
                config.fine_tune.unfreeze_from,
            )
        )
    return [phase for phase in result if phase.epochs]


def run(config: ml_collections.ConfigDict) -> tuple[keras.Model, list[dict[str, Any]]]:
    """Sets up devices, strategy and precision from `config`, then trains and/or evaluates.

    `config` must have passed config_fields.validate (trainer.main.resolve_config validates it).
    """
    distribution.configure_cpu_devices(config.num_cpu_devices)
    strategy = distribution.make_strategy(config.strategy, config.tpu)
    precision = distribution.resolve_precision(config.mixed_precision, config.strategy)
    config.mixed_precision = precision.policy
    distribution.set_precision(precision.policy)
    logging.info(
        "Strategy %s with %d replicas, precision %s%s.",
        config.strategy,
        strategy.num_replicas_in_sync,
        precision.policy,
        f" ({precision.reason})" if precision.reason else "",
    )
    finished = checkpointing.finished_at(config.model_dir, len(phases(config))) if config.mode != "eval" else None
    model, records = train_and_evaluate(config, strategy, load_data(config))
    if config.mode != "eval" and distribution.is_chief(strategy):
        _export_best_model(config, model, finished)
    return model, records


def load_data(config: ml_collections.ConfigDict) -> Data:
    info = _open_dataset(config.data_dir)
    _check_model_inputs(info, config.model.name)
    image_size = (int(config.image_size[0]), int(config.image_size[1]))

    def input_fn(split: str, training: bool) -> InputFn:
        return input_pipeline.make_input_fn(
            info,
            split,
            training=training,
            image_size=image_size,
            global_batch_size=config.global_batch_size,
            normalization=config.normalization,
            seed=config.seed,
            cache=config.cache,
        )

    training, evaluating = config.mode != "eval", config.mode != "train"
    eval_split = config.test_split if config.mode == "eval" else config.eval_split
    return Data(
        num_classes=info.num_classes,
        input_shape=input_pipeline.model_input_shape(info, image_size, config.normalization),
        train_input_fn=input_fn(config.train_split, True) if training else None,
        eval_input_fn=input_fn(eval_split, False) if evaluating else None,
        train_steps_per_epoch=(
            input_pipeline.steps_per_epoch(info, config.train_split, config.global_batch_size) if training else 0
        ),
        eval_examples=info.split_sizes.get(eval_split, 0),
        class_names=info.class_names,
        images=info.metadata.features is None,
        eval_examples_at=functools.partial(input_pipeline.read_examples, info, eval_split) if evaluating else None,
    )


def _check_model_inputs(info: input_pipeline.DatasetInfo, model_name: str) -> None:
    """vgg16_head trains on a feature dataset, every other model on images."""
    spec = info.metadata.features
    if models.takes_features(model_name) and spec is None:
        raise UserError(
            f"model {model_name} trains on a feature dataset and {info.data_dir} holds images: extract its features "
            f"with `python -m data_prep.extract_features --data_dir={info.data_dir} --output_dir=FEATURES`, then "
            "pass --data_dir=FEATURES."
        )
    if not models.takes_features(model_name) and spec is not None:
        raise UserError(
            f"{info.data_dir} holds features of a frozen {spec.base_model} base, which model {models.HEAD_MODEL} "
            f"trains on; model {model_name} takes images: pass the image dataset's directory."
        )


def _open_dataset(data_dir: str, *, warn_if_smoke: bool = True) -> input_pipeline.DatasetInfo:
    """The dataset reader raises ValueError for a directory that does not match its metadata.json: bad input."""
    try:
        return input_pipeline.open_dataset(data_dir, warn_if_smoke=warn_if_smoke)
    except ValueError as e:
        raise UserError(str(e)) from e


def train_and_evaluate(
    config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, data: Data
) -> tuple[keras.Model, list[dict[str, Any]]]:
    """Runs `config.mode`; returns the model and one metrics record per epoch (or the single evaluation)."""
    is_chief = distribution.is_chief(strategy)
    if is_chief:
        tf.io.gfile.makedirs(config.model_dir)
        config_file = EVAL_CONFIG_FILE if config.mode == "eval" else CONFIG_FILE
        files.write_atomic(
            tf.io.gfile.join(config.model_dir, config_file), config.to_json_best_effort(indent=2, sort_keys=True)
        )
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = models.build_model(config.model.name, data.input_shape, data.num_classes, config.model.weights)
    if config.mode == "eval":
        return model, [_evaluate_checkpoint(config, strategy, model, data, is_chief)]
    evaluate = steps.make_evaluator(strategy, model, data) if data.eval_input_fn else None
    checkpoint_dir = tf.io.gfile.join(config.model_dir, CHECKPOINT_SUBDIR)
    return model, _Training(config, strategy, data, model, evaluate, checkpoint_dir, is_chief).run()


def _evaluate_checkpoint(
    config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, model: keras.Model, data: Data, is_chief: bool
) -> dict[str, Any]:
    """--mode=eval: the report of config.eval_checkpoint (default: the best model, else the latest checkpoint)
    on config.test_split, written by the chief to model_dir/eval/ (see trainer/evaluate.py)."""
    path = config.eval_checkpoint or checkpointing.best_or_latest_checkpoint(config.model_dir)
    if not path or not tf.io.gfile.exists(f"{path}.index"):
        raise FileNotFoundError(
            f"--mode=eval: no checkpoint {path or 'in ' + config.model_dir}; train first, or "
            "set --config.eval_checkpoint=MODEL_DIR/checkpoints/ckpt-<step>."
        )
    assert data.eval_input_fn is not None, "--mode=eval reads the test split"
    _restore_model(model, path)
    class_names = data.class_names or tuple(str(k) for k in range(data.num_classes))
    report, mistakes = evaluation.evaluate_split(
        strategy,
        model,
        data.eval_input_fn,
        num_examples=data.eval_examples,
        class_names=class_names,
        split=config.test_split,
        checkpoint=path,
    )
    # Every worker has the report and the mistakes (both reduced or gathered across replicas) and returns them, so
    # that trainer.evaluate_model answers without reading what only the chief writes.
    examples = data.eval_examples_at([m.index for m in mistakes]) if data.eval_examples_at else {}
    if is_chief:
        evaluation.write_report(report, config.model_dir)
        evaluation.write_mistakes(
            mistakes, examples, class_names, config.model_dir, config.test_split, images=data.images
        )
    logging.info("eval %s on %s: loss=%.4f accuracy=%.4f", path, config.test_split, report["loss"], report["accuracy"])
    return {
        "checkpoint": path,
        "split": config.test_split,
        "val_loss": report["loss"],
        "val_accuracy": report["accuracy"],
        "report": report,
        "mistakes": evaluation.mistakes_list(mistakes, examples, class_names),
    }


def _export_best_model(
    config: ml_collections.ConfigDict, model: keras.Model, finished: tuple[int, int] | None = None
) -> None:
    """Exports for serving the model --mode=eval evaluates by default (restored into `model`), and says so in one
    line, which for a run that had `finished` (epoch, step) before this call says that nothing was trained."""
    rerun = (
        f"{config.model_dir} already finished at step {finished[1]} (epoch {finished[0]}): nothing to train; "
        if finished
        else ""
    )
    info = _open_dataset(config.data_dir, warn_if_smoke=False)  # Said when the data was loaded.
    if not features.servable(info):
        logging.warning(
            "%snot exported: the features in %s come from a randomly initialised base, which was not saved.",
            rerun,
            config.data_dir,
        )
        return
    path = checkpointing.best_or_latest_checkpoint(config.model_dir)
    if path:  # None after zero epochs.
        _restore_model(model, path)
    saved_model = export.export_model(
        model, tf.io.gfile.join(config.model_dir, export.EXPORT_SUBDIR), info, config.image_size, config.normalization
    )
    logging.info(
        "%s%s %s (serving signature on encoded images) and %s from %s.",
        rerun,
        "re-exported" if rerun else "Exported",
        saved_model,
        export.KERAS_FILE,
        path or "the initial model",
    )


def _restore_model(model: keras.Model, path: str) -> None:
    tf.train.Checkpoint(model=model).restore(path).assert_existing_objects_matched().expect_partial()


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or Inf; nothing after the last finite state was saved."""


class _Training:
    """The phases in turn, from the latest checkpoint's step on if `checkpoint_dir` holds one.

    A checkpoint is taken every `checkpoint_every_steps` steps, at each epoch end
    and on SIGTERM, so a restart loses at most one interval and ends at the same
    step as an uninterrupted run; the training data after a restart is not the
    same sequence of batches (the infinite input restarts its shuffle).
    A fresh run logs its first batch as images to TensorBoard (features are not logged); that batch is not trained
    on. A fresh run with config.init_head_from starts vgg16_transfer's head from that vgg16_head run's.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        strategy: tf.distribute.Strategy,
        data: Data,
        model: keras.Model,
        evaluate: Callable[[], dict[str, float]] | None,
        checkpoint_dir: str,
        is_chief: bool,
    ) -> None:
        self.config, self.strategy, self.data, self.model, self.evaluate = config, strategy, data, model, evaluate
        self.checkpoint_dir, self.is_chief = checkpoint_dir, is_chief
        self.phases = phases(config)
        self.total_epochs = sum(phase.epochs for phase in self.phases)
        self.state = checkpointing.TrainState.create(config.best_mode)
        self.restored = tf.train.latest_checkpoint(checkpoint_dir)
        if self.restored:
            checkpointing.restore_state(self.restored, model, self.state)
            self._check_resumable()
        elif config.init_head_from:
            features.init_head(model, config, _read_run_config(config.init_head_from), data.class_names)
        self.history = history_lib.History.resume(config.model_dir if is_chief else None, self._step)
        self.summaries = summaries.Summaries(config.model_dir, is_chief)
        self.iterator = iter(strategy.distribute_datasets_from_function(data.train_input_fn))
        # A best metric the run computes; otherwise no best-model tracking.
        self.best_metric = config.best_metric if evaluate or not config.best_metric.startswith("val_") else ""
        self.best_manager = checkpointing.make_manager(
            tf.train.Checkpoint(model=model, epoch=self.state.epoch, step=self.state.step),
            tf.io.gfile.join(config.model_dir, checkpointing.BEST_SUBDIR),
            strategy,
            is_chief,
            max_to_keep=1,
        )
        self.any_worker = _make_any_worker(strategy)
        self.stop = preemption.StopRequest()
        self.progress = progress.EpochProgress(config.progress_every_s if is_chief else 0.0)

    @property
    def _step(self) -> int:
        return int(self.state.step.numpy())

    def _check_resumable(self) -> None:
        state, steps_per_epoch = self.state, self.data.train_steps_per_epoch
        if int(state.phase.numpy()) < len(self.phases):  # A finished run says so when it exports (_export_best_model).
            logging.info(
                "Resuming from %s: phase %d, epoch %d, step %d.",
                self.restored,
                int(state.phase.numpy()),
                int(state.epoch.numpy()),
                self._step,
            )
        steps_into_epoch, phase = state.steps_into_epoch(steps_per_epoch), int(state.phase.numpy())
        if not 0 <= steps_into_epoch <= steps_per_epoch or phase > len(self.phases):
            raise UserError(
                f"{self.restored} (epoch {int(state.epoch.numpy())}, step {self._step}, phase "
                f"{phase}) does not fit this config ({steps_per_epoch} steps per epoch, "
                f"{len(self.phases)} phases): resume with the run's own config.json, or train "
                "in a new --model_dir."
            )

    def run(self) -> list[dict[str, Any]]:
        if self.restored:
            self.history.plot()
        else:
            images, _ = next(self.iterator)
            if self.data.images:
                self.summaries.images(0, self.strategy.experimental_local_results(images)[0], self.config.normalization)
        with self.stop:
            for index in range(int(self.state.phase.numpy()), len(self.phases)):
                self._run_phase(index, self.phases[index])
        self.summaries.flush()
        self.history.plot()
        return self.history.records

    def _run_phase(self, index: int, phase: Phase) -> None:
        """Rebuilds optimizer and step, as trainability is fixed when a step is traced."""
        if models.is_transfer(self.model):
            models.set_base_trainable(self.model, phase.unfreeze_from)
        with self.strategy.scope():
            optimizer = steps.make_optimizer(phase.optimizer, phase.learning_rate)
            optimizer.build(self.model.trainable_variables)
        if self.restored and self.state.steps_into_phase(self.data.train_steps_per_epoch) > 0:
            checkpointing.restore_optimizer(self.restored, optimizer)
        train_loop = steps.make_train_loop(
            self.strategy,
            self.model,
            optimizer,
            global_batch_size=self.config.global_batch_size,
            jit_compile=self.config.jit_compile,
        )
        manager = checkpointing.make_manager(
            tf.train.Checkpoint(model=self.model, optimizer=optimizer, **self.state.variables()),
            self.checkpoint_dir,
            self.strategy,
            self.is_chief,
            self.config.checkpoints_to_keep,
        )
        logging.info(
            "Phase %s: %d epochs, %s lr=%g, %d trainable variables.",
            phase.name,
            phase.epochs,
            phase.optimizer,
            phase.learning_rate,
            len(self.model.trainable_variables),
        )
        while int(self.state.phase.numpy()) == index:
            with self._epoch_progress(phase):
                images_per_second = self._run_epoch(phase, train_loop, optimizer, manager)
            self._end_epoch(index, phase, optimizer, manager, images_per_second)

    def _epoch_progress(self, phase: Phase) -> contextlib.AbstractContextManager[None]:
        state = self.state
        return self.progress.epoch(
            f"epoch {int(state.epoch.numpy()) + 1}/{self.total_epochs} ({phase.name})",
            state.steps_into_epoch(self.data.train_steps_per_epoch),
            self.data.train_steps_per_epoch,
            {key: float(getattr(state, f"epoch_{key}").numpy()) for key in progress.SUMS},
        )

    def _run_epoch(
        self,
        phase: Phase,
        train_loop: Callable[[Any, tf.Tensor], steps.Sums],
        optimizer: keras.optimizers.Optimizer,
        manager: tf.train.CheckpointManager,
    ) -> float | None:
        """The epoch's remaining steps, `steps_per_loop` at a time; returns images/s (None if none ran)."""
        state, steps_per_epoch, every = self.state, self.data.train_steps_per_epoch, self.config.checkpoint_every_steps
        count = seconds = 0.0
        while (done := state.steps_into_epoch(steps_per_epoch)) < steps_per_epoch:
            num_steps = min(self.config.steps_per_loop, steps_per_epoch - done)
            if every:
                num_steps = min(num_steps, every - self._step % every)
            start = time.perf_counter()
            totals = {k: float(v.numpy()) for k, v in train_loop(self.iterator, tf.constant(num_steps)).items()}
            seconds += time.perf_counter() - start
            if totals["first_nonfinite"] >= 0:
                self._fail_non_finite(
                    f"training loss is NaN or Inf at step {self._step + int(totals['first_nonfinite']) + 1}", phase
                )
            state.step.assign_add(num_steps)
            for variable, key in (
                (state.epoch_loss, "loss"),
                (state.epoch_correct, "correct"),
                (state.epoch_count, "count"),
            ):
                variable.assign_add(totals[key])
            count += totals["count"]
            self.progress.update(done + num_steps, totals)
            self.summaries.train(
                self._step,
                {
                    "loss": totals["loss"] / totals["count"],
                    "accuracy": totals["correct"] / totals["count"],
                    "learning_rate": _learning_rate(optimizer),
                    "images_per_second": count / seconds,
                },
            )
            stopping = bool(self.any_worker(tf.constant(float(self.stop.requested))) > 0)
            if stopping or every and self._step % every == 0 and done + num_steps < steps_per_epoch:
                path = self._save(manager, phase)
            if stopping:
                self.summaries.flush()
                raise preemption.Preempted(
                    f"stopped by a termination signal at step {self._step} (epoch "
                    f"{int(state.epoch.numpy()) + 1}); saved {path}. Rerun the same "
                    "command to resume."
                )
        return count / seconds if seconds else None

    def _end_epoch(
        self,
        index: int,
        phase: Phase,
        optimizer: keras.optimizers.Optimizer,
        manager: tf.train.CheckpointManager,
        images_per_second: float | None,
    ) -> None:
        """Evaluates, tracks the best model, decides whether the phase ends, records and saves."""
        state = self.state
        state.epoch.assign_add(1)
        epoch, count = int(state.epoch.numpy()), float(state.epoch_count.numpy())
        record: dict[str, Any] = {
            "phase": phase.name,
            "epoch": epoch,
            "step": self._step,
            "train_loss": float(state.epoch_loss.numpy()) / count,
            "train_accuracy": float(state.epoch_correct.numpy()) / count,
            "learning_rate": _learning_rate(optimizer),
            "images_per_second": images_per_second,
        }  # The first epoch includes tracing.
        if self.evaluate is not None:
            record.update(self.evaluate())
            self.summaries.validation(self._step, {"loss": record["val_loss"], "accuracy": record["val_accuracy"]})
        for variable in (state.epoch_loss, state.epoch_correct, state.epoch_count):
            variable.assign(0.0)
        if self.best_metric and self._improves(record[self.best_metric]):
            state.best_value.assign(record[self.best_metric])
            state.best_epoch.assign(epoch)
            self._save_best(record, phase)  # Before the state that records it: a crash may only lose a best.
        phase_start = int(state.phase_start_epoch.numpy())
        patience = self.config.early_stopping_patience
        stop_early = bool(patience) and epoch - max(int(state.best_epoch.numpy()), phase_start) >= patience
        if stop_early:
            logging.info(
                "Early stopping of phase %s at epoch %d: no better %s for %d epochs (best %.4f at epoch %d).",
                phase.name,
                epoch,
                self.best_metric,
                patience,
                float(state.best_value.numpy()),
                int(state.best_epoch.numpy()),
            )
        if stop_early or epoch - phase_start >= phase.epochs:
            state.phase.assign(index + 1)
            state.phase_start_epoch.assign(epoch)
        # Recorded before the checkpoint: a crash in between re-runs the epoch and History.resume drops the row.
        self.history.append(record)
        _log_epoch(record, self.total_epochs)
        self._save(manager, phase)

    def _improves(self, value: float) -> bool:
        best = float(self.state.best_value.numpy())
        return value > best if self.config.best_mode == "max" else value < best

    def _save(self, manager: tf.train.CheckpointManager, phase: Phase) -> str:
        if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.trainable_weights):
            self._fail_non_finite(f"weights are NaN or Inf after step {self._step}", phase)
        return checkpointing.save(manager, self._step, self.is_chief)

    def _save_best(self, record: dict[str, Any], phase: Phase) -> None:
        path = self._save(self.best_manager, phase)
        if self.is_chief:
            checkpointing.write_best_info(
                self.config.model_dir,
                {
                    "checkpoint": path,
                    "metric": self.best_metric,
                    "mode": self.config.best_mode,
                    "value": record[self.best_metric],
                    "epoch": record["epoch"],
                    "step": record["step"],
                    "phase": record["phase"],
                },
            )
        logging.info(
            "New best %s=%.4f at epoch %d: %s.", self.best_metric, record[self.best_metric], record["epoch"], path
        )

    def _fail_non_finite(self, what: str, phase: Phase) -> None:
        self.summaries.flush()
        raise NonFiniteLossError(
            f"{what} (epoch {int(self.state.epoch.numpy()) + 1}, phase {phase.name}); stopped without saving. "
            f"Last good checkpoint: {tf.train.latest_checkpoint(self.checkpoint_dir) or 'none'}. Lower the "
            "learning rate or check the data."
        )


def _read_run_config(model_dir: str) -> dict[str, Any]:
    """The config.json a training run wrote to its model_dir."""
    path = tf.io.gfile.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not the model_dir of a training run.")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))  # A MirroredVariable under strategies.


def _make_any_worker(strategy: tf.distribute.Strategy) -> Callable[[tf.Tensor], tf.Tensor]:
    """Sum of a 0/1 flag over all replicas: a signal on any worker stops every worker at the same step."""

    @tf.function
    def any_worker(flag: tf.Tensor) -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)

    return any_worker


def _log_epoch(record: dict[str, Any], total_epochs: int) -> None:
    message = (
        f"epoch {record['epoch']}/{total_epochs} ({record['phase']}): "
        f"train_loss={record['train_loss']:.4f} train_accuracy={record['train_accuracy']:.4f}"
    )
    if "val_loss" in record:
        message += f" val_loss={record['val_loss']:.4f} val_accuracy={record['val_accuracy']:.4f}"
    logging.info(
        "%s images/s=%s",
        message,
        f"{record['images_per_second']:.1f}" if record["images_per_second"] is not None else "-",
    )
