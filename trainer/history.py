"""The per-epoch history of a run: metrics.jsonl (the record), history.csv and a learning-curve PNG.

The files, not memory, are the history: a resumed run reads metrics.jsonl back,
drops the epochs its checkpoint does not hold (written just before a crash), and
goes on appending. Only the chief writes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from typing import Any

import matplotlib
import tensorflow as tf

from trainer import files

matplotlib.use("Agg")  # Headless: no display on training machines.
from matplotlib import figure as figure_lib  # noqa: E402
from matplotlib import pyplot as plt
from matplotlib import ticker

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "history.csv"
PLOT_FILE = "learning_curves.png"
COLUMNS = (
    "epoch",
    "phase",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "images_per_second",
)


class History:
    """One record per finished epoch; with `model_dir` (the chief), mirrored in its files."""

    def __init__(self, model_dir: str | None, records: list[dict[str, Any]] | None = None) -> None:
        self.model_dir = model_dir
        self.records = records or []

    @classmethod
    def resume(cls, model_dir: str | None, up_to_step: int) -> History:
        """The records of `model_dir` up to the restored step; rewrites the files if some were dropped."""
        if model_dir is None:
            return cls(None)
        path = tf.io.gfile.join(model_dir, METRICS_FILE)
        if not tf.io.gfile.exists(path):
            return cls(model_dir)
        with tf.io.gfile.GFile(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        history = cls(model_dir, [r for r in records if r["step"] <= up_to_step])
        if len(history.records) != len(records):
            history._rewrite_metrics()
        history._write_csv()
        return history

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.model_dir:
            with tf.io.gfile.GFile(tf.io.gfile.join(self.model_dir, METRICS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
            self._write_csv()

    def plot(self) -> None:
        if self.model_dir and self.records:
            files.write_atomic(tf.io.gfile.join(self.model_dir, PLOT_FILE), plot_png(self.records))

    def _rewrite_metrics(self) -> None:
        files.write_atomic(
            tf.io.gfile.join(self.model_dir, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in self.records)
        )

    def _write_csv(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        files.write_atomic(tf.io.gfile.join(self.model_dir, CSV_FILE), out.getvalue())


def plot_png(records: list[dict[str, Any]]) -> bytes:
    figure = plot(records)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80)
    plt.close(figure)
    return out.getvalue()


def plot(records: list[dict[str, Any]]) -> figure_lib.Figure:
    """Loss and accuracy per epoch, train vs validation; a dashed line where the phase changes."""
    epochs = [r["epoch"] for r in records]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, label in (("train", "train"), ("val", "validation")):
            key = f"{split}_{metric}"
            if any(key in r for r in records):
                ax.plot(epochs, [r.get(key, float("nan")) for r in records], marker="o", label=label)
        for before, after in itertools.pairwise(records):
            if before["phase"] != after["phase"]:
                ax.axvline(before["epoch"] + 0.5, color="grey", linestyle="--", label=f"{after['phase']} starts")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    figure.tight_layout()
    return figure
