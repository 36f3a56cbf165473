"""End-to-end builds of the Keras datasets from tiny files in their real formats."""

import io
import json
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags
from conftest import FAST_BEAM_ARGS
from keras_files import cifar10_members, cifar100_members, write_fashion, write_mnist_npz, write_tar
from PIL import Image

from data_prep import build as build_cli
from data_prep import cli, driver, keras_sources, options, schema


def build(dataset, output_dir, input_path, **kwargs):
    return driver.build(
        options.BuildOptions(
            dataset=dataset, output_dir=str(output_dir), beam_args=FAST_BEAM_ARGS, input=str(input_path), **kwargs
        )
    )


def records(dataset_dir, split):
    """Every record of a split as a dict of python values, read through TFDS."""
    builder = tfds.builder_from_directory(str(dataset_dir))
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    expected = write_mnist_npz(path, rng, x_train_shape=(20, 28, 28))
    return path, expected


def test_mnist_keeps_official_test_and_carves_validation_from_train(tmp_path, mnist):
    path, expected = mnist
    report = build("mnist", tmp_path / "out", path, validation_size="5")
    assert report["splits"] == {"train": 15, "validation": 5, "test": 3}
    assert report["counts"]["files_seen"] == 23 and report["counts"]["written"] == 23
    test = {r[schema.FILENAME].decode(): r for r in records(tmp_path / "out", "test")}
    assert sorted(test) == ["test/00000", "test/00001", "test/00002"]
    for name, record in test.items():
        index = int(name.split("/")[1])
        assert np.array_equal(record[schema.IMAGE], expected["test"][0][index]), "PNG storage is lossless"
        assert record[schema.LABEL] == expected["test"][1][index]
    validation = [r[schema.FILENAME].decode() for r in records(tmp_path / "out", "validation")]
    assert all(name.startswith("train/") for name in validation)
    metadata = schema.DatasetMetadata.read(str(tmp_path / "out"))
    assert metadata.class_names == tuple(str(d) for d in range(10))
    assert metadata.image.channels == 1 and metadata.image.format == "png"
    assert metadata.source["files"][0]["sha256"] and metadata.source["official"] is False
    assert metadata.augmentation.horizontal_flip is False, "no flips for digits"


def test_statistics_cover_the_train_split_only(tmp_path, mnist):
    path, expected = mnist
    build("mnist", tmp_path / "out", path, validation_size="25%")
    train = records(tmp_path / "out", "train")
    pixels = np.concatenate([r[schema.IMAGE].reshape(-1).astype(np.float64) for r in train])
    stats = schema.DatasetMetadata.read(str(tmp_path / "out")).statistics
    assert len(train) == 15
    np.testing.assert_allclose(stats.mean, [pixels.mean()], atol=1e-4)
    np.testing.assert_allclose(stats.std, [pixels.std()], atol=1e-4)
    everything = np.concatenate([expected["train"][0].reshape(-1), expected["test"][0].reshape(-1)])
    assert abs(stats.mean[0] - everything.mean()) > 1e-3, "test or validation pixels must not leak in"


def test_validation_carve_is_deterministic(tmp_path, mnist):
    path, _ = mnist
    build("mnist", tmp_path / "a", path, validation_size="5")
    build("mnist", tmp_path / "b", path, validation_size="5")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cifar100_records_fine_and_coarse_labels(tmp_path):
    members, expected = cifar100_members(np.random.default_rng(1))
    archive = write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    report = build("cifar100", tmp_path / "out", archive, validation_size="0")
    assert report["splits"] == {"train": 5, "test": 3}
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    assert builder.info.features[schema.COARSE_LABEL].names[19] == "coarse_19"
    for record in records(tmp_path / "out", "train"):
        index = int(record[schema.FILENAME].decode().split("/")[1])
        images, fine, coarse = expected["train"]
        assert np.array_equal(record[schema.IMAGE], images[index])
        assert (record[schema.LABEL], record[schema.COARSE_LABEL]) == (fine[index], coarse[index])
    metadata = schema.DatasetMetadata.read(str(tmp_path / "out"))
    assert metadata.coarse_class_names[0] == "coarse_0"
    assert metadata.class_names[99] == "fine_99"


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_fashion_mnist_and_cifar10_build_pixel_exact(tmp_path, dataset):
    rng = np.random.default_rng(2)
    if dataset == "fashion_mnist":
        source = tmp_path / "fashion"
        expected = write_fashion(source, rng)
    else:
        members, expected = cifar10_members(rng)
        source = write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    report = build(dataset, tmp_path / "out", source, validation_size="0")
    assert report["splits"] == {split: len(labels) for split, (_, labels, _) in expected.items()}
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    assert builder.info.features[schema.LABEL].names == list(keras_sources.CLASS_NAMES[dataset])
    for split, (images, labels, _) in expected.items():
        for record in records(tmp_path / "out", split):
            index = int(record[schema.FILENAME].decode().split("/")[1])
            assert np.array_equal(record[schema.IMAGE], images[index]) and record[schema.LABEL] == labels[index]


def test_offline_augmented_copies_stay_in_train_and_record_their_source(tmp_path, mnist):
    path, _ = mnist
    report = build("mnist", tmp_path / "out", path, validation_size="5", augment_copies=2, seed=3)
    assert report["splits"] == {"train": 45, "validation": 5, "test": 3}
    assert report["counts"]["augmented_copies"] == 30 and report["counts"]["written"] == 23
    shards = tf.io.gfile.glob(str(tmp_path / "out" / "mnist-train.tfrecord-*"))
    examples = [tf.train.Example.FromString(r.numpy()).features.feature for r in tf.data.TFRecordDataset(shards)]
    originals = {
        f[schema.KEY].bytes_list.value[0]: f for f in examples if not f[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0]
    }
    copies = [f for f in examples if f[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0]]
    assert len(originals) == 15 and len(copies) == 30
    for copy in copies:
        source = originals[copy[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0]]
        assert copy[schema.LABEL].int64_list.value == source[schema.LABEL].int64_list.value
        params = json.loads(copy[schema.AUGMENT_PARAMS].bytes_list.value[0])
        assert params["horizontal_flip"] is False and abs(params["rotation_degrees"]) <= 0.03 * 360
        image = np.asarray(Image.open(io.BytesIO(copy[schema.IMAGE].bytes_list.value[0])))
        assert image.shape == (28, 28)
    # Same seed, same copies; another seed, other copies.
    build("mnist", tmp_path / "again", path, validation_size="5", augment_copies=2, seed=3)
    build("mnist", tmp_path / "other", path, validation_size="5", augment_copies=2, seed=4)
    shard = "mnist-train.tfrecord-00000-of-00001"
    assert (tmp_path / "out" / shard).read_bytes() == (tmp_path / "again" / shard).read_bytes()
    assert (tmp_path / "out" / shard).read_bytes() != (tmp_path / "other" / shard).read_bytes()


@pytest.mark.parametrize("size,message", [("lots", "expected a count"), ("20", "must leave some")])
def test_bad_validation_size_is_a_clear_error(tmp_path, mnist, size, message):
    with pytest.raises(driver.UserError, match=f"--validation_size={size}: .*{message}"):
        build("mnist", tmp_path / "out", mnist[0], validation_size=size)


def test_command_line_builds_mnist_with_its_flags(tmp_path, mnist):
    path, _ = mnist
    out = tmp_path / "out"
    flags.FLAGS.unparse_flags()  # Another in-process command's flag values must not carry over.
    build_cli.main(
        cli.parse_flags(
            [
                "data_prep.build",
                "--dataset=mnist",
                f"--input={path}",
                f"--output_dir={out}",
                "--validation_size=25%",
                "--augmentation=rotation=0.05,zoom=0,horizontal_flip=yes",
                *FAST_BEAM_ARGS,
            ]
        )
    )
    metadata = json.loads((out / schema.METADATA_FILE).read_text())  # As the file says it, not as the reader does.
    assert {s: v["num_examples"] for s, v in metadata["splits"].items()} == {"train": 15, "validation": 5, "test": 3}
    assert metadata["augmentation"] == {
        "horizontal_flip": True,
        "vertical_flip": False,
        "rotation": 0.05,
        "zoom": 0.0,
        "translation": 0.1,
        "contrast": 0.0,
    }


def test_offline_and_uncached_names_the_file_to_fetch(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(driver.UserError, match=r"cifar-10-python\.tar\.gz.*" + str(tmp_path / "keras")):
        driver.build(
            options.BuildOptions(dataset="cifar10", output_dir=str(tmp_path / "out"), beam_args=FAST_BEAM_ARGS)
        )
    assert not (tmp_path / "out").exists()
