r"""Training step time: our custom loop (trainer.steps) against Keras `model.fit`, one device.

  .venv/bin/python -m benchmarks.train_step                      # mnist_cnn, 28x28x1, batch 128
  .venv/bin/python -m benchmarks.train_step --model=cifar_cnn --image_size=32 --channels=3 --batch_size=64 --steps=10

Both train the same model (same seed, same initial weights) with the same optimizer on the
same in-memory batches (a repeated, prefetched tf.data pipeline of random images), on the
default strategy. `model.fit` runs `--steps_per_loop` steps per call as well
(`steps_per_execution`), so both compare a tf.function of N steps; each side is measured
with and without XLA (`jit_compile`). Per side: an untimed warm-up call (tracing), then
`--repeats` timed blocks of `--steps` steps; the median block gives ms/step. Sides alternate
block by block so load from other processes hits both alike. Target: ours/fit <= 1.05.
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from trainer import models, steps

_MODEL = flags.DEFINE_enum("model", "mnist_cnn", list(models.SCRATCH_MODELS), "Model to train.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 28, "Input height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Input channels.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes (2: sigmoid head).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed block (a multiple of --steps_per_loop).")
_STEPS_PER_LOOP = flags.DEFINE_integer(
    "steps_per_loop", 0, "Steps per tf.function call, fit's steps_per_execution (0: --steps)."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per side.")


def _steps_per_loop() -> int:
    return _STEPS_PER_LOOP.value or _STEPS.value


def _dataset() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, _CHANNELS.value)
    images = rng.random((16 * _BATCH_SIZE.value, *shape), np.float32)
    labels = rng.integers(0, _NUM_CLASSES.value, len(images)).astype(np.int64)
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .repeat()
        .batch(_BATCH_SIZE.value, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, _CHANNELS.value)
    return models.build_model(_MODEL.value, shape, _NUM_CLASSES.value)


def ours(jit_compile: bool):
    """Returns run(steps) -> seconds spent in our loop's calls."""
    strategy = tf.distribute.get_strategy()
    model = _model()
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loop = steps.make_train_loop(
        strategy, model, optimizer, global_batch_size=_BATCH_SIZE.value, jit_compile=jit_compile
    )
    iterator = iter(strategy.distribute_datasets_from_function(lambda context: _dataset()))
    num_steps = tf.constant(_steps_per_loop())

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps // _steps_per_loop()):
            totals = loop(iterator, num_steps)
        float(totals["loss"])  # Waits for the last call.
        return time.perf_counter() - start

    return run


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit(jit_compile: bool):
    """Returns run(steps) -> seconds of one fit epoch (its per-call setup excluded)."""
    model = _model()
    binary = models.is_binary(model)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=_steps_per_loop(),
        jit_compile=jit_compile,
    )
    dataset = _dataset()
    if binary:
        dataset = dataset.map(lambda x, y: (x, tf.cast(y, tf.float32)[:, None]))
    timer = _EpochTimer()

    def run(steps: int) -> float:
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        return timer.seconds

    return run


def main(argv) -> None:
    del argv
    if _STEPS.value % _steps_per_loop():
        raise app.UsageError("--steps must be a multiple of --steps_per_loop.")
    results = {}
    for jit_compile in (False, True):
        sides = {"ours": ours(jit_compile), "fit": fit(jit_compile)}
        times = {name: [] for name in sides}
        for run in sides.values():
            run(_steps_per_loop())  # Warm-up: tracing and compilation.
        for _ in range(_REPEATS.value):
            for name, run in sides.items():
                times[name].append(run(_STEPS.value) / _STEPS.value * 1000)
        results[jit_compile] = {name: statistics.median(t) for name, t in times.items()}
        print(
            f"jit_compile={jit_compile}: "
            + "  ".join(
                f"{name} {statistics.median(t):.2f} ms/step (blocks {', '.join(f'{x:.1f}' for x in t)})"
                for name, t in times.items()
            )
        )
    print(
        f"\n{_MODEL.value} {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x{_CHANNELS.value}, batch {_BATCH_SIZE.value}, "
        f"{_steps_per_loop()} steps per call, median of {_REPEATS.value} blocks of {_STEPS.value} steps:"
    )
    for jit_compile, result in results.items():
        print(
            f"  jit_compile={str(jit_compile):5}  ours {result['ours']:7.2f} ms/step   fit {result['fit']:7.2f} "
            f"ms/step   ours/fit = {result['ours'] / result['fit']:.3f}"
        )


if __name__ == "__main__":
    app.run(main)
