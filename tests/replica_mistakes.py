"""Evaluation's most confident mistakes on a CPU split into 2 logical devices, for test_evaluate.py.

A weightless model returns its inputs, dyadic class probabilities that float32 holds exactly (and with few distinct
values: many ties), so every strategy and batch size must list exactly the same mistakes. A zero input (padding)
comes out as a certain prediction of class 1 for its label 0: the most confident mistake there is, were padding
ever counted.

  python tests/replica_mistakes.py --out=RESULT.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from multiworker_train import make_data  # noqa: E402

from trainer import distribution, evaluate  # noqa: E402

NUM_EXAMPLES = 23
NUM_CLASSES = 3
RUNS = [("one_device", 4, 5), ("one_device", 4, 100), ("mirrored", 6, 5), ("mirrored", 22, 5), ("mirrored", 6, 100)]


def probability_arrays(num_examples: int, image_shape, num_classes: int, seed: int):
    """(probabilities [N, num_classes], labels [N]): a top probability of 1/2 to 7/8, the rest shared equally."""
    assert tuple(image_shape) == (num_classes,) == (3,)
    rng = np.random.default_rng(seed)
    top = rng.choice([0.5, 0.625, 0.75, 0.875], num_examples)
    probabilities = np.repeat(((1.0 - top) / 2)[:, None], num_classes, axis=1)
    probabilities[np.arange(num_examples), rng.integers(0, num_classes, num_examples)] = top
    return probabilities.astype(np.float32), rng.integers(0, num_classes, num_examples).astype(np.int64)


def passthrough_model() -> keras.Model:
    """Outputs = inputs for a distribution; a zero input becomes certainty of class 1."""
    inputs = keras.Input((NUM_CLASSES,))
    certain_one = tf.constant([0.0, 1.0, 0.0])
    outputs = keras.layers.Lambda(lambda x: x + (1.0 - tf.reduce_sum(x, axis=-1, keepdims=True)) * certain_one)(inputs)
    return keras.Model(inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    distribution.configure_cpu_devices(2)
    strategies = {
        "one_device": tf.distribute.OneDeviceStrategy("/cpu:0"),
        "mirrored": distribution.make_strategy("mirrored"),
    }
    assert strategies["mirrored"].num_replicas_in_sync == 2
    model = passthrough_model()
    results = {}
    for strategy_name, global_batch_size, k in RUNS:
        data = make_data(
            global_batch_size,
            num_eval=NUM_EXAMPLES,
            image_shape=(NUM_CLASSES,),
            num_classes=NUM_CLASSES,
            arrays=probability_arrays,
        )
        assert data.eval_input_fn is not None
        totals = evaluate.make_evaluation_pass(
            strategies[strategy_name],
            model,
            data.eval_input_fn,
            num_classes=NUM_CLASSES,
            num_examples=NUM_EXAMPLES,
            num_mistakes=k,
        )()
        results[f"{strategy_name}/{global_batch_size}/{k}"] = [
            [m.index, m.label, m.predicted, m.probability] for m in totals.mistakes
        ]
    with open(args.out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
