"""tf.data input pipelines: a verified data_prep directory in, normalized batches out.

One pipeline per `tf.distribute.InputContext` (for
`strategy.distribute_datasets_from_function`): each reads a disjoint part of the
split, decodes and resizes once, caches the uint8 images, and for training
shuffles, repeats and augments with stateless random ops so tf.data can run the
maps in parallel and a (seed, pipeline, step) triple fixes the augmentation.
A feature dataset (a frozen base's outputs) goes the same way with its stored
features in place of decoded images, neither augmented nor normalized (extraction
resized and normalized the images the base saw).

Every batch has the full per-replica batch size, so no replica ever runs the model
on an empty batch (oneDNN's convolution returns a wrongly shaped result for one)
and shapes are static (as TPUs need). Evaluation pads the last batches with masked
examples instead of dropping the remainder: see `pad_to_full_batches`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import posixpath
import time
from collections.abc import Callable, Sequence

import fsspec
import keras
import tensorflow as tf
from absl import logging

from data_prep import schema
from trainer.errors import UserError

NORMALIZATIONS = ("vgg16", "dataset", "unit")
CACHE_MODES = ("auto", "memory", "none")  # Anything else is a directory for a file cache.
MEMORY_CACHE_BUDGET_BYTES = 4 << 30  # 'auto' caches a pipeline's decoded images in RAM up to this size.
SHUFFLE_BUFFER_BYTES = 256 << 20  # Decoded images held by the training shuffle buffer.
PARSE_BATCH_SIZE = 128  # Records parsed per tf.io.parse_example call.
READ_BUFFER_BYTES = 8 << 20

_PROCESS_STARTED = time.time()  # File-cache locks older than this were left by an earlier process.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A dataset directory whose metadata.json was read and whose shard files were found as it records them."""

    data_dir: str
    metadata: schema.DatasetMetadata

    @property
    def name(self) -> str:
        return self.metadata.dataset

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    @property
    def num_classes(self) -> int:
        return len(self.metadata.class_names)

    @property
    def channels(self) -> int:
        if self.metadata.image is None:
            raise UserError(f"{self.data_dir} holds a base model's features, not images: {self.metadata.features}")
        return self.metadata.image.channels

    @property
    def split_sizes(self) -> dict[str, int]:
        return self.metadata.split_sizes

    @property
    def statistics(self) -> schema.Statistics | None:
        return self.metadata.statistics

    @property
    def augmentation(self) -> schema.AugmentationPolicy:
        return self.metadata.augmentation

    def shard_paths(self, split: str) -> list[str]:
        return self.metadata.shard_paths(self.data_dir, split)


def open_dataset(data_dir: str, *, verify_records: bool = False, warn_if_smoke: bool = True) -> DatasetInfo:
    """Reads metadata.json and checks, from one directory listing, that every listed shard
    is there, non-empty if it should hold records, and that each split's shards add up to
    the bytes recorded (a truncated shard is then found and named by reading that split).

    With `verify_records`, also reads every shard once to count its records (a full
    pass over the data; also catches shards whose counts alone are wrong). A smoke build is said once per run:
    the reads after the training's (e.g. the export's) pass `warn_if_smoke=False`.
    """
    info = DatasetInfo(data_dir, schema.DatasetMetadata.read(data_dir))
    if warn_if_smoke and (n := info.metadata.build.max_examples_per_split) is not None:
        logging.warning("%s is a smoke build (--max_examples_per_split=%d), not the whole input.", data_dir, n)
    _check_shard_files(info)
    if verify_records:
        for split, split_info in info.metadata.splits.items():
            for path, expected in zip(info.shard_paths(split), split_info.shard_lengths, strict=True):
                _verify_record_count(path, expected)
    return info


def _check_shard_files(info: DatasetInfo) -> None:
    """One directory listing (cheap on Cloud Storage too) instead of a request per shard."""
    fs, root = fsspec.core.url_to_fs(info.data_dir)
    sizes = {posixpath.basename(entry["name"].rstrip("/")): entry["size"] for entry in fs.ls(root, detail=True)}
    for split, split_info in info.metadata.splits.items():
        paths = info.shard_paths(split)
        for path, length in zip(paths, split_info.shard_lengths, strict=True):
            filename = posixpath.basename(path)
            if filename not in sizes:
                raise FileNotFoundError(
                    f"shard {filename} listed in {schema.METADATA_FILE} is missing from "
                    f"{info.data_dir}: {schema.REBUILD}."
                )
            if length > 0 and not sizes[filename]:
                raise ValueError(
                    f"shard {path} is empty but {schema.METADATA_FILE} records {length} "
                    f"examples in it: {schema.REBUILD}."
                )
        found = sum(sizes[posixpath.basename(p)] for p in paths)
        if found != split_info.num_bytes:
            # Rare and fatal anyway: read the split to name the damaged shard.
            for path, length in zip(paths, split_info.shard_lengths, strict=True):
                _verify_record_count(path, length)
            raise ValueError(
                f"the {split} shards in {info.data_dir} hold {found} bytes but {schema.METADATA_FILE} "
                f"records {split_info.num_bytes}: {schema.REBUILD}."
            )


def _verify_record_count(path: str, expected: int) -> None:
    records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).batch(1024)
    try:
        count = int(records.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.size(batch, tf.int64)))
    except tf.errors.DataLossError as e:
        raise ValueError(
            f"shard {path} is truncated or corrupt ({e.message.splitlines()[0]}): {schema.REBUILD}."
        ) from e
    if count != expected:
        raise ValueError(
            f"shard {path} holds {count} records but {schema.METADATA_FILE} records {expected}: {schema.REBUILD}."
        )


@dataclasses.dataclass(frozen=True)
class StoredExample:
    """What evaluation's reports show of an example: its file name and, in an image dataset, its stored image."""

    filename: str
    image: bytes | None  # Encoded as stored; None in a feature dataset.


def read_examples(info: DatasetInfo, split: str, positions: Sequence[int]) -> dict[int, StoredExample]:
    """The records at `positions` of `split` (in shard order, as the evaluation input's `index` counts them);
    reads only the shards holding one, each up to the last wanted."""
    wanted, found, start = set(positions), {}, 0
    for path, length in zip(info.shard_paths(split), info.metadata.splits[split].shard_lengths, strict=True):
        inside = sorted(p - start for p in wanted if start <= p < start + length)
        records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).take(inside[-1] + 1 if inside else 0)
        for offset, record in enumerate(records.as_numpy_iterator()):
            if offset in inside:
                feature = tf.train.Example.FromString(record).features.feature
                filename = schema.record_filename(feature)
                image = feature[schema.IMAGE].bytes_list.value[0] if schema.IMAGE in feature else None
                found[start + offset] = StoredExample(filename, image)
        start += length
    return found


def image_channels(info: DatasetInfo) -> int:
    """Channels images are decoded to for a classifier of this dataset: the stored images', or for a feature
    dataset RGB (its VGG16 base took RGB)."""
    return info.channels if info.metadata.image is not None else 3


def output_channels(info: DatasetInfo, normalization: str) -> int:
    """Channels of the images the pipeline yields: VGG16's preprocessing needs RGB, so grey becomes RGB."""
    return 3 if normalization == "vgg16" else image_channels(info)


def model_input_shape(info: DatasetInfo, image_size: tuple[int, int], normalization: str) -> tuple[int, ...]:
    """The shape of one example the model takes: a feature dataset's features, else the images the pipeline yields."""
    if info.metadata.features is not None:
        return tuple(int(n) for n in info.metadata.features.shape)
    return (int(image_size[0]), int(image_size[1]), output_channels(info, normalization))


def steps_per_epoch(info: DatasetInfo, split: str, global_batch_size: int) -> int:
    """Training steps that see each example of `split` about once (remainders are dropped)."""
    return max(1, info.split_sizes[split] // global_batch_size)


def pipeline_shards(shard_lengths: Sequence[int], num_pipelines: int, pipeline_id: int) -> tuple[list[int], bool]:
    """The shards one input pipeline reads, and whether it must further shard their records.

    Non-empty shards are dealt round-robin while there are at least as many as
    pipelines (no pipeline is left without data); otherwise every pipeline reads
    them all in order and keeps every n-th record.
    """
    non_empty = [i for i, length in enumerate(shard_lengths) if length > 0]
    if len(non_empty) >= num_pipelines:
        return non_empty[pipeline_id::num_pipelines], False
    return non_empty, True


def pipeline_num_examples(shard_lengths: Sequence[int], num_pipelines: int, pipeline_id: int) -> int:
    """How many examples the input pipeline `pipeline_id` reads (see `pipeline_shards`)."""
    file_ids, by_record = pipeline_shards(shard_lengths, num_pipelines, pipeline_id)
    count = sum(shard_lengths[i] for i in file_ids)
    return len(range(pipeline_id, count, num_pipelines)) if by_record else count


def replicas_per_pipeline(context: tf.distribute.InputContext) -> int:
    """Replicas that take their batches from one input pipeline (the local devices of a worker)."""
    return max(1, context.num_replicas_in_sync // context.num_input_pipelines)


def eval_batches_per_pipeline(largest_pipeline_examples: int, per_replica_batch_size: int, local_replicas: int) -> int:
    """Batches every evaluation pipeline yields: the same number for all of them, since synchronous replicas
    step together; enough for the pipeline with the most examples; a multiple of the `local_replicas` a
    pipeline feeds, so that each of them gets a batch in the last step too."""
    steps = math.ceil(largest_pipeline_examples / (per_replica_batch_size * local_replicas))
    return steps * local_replicas


def pad_to_full_batches(examples: tf.data.Dataset, batch_size: int, num_batches: int) -> tf.data.Dataset:
    """`num_batches` batches of `(images, labels, mask, index)` from unbatched `(image, label, index)` examples.

    Every batch holds `batch_size` examples: after the real ones (mask 1.0) come padding examples
    (a zero image of class 0, mask 0.0, index -1) that evaluation leaves out of every sum. `index`
    (int64) is the example's position in its split, by which evaluation names the examples it
    reports. `examples` must fit (at most `batch_size * num_batches`); evaluation checks its
    count against the split.
    """
    image_spec, label_spec, _ = examples.element_spec
    padding = tf.data.Dataset.from_tensors(
        (
            tf.zeros(image_spec.shape, image_spec.dtype),
            tf.zeros([], label_spec.dtype),
            tf.constant(0.0),
            tf.constant(-1, tf.int64),
        )
    ).repeat()
    real = examples.map(lambda image, label, index: (image, label, tf.constant(1.0), tf.cast(index, tf.int64)))
    return real.concatenate(padding).take(batch_size * num_batches).batch(batch_size, drop_remainder=True)


@dataclasses.dataclass(frozen=True)
class _Examples:
    """What a dataset's records become: parsed (and decoded) examples, cached, then batched and finished."""

    parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # A batch of serialized records -> (inputs, labels).
    decode: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None  # Per example, before the cache.
    bytes_per_example: int  # As cached.
    name: str  # In file cache names.
    policy: schema.AugmentationPolicy
    normalize: Callable[[tf.Tensor], tf.Tensor]


def _image_examples(info: DatasetInfo, image_size: tuple[int, int], normalization: str) -> _Examples:
    """Decoded and resized uint8 images, cached; batches augmented, then normalized."""
    height, width = (int(n) for n in image_size)
    channels = info.channels

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = schema.parse_examples(serialized)
        return features[schema.IMAGE], features[schema.LABEL]

    return _Examples(
        parse=parse,
        decode=lambda image, label: (decode_resize(image, channels, height, width), label),
        bytes_per_example=height * width * channels,
        name=f"{height}x{width}",
        policy=info.augmentation,
        # XLA fuses the cast and the per-pixel arithmetic into one pass over the batch (Keras's VGG16
        # preprocessing alone makes three); measured in BUILD_NOTES.md, "Input pipeline".
        normalize=tf.function(make_normalizer(info, normalization), jit_compile=True),
    )


def _feature_examples(info: DatasetInfo, image_size: tuple[int, int], normalization: str) -> _Examples:
    """A feature dataset's float32 features as stored: its images were resized, normalized and augmented (if at
    all) before the base ran, at extraction."""
    spec = check_feature_images(info, image_size, normalization)
    if not info.augmentation.is_identity:
        raise UserError(
            f"{info.data_dir} holds features but its {schema.METADATA_FILE} asks for augmentation "
            f"{info.augmentation}: features cannot be augmented when training (extract features of augmented "
            "copies with `python -m data_prep.extract_features --augment_copies=K` instead)."
        )
    shape = [int(n) for n in spec.shape]

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = schema.parse_examples(serialized, features_shape=shape)
        return features[schema.FEATURES], features[schema.LABEL]

    return _Examples(
        parse=parse,
        decode=None,
        bytes_per_example=4 * math.prod(shape),
        name="features",
        policy=info.augmentation,
        normalize=tf.identity,
    )


def check_feature_images(info: DatasetInfo, image_size: tuple[int, int], normalization: str) -> schema.FeatureSpec:
    """The FeatureSpec of a feature dataset, once the config's image_size and normalization are those its features
    were extracted from: a config describes the images its classifier sees, and the export serves those."""
    spec = info.metadata.features
    assert spec is not None, f"{info.data_dir} holds images"
    if (tuple(int(n) for n in image_size), normalization) != (tuple(spec.input_size), spec.normalization):
        height, width = spec.input_size
        raise UserError(
            f"{info.data_dir} holds {spec.base_model} features of {height}x{width} images normalized "
            f"'{spec.normalization}', but the config says image_size={tuple(image_size)}, normalization="
            f"'{normalization}': set --config.image_size={height},{width} --config.normalization={spec.normalization} "
            "(or extract the features again with the config's)."
        )
    return spec


def make_input_fn(
    info: DatasetInfo,
    split: str,
    *,
    training: bool,
    image_size: tuple[int, int],
    global_batch_size: int,
    normalization: str,
    seed: int = 0,
    cache: str = "auto",
    deterministic: bool | None = None,
) -> Callable[[tf.distribute.InputContext | None], tf.data.Dataset]:
    """A dataset function for `strategy.distribute_datasets_from_function`.

    Batches always hold B = the per-replica batch size examples. Training: elements
    `(images float32 [B, H, W, C], labels int64 [B])`, infinite, shuffled, augmented
    with `info.augmentation`, the remainder of each pass dropped. Evaluation: elements
    `(images, labels, mask float32 [B], index int64 [B])`, one deterministic pass that, across
    all input pipelines, yields every example exactly once with mask 1.0 and its position in
    the split (`read_examples` reads it back), padded with mask-0.0 examples of index -1 so
    that every pipeline yields the same number of full batches (`eval_batches_per_pipeline`).
    A feature dataset yields its features in place of images, as stored (no resizing,
    augmentation or normalization: extraction did that; padding is zero features);
    `image_size` and `normalization` must be those it was extracted from (`check_feature_images`).
    `cache` is 'auto' (memory if the decoded pipeline part fits
    MEMORY_CACHE_BUDGET_BYTES), 'memory', 'none' or a directory for a file cache.
    `deterministic` defaults to `not training` (training order depends on thread timing).
    """
    if split not in info.split_sizes:
        raise UserError(f"split {split!r} not in {info.data_dir} (has {sorted(info.split_sizes)}).")
    if not info.split_sizes[split]:
        raise UserError(f"split {split!r} of {info.data_dir} has no examples.")
    make_examples = _image_examples if info.metadata.features is None else _feature_examples
    examples = make_examples(info, image_size, normalization)
    if deterministic is None:
        deterministic = not training
    paths = info.shard_paths(split)
    lengths = list(info.metadata.splits[split].shard_lengths)
    offsets = [sum(lengths[:i]) for i in range(len(lengths))]  # Of each shard's first record in the split.

    def input_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        context = input_context or tf.distribute.InputContext()
        batch_size = context.get_per_replica_batch_size(global_batch_size)
        num_pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id
        file_ids, by_record = pipeline_shards(lengths, num_pipelines, pipeline_id)
        num_examples = pipeline_num_examples(lengths, num_pipelines, pipeline_id)

        ds = _read_records(
            [paths[i] for i in file_ids],
            [lengths[i] for i in file_ids],
            shuffle_seed=seed + pipeline_id if training and not by_record else None,
            offsets=None if training else [offsets[i] for i in file_ids],
        )
        if by_record:
            ds = ds.shard(num_pipelines, pipeline_id)
        parse, decode = examples.parse, examples.decode
        if not training:  # Evaluation keeps each example's position in the split (see pad_to_full_batches).
            parse = _with_index(examples.parse)
            decode = _with_index(examples.decode) if examples.decode else None
        ds = ds.batch(PARSE_BATCH_SIZE).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        if decode is not None:
            ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        kind = examples.name if training else f"{examples.name}-indexed"  # Another element structure.
        ds = _cache(
            ds,
            cache,
            num_examples * examples.bytes_per_example,
            f"{info.name}-{split}-{kind}-{_fingerprint(info, split)}-{pipeline_id}of{num_pipelines}",
        )
        if training:
            shuffle_buffer = max(1, min(num_examples, SHUFFLE_BUFFER_BYTES // examples.bytes_per_example))
            ds = _training_batches(
                ds, batch_size, shuffle_buffer, seed, pipeline_id, examples.policy, examples.normalize
            )
        else:
            largest = max(pipeline_num_examples(lengths, num_pipelines, i) for i in range(num_pipelines))
            num_batches = eval_batches_per_pipeline(largest, batch_size, replicas_per_pipeline(context))
            ds = _evaluation_batches(ds, batch_size, num_batches, examples.normalize)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))

    return input_fn


def _training_batches(
    examples: tf.data.Dataset,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    pipeline_id: int,
    policy: schema.AugmentationPolicy,
    normalize: Callable[[tf.Tensor], tf.Tensor],
) -> tf.data.Dataset:
    """Shuffled, repeated, full batches of augmented and normalized images; (seed, pipeline, step) fixes the
    augmentation of a batch."""
    ds = examples.shuffle(shuffle_buffer, seed=seed + pipeline_id, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True).enumerate()
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def augment_and_normalize(step, batch):
        images, labels = batch
        step_seed = tf.random.experimental.stateless_fold_in(base_seed, step)
        return normalize(augment_batch(tf.cast(images, tf.float32), policy, step_seed)), labels

    return ds.map(augment_and_normalize, num_parallel_calls=tf.data.AUTOTUNE)


def _evaluation_batches(
    examples: tf.data.Dataset, batch_size: int, num_batches: int, normalize: Callable[[tf.Tensor], tf.Tensor]
) -> tf.data.Dataset:
    """`num_batches` full batches of normalized `(images, labels, mask, index)` (see `pad_to_full_batches`)."""
    return pad_to_full_batches(examples, batch_size, num_batches).map(
        lambda images, labels, mask, index: (normalize(images), labels, mask, index),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _with_index(fn: Callable[..., tuple[tf.Tensor, tf.Tensor]]) -> Callable[..., tuple[tf.Tensor, ...]]:
    """`fn` on all but the last argument (an example's or a batch's position in the split), passed on."""
    return lambda *args: (*fn(*args[:-1]), args[-1])


def _read_records(
    paths: Sequence[str], lengths: Sequence[int], shuffle_seed: int | None, offsets: Sequence[int] | None = None
) -> tf.data.Dataset:
    """Serialized records; each shard must hold the count metadata.json records (checked as it is read). With
    `offsets` (of each shard's first record in the split), `(record, position in the split)` pairs."""
    files = tf.data.Dataset.from_tensor_slices(
        (list(paths), tf.constant(list(lengths), tf.int64), tf.constant(list(offsets or [0] * len(paths)), tf.int64))
    )
    if shuffle_seed is not None:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def read(path, length, offset):
        records = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES).apply(
            tf.data.experimental.assert_cardinality(length)
        )
        if offsets is None:
            return records
        return tf.data.Dataset.zip(records, tf.data.Dataset.range(offset, offset + length))

    # Unshuffled reads keep a fixed order whatever the options: record sharding depends on it.
    return files.interleave(
        read,
        cycle_length=min(len(paths), 8),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True if shuffle_seed is None else None,
    )


def decode_resize(encoded: tf.Tensor, channels: int, height: int, width: int) -> tf.Tensor:
    """uint8 [height, width, channels]; JPEG or PNG of any size; no resampling when the size already fits."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    fits = tf.reduce_all(tf.shape(image)[:2] == [height, width])
    image = tf.cond(
        fits, lambda: image, lambda: tf.saturate_cast(tf.round(tf.image.resize(image, [height, width])), tf.uint8)
    )
    return tf.ensure_shape(image, [height, width, channels])


def _cache(ds: tf.data.Dataset, cache: str, num_bytes: int, cache_name: str) -> tf.data.Dataset:
    if cache == "memory" or (cache == "auto" and num_bytes <= MEMORY_CACHE_BUDGET_BYTES):
        return ds.cache()
    if cache in CACHE_MODES:
        return ds
    tf.io.gfile.makedirs(cache)
    path = tf.io.gfile.join(cache, cache_name)
    _remove_stale_cache_lock(path)
    return ds.cache(path)


def _remove_stale_cache_lock(path: str) -> None:
    """A run killed during its first pass leaves tf.data's lockfile and partial data behind, and every later run
    would stop on "concurrent caching iterator". Each input pipeline has its own cache name, so a lock older than
    this process is an earlier run's (one training run per cache directory at a time)."""
    if tf.io.gfile.exists(path + ".index"):
        return
    for lock in tf.io.gfile.glob(path + "_*.lockfile"):
        if tf.io.gfile.stat(lock).mtime_nsec / 1e9 < _PROCESS_STARTED:
            logging.warning("Removing %s and its partial data: left by a run killed while writing the cache.", lock)
            for leftover in [lock, *tf.io.gfile.glob(lock[: -len(".lockfile")] + ".data-*.tempstate*")]:
                tf.io.gfile.remove(leftover)


def _fingerprint(info: DatasetInfo, split: str) -> str:
    """Names file caches after the split's content so a rebuilt dataset never reads a stale cache."""
    recorded = info.metadata.to_dict()
    described = json.dumps([recorded["splits"][split], recorded["build"]], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    # Each pipeline already reads only its own part of the split.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def make_normalizer(info: DatasetInfo, normalization: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Maps images on the 0..255 scale (uint8 or float) to float32 on the model's input scale."""
    if normalization == "vgg16":

        def vgg16(images):
            images = tf.cast(images, tf.float32)
            if image_channels(info) == 1:
                images = tf.image.grayscale_to_rgb(images)
            return keras.applications.vgg16.preprocess_input(images)

        return vgg16
    if normalization == "unit":
        return lambda images: tf.cast(images, tf.float32) * (1.0 / 255.0)
    if normalization == "dataset":
        channels = image_channels(info)
        mean, std = (info.statistics.mean, info.statistics.std) if info.statistics else (None, None)
        if not mean or not std or len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise UserError(
                f"normalization='dataset' needs per-channel statistics.mean/std (positive std) for "
                f"{channels} channels in {info.data_dir}/{schema.METADATA_FILE}; got "
                f"mean={mean}, std={std}: {schema.REBUILD} or choose another normalization."
            )
        mean_t, inv_std = tf.constant(mean, tf.float32), tf.constant([1.0 / s for s in std], tf.float32)
        return lambda images: (tf.cast(images, tf.float32) - mean_t) * inv_std
    raise ValueError(f"normalization={normalization!r}: must be one of {NORMALIZATIONS}.")  # A caller's typo.


def augment_batch(images: tf.Tensor, policy: schema.AugmentationPolicy, seed: tf.Tensor) -> tf.Tensor:
    """Applies `policy` to float32 [B, H, W, C] images (0..255), a pure function of (images, seed).

    Flips, rotation, zoom and translation compose into one affine map per image,
    resampled once by ImageProjectiveTransformV3 (the op behind keras.layers.RandomRotation,
    with Keras's ranges and 'reflect' fill); contrast follows keras.layers.RandomContrast.
    """
    if policy.is_identity:
        return images
    shape = tf.shape(images)
    batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    # One draw per parameter column, so enabling one augmentation leaves the others' values unchanged.
    u = tf.random.stateless_uniform([batch, 7], seed=seed)

    def symmetric(column: int, limit: float) -> tf.Tensor:
        return (2.0 * u[:, column] - 1.0) * limit

    flip_x = tf.logical_and(policy.horizontal_flip, u[:, 0] < 0.5)
    flip_y = tf.logical_and(policy.vertical_flip, u[:, 1] < 0.5)
    if policy.rotation or policy.zoom or policy.translation:
        transforms = affine_transforms(
            angle=symmetric(2, policy.rotation * 2.0 * math.pi),
            zoom=1.0 + symmetric(3, policy.zoom),
            shift_x=symmetric(4, policy.translation) * width,
            shift_y=symmetric(5, policy.translation) * height,
            flip_x=flip_x,
            flip_y=flip_y,
            height=height,
            width=width,
        )
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=shape[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
    elif policy.horizontal_flip or policy.vertical_flip:
        images = tf.where(flip_x[:, None, None, None], tf.reverse(images, axis=[2]), images)
        images = tf.where(flip_y[:, None, None, None], tf.reverse(images, axis=[1]), images)
    if policy.contrast:
        factor = 1.0 + symmetric(6, policy.contrast)
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = tf.clip_by_value((images - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)
    return images


def affine_transforms(
    *,
    angle: tf.Tensor,
    zoom: tf.Tensor,
    shift_x: tf.Tensor,
    shift_y: tf.Tensor,
    flip_x: tf.Tensor,
    flip_y: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
) -> tf.Tensor:
    """[B, 8] ImageProjectiveTransformV3 rows mapping each output pixel to its input pixel.

    input = C + zoom * R(angle) * F * (output - C - shift), with C the image centre
    and F the flips; zoom > 1 samples a larger area (zooms out), as in Keras.
    """
    sign_x = tf.where(flip_x, -1.0, 1.0)
    sign_y = tf.where(flip_y, -1.0, 1.0)
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    a0, a1, b0, b1 = cos * sign_x, -sin * sign_y, sin * sign_x, cos * sign_y
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    origin_x, origin_y = center_x + shift_x, center_y + shift_y
    a2 = center_x - a0 * origin_x - a1 * origin_y
    b2 = center_y - b0 * origin_x - b1 * origin_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
