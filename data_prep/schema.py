"""The dataset contract: the record and metadata format that data_prep writes and the trainer reads.

The one definition of the feature keys, the record serializer and parser, the shard
file names, and `metadata.json` as a typed object (`DatasetMetadata`, with the
augmentation policy it records); both sides import it, so the writer and the reader
cannot drift. It imports neither Beam nor TensorFlow at import time (Beam workers and
the trainer both load it). The records are TFDS-compatible (`tfds.builder_from_directory`
reads them) and follow TFDS `cats_vs_dogs`: `image` (encoded bytes), `image/filename`, `label`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import fsspec

from data_prep import example_proto, logs

if TYPE_CHECKING:  # Beam workers import this module: TensorFlow is imported only where it is used.
    import tensorflow as tf

SCHEMA_VERSION = 1

# The libraries a dataset's bytes depend on, by distribution name (metadata.json "versions"): Pillow encodes the
# images (a rebuild is byte-identical under the same Pillow), TensorFlow computes features, Beam runs the job.
LIBRARIES = ("pillow", "tensorflow", "apache-beam")

# Feature keys.
IMAGE = "image"  # Encoded image bytes (image datasets).
FEATURES = "features"  # float32 outputs of a frozen base model for the image (feature datasets; shape in metadata).
FILENAME = "image/filename"  # Path under the input folder; UTF-8, or the name's own bytes where it is not UTF-8.
LABEL = "label"
KEY = "image/key"  # Stable content key: sha256 of the source bytes (or of the source record).
COARSE_LABEL = "label/coarse"  # CIFAR-100 only.
AUGMENT_SOURCE_KEY = "augment/source_key"  # KEY of the example an offline-augmented copy was made from; "" if none.
AUGMENT_PARAMS = "augment/params"  # JSON of that copy's transform parameters; "" if none.

# Files of a dataset directory.
FILE_FORMAT = "tfrecord"
METADATA_FILE = "metadata.json"  # TFDS's name for free-form metadata (tfds.core.MetadataDict).
TFDS_INFO_FILE = "dataset_info.json"  # Written by TFDS; with METADATA_FILE, the mark of a complete dataset.
REPORT_FILE = "build_report.json"
SHARD_TEMPLATE = "{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"

SPLIT_ORDER = ("train", "validation", "test")
REBUILD = "rebuild it with `python -m data_prep.build`"


class MetadataError(ValueError):
    """metadata.json is from another schema version, or malformed; the message names the file and the field."""


def shard_filename(name: str, split: str, index: int, count: int) -> str:
    return SHARD_TEMPLATE.format(name=name, split=split, index=index, count=count)


@dataclasses.dataclass(frozen=True)
class AugmentationPolicy:
    """Training-time augmentation; ranges follow keras.layers.Random*: fractions of the image size, rotation in turns.

    data_prep records the policy a dataset calls for; the trainer applies it to the training split only.
    """

    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotation: float = 0.0  # Max rotation as a fraction of a full turn (0.1 = +-36 degrees).
    zoom: float = 0.0  # Max zoom in/out as a fraction of the size (0.2 = 80%..120%).
    translation: float = 0.0  # Max shift as a fraction of height/width.
    contrast: float = 0.0  # Max contrast change factor (0.2 = 0.8..1.2).

    def __post_init__(self):
        for name in ("rotation", "zoom", "translation", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"augmentation {name}={value}: must be in [0, 1).")

    @property
    def is_identity(self) -> bool:
        return self == AugmentationPolicy()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentationPolicy:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation fields {sorted(unknown)}")
        return cls(**values)

    def replace(self, **overrides: Any) -> AugmentationPolicy:
        return dataclasses.replace(self, **overrides)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How the stored images were made."""

    format: str  # jpeg | png
    channels: int  # 3 (RGB) or 1 (grey)
    resize_policy: str  # shorter_side | exact | none
    image_size: int
    jpeg_quality: int


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How the stored features were made: a frozen base model's outputs for each image of a source dataset."""

    shape: tuple[int, ...]  # Of one example's float32 features, e.g. VGG16's (4, 4, 512) at 150 px.
    base_model: str  # e.g. "vgg16" (trainer.models).
    weights: str  # The weights file the base was loaded from.
    weights_sha256: str
    input_size: tuple[int, int]  # (height, width) the images were resized to, as the trainer's input pipeline does.
    normalization: str  # What the base saw: the trainer's normalization of that name.
    precision: str  # The Keras dtype policy the base ran in.


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    num_examples: int
    shard_lengths: tuple[int, ...]  # Records per shard file, in shard order.
    num_bytes: int  # Of the shard files: the reader checks the files it finds against it.
    # Records per label (label k at index k), offline-augmented copies included, as the shard writers counted them;
    # None in files written before it was recorded.
    num_examples_per_class: tuple[int, ...] | None = None

    def __post_init__(self):
        if sum(self.shard_lengths) != self.num_examples:
            raise ValueError(f"num_examples={self.num_examples} but its shard_lengths sum to {sum(self.shard_lengths)}")
        if self.num_examples_per_class is not None and sum(self.num_examples_per_class) != self.num_examples:
            raise ValueError(
                f"num_examples={self.num_examples} but its num_examples_per_class sum to "
                f"{sum(self.num_examples_per_class)}"
            )


@dataclasses.dataclass(frozen=True)
class Statistics:
    """Per-channel pixel statistics of the stored images of one split (0..255 scale); every split is normalized
    with the train split's."""

    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]  # Population standard deviation.
    min: tuple[float, ...]
    max: tuple[float, ...]
    num_pixels: int

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Statistics:
        return _from_mapping(cls, values)


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Build choices that change the records without showing in the image spec."""

    augment_copies: int  # Offline-augmented copies of each training example.
    seed: int  # Of the offline augmentation.
    max_pixels: int
    # A smoke build (--max_examples_per_split): at most this many examples per split, not the whole input.
    max_examples_per_split: int | None = None


def library_versions() -> dict[str, str]:
    """LIBRARIES' installed versions, for metadata.json; read from their distributions, so nothing is imported."""
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def _from_mapping(cls, values: Mapping[str, Any], **converters: Any):
    """A dataclass from a JSON object: every field required, lists to tuples, unknown fields refused; errors name
    the field (`splits: train: ...`)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"expected an object, got {values!r}")
    fields_ = dataclasses.fields(cls)
    names = [f.name for f in fields_]
    optional = {f.name for f in fields_ if f.default is not dataclasses.MISSING}  # Added after files were written.
    missing = [n for n in names if n not in values and n not in optional]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:
        raise ValueError(f"missing fields {missing}" if missing else f"unknown fields {unknown}")
    fields = {}
    for name in (n for n in names if n in values):
        try:
            fields[name] = converters.get(name, _plain)(values[name])
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{name}: {e}") from None
    return cls(**fields)


def _from_mapping_per_key(cls, values: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ValueError(f"expected an object, got {values!r}")
    converted = {}
    for key, value in values.items():
        try:
            converted[key] = _from_mapping(cls, value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    return converted


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _to_json(value: Any) -> Any:
    """Dataclasses and tuples as JSON objects and lists (dataclasses.asdict keeps tuples)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """metadata.json: what a reader needs besides the records. Each attribute is a top-level field of the file."""

    dataset: str  # The name: shard files are `{dataset}-{split}.tfrecord-...`.
    class_names: tuple[str, ...]  # Label k is class_names[k].
    image: ImageSpec | None  # Image datasets (records hold IMAGE); None for feature datasets.
    splits: dict[str, SplitInfo]
    augmentation: AugmentationPolicy
    statistics: Statistics | None  # Of the train split; None when it is empty.
    source: dict[str, Any]  # Provenance: input folder and layout, or source files and their sha256.
    build: BuildSettings
    # LIBRARIES' versions at build time (library_versions()); None in files written before they were recorded.
    versions: dict[str, str] | None = None
    coarse_class_names: tuple[str, ...] | None = None  # CIFAR-100's superclasses.
    features: FeatureSpec | None = None  # Feature datasets (records hold FEATURES); None for image datasets.
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if (self.image is None) == (self.features is None):
            raise ValueError("a dataset holds either images (image) or features (features), exactly one of them")
        for split, info in self.splits.items():
            if info.num_examples_per_class is not None and len(info.num_examples_per_class) != len(self.class_names):
                raise ValueError(
                    f"splits: {split}: num_examples_per_class has {len(info.num_examples_per_class)} counts for "
                    f"{len(self.class_names)} class_names"
                )

    @property
    def split_sizes(self) -> dict[str, int]:
        return {split: info.num_examples for split, info in self.splits.items()}

    def shard_paths(self, data_dir: str, split: str) -> list[str]:
        """The shard files of `split`, in order."""
        count = len(self.splits[split].shard_lengths)
        return [posixpath.join(data_dir, shard_filename(self.dataset, split, i, count)) for i in range(count)]

    def to_dict(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DatasetMetadata:
        """Raises ValueError naming the field that is missing or malformed."""
        converters = {
            "class_names": tuple,
            "coarse_class_names": lambda v: None if v is None else tuple(v),
            "image": lambda v: None if v is None else _from_mapping(ImageSpec, v),
            "features": lambda v: None if v is None else _from_mapping(FeatureSpec, v),
            "splits": lambda v: _from_mapping_per_key(SplitInfo, v),
            "augmentation": AugmentationPolicy.from_dict,
            "statistics": lambda v: None if v is None else Statistics.from_dict(v),
            "source": dict,
            "build": lambda v: _from_mapping(BuildSettings, v),
            "versions": lambda v: None if v is None else {str(k): str(version) for k, version in v.items()},
        }
        return _from_mapping(cls, values, **converters)

    @classmethod
    def read(cls, data_dir: str) -> DatasetMetadata:
        """The metadata of a dataset directory (local or any fsspec URL). FileNotFoundError (no metadata.json) and
        MetadataError (another schema version, a malformed field) say what to do."""
        path = posixpath.join(data_dir, METADATA_FILE)
        fs, fs_path = fsspec.core.url_to_fs(path)
        if not fs.exists(fs_path):
            raise FileNotFoundError(
                f"{path} not found: {data_dir} is not a dataset built by data_prep (run "
                "`python -m data_prep.build ... --output_dir=DIR` first)."
            )
        with fs.open(fs_path, "r") as f:
            values = json.load(f)
        if values.get("schema_version") != SCHEMA_VERSION:
            raise MetadataError(
                f"{path}: schema_version {values.get('schema_version')!r}, this code reads "
                f"{SCHEMA_VERSION}; {REBUILD} from this version."
            )
        try:
            return cls.from_dict(values)
        except ValueError as e:
            raise MetadataError(f"{path} is malformed: {e}; {REBUILD}.") from None

    def write(self, data_dir: str) -> None:
        write_json(posixpath.join(data_dir, METADATA_FILE), self.to_dict())


def write_json(path: str, value: Any) -> None:
    """Sorted keys, 2-space indent, final newline: the same content gives the same bytes."""
    with fsspec.open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def tfds_features(metadata: DatasetMetadata):
    """The TFDS FeaturesDict (features.json) describing exactly the keys `serialize_example` writes."""
    import numpy as np

    tfds = logs.import_tensorflow_datasets()
    if metadata.features is not None:
        content = {FEATURES: tfds.features.Tensor(shape=metadata.features.shape, dtype=np.float32)}
    else:
        assert metadata.image is not None
        content = {
            IMAGE: tfds.features.Image(
                shape=(None, None, metadata.image.channels), encoding_format=metadata.image.format
            )
        }
    features = {
        **content,
        FILENAME: tfds.features.Text(),
        KEY: tfds.features.Text(),
        LABEL: tfds.features.ClassLabel(names=list(metadata.class_names)),
        AUGMENT_SOURCE_KEY: tfds.features.Text(),
        AUGMENT_PARAMS: tfds.features.Text(),
    }
    if metadata.coarse_class_names:
        features[COARSE_LABEL] = tfds.features.ClassLabel(names=list(metadata.coarse_class_names))
    return tfds.features.FeaturesDict(features)


def serialize_example(
    image: bytes | None,
    filename: str,
    key: str,
    label: int,
    coarse_label: int | None = None,
    augment_source_key: str = "",
    augment_params: Mapping[str, Any] | None = None,
    features: Sequence[float] | None = None,
) -> bytes:
    r"""A `tf.train.Example`, serialized deterministically (byte-identical across runs).

    It holds the encoded `image`, or, in a feature dataset, `features` (float32 values in row-major order, as
    TFDS's Tensor feature stores them). The augment fields are present in every record (empty on originals): TFDS
    requires every feature of features.json in every record. A file name that is not valid UTF-8 (Python holds its
    bytes as surrogate escapes, e.g. Latin-1 `caf\xe9.jpg` as 'caf\udce9.jpg') is stored as those original bytes:
    lossless, and the same bytes the file system shows.
    """
    if (image is None) == (features is None):
        raise ValueError("a record holds either an image or features, exactly one of them")
    example = example_proto.Example()
    feature = example.features.feature
    for name, value in (
        (FILENAME, filename.encode("utf-8", "surrogateescape")),
        (KEY, key.encode("ascii")),
        (AUGMENT_SOURCE_KEY, augment_source_key.encode("ascii")),
        (AUGMENT_PARAMS, json.dumps(augment_params, sort_keys=True).encode() if augment_params else b""),
    ):
        feature[name].bytes_list.value.append(value)
    if image is not None:
        feature[IMAGE].bytes_list.value.append(image)
    else:
        feature[FEATURES].float_list.value.extend(features)
    feature[LABEL].int64_list.value.append(label)
    if coarse_label is not None:
        feature[COARSE_LABEL].int64_list.value.append(coarse_label)
    return example.SerializeToString(deterministic=True)


def record_filename(feature: Mapping[str, Any]) -> str:
    """The FILENAME of a parsed record's `features.feature` map, as Python holds file names (the inverse of
    `serialize_example`'s encoding: bytes that are not UTF-8 come back as surrogate escapes)."""
    return feature[FILENAME].bytes_list.value[0].decode("utf-8", "surrogateescape")


def parse_spec(
    with_coarse_label: bool = False, features_shape: Sequence[int] | None = None
) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io.parse_example` spec for training: the encoded image (or, with `features_shape`, the features),
    label and key."""
    import tensorflow as tf

    content = (
        {FEATURES: tf.io.FixedLenFeature(list(features_shape), tf.float32)}
        if features_shape is not None
        else {IMAGE: tf.io.FixedLenFeature([], tf.string)}
    )
    spec = {**content, LABEL: tf.io.FixedLenFeature([], tf.int64), KEY: tf.io.FixedLenFeature([], tf.string)}
    if with_coarse_label:
        spec[COARSE_LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def parse_examples(
    serialized: tf.Tensor, with_coarse_label: bool = False, features_shape: Sequence[int] | None = None
) -> dict[str, tf.Tensor]:
    """Parses a batch of serialized records (batch before parsing: it is much cheaper)."""
    import tensorflow as tf

    return tf.io.parse_example(serialized, parse_spec(with_coarse_label, features_shape))
