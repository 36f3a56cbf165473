"""Small feature datasets written by hand in data_prep's format, for the trainer's tests."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from conftest import NO_AUGMENTATION, dataset_metadata

from data_prep import schema, tfrecord

CLASSES = ("cat", "dog")
Record = tuple[np.ndarray, int, str, str]  # Features, label, key, file name.


def write_features(
    root,
    shards: dict[str, list[list[Record]]],
    spec: schema.FeatureSpec,
    *,
    class_names=CLASSES,
    policy: schema.AugmentationPolicy = NO_AUGMENTATION,
) -> str:
    """A feature dataset holding, per split, shards of `Record`s; returns the directory."""
    data_dir, splits = str(root), {}
    os.makedirs(data_dir, exist_ok=True)
    for split, records in shards.items():
        for shard, shard_records in enumerate(records):
            path = os.path.join(data_dir, schema.shard_filename("toy", split, shard, len(records)))
            with open(path, "wb") as f:
                for values, label, key, filename in shard_records:
                    assert values.shape == spec.shape and values.dtype == np.float32
                    serialized = schema.serialize_example(None, filename, key, label, features=values.ravel().tolist())
                    f.write(tfrecord.tfrecord_frame(serialized))
        splits[split] = _split_info(data_dir, "toy", split, [len(r) for r in records])
    metadata = dataset_metadata(class_names, splits=splits, policy=policy)
    dataclasses.replace(metadata, image=None, features=spec).write(data_dir)
    return data_dir


def _split_info(data_dir: str, name: str, split: str, lengths: list[int]) -> schema.SplitInfo:
    paths = [os.path.join(data_dir, schema.shard_filename(name, split, i, len(lengths))) for i in range(len(lengths))]
    return schema.SplitInfo(sum(lengths), tuple(lengths), sum(os.path.getsize(p) for p in paths))
