"""bfloat16 training learns what float32 learns: digits-like images through the trainer's own loop, both ways.

Kept tiny (LeNet-5 on 16x16 images, 800 steps): on a CPU without AMX, or with oneDNN off, bfloat16 runs on
slow kernels, and this test must pass there too.
"""

import numpy as np
import pytest
import tensorflow as tf
from multiworker_train import make_config, make_data

from trainer import distribution, train

IMAGE_SHAPE = (16, 16, 1)
# Seven-segment digits: segments a (top), b (top right), c (bottom right), d (bottom), e (bottom left), f (top left),
# g (middle), as (row, column, height, width) in a 14x8 box, and the segments lit for each digit 0-9.
SEGMENTS = {
    "a": (0, 1, 2, 6),
    "b": (1, 6, 6, 2),
    "c": (7, 6, 6, 2),
    "d": (12, 1, 2, 6),
    "e": (7, 0, 6, 2),
    "f": (1, 0, 6, 2),
    "g": (6, 1, 2, 6),
}
DIGITS = ("abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg")


def seven_segment_digits(num_examples, image_shape, num_classes, seed):
    """Digits-like images: a seven-segment digit of random brightness at a random place, in Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples)
    images = rng.normal(0.0, 0.3, (num_examples, *image_shape)).astype(np.float32)
    for image, label in zip(images, labels, strict=True):
        top, left = rng.integers(0, image_shape[0] - 14 + 1), rng.integers(0, image_shape[1] - 8 + 1)
        brightness = rng.uniform(1.0, 1.5)
        for segment in DIGITS[label]:
            row, col, height, width = SEGMENTS[segment]
            image[top + row : top + row + height, left + col : left + col + width] += brightness
    return images, labels.astype(np.int64)


@pytest.mark.slow
def test_bfloat16_training_reaches_the_float32_accuracy(tmp_path):
    accuracy = {}
    for precision in ("float32", "mixed_bfloat16"):
        distribution.set_precision(precision)
        try:
            config = make_config(
                str(tmp_path / precision),
                mixed_precision=precision,
                global_batch_size=32,
                epochs=8,
                steps_per_loop=25,
                optimizer="adam",
                learning_rate=1e-3,
            )
            data = make_data(
                32, num_train=3200, num_eval=2000, image_shape=IMAGE_SHAPE, num_classes=10, arrays=seven_segment_digits
            )
            model, history = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
        finally:
            distribution.set_precision("float32")
        assert model.layers[0].compute_dtype == precision.removeprefix("mixed_")
        accuracy[precision] = history[-1]["val_accuracy"]
    assert accuracy["float32"] >= 0.98, accuracy  # A task worth comparing on: float32 learns it.
    assert accuracy["mixed_bfloat16"] >= accuracy["float32"] - 0.01, accuracy
