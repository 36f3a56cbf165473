"""What the training loop takes from a dataset: input functions and sizes.

`train.load_data` builds a `Data` from a data_prep directory through the input pipeline; tests and benchmarks build
one from in-memory arrays. A module of its own so that the loop (train.py) and the step builders (steps.py) can both
name the type without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from trainer.input_pipeline import StoredExample

InputFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Data:
    """Input functions (for `strategy.distribute_datasets_from_function`) and the sizes the loop needs."""

    num_classes: int
    input_shape: tuple[int, ...]  # Of one example: an image (H, W, C), or a feature dataset's features.
    train_input_fn: InputFn | None  # Infinite (images, labels), full per-replica batches.
    eval_input_fn: InputFn | None  # One pass of full (images, labels, mask, index) batches; `eval_examples` unmasked.
    train_steps_per_epoch: int
    eval_examples: int
    class_names: tuple[str, ...] = ()  # For reports; empty: '0', '1', ...
    images: bool = True  # False: the inputs are a frozen base's features (not logged as images).
    # File names (and stored images) of the eval split's examples at these `index` positions, for reports.
    eval_examples_at: Callable[[Sequence[int]], dict[int, StoredExample]] | None = None
