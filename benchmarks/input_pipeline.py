r"""Training input throughput: Keras's image_dataset_from_directory against our TFRecord pipeline.

  .venv/bin/python -m benchmarks.input_pipeline --num_images=1000 --image_size=128 --epochs=5

Both read the same N photo-like 500x375 JPEGs (random crops of scikit-image's sample photos)
and yield the same batches: float32 [batch, size, size, 3], VGG16 preprocessing, and the
augmentation data_prep records for image folders (flip, rotation, zoom, translation):

  (a) `keras.utils.image_dataset_from_directory` + keras.layers.Random* in a parallel map
      + prefetch, as the Keras tutorials do;
  (b) `trainer.input_pipeline` on the output of `python -m data_prep.build` (built once,
      untimed; shorter side stored at --image_size, JPEG q90).

Each epoch is timed separately; the steady-state rate is the mean over epochs 2.. (epoch 1
of (b) also decodes and fills the cache). Other processes on the machine slow both sides.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from data_prep.augmentation import PHOTO_POLICY
from data_prep.sample_data import photo_like
from data_prep.schema import AugmentationPolicy
from trainer import input_pipeline

_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "N: JPEGs in the raw folder (half per class).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Output height and width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Timed epochs per pipeline; the first is reported apart.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where to write images and the dataset (default: a temp dir).")

_CLASSES = {"Cat": ("chelsea",), "Other": ("coffee", "astronaut", "rocket")}


def write_raw_folder(root: str, num_images: int) -> None:
    """root/Cat/*.jpg and root/Other/*.jpg, 500x375, JPEG q90."""
    from skimage import data  # Test/benchmark dependency only.

    rng = np.random.default_rng(0)
    for label, names in _CLASSES.items():
        os.makedirs(os.path.join(root, label), exist_ok=True)
        photos = [getattr(data, name)() for name in names]
        for i in range(num_images // len(_CLASSES)):
            photo = photos[i % len(photos)]
            image = photo_like(rng, photo if photo.ndim == 3 else np.stack([photo] * 3, -1), 500, 375)
            image.save(os.path.join(root, label, f"{i:05d}.jpg"), quality=90)


def keras_augmentation(policy: AugmentationPolicy) -> keras.Sequential:
    """The Keras layers that apply `policy` (the same ranges our pipeline reads from it)."""
    layers = []
    if policy.horizontal_flip or policy.vertical_flip:
        mode = (
            "horizontal_and_vertical"
            if policy.horizontal_flip and policy.vertical_flip
            else ("horizontal" if policy.horizontal_flip else "vertical")
        )
        layers.append(keras.layers.RandomFlip(mode))
    if policy.rotation:
        layers.append(keras.layers.RandomRotation(policy.rotation))
    if policy.zoom:
        layers.append(keras.layers.RandomZoom(policy.zoom))
    if policy.translation:
        layers.append(keras.layers.RandomTranslation(policy.translation, policy.translation))
    if policy.contrast:
        layers.append(keras.layers.RandomContrast(policy.contrast))
    return keras.Sequential(layers)


def keras_baseline(raw_dir: str, size: int, batch_size: int, policy: AugmentationPolicy) -> tf.data.Dataset:
    augment = keras_augmentation(policy)
    ds = keras.utils.image_dataset_from_directory(
        raw_dir, image_size=(size, size), batch_size=batch_size, shuffle=True, seed=0
    )
    ds = ds.map(
        lambda images, labels: (keras.applications.vgg16.preprocess_input(augment(images, training=True)), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def build_dataset(raw_dir: str, output_dir: str, size: int) -> None:
    command = [
        sys.executable,
        "-m",
        "data_prep.build",
        "--dataset=imagefolder",
        f"--input_dir={raw_dir}",
        f"--output_dir={output_dir}",
        f"--image_size={size}",
        "--split=train:100",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclasses.dataclass
class Epoch:
    images: int
    seconds: float
    cpu_seconds: float  # Of this process, all threads: robust to other processes competing for the cores.

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_seconds / self.images


def time_epochs(epochs: Iterator[Iterator[tf.Tensor]], num_epochs: int) -> list[Epoch]:
    """Times each epoch; an epoch is an iterator of image batches."""
    timed = []
    for _ in range(num_epochs):
        start, cpu_start, count = time.perf_counter(), time.process_time(), 0
        for images in next(epochs):
            count += int(images.shape[0])
        timed.append(Epoch(count, time.perf_counter() - start, time.process_time() - cpu_start))
    return timed


def keras_epochs(ds: tf.data.Dataset) -> Iterator[Iterator[tf.Tensor]]:
    while True:
        yield (images for images, _ in ds)


def our_epochs(ds: tf.data.Dataset, steps: int) -> Iterator[Iterator[tf.Tensor]]:
    iterator = iter(ds)
    while True:
        yield (next(iterator)[0] for _ in range(steps))


def main(argv) -> None:
    del argv
    size, batch_size, num_epochs = _IMAGE_SIZE.value, _BATCH_SIZE.value, _EPOCHS.value
    work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="input_pipeline_bench_")
    raw_dir, data_dir = os.path.join(work_dir, "raw"), os.path.join(work_dir, "dataset")
    if not os.path.isdir(raw_dir):
        write_raw_folder(raw_dir, _NUM_IMAGES.value)
    if not os.path.isdir(data_dir):
        build_dataset(raw_dir, data_dir, size)
    info = input_pipeline.open_dataset(data_dir)
    if info.augmentation != PHOTO_POLICY:
        raise SystemExit(f"{data_dir} records {info.augmentation}, expected {PHOTO_POLICY}: delete it and rerun.")

    keras_timed = time_epochs(keras_epochs(keras_baseline(raw_dir, size, batch_size, PHOTO_POLICY)), num_epochs)
    ours = input_pipeline.make_input_fn(
        info, "train", training=True, image_size=(size, size), global_batch_size=batch_size, normalization="vgg16"
    )(None)
    steps = input_pipeline.steps_per_epoch(info, "train", batch_size)
    our_timed = time_epochs(our_epochs(ours, steps), num_epochs)

    print(
        f"{info.split_sizes['train']} images 500x375 -> {size}x{size}, batch {batch_size}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'pipeline':<42}{'epoch 1 img/s':>14}{'steady img/s':>14}{'steady CPU ms/img':>19}")
    for label, epochs in (
        ("(a) keras image_dataset_from_directory", keras_timed),
        ("(b) trainer.input_pipeline on data_prep", our_timed),
    ):
        print(
            f"{label:<42}{epochs[0].rate:>14.0f}{_steady(epochs, 'rate'):>14.0f}"
            f"{_steady(epochs, 'cpu_ms_per_image'):>19.2f}"
        )
    print(
        f"steady-state ratio (b)/(a): {_steady(our_timed, 'rate') / _steady(keras_timed, 'rate'):.1f}x img/s, "
        f"{_steady(keras_timed, 'cpu_ms_per_image') / _steady(our_timed, 'cpu_ms_per_image'):.1f}x less CPU "
        f"per image"
    )
    print(f"per-epoch img/s: a={[round(e.rate) for e in keras_timed]}, b={[round(e.rate) for e in our_timed]}")


def _steady(epochs: list[Epoch], attribute: str) -> float:
    """Mean over epochs 2..: (b)'s first epoch decodes and fills the cache."""
    steady = epochs[1:] or epochs
    return float(np.mean([getattr(e, attribute) for e in steady]))


if __name__ == "__main__":
    app.run(main)
