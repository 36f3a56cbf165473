"""Keras dataset readers on tiny files written in the real distribution formats."""

import hashlib
import logging
import os
import pathlib
import pickle
import socket
import tarfile

import numpy as np
import pytest
from keras_files import (
    cifar10_members,
    cifar100_members,
    member,
    py2_pickle,
    write_fashion,
    write_idx,
    write_mnist_npz,
    write_tar,
)

from data_prep import keras_formats, keras_sources
from data_prep.keras_formats import MalformedSourceError

LOGGER = "data_prep.keras_sources"


def _read_all(source, chunk_size):
    out = {}
    for chunk in keras_sources.plan_chunks(source, chunk_size):
        assert chunk.stop - chunk.start <= chunk_size
        for index, image, label, coarse in keras_sources.read_chunk(source, chunk):
            out.setdefault(chunk.split, []).append((index, image, label, coarse))
    return out


def _assert_examples(source, expected, chunk_size=2):
    read = _read_all(source, chunk_size)
    assert set(read) == set(expected) == {"train", "test"}
    for split, (images, labels, coarse) in expected.items():
        rows = read[split]
        assert [r[0] for r in rows] == list(range(len(images)))
        assert source.num_examples(split) == len(images)
        assert all(r[1].flags.c_contiguous for r in rows)
        got = np.stack([r[1] for r in rows])
        assert got.dtype == np.uint8 and got.shape == images.shape
        np.testing.assert_array_equal(got, images)
        assert [r[2] for r in rows] == labels.tolist()
        assert [r[3] for r in rows] == (coarse.tolist() if coarse is not None else [None] * len(rows))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every lookup fails as on an offline machine; the hosts asked for are recorded."""
    hosts = []

    def offline(host, *args, **kwargs):
        hosts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    return hosts


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_mnist_npz_records_hash_and_warns_it_is_not_official(tmp_path, rng, caplog):
    path = tmp_path / "mnist.npz"
    expected = write_mnist_npz(path, rng)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = keras_sources.resolve_source("mnist", str(path))
    assert source.format == keras_sources.NPZ
    assert [(f.path, f.sha256, f.official) for f in source.files] == [(str(path), _sha256(path), False)]
    assert source.official is False and source.to_metadata()["files"][0]["sha256"] == _sha256(path)
    assert "differs from the official" in caplog.text and str(path) in caplog.text
    assert source.class_names == tuple("0123456789") and source.coarse_class_names is None
    chunks = keras_sources.plan_chunks(source, chunk_size=3)
    assert [(c.split, c.member, c.start, c.stop) for c in chunks] == [
        ("train", "x_train", 0, 3),
        ("train", "x_train", 3, 6),
        ("train", "x_train", 6, 7),
        ("test", "x_test", 0, 3),
    ]
    assert pickle.loads(pickle.dumps((source, chunks))) == (source, chunks)
    _assert_examples(source, expected, chunk_size=3)
    # A folder holding mnist.npz is accepted too.
    assert keras_sources.resolve_source("mnist", str(tmp_path)).path == str(path)


def test_official_hash_gives_no_warning(tmp_path, rng, caplog, monkeypatch):
    path = tmp_path / "mnist.npz"
    write_mnist_npz(path, rng)
    spec = keras_sources._SPECS["mnist"]
    official = keras_sources._Download(spec.downloads[0].fname, spec.downloads[0].origin, _sha256(path), True)
    monkeypatch.setitem(keras_sources._SPECS, "mnist", keras_sources.dataclasses.replace(spec, downloads=(official,)))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = keras_sources.resolve_source("mnist", str(path))
    assert source.official is True and not caplog.records


def test_fashion_mnist_idx_folder(tmp_path, rng, caplog):
    expected = write_fashion(tmp_path / "fashion", rng)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = keras_sources.resolve_source("fashion_mnist", str(tmp_path / "fashion"))
    assert source.format == keras_sources.IDX_GZ
    assert sorted(os.path.basename(f.path) for f in source.files) == sorted(
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
    )
    assert all(f.sha256 == _sha256(f.path) and f.official is False for f in source.files)
    assert caplog.text.count("differs from the official") == 4
    assert source.class_names[0] == "T-shirt/top" and len(source.class_names) == 10
    _assert_examples(source, expected, chunk_size=4)


def test_fashion_mnist_folder_missing_a_file(tmp_path, rng):
    write_fashion(tmp_path, rng)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte.gz"):
        keras_sources.resolve_source("fashion_mnist", str(tmp_path))


def test_cifar_pixels_are_read_channel_planes_row_major():
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1 * 32 + 2] = 99  # Red plane, image row 1, column 2.
    row[1024 + 31] = 77  # Green plane, image row 0, column 31.
    data = py2_pickle({"data": row[None], "labels": [4]})
    examples = keras_formats.decode_cifar_batch(data, "batch", num_classes=10)
    image = examples.images[0]
    assert image.shape == (32, 32, 3)
    assert image[0, 0].tolist() == [10, 20, 30]
    assert image[1, 2].tolist() == [99, 20, 30] and image[0, 31].tolist() == [10, 77, 30]
    assert examples.labels.tolist() == [4]


def test_cifar10_archive(tmp_path, rng, caplog):
    members, expected = cifar10_members(rng)
    path = write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = keras_sources.resolve_source("cifar10", path)
    assert source.format == keras_sources.CIFAR_TAR
    assert [(f.path, f.sha256, f.official) for f in source.files] == [(path, _sha256(path), False)]
    assert "differs from the official" in caplog.text
    assert [(m.name, m.offset, m.num_examples) for m in source.members] == [
        ("data_batch_1", 0, 3),
        ("data_batch_2", 3, 2),
        ("data_batch_3", 5, 3),
        ("data_batch_4", 8, 2),
        ("data_batch_5", 10, 3),
        ("test_batch", 0, 4),
    ]
    assert source.class_names == keras_sources.CLASS_NAMES["cifar10"]
    assert all(c.stop - c.start <= 2 for c in keras_sources.plan_chunks(source, 2))
    _assert_examples(source, expected, chunk_size=2)


@pytest.mark.parametrize("give_parent", [False, True])
def test_cifar10_extracted_folder(tmp_path, rng, give_parent):
    members, expected = cifar10_members(rng)
    for info, data in members:
        target = tmp_path / info.name
        if info.isdir():
            target.mkdir()
        else:
            target.write_bytes(data)
    folder = tmp_path / "cifar-10-batches-py"
    source = keras_sources.resolve_source("cifar10", str(tmp_path if give_parent else folder))
    assert source.format == keras_sources.CIFAR_DIR and source.path == str(folder)
    assert {os.path.basename(f.path): (f.sha256, f.official) for f in source.files} == {
        name: (_sha256(folder / name), None) for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    }
    assert source.official is None
    _assert_examples(source, expected, chunk_size=5)


def test_cifar100_archive_fine_and_coarse_labels(tmp_path, rng):
    members, expected = cifar100_members(rng)
    path = write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    source = keras_sources.resolve_source("cifar100", path)
    assert source.class_names == tuple(f"fine_{i}" for i in range(100))
    assert source.coarse_class_names == tuple(f"coarse_{i}" for i in range(20))
    _assert_examples(source, expected, chunk_size=2)


@pytest.mark.parametrize(
    "cache_name",
    [
        "cifar-10-batches-py-target_archive",  # Keras 3's get_file(extract=True) archive.
        "cifar-10-python.tar.gz",  # The official file, dropped in by hand.
        "cifar-10-batches-py.tar.gz",  # Keras 2's name.
    ],
)
def test_cifar10_found_in_keras_cache_without_network(tmp_path, rng, monkeypatch, no_network, cache_name):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    members, expected = cifar10_members(rng)
    path = write_tar(tmp_path / "datasets" / cache_name, members)
    source = keras_sources.resolve_source("cifar10", None)
    assert source.path == path and source.format == keras_sources.CIFAR_TAR
    _assert_examples(source, expected)
    assert no_network == []


def test_keras3_extracted_cifar100_folder_in_cache(tmp_path, rng, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    members, expected = cifar100_members(rng)
    root = tmp_path / "datasets" / "cifar-100-python-target"
    (root / "cifar-100-python").mkdir(parents=True)
    for info, data in members:
        (root / info.name).write_bytes(data)
    source = keras_sources.resolve_source("cifar100", None)
    assert source.format == keras_sources.CIFAR_DIR
    assert source.path == str(root / "cifar-100-python")
    _assert_examples(source, expected)
    assert no_network == []


@pytest.mark.parametrize(
    "dataset, put, where",
    [
        ("mnist", "mnist.npz (from https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz)", "datasets"),
        (
            "fashion_mnist",
            "train-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
            "(from https://storage.googleapis.com/tensorflow/tf-keras-datasets/)",
            "datasets/fashion-mnist",
        ),
        (
            "cifar10",
            "cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)",
            "datasets",
        ),
        (
            "cifar100",
            "cifar-100-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)",
            "datasets",
        ),
    ],
)
def test_offline_and_not_cached_says_what_to_put_where(tmp_path, monkeypatch, no_network, dataset, put, where):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        keras_sources.resolve_source(dataset, None)
    message = str(error.value)
    assert f"Put {put}" in message
    assert f"in {tmp_path / where}{os.sep} or pass --input=PATH" in message
    # Keras's get_file really tried the official host, and failed fast.
    assert no_network and no_network[0] in ("storage.googleapis.com", "www.cs.toronto.edu")


def test_chunk_cache_holds_one_source(tmp_path, rng):
    write_mnist_npz(tmp_path / "a.npz", rng)
    write_mnist_npz(tmp_path / "b.npz", rng)
    first = keras_sources.resolve_source("mnist", str(tmp_path / "a.npz"))
    second = keras_sources.resolve_source("mnist", str(tmp_path / "b.npz"))
    list(keras_sources.read_chunk(first, keras_sources.plan_chunks(first)[0]))
    assert [key[2] for key in keras_sources._cache] == [first.path]
    list(keras_sources.read_chunk(second, keras_sources.plan_chunks(second)[0]))
    assert [key[2] for key in keras_sources._cache] == [second.path]


# Hostile and broken inputs.


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_running_a_command_is_refused(tmp_path, rng):
    marker = tmp_path / "marker"
    payload = pickle.dumps({b"data": _RunsCommand(marker)}, protocol=2)
    pickle.loads(payload)  # The payload is live: a plain unpickler runs it...
    assert marker.exists()
    marker.unlink()
    members, _ = cifar10_members(rng)
    members[1] = member("cifar-10-batches-py/data_batch_1", payload)
    path = write_tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(MalformedSourceError, match=r"evil.tar.gz \(data_batch_1\).*refused global"):
        keras_sources.resolve_source("cifar10", path)
    assert not marker.exists()  # ...ours does not.


@pytest.mark.parametrize(
    "bad",
    [
        member("../x", b"escaped"),
        member("/tmp/absolute_x", b"escaped"),
        member("cifar-10-batches-py/data_batch_9", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        member("cifar-10-batches-py/data_batch_9", kind=tarfile.LNKTYPE, linkname="../../etc/passwd"),
        member("cifar-10-batches-py/dev", kind=tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device"],
)
def test_unsafe_tar_members_are_refused_without_writing(tmp_path, rng, bad):
    members, _ = cifar10_members(rng)
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    path = write_tar(archive_dir / "cifar.tar.gz", members[:2] + [bad] + members[2:])
    with pytest.raises(MalformedSourceError, match=r"refusing archive member .*official archive has none"):
        keras_sources.resolve_source("cifar10", path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["archive", "cifar.tar.gz"]
    assert not os.path.exists("/tmp/absolute_x")


def test_symlink_standing_in_for_a_batch_is_refused(tmp_path, rng):
    members, _ = cifar10_members(rng)
    members[1] = member("cifar-10-batches-py/data_batch_1", kind=tarfile.SYMTYPE, linkname="test_batch")
    path = write_tar(tmp_path / "cifar.tar.gz", members)
    with pytest.raises(MalformedSourceError, match="data_batch_1.*a link or special file"):
        keras_sources.resolve_source("cifar10", path)


def test_archive_missing_a_batch(tmp_path, rng):
    members, _ = cifar10_members(rng)
    path = write_tar(tmp_path / "cifar.tar.gz", [m for m in members if "data_batch_4" not in m[0].name])
    with pytest.raises(MalformedSourceError, match="lacks cifar-10-batches-py/data_batch_4"):
        keras_sources.resolve_source("cifar10", path)


def _corrupt_cifar10(rng, tmp_path, batch):
    members, _ = cifar10_members(rng)
    members[1] = member("cifar-10-batches-py/data_batch_1", py2_pickle(batch))
    return write_tar(tmp_path / "cifar.tar.gz", members)


@pytest.mark.parametrize(
    "batch, error",
    [
        ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"'data' is ndarray \(2, 3000\)"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "expected uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"range over \[0, 10\], expected \[0, 9\]"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "expected 2 integers"),
        ([1, 2], "holds a list, not a CIFAR dict"),
    ],
    ids=["shape", "dtype", "label_range", "label_count", "not_a_dict"],
)
def test_malformed_cifar_batches(tmp_path, rng, batch, error):
    path = _corrupt_cifar10(rng, tmp_path, batch)
    with pytest.raises(MalformedSourceError, match=rf"cifar.tar.gz \(data_batch_1\).*{error}"):
        keras_sources.resolve_source("cifar10", path)


def test_cifar100_coarse_label_out_of_range(tmp_path, rng):
    members, _ = cifar100_members(rng)
    batch = {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [3], "coarse_labels": [20]}
    members[0] = member("cifar-100-python/train", py2_pickle(batch))
    path = write_tar(tmp_path / "c100.tar.gz", members)
    with pytest.raises(MalformedSourceError, match=r"\(train\) coarse: labels range over \[20, 20\]"):
        keras_sources.resolve_source("cifar100", path)


def test_mnist_wrong_shape_and_label_range(tmp_path, rng):
    write_mnist_npz(tmp_path / "shape.npz", rng, x_train_shape=(7, 28, 27))
    with pytest.raises(MalformedSourceError, match=r"shape.npz .*expected uint8 \[N, 28, 28\]"):
        keras_sources.resolve_source("mnist", str(tmp_path / "shape.npz"))
    write_mnist_npz(tmp_path / "labels.npz", rng, y_train=np.array([0, 1, 2, 3, 4, 5, 10]))
    with pytest.raises(MalformedSourceError, match=r"labels.npz \(x_train, y_train\): labels range"):
        keras_sources.resolve_source("mnist", str(tmp_path / "labels.npz"))


def test_npz_object_array_is_refused(tmp_path, rng):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.array([_RunsCommand(tmp_path / "marker")], dtype=object))
    with pytest.raises(MalformedSourceError, match="holds Python objects; refused"):
        keras_sources.resolve_source("mnist", str(path))
    assert not (tmp_path / "marker").exists()


def test_idx_with_wrong_magic(tmp_path, rng):
    write_fashion(tmp_path, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((6, 28, 28), np.uint8), 3)
    with pytest.raises(MalformedSourceError, match="train-labels-idx1-ubyte.gz: IDX magic number"):
        keras_sources.resolve_source("fashion_mnist", str(tmp_path))


def _truncate(path):
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])


def test_truncated_npz(tmp_path, rng):
    path = tmp_path / "mnist.npz"
    write_mnist_npz(path, rng)
    _truncate(path)
    with pytest.raises(MalformedSourceError, match="mnist.npz: truncated or not an .npz file"):
        keras_sources.resolve_source("mnist", str(path))


def test_truncated_gz(tmp_path, rng):
    write_fashion(tmp_path, rng)
    _truncate(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(MalformedSourceError, match="train-images-idx3-ubyte.gz: truncated"):
        keras_sources.resolve_source("fashion_mnist", str(tmp_path))


def test_truncated_tar(tmp_path, rng):
    members, _ = cifar10_members(rng)
    path = write_tar(tmp_path / "cifar.tar.gz", members)
    _truncate(path)
    with pytest.raises(MalformedSourceError, match="cifar.tar.gz: truncated or not a tar archive"):
        keras_sources.resolve_source("cifar10", path)


def test_unknown_dataset_and_missing_input(tmp_path):
    with pytest.raises(ValueError, match="--dataset='svhn'.*mnist, fashion_mnist, cifar10, cifar100"):
        keras_sources.resolve_source("svhn", None)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        keras_sources.resolve_source("cifar10", str(tmp_path / "nope.tar.gz"))
