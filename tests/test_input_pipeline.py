"""The trainer's tf.data input pipeline: sharding, coverage, augmentation, normalization, feature datasets, bad
directories."""

from __future__ import annotations

import collections
import io
import json
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NO_AUGMENTATION, dataset_metadata
from feature_datasets import write_features
from PIL import Image

from data_prep import schema
from data_prep.augmentation import PHOTO_POLICY
from data_prep.schema import AugmentationPolicy
from trainer import input_pipeline

SIZE = 16
CLASSES = ("a", "b", "c")


def _pixels(index: int, size: int = SIZE, channels: int = 3) -> np.ndarray:
    """A random image whose first two pixels spell its index, so every output can be traced back."""
    pixels = np.random.default_rng(index).integers(0, 256, (size, size, channels), dtype=np.uint8)
    pixels[0, 0, 0], pixels[0, 1, 0] = index % 256, index // 256
    return pixels


def _index_of(image: np.ndarray) -> int:
    return int(round(image[0, 0, 0])) + 256 * int(round(image[0, 1, 0]))


def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def write_dataset(
    root,
    shards: dict[str, list[int]],
    *,
    image_format: str = "png",
    channels: int = 3,
    policy: AugmentationPolicy = PHOTO_POLICY,
    sizes=lambda index: (SIZE, SIZE),
) -> str:
    """A dataset directory in data_prep's format; example i has label i % 3 and pixels `_pixels(i)`."""
    data_dir, next_index, splits = str(root), 0, {}
    all_pixels = []
    for split, lengths in shards.items():
        num_bytes = 0
        for shard, length in enumerate(lengths):
            path = os.path.join(data_dir, schema.shard_filename("toy", split, shard, len(lengths)))
            with tf.io.TFRecordWriter(path) as writer:
                for index in range(next_index, next_index + length):
                    height, width = sizes(index)
                    pixels = _pixels(index, max(height, width), channels)[:height, :width]
                    if split == "train":
                        all_pixels.append(pixels.reshape(-1, channels))
                    writer.write(
                        schema.serialize_example(
                            _encode(pixels, image_format.upper()), f"{index}.img", f"key{index}", index % len(CLASSES)
                        )
                    )
            next_index += length
            num_bytes += os.path.getsize(path)
        splits[split] = schema.SplitInfo(num_examples=sum(lengths), shard_lengths=tuple(lengths), num_bytes=num_bytes)
    train = np.concatenate(all_pixels).astype(np.float64)
    statistics = schema.Statistics(
        split="train",
        mean=tuple(train.mean(0)),
        std=tuple(train.std(0)),
        min=tuple(train.min(0)),
        max=tuple(train.max(0)),
        num_pixels=len(train),
    )
    dataset_metadata(
        CLASSES, channels=channels, image_format=image_format, splits=splits, statistics=statistics, policy=policy
    ).write(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> input_pipeline.DatasetInfo:
    """train: 4 shards, 26 examples (0..25); validation: 2 shards, 7 examples (26..32)."""
    root = tmp_path_factory.mktemp("toy")
    return input_pipeline.open_dataset(write_dataset(root, {"train": [8, 6, 7, 5], "validation": [4, 3]}))


def _batches(info, split, *, pipelines=1, pipeline_id=0, replicas=None, take=None, **kwargs):
    """The batches of one input pipeline; by default each pipeline feeds one replica."""
    kwargs = {"training": False, "image_size": (SIZE, SIZE), "global_batch_size": 4, "normalization": "unit", **kwargs}
    context = tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=pipeline_id, num_replicas_in_sync=replicas or pipelines
    )
    ds = input_pipeline.make_input_fn(info, split, **kwargs)(context)
    return list((ds.take(take) if take else ds).as_numpy_iterator())


def _examples(batches):
    """(image, label) of every real example: training batches have no mask, evaluation's padding has mask 0."""
    for images, labels, *mask_and_index in batches:
        real = mask_and_index[0] > 0 if mask_and_index else np.ones(len(labels), bool)
        yield from zip(images[real], labels[real], strict=True)


def _indices(batches) -> list[int]:
    return [_index_of(image * 255.0) for image, _ in _examples(batches)]


@pytest.mark.parametrize(
    "lengths,num_pipelines",
    [([4, 4, 4, 4], 1), ([4, 4, 4, 4], 2), ([4, 0, 3, 4, 4], 3), ([1] * 7, 7), ([5, 6], 3), ([3, 0], 2)],
)
def test_pipeline_shards_split_files_disjointly_or_fall_back_to_records(lengths, num_pipelines):
    parts = [input_pipeline.pipeline_shards(lengths, num_pipelines, i) for i in range(num_pipelines)]
    non_empty = [i for i, n in enumerate(lengths) if n]
    if len(non_empty) >= num_pipelines:
        assert sorted(f for part, _ in parts for f in part) == non_empty
        assert all(part and not by_record for part, by_record in parts)
    else:
        assert all(part == non_empty and by_record for part, by_record in parts)


@pytest.mark.parametrize("pipelines", [1, 2, 3, 5])  # 5 pipelines > 4 files: record sharding.
def test_eval_yields_every_example_once_in_a_fixed_order(toy, pipelines):
    def run(i):
        return _indices(_batches(toy, "train", pipelines=pipelines, pipeline_id=i, global_batch_size=4 * pipelines))

    per_pipeline = [run(i) for i in range(pipelines)]
    assert sorted(i for indices in per_pipeline for i in indices) == list(range(26))
    assert run(0) == per_pipeline[0]


def test_empty_shards_are_skipped_and_every_pipeline_gets_data(tmp_path):
    data_dir = write_dataset(tmp_path, {"train": [3, 0, 4, 0]}, policy=AugmentationPolicy())
    info = input_pipeline.open_dataset(data_dir)
    first, second = (
        set(_indices(_batches(info, "train", training=True, pipelines=2, pipeline_id=i, take=4))) for i in range(2)
    )
    assert sorted(first | second) == list(range(7)) and not first & second


def test_eval_pads_the_last_batch_with_masked_zero_images(toy):
    batches = _batches(toy, "validation", global_batch_size=4)
    assert [mask.tolist() for _, _, mask, _ in batches] == [[1, 1, 1, 1], [1, 1, 1, 0]]
    for images, labels, mask, index in batches:
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int64 and mask.dtype == np.float32
        assert index.shape == (4,) and index.dtype == np.int64
    assert [label for _, label in _examples(batches)] == [i % 3 for i in _indices(batches)]
    images, labels, _, index = batches[-1]
    assert labels[-1] == 0 and not images[-1].any()  # A valid class, a zero image: any model runs on it.
    assert index[-1] == -1  # No position in the split: evaluation's reports can never name a padding example.


@pytest.mark.parametrize("split", ["train", "validation"])  # 26 and 7 examples.
@pytest.mark.parametrize(
    "pipelines,replicas,global_batch_size",
    [
        (1, 1, 4),
        (2, 2, 8),
        (3, 3, 12),
        (5, 5, 5),  # One replica per pipeline (multi-worker); 5 > 4 files.
        (1, 2, 6),
        (2, 4, 12),  # Two replicas per pipeline (mirrored on each worker).
    ],
)
def test_eval_batches_are_full_and_the_same_number_on_every_pipeline(
    toy, split, pipelines, replicas, global_batch_size
):
    per_pipeline = [
        _batches(toy, split, pipelines=pipelines, pipeline_id=i, replicas=replicas, global_batch_size=global_batch_size)
        for i in range(pipelines)
    ]
    per_replica, local_replicas = global_batch_size // replicas, replicas // pipelines
    num_batches = len(per_pipeline[0])
    assert [len(batches) for batches in per_pipeline] == [num_batches] * pipelines
    assert num_batches % local_replicas == 0  # Every replica gets a batch in every step.
    offset = 0 if split == "train" else 26  # Of the split's first example in the toy's numbering.
    for images, labels, mask, index in (batch for batches in per_pipeline for batch in batches):
        assert images.shape[0] == labels.shape[0] == mask.shape[0] == index.shape[0] == per_replica
        assert set(mask.tolist()) <= {0.0, 1.0}
        # Each real example carries its position in the split (shards in order), padding -1.
        assert index.tolist() == [
            _index_of(image * 255.0) - offset if m else -1 for image, m in zip(images, mask, strict=True)
        ]
    masks = np.stack([[mask for _, _, mask, _ in batches] for batches in per_pipeline])
    assert masks.sum() == toy.split_sizes[split]
    assert masks[:, -local_replicas:].any(), "a whole step of padding: one step too many"
    indices = [i for batches in per_pipeline for i in _indices(batches)]
    assert sorted(indices) == list(range(26) if split == "train" else range(26, 33))


def test_eval_batches_per_pipeline():
    assert input_pipeline.eval_batches_per_pipeline(9, 4, 1) == 3
    assert input_pipeline.eval_batches_per_pipeline(9, 4, 2) == 4  # 2 steps of 2 replicas.
    assert input_pipeline.eval_batches_per_pipeline(8, 4, 2) == 2
    assert input_pipeline.eval_batches_per_pipeline(1, 4, 8) == 8  # 7 replicas get only padding.


def test_examples_are_read_back_by_their_position_in_the_split(toy):
    """What evaluation's reports name an example by: train positions 0..25 are examples 0..25 across 4 shards,
    validation positions 0..6 are examples 26..32."""
    found = input_pipeline.read_examples(toy, "train", [25, 0, 8, 13, 14])
    assert {i: e.filename for i, e in found.items()} == {
        0: "0.img",
        8: "8.img",
        13: "13.img",
        14: "14.img",
        25: "25.img",
    }
    for i, example in found.items():
        assert _index_of(np.asarray(Image.open(io.BytesIO(example.image)))) == i
    assert {i: e.filename for i, e in input_pipeline.read_examples(toy, "validation", [6]).items()} == {6: "32.img"}


def test_eval_output_is_the_plain_decode(toy):
    images, labels, _, _ = _batches(toy, "validation", global_batch_size=7)[0]
    for image in images:
        np.testing.assert_allclose(image * 255.0, _pixels(_index_of(image * 255.0)), atol=1e-3)


def test_training_is_infinite_full_per_replica_batches_of_augmented_images(toy):
    # 26 examples, global batch 8 on 2 replicas: per-replica batches of 4, 6 per pass; take 3 passes' worth.
    batches = _batches(toy, "train", training=True, replicas=2, global_batch_size=8, take=20)
    assert len(batches) == 20
    for images, labels in batches:
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int64
        assert images.min() >= 0.0 and images.max() <= 1.0
    originals = {tuple(_pixels(i).ravel()) for i in range(26)}
    images = np.concatenate([images for images, _ in batches])
    unchanged = sum(tuple(np.round(image * 255.0).astype(np.uint8).ravel()) in originals for image in images)
    assert unchanged < len(images) // 4  # Rotation and zoom resample nearly every image.


def test_training_with_identity_policy_sees_each_example_once_per_pass(tmp_path):
    info = input_pipeline.open_dataset(write_dataset(tmp_path, {"train": [5, 5, 2]}, policy=AugmentationPolicy()))
    batches = _batches(info, "train", training=True, global_batch_size=4, take=9)
    # Three passes; non-deterministic reads may blur the boundary between the first two passes.
    counts = collections.Counter(_indices(batches))
    assert sorted(counts) == list(range(12)) and set(counts.values()) <= {2, 3, 4}
    for images, _ in batches:
        for image in images:
            np.testing.assert_allclose(image * 255.0, _pixels(_index_of(image * 255.0)), atol=1e-3)


def test_training_is_reproducible_for_a_seed_when_deterministic(toy):
    def run(seed):
        return _batches(toy, "train", training=True, take=4, seed=seed, deterministic=True)

    first, again, other = run(1), run(1), run(2)
    for (a, la), (b, lb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other, strict=True))


def test_augment_batch_is_a_pure_function_of_the_seed():
    images = tf.constant(np.stack([_pixels(i) for i in range(4)]), tf.float32)
    policy = PHOTO_POLICY.replace(contrast=0.3)

    def augment(seed):
        return input_pipeline.augment_batch(images, policy, tf.constant(seed, tf.int64)).numpy()

    np.testing.assert_array_equal(augment([1, 2]), augment([1, 2]))
    assert not np.array_equal(augment([1, 2]), augment([1, 3]))
    assert augment([1, 2]).min() >= 0.0 and augment([1, 2]).max() <= 255.0
    np.testing.assert_array_equal(input_pipeline.augment_batch(images, AugmentationPolicy(), [1, 2]), images)


def test_affine_transforms_follow_the_projective_transform_convention():
    images = tf.constant(np.stack([_pixels(i) for i in range(3)]), tf.float32)

    def transform(**overrides):
        args = {
            "angle": tf.zeros(3),
            "zoom": tf.ones(3),
            "shift_x": tf.zeros(3),
            "shift_y": tf.zeros(3),
            "flip_x": tf.zeros(3, tf.bool),
            "flip_y": tf.zeros(3, tf.bool),
            "height": tf.constant(float(SIZE)),
            "width": tf.constant(float(SIZE)),
            **overrides,
        }
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=input_pipeline.affine_transforms(**args),
            output_shape=[SIZE, SIZE],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        ).numpy()

    np.testing.assert_allclose(transform(), images, atol=1e-3)
    np.testing.assert_allclose(transform(flip_x=tf.ones(3, tf.bool)), images[:, :, ::-1], atol=1e-3)
    np.testing.assert_allclose(transform(flip_y=tf.ones(3, tf.bool)), images[:, ::-1], atol=1e-3)
    shifted = transform(shift_x=tf.fill([3], 2.0), shift_y=tf.fill([3], 1.0))
    np.testing.assert_allclose(shifted[:, 1:, 2:], images[:, :-1, :-2], atol=1e-3)
    half_turn = transform(angle=tf.fill([3], np.pi))
    np.testing.assert_allclose(half_turn, images[:, ::-1, ::-1], atol=1e-2)


def test_normalizations_match_keras_and_the_metadata(toy):
    raw = np.stack([_pixels(i) for i in _indices(_batches(toy, "validation")[:1])]).astype(np.float32)
    vgg16, *_ = _batches(toy, "validation", normalization="vgg16")[0]
    np.testing.assert_allclose(vgg16, keras.applications.vgg16.preprocess_input(raw.copy()), atol=1e-4)
    dataset, *_ = _batches(toy, "validation", normalization="dataset")[0]
    stats = toy.statistics
    np.testing.assert_allclose(dataset, (raw - stats.mean) / stats.std, rtol=1e-5, atol=1e-5)
    assert abs(float(dataset.mean())) < 0.5


def test_grey_jpegs_of_any_size_are_resized_and_become_rgb_for_vgg16(tmp_path):
    data_dir = write_dataset(
        tmp_path, {"train": [6]}, image_format="jpeg", channels=1, sizes=lambda i: (20 + 3 * i, 30 - i)
    )
    info = input_pipeline.open_dataset(data_dir)
    assert input_pipeline.output_channels(info, "vgg16") == 3 and input_pipeline.output_channels(info, "unit") == 1
    images, *_ = _batches(info, "train", image_size=(12, 10), normalization="vgg16", global_batch_size=6)[0]
    assert images.shape == (6, 12, 10, 3)
    np.testing.assert_allclose(images[..., 0] + 103.939, images[..., 2] + 123.68, atol=1e-3)  # Grey: B == R.
    unit, *_ = _batches(info, "train", image_size=(12, 10), global_batch_size=6)[0]
    assert unit.shape == (6, 12, 10, 1)


def test_file_cache_is_written_and_reused(toy, tmp_path):
    cache_dir = str(tmp_path / "cache")
    first = _batches(toy, "validation", cache=cache_dir)
    assert os.listdir(cache_dir)
    second = _batches(toy, "validation", cache=cache_dir)
    assert _indices(first) == _indices(second) and sorted(_indices(first)) == list(range(26, 33))


def test_auto_cache_keeps_splits_over_the_memory_budget_out_of_ram(monkeypatch):
    ds = tf.data.Dataset.range(4)
    assert type(input_pipeline._cache(ds, "auto", 1000, "name")).__name__ == "CacheDataset"
    monkeypatch.setattr(input_pipeline, "MEMORY_CACHE_BUDGET_BYTES", 999)
    assert input_pipeline._cache(ds, "auto", 1000, "name") is ds
    assert type(input_pipeline._cache(ds, "memory", 1000, "name")).__name__ == "CacheDataset"


def test_file_cache_left_locked_by_a_killed_run_is_rebuilt(toy, tmp_path, monkeypatch):
    probe, cache_dir = tmp_path / "probe", tmp_path / "cache"
    _batches(toy, "validation", cache=str(probe))
    (name,) = [n[: -len(".index")] for n in os.listdir(probe) if n.endswith(".index")]
    cache_dir.mkdir()
    # What a run killed while writing that cache leaves: tf.data's lockfile and partial data.
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, tensorflow as tf\n"
                f"ds = tf.data.Dataset.range(10**7).map(lambda x: tf.fill([64], x)).cache({str(cache_dir / name)!r})\n"
                "for i, _ in enumerate(ds):\n"
                "    if i == 10000:\n"
                "        os.kill(os.getpid(), 9)\n"
            ),
        ],
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert any(n.endswith(".lockfile") for n in os.listdir(cache_dir))
    with pytest.raises(tf.errors.AlreadyExistsError):  # A lock newer than this process may be a live iterator's.
        _batches(toy, "validation", cache=str(cache_dir))
    monkeypatch.setattr(input_pipeline, "_PROCESS_STARTED", time.time())  # A process started after the kill.
    assert sorted(_indices(_batches(toy, "validation", cache=str(cache_dir)))) == list(range(26, 33))
    assert sorted(os.listdir(cache_dir)) == sorted(os.listdir(probe)), "the stale lock and partial data are gone"


def test_open_dataset_reads_the_metadata(toy):
    assert toy.name == "toy" and toy.class_names == CLASSES and toy.num_classes == 3 and toy.channels == 3
    assert toy.split_sizes == {"train": 26, "validation": 7}
    assert toy.augmentation == PHOTO_POLICY
    assert input_pipeline.steps_per_epoch(toy, "train", 8) == 3


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json not found.*data_prep.build"):
        input_pipeline.open_dataset(str(tmp_path))


def test_missing_shard_is_named(tmp_path):
    data_dir = write_dataset(tmp_path, {"train": [3, 3]})
    os.remove(os.path.join(data_dir, schema.shard_filename("toy", "train", 1, 2)))
    with pytest.raises(
        FileNotFoundError,
        match=r"shard toy-train.tfrecord-00001-of-00002 listed in metadata.json "
        r"is missing from .*rebuild",
    ):
        input_pipeline.open_dataset(data_dir)


@pytest.mark.parametrize("keep_bytes", [0, 100])
def test_truncated_shard_is_named(tmp_path, keep_bytes):
    data_dir = write_dataset(tmp_path, {"train": [3, 3]})
    path = os.path.join(data_dir, schema.shard_filename("toy", "train", 0, 2))
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)
    with pytest.raises(ValueError, match=f"{path}.*(truncated|empty).*rebuild"):
        input_pipeline.open_dataset(data_dir)


def _edit_train_split(data_dir, **fields):
    """Overwrites fields of metadata.json's train split, as a damaged or hand-edited dataset would have them."""
    metadata_path = os.path.join(data_dir, schema.METADATA_FILE)
    with open(metadata_path) as f:
        metadata = json.load(f)
    metadata["splits"]["train"].update(fields)
    with open(metadata_path, "w") as f:
        json.dump(metadata, f)


def test_metadata_counts_that_do_not_add_up_are_rejected(tmp_path):
    data_dir = write_dataset(tmp_path, {"train": [3, 3]})
    _edit_train_split(data_dir, num_examples=7)
    with pytest.raises(ValueError, match="num_examples=7 but its shard_lengths sum to 6"):
        input_pipeline.open_dataset(data_dir)


def test_a_miscounted_shard_fails_verification_and_reading(tmp_path):
    data_dir = write_dataset(tmp_path, {"train": [3, 3]})
    _edit_train_split(data_dir, shard_lengths=[4, 2])
    info = input_pipeline.open_dataset(data_dir)  # The cheap checks cannot see it ...
    with pytest.raises(
        ValueError, match="toy-train.tfrecord-00000-of-00002 holds 3 records but metadata.json records 4"
    ):
        input_pipeline.open_dataset(data_dir, verify_records=True)
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 2 elements"):
        _batches(info, "train")  # ... and reading fails instead of silently training on other counts.


def test_bad_arguments_are_named(toy):
    with pytest.raises(ValueError, match="split 'test' not in"):
        input_pipeline.make_input_fn(
            toy, "test", training=False, image_size=(8, 8), global_batch_size=2, normalization="unit"
        )
    with pytest.raises(ValueError, match="normalization='imagenet'"):
        input_pipeline.make_input_fn(
            toy, "train", training=False, image_size=(8, 8), global_batch_size=2, normalization="imagenet"
        )


@pytest.mark.slow
def test_reads_what_data_prep_builds(sample_dataset):
    data_dir, _ = sample_dataset
    info = input_pipeline.open_dataset(str(data_dir), verify_records=True)
    for split, size in info.split_sizes.items():
        labels = np.array(
            [
                label
                for pipeline in range(2)
                for _, label in _examples(_batches(info, split, pipelines=2, pipeline_id=pipeline, image_size=(48, 40)))
            ]
        )
        assert len(labels) == size and set(labels) <= set(range(info.num_classes))
    images, labels = _batches(
        info, "train", training=True, image_size=(48, 40), global_batch_size=8, normalization="dataset", take=1
    )[0]
    assert images.shape == (8, 48, 40, 3) and labels.shape == (8,)
    assert np.isfinite(images).all() and -4 < images.mean() < 4


FEATURES_SHAPE = (2, 2, 3)


def _feature_dataset(root, shards, policy=NO_AUGMENTATION) -> input_pipeline.DatasetInfo:
    """Example i's features are i + (0, 1/16, ..., 11/16) in row-major order, its label i % 3."""
    spec = schema.FeatureSpec(
        shape=FEATURES_SHAPE,
        base_model="vgg16",
        weights="none",
        weights_sha256="",
        input_size=(SIZE, SIZE),
        normalization="vgg16",
        precision="float32",
    )
    offsets = np.arange(12, dtype=np.float32).reshape(FEATURES_SHAPE) / 16
    next_index, records = 0, {}
    for split, lengths in shards.items():
        records[split] = []
        for length in lengths:
            indices = range(next_index, next_index + length)
            records[split].append([(i + offsets, i % 3, f"key{i}", f"{i}.img") for i in indices])
            next_index += length
    return input_pipeline.open_dataset(write_features(root, records, spec, class_names=CLASSES, policy=policy))


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> input_pipeline.DatasetInfo:
    """train: 3 shards, 12 examples (0..11); validation: 2 shards, 7 examples (12..18)."""
    return _feature_dataset(tmp_path_factory.mktemp("features"), {"train": [5, 4, 3], "validation": [4, 3]})


def _feature_indices(batches) -> list[int]:
    offsets = np.arange(12, dtype=np.float32).reshape(FEATURES_SHAPE) / 16
    indices = []
    for values, label in _examples(batches):
        index = int(values[0, 0, 0])
        np.testing.assert_array_equal(values, index + offsets)  # Exactly as stored: no resizing or normalization.
        assert label == index % 3
        indices.append(index)
    return indices


def test_feature_eval_batches_are_the_stored_features_padded_with_masked_zeros(features):
    batches = _batches(features, "validation", normalization="vgg16")
    assert [mask.tolist() for _, _, mask, _ in batches] == [[1, 1, 1, 1], [1, 1, 1, 0]]
    for values, labels, _, _ in batches:
        assert values.shape == (4, *FEATURES_SHAPE) and values.dtype == np.float32 and labels.dtype == np.int64
    assert sorted(_feature_indices(batches)) == list(range(12, 19))
    values, labels, _, _ = batches[-1]
    assert labels[-1] == 0 and not values[-1].any()


@pytest.mark.parametrize("pipelines,replicas", [(1, 1), (2, 2), (1, 2), (4, 4)])  # 4 pipelines > 3 files.
def test_feature_eval_yields_every_example_once_on_every_layout(features, pipelines, replicas):
    per_pipeline = [
        _batches(
            features,
            "train",
            pipelines=pipelines,
            pipeline_id=i,
            replicas=replicas,
            global_batch_size=2 * replicas,
            normalization="vgg16",
        )
        for i in range(pipelines)
    ]
    assert len({len(batches) for batches in per_pipeline}) == 1
    assert sorted(i for batches in per_pipeline for i in _feature_indices(batches)) == list(range(12))


def test_feature_training_is_infinite_shuffled_full_batches_of_the_stored_features(features):
    batches = _batches(features, "train", training=True, normalization="vgg16", take=9, deterministic=True)
    assert all(values.shape == (4, *FEATURES_SHAPE) and len(labels) == 4 for values, labels in batches)
    indices = _feature_indices(batches)
    assert [sorted(indices[i : i + 12]) for i in (0, 12, 24)] == [list(range(12))] * 3  # Each pass sees each once.
    assert indices[:12] != list(range(12)) and indices[:12] != indices[12:24]  # Shuffled, differently each pass.


def test_a_feature_dataset_gives_the_model_its_features_and_serves_rgb(features):
    assert input_pipeline.model_input_shape(features, (SIZE, SIZE), "vgg16") == FEATURES_SHAPE
    assert input_pipeline.image_channels(features) == 3
    with pytest.raises(ValueError, match="holds a base model's features, not images"):
        _ = features.channels


@pytest.mark.parametrize(
    "image_size,normalization",
    [((SIZE + 1, SIZE), "vgg16"), ((SIZE, SIZE), "unit")],
)
def test_a_feature_dataset_refuses_a_config_for_other_images(features, image_size, normalization):
    message = (
        f"holds vgg16 features of {SIZE}x{SIZE} images normalized 'vgg16', but the config says "
        f"image_size={image_size}, normalization='{normalization}': set --config.image_size={SIZE},{SIZE} "
        "--config.normalization=vgg16"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        _batches(features, "train", image_size=image_size, normalization=normalization)


def test_a_feature_dataset_that_asks_for_augmentation_is_refused(tmp_path):
    info = _feature_dataset(tmp_path, {"train": [4]}, policy=AugmentationPolicy(horizontal_flip=True))
    with pytest.raises(ValueError, match="features cannot be augmented when training .*--augment_copies=K"):
        _batches(info, "train", training=True, normalization="vgg16")
