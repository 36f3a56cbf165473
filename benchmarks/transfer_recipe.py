r"""The VGG16 tutorial's head training: end to end on the frozen base (a) against feature extraction once + head (b).

  .venv/bin/python -m benchmarks.transfer_recipe --num_images=400 --work_dir=/tmp/recipe_bench

On the same generated photo-like images (data_prep.sample_data), stored at 150x150, VGG16 with random weights (the
speed is the same as with ImageNet weights, which are not downloadable offline), batch 20: (a) the time of a phase-1
epoch of `catsdogs_vgg16` (the head trained end to end on the frozen base), epoch 2 (the first includes tracing);
(b) `data_prep.extract_features` once, then a head epoch of `catsdogs_vgg16_features` on its output (epoch 2).
Printed: both, and the tutorial's 30 head epochs both ways, with the ratio (target: (b) >= 20x faster). Both sides
run in --precision (float32 by default, so the comparison is of the methods; mixed_bfloat16 where the CPU has AMX).
The hardware found is printed first; benchmarks/README.md holds the latest result.
"""

from __future__ import annotations

import os
import shutil
import time

from absl import app, flags

_NUM_IMAGES = flags.DEFINE_integer("num_images", 400, "Training images (half per class); 20% more are built.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/transfer_recipe_bench", "Where to generate, build and train.")
_PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Both sides' precision.")
_EPOCHS_OF_RECIPE = 30  # The tutorial's head epochs.
TARGET = 20.0
SIZE = 150


def _prepare(work_dir: str, num_images: int) -> tuple[str, str]:
    """The image dataset (150x150, train/validation) and a random-weights VGG16 base file."""
    import keras

    from data_prep import driver, images, options, sample_data
    from trainer import models

    raw, data = os.path.join(work_dir, "raw"), os.path.join(work_dir, "images")
    if not os.path.isdir(data):
        per_class = num_images * 6 // 10
        sample_data.write_sample_folder(os.path.join(raw, "PetImages"), per_class, include_broken=False)
        driver.build(
            options.BuildOptions(
                dataset="catsdogs",
                input_dir=raw,
                output_dir=data,
                split="train:84,validation:16",
                image=images.ImageOptions(image_size=SIZE, resize_policy="exact"),
            )
        )
    weights = os.path.join(work_dir, "vgg16_random.weights.h5")
    if not os.path.exists(weights):
        keras.utils.set_random_seed(0)
        models.vgg16_base((SIZE, SIZE, 3), weights=None).save_weights(weights)
    return data, weights


def _epoch_seconds(config_module, data_dir: str, model_dir: str, weights: str) -> float:
    """Seconds of a training epoch of the config (its second: the first includes tracing)."""
    import importlib

    from trainer import config_fields, train

    config = importlib.import_module(f"configs.{config_module}").get_config()
    config.update(
        {
            "data_dir": data_dir,
            "model_dir": model_dir,
            "strategy": "one_device",
            "epochs": 2,
            "mixed_precision": _PRECISION.value,
            "best_metric": "",
            "eval_split": "validation",
        }
    )
    config.fine_tune.epochs = 0
    if config.model.name == "vgg16_transfer":
        config.model.weights = weights
    config_fields.validate(config)
    shutil.rmtree(model_dir, ignore_errors=True)
    _, records = train.run(config)
    from trainer import input_pipeline

    examples = input_pipeline.open_dataset(data_dir).split_sizes["train"]
    return examples / records[-1]["images_per_second"]


def main(argv) -> None:
    del argv
    from benchmarks import hardware
    from data_prep import extract_features, options

    print(hardware.hardware())
    work_dir = _WORK_DIR.value
    data, weights = _prepare(work_dir, _NUM_IMAGES.value)
    features = os.path.join(work_dir, "features")
    start = time.perf_counter()
    report = extract_features.extract(
        options.ExtractOptions(
            data_dir=data,
            output_dir=features,
            overwrite=True,
            weights=weights,
            input_size=SIZE,
            precision=_PRECISION.value,
            beam_args=("--runner=FnApiRunner", "--direct_running_mode=in_memory"),
        )
    )
    extraction = time.perf_counter() - start
    end_to_end = _epoch_seconds("catsdogs_vgg16", data, os.path.join(work_dir, "run_a"), weights)
    head = _epoch_seconds("catsdogs_vgg16_features", features, os.path.join(work_dir, "run_b"), weights)
    n = report["counts"]["files_seen"]
    a, b = _EPOCHS_OF_RECIPE * end_to_end, extraction + _EPOCHS_OF_RECIPE * head
    print(f"images: {n} ({_NUM_IMAGES.value} train), {SIZE}x{SIZE}, precision {_PRECISION.value}")
    print(f"(a) head on the frozen base, end to end: {end_to_end:8.1f} s an epoch")
    print(f"(b) extraction once:                     {extraction:8.1f} s ({n / extraction:.1f} images/s)")
    print(f"    head on the features:                {head:8.3f} s an epoch")
    print(
        f"{_EPOCHS_OF_RECIPE} head epochs: (a) {a:.0f} s, (b) {b:.1f} s: (b) is {a / b:.1f}x faster "
        f"(target >= {TARGET:.0f}x: {'PASS' if a / b >= TARGET else 'FAIL'})"
    )


if __name__ == "__main__":
    app.run(main)
