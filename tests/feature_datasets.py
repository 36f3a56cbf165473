"""Small image and feature datasets written by hand in data_prep's format, for the trainer's tests.

`write_feature_dataset` does what `python -m data_prep.extract_features` does, in-process and with the trainer's own
decode, resize and normalization: the same splits, shards, record order, keys and labels as the image dataset, each
image replaced by the given base's outputs. So a test can train on the features and on the images and compare.
"""

from __future__ import annotations

import dataclasses
import io
import os

import keras
import numpy as np
import tensorflow as tf
from conftest import NO_AUGMENTATION, dataset_metadata
from PIL import Image

from data_prep import schema, tfrecord
from trainer import features, input_pipeline, models

CLASSES = ("cat", "dog")
Record = tuple[np.ndarray, int, str, str]  # Features, label, key, file name.


def learnable_pixels(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 noise in which class c brightens quadrant c."""
    pixels = rng.normal(100.0, 30.0, (size, size, 3))
    half = size // 2
    row, col = divmod(label, 2)
    pixels[row * half : (row + 1) * half, col * half : (col + 1) * half] += 100.0
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_image_dataset(root, shards: dict[str, list[int]], *, size: int = 32, seed: int = 0) -> str:
    """PNG images of `size`x`size` of CLASSES, random labels, identity augmentation; returns the directory."""
    data_dir, rng, index, splits = str(root), np.random.default_rng(seed), 0, {}
    os.makedirs(data_dir, exist_ok=True)
    for split, lengths in shards.items():
        for shard, length in enumerate(lengths):
            path = os.path.join(data_dir, schema.shard_filename("toy", split, shard, len(lengths)))
            with open(path, "wb") as f:
                for _ in range(length):
                    label = int(rng.integers(len(CLASSES)))
                    buffer = io.BytesIO()
                    Image.fromarray(learnable_pixels(label, size, rng)).save(buffer, format="PNG")
                    record = schema.serialize_example(buffer.getvalue(), f"{index}.png", f"key{index}", label)
                    f.write(tfrecord.tfrecord_frame(record))
                    index += 1
        splits[split] = _split_info(data_dir, "toy", split, lengths)
    dataset_metadata(CLASSES, splits=splits).write(data_dir)
    return data_dir


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


def write_feature_dataset(
    image_dir: str, root, base: keras.Model, *, weights: str = "none", normalization: str = "vgg16"
) -> str:
    """The features of every image of `image_dir` by `base` (loaded from the file `weights`, or 'none')."""
    info = input_pipeline.open_dataset(image_dir)
    height, width = (int(n) for n in base.input_shape[1:3])
    normalize = input_pipeline.make_normalizer(info, normalization)
    spec = schema.FeatureSpec(
        shape=tuple(int(n) for n in base.output_shape[1:]),
        base_model=models.VGG16_BASE,
        weights=weights,
        weights_sha256="" if weights in features.RANDOM_WEIGHTS else features.sha256_file(weights),
        input_size=(height, width),
        normalization=normalization,
        precision="float32",
    )
    shards = {}
    for split in info.metadata.splits:
        shards[split] = []
        for path in info.shard_paths(split):
            examples = [tf.train.Example.FromString(r.numpy()).features.feature for r in tf.data.TFRecordDataset(path)]
            images = [
                input_pipeline.decode_resize(e[schema.IMAGE].bytes_list.value[0], 3, height, width) for e in examples
            ]
            outputs = np.asarray(base(normalize(tf.stack(images)), training=False)) if images else []
            shards[split].append(
                [
                    (
                        values,
                        int(e[schema.LABEL].int64_list.value[0]),
                        e[schema.KEY].bytes_list.value[0].decode(),
                        e[schema.FILENAME].bytes_list.value[0].decode(),
                    )
                    for values, e in zip(outputs, examples, strict=True)
                ]
            )
    return write_features(root, shards, spec, class_names=info.class_names)


def _split_info(data_dir: str, name: str, split: str, lengths: list[int]) -> schema.SplitInfo:
    paths = [os.path.join(data_dir, schema.shard_filename(name, split, i, len(lengths))) for i in range(len(lengths))]
    return schema.SplitInfo(sum(lengths), tuple(lengths), sum(os.path.getsize(p) for p in paths))
