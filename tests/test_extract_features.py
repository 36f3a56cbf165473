"""Feature extraction with Beam's RunInference: a built image dataset in, the frozen base's outputs out, each one what
the trainer's own preprocessing and base compute for that image."""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import FAST_BEAM_ARGS, build_folder
from folder_files import write_photos

from data_prep import extract_features, options, progress, results, schema
from trainer import distribution, input_pipeline, models

SIZE = 32  # VGG16's smallest input: the base's output is 1x1x512.


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A small image dataset: 5 photos per class, split train/test by content hash."""
    root = tmp_path_factory.mktemp("images")
    write_photos(root / "raw", [f"{c}/{i}.png" for c in ("Cat", "Dog") for i in range(5)], size=(40, 36))
    build_folder(root / "raw", root / "catsdogs", split="train:60,test:40")
    return root / "catsdogs"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random VGG16 base weights in a file, as a workers' weights file would be."""
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("weights") / "vgg16_base.weights.h5"
    models.vgg16_base((SIZE, SIZE, 3), weights=None).save_weights(str(path))
    return str(path)


def extract(data_dir, output_dir, weights, **kwargs):
    return extract_features.extract(
        options.ExtractOptions(
            data_dir=str(data_dir),
            output_dir=str(output_dir),
            weights=weights,
            input_size=SIZE,
            precision="float32",
            beam_args=FAST_BEAM_ARGS,
            **kwargs,
        )
    )


def records(dataset_dir, split):
    return {
        r[schema.FILENAME].decode(): r
        for r in tfds.as_numpy(tfds.builder_from_directory(str(dataset_dir)).as_dataset(split=split))
    }


def expected_features(images_dir, weights, split):
    """What the trainer computes for each image: its own decode, resize and VGG16 normalization, then the base."""
    info = input_pipeline.open_dataset(str(images_dir))
    normalize = input_pipeline.make_normalizer(info, "vgg16")
    base = models.vgg16_base((SIZE, SIZE, 3), weights=weights)
    result = {}
    for batch in tf.data.TFRecordDataset(info.shard_paths(split)).batch(64):
        parsed = tf.io.parse_example(
            batch,
            {schema.IMAGE: tf.io.FixedLenFeature([], tf.string), schema.FILENAME: tf.io.FixedLenFeature([], tf.string)},
        )
        for encoded, name in zip(parsed[schema.IMAGE], parsed[schema.FILENAME].numpy(), strict=True):
            image = tf.cast(input_pipeline.decode_resize(encoded, 3, SIZE, SIZE), tf.float32)
            result[name.decode()] = base(normalize(image)[None], training=False).numpy()[0]
    return result


@pytest.mark.slow
def test_features_are_the_trainers_base_outputs_with_the_source_splits_labels_and_keys(images, weights, tmp_path):
    report = extract(images, tmp_path / "features", weights, augment_copies=1, seed=3)
    source = schema.DatasetMetadata.read(str(images))
    metadata = schema.DatasetMetadata.read(str(tmp_path / "features"))
    assert metadata.image is None and metadata.features == schema.FeatureSpec(
        shape=(1, 1, 512),
        base_model="vgg16",
        weights=weights,
        weights_sha256=extract_features._sha256(weights),
        input_size=(SIZE, SIZE),
        normalization="vgg16",
        precision="float32",
    )
    assert metadata.class_names == source.class_names and metadata.dataset == "catsdogs_vgg16"
    train, test = source.split_sizes["train"], source.split_sizes["test"]
    assert report["counts"] == {
        "files_seen": train + test,
        "written": train + test,
        "rejected": 0,
        "duplicates": 0,
        "skipped": 0,
        "not_selected": 0,
        "augmented_copies": train,
    }
    assert metadata.split_sizes == {"train": 2 * train, "test": test}
    per_class = {split: info.num_examples_per_class for split, info in source.splits.items()}
    assert {split: info.num_examples_per_class for split, info in metadata.splits.items()} == {
        "train": tuple(2 * n for n in per_class["train"]),
        "test": per_class["test"],
    }
    assert report["augmented_copies_per_class"] == {
        "train": dict(zip(source.class_names, per_class["train"], strict=True))
    }
    for split in ("train", "test"):
        written, source_records = records(tmp_path / "features", split), records(images, split)
        originals = {name: r for name, r in written.items() if "#augment" not in name}
        assert originals.keys() == source_records.keys()
        for name, expected in expected_features(images, weights, split).items():
            record = originals[name]
            np.testing.assert_allclose(record[schema.FEATURES], expected, rtol=1e-5, atol=1e-5)
            assert record[schema.LABEL] == source_records[name][schema.LABEL]
            assert record[schema.KEY] == source_records[name][schema.KEY]
    copies = {n: r for n, r in records(tmp_path / "features", "train").items() if "#augment" in n}
    assert sorted(copies) == sorted(f"{name}#augment0" for name in records(images, "train"))
    for name, copy in copies.items():
        original = records(images, "train")[name.split("#")[0]]
        assert copy[schema.AUGMENT_SOURCE_KEY] == original[schema.KEY]
        assert json.loads(copy[schema.AUGMENT_PARAMS])["seed"] == 3
        assert not np.allclose(
            copy[schema.FEATURES], records(tmp_path / "features", "train")[name.split("#")[0]][schema.FEATURES]
        ), "an augmented copy sees another image"


@pytest.mark.slow
def test_output_bytes_do_not_depend_on_parallelism_and_batch_sizes_only_round_features(images, weights, tmp_path):
    """Which images share a batch depends on their keys alone, so the same flags give the same bytes however the
    runner bundles the work. Other batch sizes give the same bytes where oneDNN runs the convolutions; TensorFlow's
    own kernels (oneDNN off) round an image's features differently in batches of another size."""
    extract(images, tmp_path / "serial", weights, batch_size=3)
    threads = ("--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=3")
    extract_features.extract(
        options.ExtractOptions(
            data_dir=str(images),
            output_dir=str(tmp_path / "threads"),
            weights=weights,
            input_size=SIZE,
            precision="float32",
            batch_size=3,
            beam_args=threads,
        )
    )
    names = sorted(os.listdir(tmp_path / "serial"))
    assert names == sorted(os.listdir(tmp_path / "threads"))
    for name in names:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "threads" / name).read_bytes(), name

    extract(images, tmp_path / "one", weights, batch_size=1)
    for split in ("train", "test"):
        one, three = records(tmp_path / "one", split), records(tmp_path / "serial", split)
        for name, record in one.items():
            if distribution.onednn_enabled():
                np.testing.assert_array_equal(record[schema.FEATURES], three[name][schema.FEATURES])
            else:
                np.testing.assert_allclose(record[schema.FEATURES], three[name][schema.FEATURES], rtol=1e-5, atol=1e-6)


def test_a_missing_source_weights_file_or_imagenet_offline_is_one_clear_line(images, weights, tmp_path, monkeypatch):
    with pytest.raises(options.UserError, match="not found: .* is not a dataset built by data_prep"):
        extract(tmp_path / "nothing", tmp_path / "out", weights)
    with pytest.raises(options.UserError, match="weights file /no/such.h5 does not exist"):
        extract(images, tmp_path / "out", "/no/such.h5")
    with pytest.raises(options.UserError, match="--weights=none: feature extraction needs the base's weights"):
        extract(images, tmp_path / "out", "none")

    def offline(weights):
        raise models.MissingWeightsError("... pass a local path with --config.model.weights=/path/to/w.h5.")

    monkeypatch.setattr(models, "vgg16_weights_file", offline)
    with pytest.raises(options.UserError, match="pass a local path with --weights=/path/to/w.h5"):
        extract(images, tmp_path / "out", "imagenet")
    assert not (tmp_path / "out").exists()


def test_tfds_pairs_features_with_labels_as_supervised(images, weights, tmp_path):
    extract(images, tmp_path / "features", weights)
    builder = tfds.builder_from_directory(str(tmp_path / "features"))
    assert builder.info.supervised_keys == (schema.FEATURES, schema.LABEL)
    features, label = next(iter(tfds.as_numpy(builder.as_dataset(split="test", as_supervised=True))))
    assert features.shape == (1, 1, 512) and label in (0, 1)


def test_the_features_of_a_smoke_build_are_marked_as_one(weights, tmp_path):
    write_photos(tmp_path / "raw", [f"{c}/{i}.png" for c in ("Cat", "Dog") for i in range(5)], size=(40, 36))
    build_folder(tmp_path / "raw", tmp_path / "smoke", split="train:60,test:40", max_examples_per_split=2)
    extract(tmp_path / "smoke", tmp_path / "features", weights)
    metadata = schema.DatasetMetadata.read(str(tmp_path / "features"))
    assert metadata.build.max_examples_per_split == 2 and metadata.split_sizes == {"train": 2, "test": 2}


def test_progress_counts_a_source_record_once_the_base_has_run(images, weights, tmp_path, monkeypatch):
    """The records are all read before the first batch (a GroupByKey makes the batches): counted when read, the
    progress stood at the total through the whole extraction. Copies made here are not in the total."""
    at_base, at_end = [], []
    extractor_call, read_results = extract_features._Extractor.__call__, results.read_results

    def base(self, batch):
        work_dirs = glob.glob(str(tmp_path / ".features.incomplete-*" / "_work"))
        at_base.append(sum(progress.read_progress(work_dir) for work_dir in work_dirs))
        return extractor_call(self, batch)

    def results_after_the_job(work_dir):
        at_end.append(progress.read_progress(work_dir))
        return read_results(work_dir)

    monkeypatch.setattr(extract_features._Extractor, "__call__", base)
    monkeypatch.setattr(results, "read_results", results_after_the_job)
    report = extract(images, tmp_path / "features", weights, augment_copies=1, batch_size=3)
    assert len(at_base) > 1 and at_base[0] == 0
    assert at_end == [report["counts"]["files_seen"]]


@pytest.mark.slow
def test_the_tutorials_first_step_on_the_command_line_extract_then_train_the_head(images, weights, tmp_path):
    """The Beam job's output is what the head config trains on, and that run exports an image classifier."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    features, head = tmp_path / "features", tmp_path / "head"
    extracted = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.extract_features",
            f"--data_dir={images}",
            f"--output_dir={features}",
            f"--weights={weights}",
            f"--input_size={SIZE}",
            "--precision=float32",
            *FAST_BEAM_ARGS,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.main",
            "--config=configs/catsdogs_vgg16_features.py",
            f"--data_dir={features}",
            f"--model_dir={head}",
            "--strategy=off",
            "--mixed_precision=float32",
            f"--config.image_size={SIZE},{SIZE}",
            "--epochs=2",
            "--global_batch_size=2",
            "--learning_rate=1e-3",
            "--config.eval_split=test",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    history = [json.loads(line) for line in (head / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and all(0 <= r["val_accuracy"] <= 1 for r in history)
    assert (head / "export" / "saved_model" / "saved_model.pb").exists()
