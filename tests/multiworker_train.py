"""A short training run on generated in-memory data, for the strategy tests.

Imported by the tests (make_arrays, make_data, make_config) and run as a
script, one process per strategy, because logical CPU devices and TF_CONFIG must
be in place before TensorFlow initializes:

  TF_CONFIG=... python tests/multiworker_train.py --strategy=multi_worker_mirrored \
      --model_dir=M --out=RESULT.npz [--run=lenet5:jit --run=cifar_cnn:mixed_float16 ...]

The script writes, per run, the final weights of every replica and the epoch history to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402
import tensorflow as tf  # noqa: E402

from configs import default  # noqa: E402
from trainer import distribution, input_pipeline, train  # noqa: E402
from trainer.input_pipeline import StoredExample  # noqa: E402

IMAGE_SHAPE = (16, 16, 1)


def make_arrays(num_examples: int, image_shape=IMAGE_SHAPE, num_classes: int = 2, seed: int = 0):
    """Noise images whose class shifts the brightness of one quadrant: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples)
    images = rng.normal(0.0, 0.3, (num_examples, *image_shape)).astype(np.float32)
    h, w = image_shape[0] // 2, image_shape[1] // 2
    for c in range(num_classes):
        row, col = divmod(c, 2)
        images[labels == c, row * h : (row + 1) * h, col * w : (col + 1) * w] += 1.0
    return images, labels.astype(np.int64)


def make_data(
    global_batch_size: int,
    num_train: int = 64,
    num_eval: int = 33,
    image_shape=IMAGE_SHAPE,
    num_classes: int = 2,
    arrays=make_arrays,
) -> train.Data:
    """In-memory input functions with the input pipeline's contract: sharded per pipeline, train
    repeated with full batches, eval one pass of full masked batches. With 2 replicas and batch 8,
    33 eval examples end in a step where one replica gets 1 real example and the other none.
    `arrays(num_examples, image_shape, num_classes, seed)` generates the examples."""
    train_arrays = arrays(num_train, image_shape, num_classes, seed=1)
    eval_arrays = arrays(num_eval, image_shape, num_classes, seed=2)

    def input_fn(arrays, training):
        def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch_size = context.get_per_replica_batch_size(global_batch_size)
            num_pipelines = context.num_input_pipelines
            if training:
                ds = tf.data.Dataset.from_tensor_slices(arrays).shard(num_pipelines, context.input_pipeline_id)
                return ds.repeat().batch(batch_size, drop_remainder=True)
            indexed = (*arrays, np.arange(len(arrays[1]), dtype=np.int64))  # Each example's position.
            ds = tf.data.Dataset.from_tensor_slices(indexed).shard(num_pipelines, context.input_pipeline_id)
            largest = math.ceil(len(arrays[1]) / num_pipelines)  # Pipeline 0's share: the largest.
            num_batches = input_pipeline.eval_batches_per_pipeline(
                largest, batch_size, input_pipeline.replicas_per_pipeline(context)
            )
            return input_pipeline.pad_to_full_batches(ds, batch_size, num_batches)

        return fn

    return train.Data(
        num_classes=num_classes,
        input_shape=tuple(image_shape),
        train_input_fn=input_fn(train_arrays, True),
        eval_input_fn=input_fn(eval_arrays, False),
        train_steps_per_epoch=num_train // global_batch_size,
        eval_examples=num_eval,
        eval_examples_at=lambda positions: {i: StoredExample(f"example{i}", None) for i in positions},
    )


def make_config(model_dir: str, **overrides) -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data_dir = "in-memory"
    config.model_dir = model_dir
    config.model.name = "lenet5"  # No dropout: runs under different strategies compute the same thing.
    config.global_batch_size = 8
    config.epochs = 2
    config.steps_per_loop = 3
    config.optimizer = "sgd"
    config.learning_rate = 0.05
    config.update(overrides)
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--num_cpu_devices", type=int, default=0)
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        help="MODEL[:jit][:PRECISION], repeatable; runs one after the other (default: lenet5).",
    )
    parser.add_argument("--model_dir", required=True, help="Each run writes to MODEL_DIR/<run>.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    distribution.configure_cpu_devices(args.num_cpu_devices)
    strategy = distribution.make_strategy(args.strategy)
    results = {}
    for run in args.run or ["lenet5"]:
        model_name, *options = run.split(":")
        precision = next((o for o in options if o.startswith("mixed_")), "float32")
        distribution.set_precision(precision)
        config = make_config(
            os.path.join(args.model_dir, run.replace(":", "_")),
            strategy=args.strategy,
            mixed_precision=precision,
            jit_compile="jit" in options,
        )
        config.model.name = model_name
        model, history = train.train_and_evaluate(config, strategy, make_data(config.global_batch_size))
        results[f"{run}/history"] = json.dumps(history)
        results.update({f"{run}/{key}": value for key, value in replica_weights(strategy, model).items()})
    np.savez(args.out, **results)


def replica_weights(strategy: tf.distribute.Strategy, model) -> dict[str, np.ndarray]:
    """'{weight index}/{local replica}' -> value, for every copy this process holds."""
    return {
        f"{i}/{r}": np.asarray(value)
        for i, weight in enumerate(model.weights)
        for r, value in enumerate(strategy.experimental_local_results(weight.value))
    }


if __name__ == "__main__":
    main()
