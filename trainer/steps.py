"""What runs per replica: the step builders whose functions `strategy.run` executes inside a tf.function.

The driver (trainer/train.py) decides when to call them and what to do with their results; these decide what one
call computes: the per-example loss (the head's, from trainer/models.py) averaged over the global batch, the metric
sums reduced across replicas, the optimizer that applies the gradients. Evaluation is trainer/evaluate.py's masked
pass, the same one --mode=eval runs. Kept apart from the driver so the benchmark (benchmarks/train_step.py) and the
tests build the very step the trainer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from trainer import evaluate, models
from trainer.data import Data
from trainer.errors import UserError

Sums = dict[str, tf.Tensor]  # loss (sum over examples), correct, count


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The named Keras optimizer; wrapped in a LossScaleOptimizer when the dtype policy computes in float16."""
    optimizer = keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})
    if keras.config.dtype_policy().compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _sums(labels: tf.Tensor, outputs: tf.Tensor, example_losses: tf.Tensor) -> Sums:
    return {
        "loss": tf.reduce_sum(example_losses),
        "correct": tf.reduce_sum(tf.cast(models.predicted_class(outputs) == labels, tf.float32)),
        "count": tf.cast(tf.size(labels), tf.float32),
    }


def _zeros() -> Sums:
    return {"loss": tf.constant(0.0), "correct": tf.constant(0.0), "count": tf.constant(0.0)}


def _reduce(strategy: tf.distribute.Strategy, per_replica: Sums) -> Sums:
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}


def make_train_loop(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    *,
    global_batch_size: int,
    jit_compile: bool,
) -> Callable[[Any, tf.Tensor], Sums]:
    """A tf.function running `num_steps` synchronous steps from a distributed iterator; returns summed metrics
    and `first_nonfinite`, the index of the first step whose loss was NaN or Inf (-1: none).

    With `jit_compile`, XLA compiles each replica's forward and backward pass; the
    gradient all-reduce and update stay outside XLA: a compiled step containing
    `apply_gradients`, or any other cross-replica sum, fails under MirroredStrategy
    ("merge_call called while defining a new graph").
    """

    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            example_losses = models.per_example_loss(labels, outputs)
            loss = tf.nn.compute_average_loss(example_losses, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        return gradients, _sums(labels, outputs, example_losses)

    if jit_compile:
        if strategy.num_replicas_in_sync > 1 and models.has_synchronized_batch_norm(model):
            raise UserError(
                f"jit_compile with {strategy.num_replicas_in_sync} replicas cannot compile "
                f"{model.name}'s synchronized BatchNormalization (a cross-replica all-reduce inside "
                "XLA); run without --config.jit_compile or on one replica."
            )
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, labels):
        gradients, sums = forward_backward(images, labels)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return sums

    @tf.function
    def train_loop(iterator, num_steps):
        totals = _zeros()
        first_nonfinite = tf.constant(-1)
        for i in tf.range(num_steps):
            sums = _reduce(strategy, strategy.run(replica_step, args=next(iterator)))
            totals = {k: totals[k] + sums[k] for k in totals}
            first_nonfinite = tf.where(
                tf.logical_and(first_nonfinite < 0, tf.logical_not(tf.math.is_finite(sums["loss"]))), i, first_nonfinite
            )
        return {**totals, "first_nonfinite": first_nonfinite}

    return train_loop


def make_evaluator(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    data: Data,
) -> Callable[[], dict[str, float]]:
    """val_loss and val_accuracy over one pass of the eval input (see evaluate.make_evaluation_pass)."""
    assert data.eval_input_fn is not None, "an evaluator needs the eval input"
    evaluation_pass = evaluate.make_evaluation_pass(
        strategy,
        model,
        data.eval_input_fn,
        num_classes=data.num_classes,
        num_examples=data.eval_examples,
        num_mistakes=0,  # Only --mode=eval's report lists mistakes.
    )

    def evaluate_model() -> dict[str, float]:
        totals = evaluation_pass()
        return {"val_loss": totals.loss, "val_accuracy": totals.accuracy}

    return evaluate_model
