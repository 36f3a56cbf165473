r"""usage: python -m data_prep.extract_features --data_dir=DIR --output_dir=DIR [--weights=imagenet] [Beam flags]
Writes a frozen base model's outputs for a built image dataset as a dataset (installed as imgcls-extract-features too).

  python -m data_prep.extract_features --data_dir=/data/catsdogs_small --output_dir=/data/catsdogs_small_vgg16 \
      [--weights=imagenet] [--input_size=150] [--precision=auto] [--augment_copies=K] [Beam flags]

Every record is decoded, resized and normalized exactly as the trainer's input pipeline does (its own
functions), then run through the base with Beam's RunInference (a TensorFlow model handler: batched, on any
runner's workers, GPU workers included, with Beam's inference metrics). The output has the source's splits,
labels, keys and file names; its metadata names the base, its weights file and sha256, the input size,
normalization and precision. With --augment_copies=K each training image also yields K augmented copies (the
source's recorded policy, applied as the trainer applies it, deterministic from seed, key and copy). Writing,
reconciling and committing are the image builds' own (driver.run). Other flags are Beam pipeline options.
In Python: `data_prep.extract_feature_dataset(data_dir=..., output_dir=..., weights=...)` (data_prep/api.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
from absl import flags

from data_prep import (
    api,
    cli,
    driver,
    example_proto,
    logs,
    options,
    progress,
    results,
    runners,
    schema,
    splits,
    tfrecord,
)
from data_prep.examples import Example, ExampleInfo

NORMALIZATION = "vgg16"  # What VGG16 expects (keras.applications.vgg16.preprocess_input).


Image = tuple[bytes, tuple[int, int] | None]  # Encoded bytes, and (key number, copy) for an augmented copy.


@dataclasses.dataclass(frozen=True)
class _Pending:
    """What a record keeps while its image goes through the base: everything of the output record but features."""

    info: ExampleInfo
    coarse_label: int | None
    augment_source_key: str
    augment_params: dict[str, Any] | None


Item = tuple[_Pending, Image]


def extract(settings: options.ExtractOptions) -> dict[str, Any]:
    """Writes the features dataset `settings` describe; returns the report. UserError on bad input before any work."""
    beam_options = runners.pipeline_options(settings.beam_args)
    driver.check_output(settings)
    try:
        source = schema.DatasetMetadata.read(settings.data_dir)
    except (FileNotFoundError, schema.MetadataError) as e:
        raise options.UserError(str(e)) from None
    if source.image is None:
        raise options.UserError(f"--data_dir={settings.data_dir} holds features already, not images")
    spec = feature_spec(settings)

    def read(p: beam.Pipeline, work_dir: str):
        shards = [
            (split, path)
            for split in source.splits
            for path, length in zip(
                source.shard_paths(settings.data_dir, split), source.splits[split].shard_lengths, strict=True
            )
            if length
        ]
        pending = (
            p
            | "Shards" >> beam.Create(shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadRecords" >> beam.FlatMapTuple(_read_shard)
            | "SpreadRecords" >> beam.Reshuffle()
            | "Pending" >> beam.ParDo(_PendingImages(source.augmentation, settings.augment_copies, settings.seed))
        )
        items = source.split_sizes.get("train", 0) * settings.augment_copies + sum(source.split_sizes.values())
        groups = max(1, math.ceil(items / (settings.batch_size * _BATCHES_PER_GROUP)))
        batches = (
            pending
            | "ByGroup" >> beam.Map(lambda item: (_hash(item[0].info.key) % groups, item))
            | "Group" >> beam.GroupByKey()
            | "Batches" >> beam.FlatMapTuple(lambda _, group: _batches(group, settings.batch_size))
        )
        base = _run_base(source, spec, settings.weights, settings.seed)
        return batches | "Base" >> base | "ToExamples" >> beam.ParDo(_ToExamples(work_dir)), []

    return driver.run(
        driver.Source(
            name=settings.name or f"{source.dataset}_{settings.base}",
            total=sum(source.split_sizes.values()),
            read=read,
            split_spec=splits.SplitSpec((("train", 100.0),)),  # Unused: every record keeps its source split.
            class_names=source.class_names,
            coarse_class_names=source.coarse_class_names,
            metadata={"kind": "features", "input": settings.data_dir, "dataset": source.dataset},
            policy=schema.AugmentationPolicy(),  # Features are not augmented in training; copies are made here.
            features=spec,
            write_copies=False,
            max_examples_per_split=source.build.max_examples_per_split,  # Features of a smoke build are one too.
        ),
        settings,
        beam_options,
    )


def feature_spec(settings: options.ExtractOptions) -> schema.FeatureSpec:
    """The spec of the features `settings` make: the weights file is found and hashed, the output shape computed."""
    from trainer import models

    if settings.weights == "none":  # The trainer's random base: its features would describe nothing, unreproducibly.
        raise options.UserError(
            "--weights=none: feature extraction needs the base's weights; give --weights=imagenet or a weights file"
        )
    try:
        weights = models.vgg16_weights_file(settings.weights)
    except (FileNotFoundError, models.MissingWeightsError) as e:
        raise options.UserError(str(e).replace("--config.model.weights=", "--weights=")) from None
    size = (settings.input_size, settings.input_size)
    return schema.FeatureSpec(
        shape=models.vgg16_output_shape(*size),
        base_model=settings.base,
        weights=weights,
        weights_sha256=_sha256(weights),
        input_size=size,
        normalization=NORMALIZATION,
        precision=resolve_precision(settings.precision),
    )


def resolve_precision(precision: str) -> str:
    """`auto` is mixed_bfloat16 where bfloat16 runs fast on this CPU (the driver's: choose explicitly for other
    workers), else float32."""
    if precision != "auto":
        return precision
    from trainer import distribution

    return "mixed_bfloat16" if distribution.bfloat16_is_fast() else "float32"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_shard(split: str, path: str) -> Iterator[tuple[str, bytes]]:
    with fsspec.open(path, "rb") as f:
        for record in tfrecord.read_records(f, path):
            yield split, record


class _PendingImages(beam.DoFn):
    """A source record in; its encoded image (and, for a training image, K copies to augment) out, keyed by what
    the output record needs. Only encoded bytes travel to the base: it decodes, resizes and augments in batches."""

    def __init__(self, policy: schema.AugmentationPolicy, copies: int, seed: int):
        self._policy, self._copies, self._seed = policy, copies, seed

    def setup(self):
        self._files_seen = beam.metrics.Metrics.counter(results.METRICS_NAMESPACE, "files_seen")
        self._augmented = beam.metrics.Metrics.counter(results.METRICS_NAMESPACE, "augmented")

    def process(self, element: tuple[str, bytes]) -> Iterator[tuple[_Pending, tuple[bytes, tuple[int, int] | None]]]:
        split, record = element
        feature = example_proto.Example.FromString(record).features.feature
        key = feature[schema.KEY].bytes_list.value[0].decode("ascii")
        coarse = feature[schema.COARSE_LABEL].int64_list.value if schema.COARSE_LABEL in feature else None
        info = ExampleInfo(
            key=key,
            filename=schema.record_filename(feature),
            label=int(feature[schema.LABEL].int64_list.value[0]),
            split=split,
            dedupe_key=key,  # Already deduplicated when the images were built.
            num_pixels=0,  # No pixel statistics for features.
            moments=None,
            source_key=feature[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0].decode("ascii") or None,
        )
        params = feature[schema.AUGMENT_PARAMS].bytes_list.value[0]
        coarse_label = coarse[0] if coarse else None
        original = _Pending(info, coarse_label, info.source_key or "", json.loads(params) if params else None)
        image = feature[schema.IMAGE].bytes_list.value[0]
        self._files_seen.inc()
        yield original, (image, None)
        if split != "train":
            return
        for copy in range(self._copies):  # Seeded by (seed, key, copy): the same copy whatever the batching.
            copy_key = hashlib.sha256(f"{key}:augment:{self._seed}:{copy}".encode()).hexdigest()
            copied = dataclasses.replace(
                info, key=copy_key, dedupe_key=copy_key, filename=f"{info.filename}#augment{copy}", source_key=key
            )
            copy_params = {"seed": self._seed, "copy": copy, "policy": self._policy.to_dict()}
            self._augmented.inc()
            yield _Pending(copied, coarse_label, key, copy_params), (image, (int(key[:15], 16), copy))


class _Extractor:
    """The base with the trainer's preprocessing in front: encoded images in (with the seed of an augmented copy),
    float32 features out. Every image is decoded, resized, augmented and normalized on its own inside one batched
    tf.function, so an image's features never depend on its batch."""

    def __init__(self, source: schema.DatasetMetadata, spec: schema.FeatureSpec, weights: str, seed: int):
        tf = logs.import_tensorflow()
        from trainer import input_pipeline

        self._base = _load_base(spec, weights)
        info = input_pipeline.DatasetInfo("", source)
        height, width = spec.input_size
        normalize = input_pipeline.make_normalizer(info, spec.normalization)
        image_spec = tf.TensorSpec([height, width, info.channels], tf.float32)

        def prepare_one(inputs):
            encoded, copy_seed, augment = inputs
            image = tf.cast(input_pipeline.decode_resize(encoded, info.channels, height, width), tf.float32)
            key_seed = tf.stack([tf.constant(seed, tf.int64), copy_seed[0]])
            augmented = input_pipeline.augment_batch(
                image[None], source.augmentation, tf.random.experimental.stateless_fold_in(key_seed, copy_seed[1])
            )[0]
            return tf.where(augment, augmented, image)

        base = self._base

        @tf.function(reduce_retracing=True)  # Compiled: faster than the eager Keras call.
        def features(encoded, copy_seeds, augment):
            images = tf.map_fn(prepare_one, (encoded, copy_seeds, augment), fn_output_signature=image_spec)
            return tf.cast(base(normalize(images), training=False), tf.float32)

        self._tf, self._features = tf, features

    def __call__(self, batch: Sequence[tuple[bytes, tuple[int, int] | None]]) -> np.ndarray:
        tf = self._tf
        encoded = tf.constant([image for image, _ in batch])
        copy_seeds = tf.constant([copy or (0, 0) for _, copy in batch], tf.int64)
        augment = tf.constant([copy is not None for _, copy in batch])
        return self._features(encoded, copy_seeds, augment).numpy()


_BATCHES_PER_GROUP = 4  # Of --batch_size: groups spread over workers, each cut into batches in key order.


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(b"batch:" + key.encode()).digest()[:8], "big")


def _batches(group: Iterable[Item], batch_size: int) -> Iterator[list[Item]]:
    """The group's items in key order, in batches: which images share a batch depends on the keys alone (TensorFlow's
    own convolutions, oneDNN off, round an image's features differently in batches of other sizes)."""
    ordered = sorted(group, key=lambda item: item[0].info.key)
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def _run_base(source: schema.DatasetMetadata, spec: schema.FeatureSpec, weights: str, seed: int) -> beam.PTransform:
    """RunInference of the base over batches made by key, with Beam's TensorFlow model handler: each element is one
    batch, so Beam's batching (which depends on bundles) never decides which images run together."""
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.tensorflow_inference import ModelType, TFModelHandlerNumpy

    class ExtractorHandler(TFModelHandlerNumpy):
        """Loads the base in the worker (weights resolved there, 'imagenet' from its own Keras cache, and checked
        against the sha256 the driver recorded), with the preprocessing in front."""

        def load_model(self):
            return _Extractor(source, spec, weights, seed)

    handler = ExtractorHandler(
        model_uri=spec.weights,
        model_type=ModelType.SAVED_WEIGHTS,
        max_batch_size=1,  # One element: one batch of images.
        inference_fn=_features_of,
    )
    return RunInference(handler)


def _load_base(spec: schema.FeatureSpec, weights: str):
    import keras

    from trainer import models

    path = models.vgg16_weights_file(weights)
    if _sha256(path) != spec.weights_sha256:
        raise ValueError(f"{path}: sha256 differs from the weights the driver recorded ({spec.weights_sha256})")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(spec.precision)
    try:
        return models.vgg16_base((*spec.input_size, 3), weights=path)
    finally:
        keras.config.set_dtype_policy(previous)


def _features_of(
    extractor: _Extractor, batches: Sequence[Any], inference_args: dict[str, Any], model_id: str | None = None
) -> list[Any]:
    """Each element is a batch of items (see _batches): one call of the base for it."""
    from apache_beam.ml.inference.base import PredictionResult

    return [PredictionResult(batch, extractor([image for _, image in batch]), model_id) for batch in batches]


class _ToExamples(beam.DoFn):
    """A batch's features to output examples. Progress counts source records here, once the base has run: the
    records are all read before the first batch (a GroupByKey makes the batches), so counted there they would
    reach the total in seconds and then stand still through the extraction."""

    def __init__(self, work_dir: str):
        self._work_dir = work_dir

    def setup(self):
        self._progress = progress.Progress(self._work_dir)

    def process(self, prediction: Any) -> Iterator[Example]:
        for (pending, (_, copy)), features in zip(prediction.example, prediction.inference, strict=True):
            if copy is None:  # A source record; the copies made here are not in the total.
                self._progress.add()
            yield _to_example(pending, features)

    def finish_bundle(self):
        self._progress.flush()


def _to_example(pending: _Pending, features: np.ndarray) -> Example:
    return Example(
        pending.info,
        schema.serialize_example(
            None,
            pending.info.filename,
            pending.info.key,
            pending.info.label,
            coarse_label=pending.coarse_label,
            augment_source_key=pending.augment_source_key,
            augment_params=pending.augment_params,
            features=features.ravel().tolist(),
        ),
    )


def _define_flags() -> None:
    """The command line's flags, defined only when this module runs as one: data_prep.build's share names."""
    default = options.ExtractOptions  # Its class attributes are the fields' defaults.
    flags.DEFINE_string("data_dir", None, "The image dataset to read (built by data_prep.build).")
    flags.DEFINE_string("output_dir", None, "Feature dataset directory to create (local path or gs://).")
    flags.DEFINE_bool("overwrite", default.overwrite, "Replace an existing --output_dir (atomically).")
    flags.DEFINE_string("name", default.name, "Dataset name (shard file prefix); default: <source>_<base>.")
    flags.DEFINE_enum("base", default.base, ["vgg16"], "The frozen base model.")
    flags.DEFINE_string(
        "weights", default.weights, "The base's weights: imagenet (Keras's cache, downloaded when online) or a file."
    )
    flags.DEFINE_integer("input_size", default.input_size, "Images are resized to this square size.")
    flags.DEFINE_enum(
        "precision",
        default.precision,
        options.PRECISIONS,
        "auto: mixed_bfloat16 where this machine's CPU has bfloat16 matrix units (AMX) and oneDNN is on, else float32.",
    )
    flags.DEFINE_integer("batch_size", default.batch_size, "Largest batch the base is given.")
    flags.DEFINE_integer(
        "augment_copies", default.augment_copies, "Augmented copies of each training image, also extracted."
    )
    flags.DEFINE_integer("seed", default.seed, "Seed of the augmented copies.")
    flags.DEFINE_float("shard_size_mb", default.shard_size_mb, "Target shard size.")
    flags.DEFINE_integer("num_shards", default.num_shards, "Shards per split (0: from --shard_size_mb).")
    flags.DEFINE_float(
        "stall_timeout_s",
        default.stall_timeout_s,
        "Cancel a job that shows no work for this long (0: never).",
        lower_bound=0,
    )
    flags.DEFINE_float(
        "imbalance_warning_ratio",
        default.imbalance_warning_ratio,
        "Warn when a split's largest class has more than this many times the images of its smallest; 0: never.",
    )


def extract_from_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The command: the API with every flag by its name; `argv[1:]` are the flags left for Beam."""
    values: dict[str, Any] = {name: flags.FLAGS[name].value for name in api.EXTRACT_SETTINGS if name != "beam_args"}
    return api.extract_feature_dataset(**values, beam_args=argv[1:])


main = cli.command(extract_from_flags)

if __name__ == "__main__":
    _define_flags()
    cli.run(main)
