"""The record and metadata format that data_prep writes and the trainer reads.

This module is the only place that names a feature key, a metadata field or a
shard file name; both sides import it so the writer and the reader cannot drift.
The records are TFDS-compatible (`tfds.builder_from_directory` reads them) and
follow TFDS `cats_vs_dogs`: `image` (encoded bytes), `image/filename`, `label`.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import fsspec

from data_prep import example_proto, logs

if TYPE_CHECKING:  # Beam workers import this module: TensorFlow is imported only where it is used.
    import tensorflow as tf

SCHEMA_VERSION = 1

# Feature keys.
IMAGE = "image"
FILENAME = "image/filename"  # Path under the input folder; UTF-8, or the name's own bytes where it is not UTF-8.
LABEL = "label"
KEY = "image/key"  # Stable content key: sha256 of the source bytes (or of the source record).
COARSE_LABEL = "label/coarse"  # CIFAR-100 only.
AUGMENT_SOURCE_KEY = "augment/source_key"  # KEY of the example an offline-augmented copy was made from; "" if none.
AUGMENT_PARAMS = "augment/params"  # JSON of that copy's transform parameters; "" if none.

# Files of a dataset directory.
FILE_FORMAT = "tfrecord"
METADATA_FILE = "metadata.json"  # TFDS's name for free-form metadata (tfds.core.MetadataDict).
REPORT_FILE = "build_report.json"
SHARD_TEMPLATE = "{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"

# Fields of metadata.json.
META_SCHEMA_VERSION = "schema_version"
META_DATASET = "dataset"
META_CLASS_NAMES = "class_names"
META_COARSE_CLASS_NAMES = "coarse_class_names"
META_IMAGE = "image"  # {"format", "channels", "resize_policy", "image_size"}
META_SPLITS = "splits"  # {split: {"num_examples", "shard_lengths", "num_bytes"}}
META_STATISTICS = "statistics"  # {"split", "mean", "std", "min", "max", "num_pixels"} per channel, 0..255 scale
META_AUGMENTATION = "augmentation"  # data_prep.augmentation.AugmentationPolicy.to_dict()
META_SOURCE = "source"
META_BUILD = "build"

SPLIT_ORDER = ("train", "validation", "test")


def shard_filename(name: str, split: str, index: int, count: int) -> str:
    return SHARD_TEMPLATE.format(name=name, split=split, index=index, count=count)


def tfds_features(class_names: Sequence[str], image_format: str, channels: int,
                  coarse_class_names: Sequence[str] | None = None):
    """The TFDS FeaturesDict describing exactly the keys `serialize_example` writes."""
    tfds = logs.import_tensorflow_datasets()

    features = {
        IMAGE: tfds.features.Image(shape=(None, None, channels), encoding_format=image_format),
        FILENAME: tfds.features.Text(),
        KEY: tfds.features.Text(),
        LABEL: tfds.features.ClassLabel(names=list(class_names)),
        AUGMENT_SOURCE_KEY: tfds.features.Text(),
        AUGMENT_PARAMS: tfds.features.Text(),
    }
    if coarse_class_names:
        features[COARSE_LABEL] = tfds.features.ClassLabel(names=list(coarse_class_names))
    return tfds.features.FeaturesDict(features)


def serialize_example(image: bytes, filename: str, key: str, label: int,
                      coarse_label: int | None = None,
                      augment_source_key: str = "",
                      augment_params: Mapping[str, Any] | None = None) -> bytes:
    r"""A `tf.train.Example`, serialized deterministically (byte-identical across runs).

    The augment fields are present in every record (empty on originals): TFDS requires
    every feature of features.json in every record. A file name that is not valid UTF-8
    (Python holds its bytes as surrogate escapes, e.g. Latin-1 `caf\xe9.jpg` as
    'caf\udce9.jpg') is stored as those original bytes: lossless, and the same bytes the
    file system shows.
    """
    example = example_proto.Example()
    feature = example.features.feature
    for name, value in ((IMAGE, image), (FILENAME, filename.encode("utf-8", "surrogateescape")),
                        (KEY, key.encode("ascii")), (AUGMENT_SOURCE_KEY, augment_source_key.encode("ascii")),
                        (AUGMENT_PARAMS, json.dumps(augment_params, sort_keys=True).encode() if augment_params
                         else b"")):
        feature[name].bytes_list.value.append(value)
    feature[LABEL].int64_list.value.append(label)
    if coarse_label is not None:
        feature[COARSE_LABEL].int64_list.value.append(coarse_label)
    return example.SerializeToString(deterministic=True)


def parse_spec(with_coarse_label: bool = False) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io.parse_example` spec for training: encoded image, label and key."""
    import tensorflow as tf

    spec = {
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        KEY: tf.io.FixedLenFeature([], tf.string),
    }
    if with_coarse_label:
        spec[COARSE_LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def parse_examples(serialized: tf.Tensor, with_coarse_label: bool = False) -> dict[str, tf.Tensor]:
    """Parses a batch of serialized records (batch before parsing: it is much cheaper)."""
    import tensorflow as tf

    return tf.io.parse_example(serialized, parse_spec(with_coarse_label))


def read_metadata(data_dir: str) -> dict[str, Any]:
    """Reads metadata.json of a dataset directory (local or any fsspec URL)."""
    path = os.path.join(data_dir, METADATA_FILE)
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise FileNotFoundError(
            f"{path} not found: {data_dir} is not a dataset built by data_prep "
            "(run `python -m data_prep.build ... --output_dir=DIR` first).")
    with fs.open(fs_path, "r") as f:
        metadata = json.load(f)
    if metadata.get(META_SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {metadata.get(META_SCHEMA_VERSION)!r}, "
                         f"this code reads {SCHEMA_VERSION}; rebuild the dataset with this data_prep.")
    return metadata


def shard_paths(data_dir: str, metadata: Mapping[str, Any], split: str) -> list[str]:
    """The shard files of `split`, in order, as recorded in the metadata."""
    lengths = metadata[META_SPLITS][split]["shard_lengths"]
    return [os.path.join(data_dir, shard_filename(metadata[META_DATASET], split, i, len(lengths)))
            for i in range(len(lengths))]
