"""Tiny files in the real Keras dataset distribution formats, for tests."""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np

from data_prep import keras_sources

CIFAR10_TRAIN_SIZES = (3, 2, 3, 2, 3)


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the CIFAR batches: every string is a byte string."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # The real files name numpy < 2's module, as numpy >= 2 still reads.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_rows(images):
    """NHWC images as CIFAR rows: the R, G, B planes, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def member(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return str(path)


def cifar10_members(rng):
    """(members of the archive, expected {split: (images, labels, None)})."""
    folder = "cifar-10-batches-py"
    members, train = [member(folder, kind=tarfile.DIRTYPE)], []
    for i, size in enumerate(CIFAR10_TRAIN_SIZES, start=1):
        images, labels = rng.integers(0, 256, (size, 32, 32, 3), np.uint8), rng.integers(0, 10, size)
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": labels.tolist(),
            "data": cifar_rows(images),
            "filenames": [f"img_{j}.png" for j in range(size)],
        }
        members.append(member(f"{folder}/data_batch_{i}", py2_pickle(batch)))
        train.append((images, labels))
    test_images, test_labels = rng.integers(0, 256, (4, 32, 32, 3), np.uint8), np.arange(4) * 3
    members += [
        member(
            f"{folder}/test_batch",
            py2_pickle(
                {
                    "batch_label": "testing batch 1 of 1",
                    "labels": test_labels.tolist(),
                    "data": cifar_rows(test_images),
                    "filenames": ["t.png"] * 4,
                }
            ),
        ),
        member(
            f"{folder}/batches.meta",
            py2_pickle(
                {
                    "num_cases_per_batch": 10000,
                    "label_names": list(keras_sources.CLASS_NAMES["cifar10"]),
                    "num_vis": 3072,
                }
            ),
        ),
        member(f"{folder}/readme.html", b"<html></html>"),
    ]
    expected = {
        "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), None),
        "test": (test_images, test_labels, None),
    }
    return members, expected


def cifar100_members(rng):
    folder, members, expected = "cifar-100-python", [], {}
    for split, size in (("train", 5), ("test", 3)):
        images = rng.integers(0, 256, (size, 32, 32, 3), np.uint8)
        fine, coarse = rng.integers(0, 100, size), rng.integers(0, 20, size)
        fine[0], coarse[0] = 99, 19
        members.append(
            member(
                f"{folder}/{split}",
                py2_pickle(
                    {
                        "filenames": ["x.png"] * size,
                        "batch_label": split,
                        "fine_labels": fine.tolist(),
                        "coarse_labels": coarse.tolist(),
                        "data": cifar_rows(images),
                    }
                ),
            )
        )
        expected[split] = (images, fine, coarse)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    members.append(member(f"{folder}/meta", py2_pickle(meta)))
    return members, expected


def write_mnist_npz(path, rng, y_train=None, x_train_shape=(7, 28, 28)):
    x_train = rng.integers(0, 256, x_train_shape, np.uint8)
    y_train = rng.integers(0, 10, len(x_train)).astype(np.uint8) if y_train is None else y_train
    x_test, y_test = rng.integers(0, 256, (3, 28, 28), np.uint8), np.array([9, 0, 5], np.uint8)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return {"train": (x_train[..., None], y_train, None), "test": (x_test[..., None], y_test, None)}


def write_idx(path, array, ndim):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(f">{1 + ndim}I", 0x800 + ndim, *array.shape) + array.tobytes())


def write_fashion(folder, rng):
    folder.mkdir(exist_ok=True)
    expected = {}
    for split, prefix, size in (("train", "train", 6), ("test", "t10k", 2)):
        images, labels = rng.integers(0, 256, (size, 28, 28), np.uint8), rng.integers(0, 10, size)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 3)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8), 1)
        expected[split] = (images[..., None], labels, None)
    return expected
