"""Evaluation of one split: the masked pass every evaluation runs, and the report of --mode=eval.

`make_evaluation_pass` serves both the per-epoch val_loss/val_accuracy and the report: each replica sums the losses
of its real examples (mask 1) and counts their confusion matrix, both summed across replicas, and the count is
checked against the split size (why: BUILD_NOTES.md, "Evaluation, export, prediction"). The chief writes the report
under model_dir/eval/: `<split>.json` and `<split>_confusion_matrix.png`.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from trainer import files, models
from trainer.data import InputFn  # Here: yields (images, labels, mask) batches.

REPORT_SUBDIR = "eval"
MAX_ANNOTATED_CLASSES = 30  # Beyond this the plot shows colours only: counts would not be legible.


@dataclasses.dataclass(frozen=True)
class Totals:
    """What one evaluation pass sums over the real examples of a split."""

    loss_sum: float
    confusion: np.ndarray  # int64 [true class, predicted class]

    @property
    def num_examples(self) -> int:
        return int(self.confusion.sum())

    @property
    def loss(self) -> float:
        return self.loss_sum / self.num_examples

    @property
    def accuracy(self) -> float:
        return int(np.trace(self.confusion)) / self.num_examples


def make_evaluation_pass(
    strategy: tf.distribute.Strategy, model: keras.Model, input_fn: InputFn, *, num_classes: int, num_examples: int
) -> Callable[[], Totals]:
    """A function running one pass over `input_fn`'s `(images, labels, mask)` batches.

    Built once and called as often as needed (every epoch), so the loop is traced once.
    Raises RuntimeError when the unmasked examples are not `num_examples`.
    """
    dataset = strategy.distribute_datasets_from_function(input_fn)

    def replica_step(images, labels, mask):
        outputs = model(images, training=False)
        example_losses = models.per_example_loss(labels, outputs)
        # tf.where, not a product: a non-finite output on a padding example must not reach the sum.
        loss = tf.reduce_sum(tf.where(mask > 0, example_losses, tf.zeros_like(example_losses)))
        return loss, tf.math.confusion_matrix(
            labels, models.predicted_class(outputs), num_classes=num_classes, weights=mask, dtype=tf.float32
        )

    @tf.function
    def count_all(dataset):
        loss, confusion = tf.constant(0.0), tf.zeros([num_classes, num_classes])
        for batch in dataset:
            batch_loss, batch_confusion = strategy.run(replica_step, args=batch)
            loss += strategy.reduce(tf.distribute.ReduceOp.SUM, batch_loss, axis=None)
            confusion += strategy.reduce(tf.distribute.ReduceOp.SUM, batch_confusion, axis=None)
        return loss, confusion

    def evaluation_pass() -> Totals:
        loss, confusion = count_all(dataset)
        totals = Totals(float(loss.numpy()), confusion.numpy().astype(np.int64))
        if totals.num_examples != num_examples:
            raise RuntimeError(
                f"evaluation saw {totals.num_examples} examples, the split has {num_examples}: the "
                "eval input must yield every example exactly once."
            )
        return totals

    return evaluation_pass


def make_report(
    confusion: np.ndarray, loss_sum: float, class_names: Sequence[str], *, split: str, checkpoint: str
) -> dict[str, Any]:
    """The JSON report; precision of a class never predicted (recall of one absent) is null, not 0."""
    confusion = np.asarray(confusion, np.int64)
    total, correct = int(confusion.sum()), int(np.trace(confusion))
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(numerator: int, denominator: int) -> float | None:
        return numerator / denominator if denominator else None

    return {
        "split": split,
        "checkpoint": checkpoint,
        "num_examples": total,
        "loss": loss_sum / total,
        "accuracy": correct / total,
        "per_class": {
            name: {
                "precision": ratio(int(confusion[k, k]), int(predicted[k])),
                "recall": ratio(int(confusion[k, k]), int(support[k])),
                "support": int(support[k]),
                "predicted": int(predicted[k]),
            }
            for k, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),  # [true class][predicted class]
    }


def evaluate_split(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    input_fn: InputFn,
    *,
    num_examples: int,
    class_names: Sequence[str],
    split: str,
    checkpoint: str,
) -> dict[str, Any]:
    """The report of `model` on the split `input_fn` reads, which must hold `num_examples` examples."""
    totals = make_evaluation_pass(strategy, model, input_fn, num_classes=len(class_names), num_examples=num_examples)()
    return make_report(totals.confusion, totals.loss_sum, class_names, split=split, checkpoint=checkpoint)


def write_report(report: dict[str, Any], model_dir: str) -> tuple[str, str]:
    """Writes the JSON report and the confusion-matrix plot; returns their paths."""
    directory = tf.io.gfile.join(model_dir, REPORT_SUBDIR)
    tf.io.gfile.makedirs(directory)
    json_path = tf.io.gfile.join(directory, f"{report['split']}.json")
    png_path = tf.io.gfile.join(directory, f"{report['split']}_confusion_matrix.png")
    files.write_atomic(json_path, json.dumps(report, indent=2))
    files.write_atomic(
        png_path,
        plot_confusion_matrix(
            np.asarray(report["confusion_matrix"]),
            report["class_names"],
            title=f"{report['split']}: accuracy {report['accuracy']:.4f} ({report['num_examples']} examples)",
        ),
    )
    return json_path, png_path


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """PNG bytes; colours are row fractions (recall), so large and small classes read alike.

    Uses matplotlib's object API (no pyplot): nothing global, no display needed (Agg canvas).
    """
    num_classes = len(class_names)
    side = min(20.0, 3.0 + 0.5 * num_classes)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    fractions = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    if num_classes <= MAX_ANNOTATED_CLASSES:
        ticks = np.arange(num_classes)
        axes.set_xticks(ticks, labels=class_names, rotation=90 if num_classes > 5 else 0)
        axes.set_yticks(ticks, labels=class_names)
        for (row, column), value in np.ndenumerate(confusion):
            axes.text(
                column,
                row,
                str(value),
                ha="center",
                va="center",
                color="white" if fractions[row, column] > 0.5 else "black",
            )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
