r"""The whole VGG16 tutorial recipe as a user runs it, timed step by step on this machine.

  .venv/bin/python -m benchmarks.tutorial_recipe --work_dir=/tmp/tutorial_recipe [--fine_tune_epochs=2]

A replica of the cats/dogs download (data_prep.sample_data, 2,300 photo-like images per class: enough for the
1,000/500/500 subset's hash shares) -> the tutorial's subset (`--split=train:1000/class,validation:500/class,
test:500/class`) -> feature extraction (`--precision=auto`) -> the head on the features (30 epochs) -> fine-tuning
block5 from that head (`--config.init_head_from`, a few epochs) -> evaluation on test. VGG16 with random weights
(ImageNet's are not downloadable offline; the speed is the same), so the accuracies say nothing; the literature's
are in the configs' docstrings. Prints each command and its wall time; benchmarks/README.md holds the latest result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/tutorial_recipe", "Where everything is written (replaced).")
_FINE_TUNE_EPOCHS = flags.DEFINE_integer("fine_tune_epochs", 2, "Epochs of block5 fine-tuning.")
_IMAGES_PER_CLASS = 2300


def _timed(name: str, args: list[str]) -> float:
    print(f"$ {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    print(f"  {name}: {seconds:.0f} s", flush=True)
    return seconds


def main(argv) -> None:
    del argv
    from benchmarks import hardware

    work = _WORK_DIR.value
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    weights = os.path.join(work, "vgg16_random.weights.h5")
    code = (
        "import keras; keras.utils.set_random_seed(0); from trainer import models; "
        f"models.vgg16_base((150, 150, 3), None).save_weights({weights!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw, data, features = (os.path.join(work, n) for n in ("kagglecatsanddogs", "catsdogs_small", "features"))
    head, run = os.path.join(work, "head"), os.path.join(work, "fine_tune")
    print(hardware.hardware())
    steps = [
        (
            "replica of the download",
            ["-m", "data_prep.sample_data", f"--output_dir={raw}", f"--images_per_class={_IMAGES_PER_CLASS}"],
        ),
        (
            "subset build",
            [
                "-m",
                "data_prep.build",
                "--dataset=catsdogs",
                f"--input_dir={raw}",
                f"--output_dir={data}",
                "--split=train:1000/class,validation:500/class,test:500/class",
            ],
        ),
        (
            "feature extraction",
            [
                "-m",
                "data_prep.extract_features",
                f"--data_dir={data}",
                f"--output_dir={features}",
                f"--weights={weights}",
                "--precision=auto",
            ],
        ),
        (
            "head, 30 epochs",
            [
                "-m",
                "trainer.main",
                "--config=configs/catsdogs_vgg16_features.py",
                f"--data_dir={features}",
                f"--model_dir={head}",
            ],
        ),
        (
            f"fine-tuning block5, {_FINE_TUNE_EPOCHS.value} epochs",
            [
                "-m",
                "trainer.main",
                "--config=configs/catsdogs_vgg16.py",
                f"--data_dir={data}",
                f"--model_dir={run}",
                f"--config.model.weights={weights}",
                f"--config.init_head_from={head}",
                "--epochs=0",
                f"--config.fine_tune.epochs={_FINE_TUNE_EPOCHS.value}",
            ],
        ),
        (
            "evaluation on test",
            [
                "-m",
                "trainer.main",
                "--config=configs/catsdogs_vgg16.py",
                f"--data_dir={data}",
                f"--model_dir={run}",
                f"--config.model.weights={weights}",
                "--mode=eval",
            ],
        ),
    ]
    _timed(*steps[0])
    total = sum(_timed(name, args) for name, args in steps[1:])
    print(f"recipe after the download (subset build to evaluation): {total:.0f} s")


if __name__ == "__main__":
    app.run(main)
