r"""VGG16 in float32 against mixed_bfloat16 on this CPU: training step and forward pass, and what `auto` picks.

  .venv/bin/python -m benchmarks.bfloat16                      # 150x150, batch 32
  TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python -m benchmarks.bfloat16 --train_steps=1 --forward_batches=2 --repeats=1
  ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 .venv/bin/python -m benchmarks.bfloat16 ...   # an AMX CPU as one without

Both precisions run the same model (`trainer.models.vgg16_transfer`, weights none: the speed is the same as with
ImageNet weights) on the same in-memory batches:
  - training step: the trainer's own step (`trainer.steps.make_train_loop`, RMSprop) with the whole network
    trainable, the costliest step (fine-tuning all of VGG16);
  - forward pass: the convolutional base alone in inference mode, which is what feature extraction runs.
Each measurement starts with an untimed warm-up call (tracing, oneDNN's weight reorders); the precisions alternate
block by block, `--repeats` times, so load from other processes hits both alike; the median block counts.
Targets, on a CPU with AMX bfloat16 units and oneDNN on: training step >= 3x, forward pass >= 5x float32. Elsewhere
bfloat16 is not expected to be faster: the targets are reported as not applicable.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import hardware
from trainer import distribution, models, steps

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 150, "Input height and width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 2, "Training steps per timed block.")
_FORWARD_BATCHES = flags.DEFINE_integer("forward_batches", 4, "Forward-pass batches per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed blocks per precision and measurement.")
_EXTRACT_IMAGES = flags.DEFINE_integer(
    "extract_images", 4000, "Images whose feature extraction time is projected (the tutorial's 2,000+1,000+1,000)."
)

PRECISIONS = ("float32", "mixed_bfloat16")
TARGETS = {"training step": 3.0, "forward pass": 5.0}  # bfloat16 / float32 images/s, AMX CPUs with oneDNN on.


def _images() -> tf.Tensor:
    rng = np.random.default_rng(0)
    shape = (_BATCH_SIZE.value, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3)
    return tf.constant(rng.uniform(-120.0, 130.0, shape).astype(np.float32))  # VGG16-preprocessed pixel range.


def _model(precision: str) -> keras.Model:
    distribution.set_precision(precision)
    keras.utils.set_random_seed(0)
    model = models.vgg16_transfer((_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3), 2, weights=None)
    distribution.set_precision("float32")
    return model


def training_step(model: keras.Model, images: tf.Tensor) -> Callable[[int], float]:
    """Returns run(steps) -> seconds for that many of the trainer's steps, the whole network trainable."""
    models.set_base_trainable(model, models.WHOLE_BASE)
    strategy = tf.distribute.get_strategy()
    optimizer = steps.make_optimizer("rmsprop", 1e-5)
    optimizer.build(model.trainable_variables)
    loop = steps.make_train_loop(strategy, model, optimizer, global_batch_size=_BATCH_SIZE.value, jit_compile=False)
    labels = tf.constant(np.arange(_BATCH_SIZE.value) % 2, tf.int64)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    iterator = iter(strategy.distribute_datasets_from_function(lambda context: dataset))

    def run(num_steps: int) -> float:
        start = time.perf_counter()
        float(loop(iterator, tf.constant(num_steps))["loss"])  # Waits for the last step.
        return time.perf_counter() - start

    return run


def forward_pass(model: keras.Model, images: tf.Tensor) -> Callable[[int], float]:
    """Returns run(batches) -> seconds for that many forward passes of the base (feature extraction)."""
    base = tf.function(lambda x: model.get_layer(models.VGG16_BASE)(x, training=False))

    def run(batches: int) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            features = base(images)
        float(tf.reduce_sum(tf.cast(features, tf.float32)))  # Waits for the last batch.
        return time.perf_counter() - start

    return run


def measure() -> dict[str, dict[str, list[float]]]:
    """images/s per measurement and precision, one value per timed block."""
    images = _images()
    runs = {}
    for precision in PRECISIONS:
        model = _model(precision)
        runs[precision] = {
            "training step": (training_step(model, images), _TRAIN_STEPS.value),
            "forward pass": (forward_pass(model, images), _FORWARD_BATCHES.value),
        }
    for measurements in runs.values():
        for run, _ in measurements.values():
            run(1)  # Warm-up: tracing, oneDNN primitive creation and weight reorders.
    rates: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PRECISIONS} for name in TARGETS}
    for _ in range(_REPEATS.value):
        for name in TARGETS:
            for precision in PRECISIONS:
                run, count = runs[precision][name]
                rates[name][precision].append(count * _BATCH_SIZE.value / run(count))
    return rates


def targets_skipped() -> str:
    """Why the targets do not apply here ('' when they do)."""
    if not distribution.cpu_has_amx_bf16():
        return "the CPU has no AMX bfloat16 units"
    if not distribution.onednn_enabled():
        return "oneDNN is off"
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        return f"ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} may keep oneDNN off AMX"
    return ""


def report(rates: dict[str, dict[str, list[float]]], skipped: str) -> list[str]:
    lines = [f"{'':14} {'float32 img/s':>14} {'bfloat16 img/s':>15} {'ratio':>6}  target"]
    for name, minimum in TARGETS.items():
        f32, bf16 = (statistics.median(rates[name][p]) for p in PRECISIONS)
        ratio = bf16 / f32
        verdict = f">= {minimum:.0f}x " + (f"n/a: {skipped}" if skipped else "met" if ratio >= minimum else "NOT met")
        lines.append(f"{name:14} {f32:14.1f} {bf16:15.1f} {ratio:5.2f}x  {verdict}")
        blocks = "; ".join(f"{p} {', '.join(f'{r:.1f}' for r in rates[name][p])}" for p in PRECISIONS)
        lines.append(f"{'':14} blocks: {blocks}")
    return lines


def main(argv) -> None:
    del argv
    print(hardware.hardware())
    auto = distribution.resolve_precision("auto", "off")
    print(f"--mixed_precision=auto here: {auto.policy} ({auto.reason})")
    print(
        f"VGG16 {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, batch {_BATCH_SIZE.value}; median of {_REPEATS.value} "
        f"blocks of {_TRAIN_STEPS.value} training steps / {_FORWARD_BATCHES.value} forward batches\n"
    )
    rates = measure()
    print("\n".join(report(rates, targets_skipped())))
    for precision in PRECISIONS:
        seconds = _EXTRACT_IMAGES.value / statistics.median(rates["forward pass"][precision])
        print(f"feature extraction of {_EXTRACT_IMAGES.value} images (forward rate), {precision}: {seconds:.0f} s")


if __name__ == "__main__":
    app.run(main)
