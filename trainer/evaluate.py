"""Evaluation of one split: the masked pass every evaluation runs, and the report of --mode=eval.

`make_evaluation_pass` serves both the per-epoch val_loss/val_accuracy and the report: each replica sums the losses
of its real examples (mask 1) and counts their confusion matrix, both summed across replicas, and the count is
checked against the split size (why: BUILD_NOTES.md, "Evaluation, export, prediction"). Each replica also keeps its
K most confident mistakes (by the probability of the predicted class); only those K per replica are gathered and
merged. The chief writes the report under model_dir/eval/: `<split>.json`, `<split>_confusion_matrix.png`, and the
mistakes (how users find mislabelled data) as `<split>_mistakes.json` and `<split>_mistakes.png`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from trainer import files, models
from trainer.data import InputFn  # Here: yields (images, labels, mask, index) batches.
from trainer.input_pipeline import StoredExample

REPORT_SUBDIR = "eval"
MAX_ANNOTATED_CLASSES = 30  # Beyond this the plot shows colours only: counts would not be legible.
MISTAKES_KEPT = 20  # The most confident mistakes --mode=eval lists and shows.
MISTAKE_COLUMNS = 5
NOT_A_MISTAKE = -1.0  # The score of a correct or padding example: below every probability.
Kept = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]  # score float32, index, label, predicted int64; [K] each.


@dataclasses.dataclass(frozen=True)
class Mistake:
    """A wrong prediction: the example's position in its split (the input's `index`), its true and predicted class,
    and the probability the model gave the predicted class."""

    index: int
    label: int
    predicted: int
    probability: float


@dataclasses.dataclass(frozen=True)
class Totals:
    """What one evaluation pass sums over the real examples of a split, and its most confident mistakes."""

    loss_sum: float
    confusion: np.ndarray  # int64 [true class, predicted class]
    mistakes: tuple[Mistake, ...] = ()  # Most confident first; ties by position.

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
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    input_fn: InputFn,
    *,
    num_classes: int,
    num_examples: int,
    num_mistakes: int = MISTAKES_KEPT,
) -> Callable[[], Totals]:
    """A function running one pass over `input_fn`'s `(images, labels, mask, index)` batches.

    Built once and called as often as needed (every epoch), so the loop is traced once.
    Raises RuntimeError when the unmasked examples are not `num_examples`.
    """
    dataset = strategy.distribute_datasets_from_function(input_fn)

    def replica_step(images, labels, mask, index, kept):
        outputs = model(images, training=False)
        example_losses = models.per_example_loss(labels, outputs)
        # tf.where, not a product: a non-finite output on a padding example must not reach the sum.
        loss = tf.reduce_sum(tf.where(mask > 0, example_losses, tf.zeros_like(example_losses)))
        predicted = models.predicted_class(outputs)
        confusion = tf.math.confusion_matrix(labels, predicted, num_classes=num_classes, weights=mask, dtype=tf.float32)
        if not num_mistakes:  # The per-epoch validation: nothing kept (kept is ()).
            return loss, confusion, kept
        probability = tf.gather(models.class_probabilities(outputs), predicted, batch_dims=1)
        # Padding is never a mistake; nor is a non-finite output (no order, and not valid JSON).
        wrong = tf.logical_and(tf.logical_and(mask > 0, predicted != labels), tf.math.is_finite(probability))
        candidates = (tf.where(wrong, probability, NOT_A_MISTAKE), index, labels, predicted)
        return loss, confusion, most_confident(kept, candidates, num_mistakes)

    @tf.function
    def count_all(dataset):
        loss, confusion = tf.constant(0.0), tf.zeros([num_classes, num_classes])
        # Each replica's own list, as the loop carries them; none at all without mistakes to keep (an all-gather of
        # empty tensors crashes MirroredStrategy on CPU).
        kept = strategy.run(lambda: nothing_kept(num_mistakes)) if num_mistakes else ()
        for batch in dataset:
            batch_loss, batch_confusion, kept = strategy.run(replica_step, args=(*batch, kept))
            loss += strategy.reduce(tf.distribute.ReduceOp.SUM, batch_loss, axis=None)
            confusion += strategy.reduce(tf.distribute.ReduceOp.SUM, batch_confusion, axis=None)
        # num_mistakes per replica, no more. One tensor at a time: MirroredStrategy.gather of a tuple returns the
        # first replica's values only.
        return loss, confusion, tuple(strategy.gather(t, axis=0) for t in kept)

    def evaluation_pass() -> Totals:
        loss, confusion, gathered = count_all(dataset)
        totals = Totals(
            float(loss.numpy()),
            confusion.numpy().astype(np.int64),
            merge_mistakes(*(t.numpy() for t in gathered), num_mistakes=num_mistakes) if num_mistakes else (),
        )
        if totals.num_examples != num_examples:
            raise RuntimeError(
                f"evaluation saw {totals.num_examples} examples, the split has {num_examples}: the "
                "eval input must yield every example exactly once."
            )
        return totals

    return evaluation_pass


def nothing_kept(k: int) -> Kept:
    """A replica's list before its first batch: k places no mistake can lose to."""
    none = tf.fill([k], tf.constant(-1, tf.int64))
    return tf.fill([k], NOT_A_MISTAKE), none, none, none


def most_confident(kept: Kept, candidates: Kept, k: int) -> Kept:
    """The k of `kept` and `candidates` with the highest score, ties by the smaller index: the order merge_mistakes
    sorts by, so the result does not depend on how examples were spread over replicas and batches."""
    score, index, label, predicted = (
        tf.concat([a, tf.cast(b, a.dtype)], 0) for a, b in zip(kept, candidates, strict=True)
    )
    by_index = tf.argsort(index, stable=True)
    order = tf.gather(by_index, tf.argsort(-tf.gather(score, by_index), stable=True))[:k]
    # Exactly k (kept alone has k): the shape a loop carries must not vary with the batch's.
    return tuple(tf.ensure_shape(tf.gather(t, order), [k]) for t in (score, index, label, predicted))


def merge_mistakes(
    score: np.ndarray, index: np.ndarray, label: np.ndarray, predicted: np.ndarray, *, num_mistakes: int
) -> tuple[Mistake, ...]:
    """The replicas' gathered top-k merged: the most confident mistakes overall, ties by position."""
    order = [i for i in np.lexsort((index, -score)) if score[i] != NOT_A_MISTAKE][:num_mistakes]
    return tuple(Mistake(int(index[i]), int(label[i]), int(predicted[i]), float(score[i])) for i in order)


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
) -> tuple[dict[str, Any], tuple[Mistake, ...]]:
    """The report of `model` on the split `input_fn` reads, which must hold `num_examples` examples, and its
    MISTAKES_KEPT most confident mistakes."""
    totals = make_evaluation_pass(strategy, model, input_fn, num_classes=len(class_names), num_examples=num_examples)()
    report = make_report(totals.confusion, totals.loss_sum, class_names, split=split, checkpoint=checkpoint)
    return report, totals.mistakes


def mistakes_list(
    mistakes: Sequence[Mistake], examples: Mapping[int, StoredExample], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """`<split>_mistakes.json`: file name (null where the data has none), true and predicted class, probability."""
    return [
        {
            "filename": examples[m.index].filename if m.index in examples else None,
            "true": class_names[m.label],
            "predicted": class_names[m.predicted],
            "probability": m.probability,
        }
        for m in mistakes
    ]


def write_mistakes(
    mistakes: Sequence[Mistake],
    examples: Mapping[int, StoredExample],
    class_names: Sequence[str],
    model_dir: str,
    split: str,
    *,
    images: bool = True,
) -> tuple[str, str | None]:
    """Writes the mistakes as JSON and, for a dataset of `images` whose mistakes' images are at hand, as a grid (a
    feature dataset gets none, even when it has no mistakes to show); the paths."""
    directory = tf.io.gfile.join(model_dir, REPORT_SUBDIR)
    tf.io.gfile.makedirs(directory)
    json_path = tf.io.gfile.join(directory, f"{split}_mistakes.json")
    files.write_atomic(json_path, json.dumps(mistakes_list(mistakes, examples, class_names), indent=2))
    shown = all(m.index in examples and examples[m.index].image is not None for m in mistakes)
    if not (images and shown):
        return json_path, None
    png_path = tf.io.gfile.join(directory, f"{split}_mistakes.png")
    files.write_atomic(png_path, plot_mistakes(mistakes, examples, class_names, split))
    return json_path, png_path


def plot_mistakes(
    mistakes: Sequence[Mistake], examples: Mapping[int, StoredExample], class_names: Sequence[str], split: str
) -> bytes:
    """PNG bytes: each mistake's stored image, file name, true and predicted class and probability, most
    confident first, MISTAKE_COLUMNS a row."""
    rows, columns = max(1, math.ceil(len(mistakes) / MISTAKE_COLUMNS)), max(1, min(len(mistakes), MISTAKE_COLUMNS))
    figure = Figure(figsize=(0.4 + 2.4 * columns, 0.8 + 3.1 * rows), layout="constrained")
    what = f"the {len(mistakes)} most confident mistakes" if mistakes else "no mistakes"
    figure.suptitle(f"{split}: {what} (probability of the predicted class)", fontsize=12)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, mistake in zip(axes, mistakes, strict=False):
        example = examples[mistake.index]
        assert example.image is not None, "plotted only when every image is at hand"
        pixels = tf.io.decode_image(example.image, expand_animations=False).numpy()
        grey = pixels.shape[-1] == 1
        ax.imshow(pixels[..., 0] if grey else pixels, cmap="gray" if grey else None, vmin=0, vmax=255)
        ax.set_title(
            f"{_short(example.filename)}\ntrue {_short(class_names[mistake.label], 24)}\n"
            f"predicted {_short(class_names[mistake.predicted], 24)}\np = {mistake.probability:.3f}",
            fontsize=8,
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _short(filename: str, limit: int = 32) -> str:
    """A long name shows its end: the folder and file that tell examples apart (and a class name's distinct end)."""
    return filename if len(filename) <= limit else "…" + filename[-(limit - 1) :]


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
