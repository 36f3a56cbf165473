"""The Keras datasets (MNIST, Fashion-MNIST, CIFAR-10/100) as chunks for the pipeline.

The driver calls `resolve_source` once: it finds the files (`--input`, else
Keras's cache, else a download through `keras.utils.get_file` with the names,
URLs and hashes of `keras.datasets.*.load_data` in Keras 3.15), records their
sha256, decodes and checks everything, and counts the examples. `plan_chunks`
then gives small picklable descriptors, and workers call `read_chunk`, so no
array ever travels in the job request. Decoding goes through the safe readers
of `keras_formats`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import threading
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np

from data_prep import keras_formats

_log = logging.getLogger(__name__)

_CACHE_SUBDIR = "datasets"  # Keras's cache_subdir for its datasets.
_KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_TORONTO_ORIGIN = "https://www.cs.toronto.edu/~kriz/"

# Formats of a resolved source.
NPZ = "npz"  # Keras's mnist.npz.
IDX_GZ = "idx_gz"  # A folder of the four gzipped IDX files of (Fashion-)MNIST.
CIFAR_TAR = "cifar_tar"  # The official cifar-*-python.tar.gz (read without extracting).
CIFAR_DIR = "cifar_dir"  # Its extracted folder (cifar-10-batches-py / cifar-100-python).

CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}  # CIFAR-100's names are read from its archive's `meta` pickle.


@dataclasses.dataclass(frozen=True)
class _Download:
    fname: str  # `get_file`'s fname: the file's name in Keras's cache.
    origin: str
    sha256: str  # Of the official file.
    keras_checks_hash: bool  # Whether `load_data` passes it as `file_hash`.


@dataclasses.dataclass(frozen=True)
class _Spec:
    downloads: tuple[_Download, ...]
    cache_subdir: str  # `get_file`'s cache_subdir.
    # Where a copy may sit in the cache folder, Keras's own name first: archives, then extracted
    # folders, as Keras 3 (`*-target_archive`, `*-target/`), Keras 2 and users by hand leave them.
    cache_names: tuple[str, ...]
    folder: str | None  # CIFAR: the folder inside the archive.
    members: dict[str, tuple[str, ...]]  # Split -> members holding its examples, in order.
    num_classes: int
    num_coarse_classes: int | None = None


def _fashion_download(fname: str, sha256: str) -> _Download:
    # Keras checks no hash; these are the sha256 of Zalando's files (as in TFDS's checksums).
    return _Download(fname, _KERAS_ORIGIN + fname, sha256, keras_checks_hash=False)


_SPECS = {
    "mnist": _Spec(
        downloads=(
            _Download(
                "mnist.npz",
                _KERAS_ORIGIN + "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                True,
            ),
        ),
        cache_subdir=_CACHE_SUBDIR,
        cache_names=("mnist.npz",),
        folder=None,
        members={"train": ("x_train",), "test": ("x_test",)},
        num_classes=10,
    ),
    "fashion_mnist": _Spec(
        downloads=(
            _fashion_download(
                "train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            _fashion_download(
                "train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            _fashion_download(
                "t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
            _fashion_download(
                "t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
        ),
        cache_subdir=os.path.join(_CACHE_SUBDIR, "fashion-mnist"),
        cache_names=("fashion-mnist",),
        folder=None,
        members={"train": ("train-images-idx3-ubyte.gz",), "test": ("t10k-images-idx3-ubyte.gz",)},
        num_classes=10,
    ),
    "cifar10": _Spec(
        downloads=(
            _Download(
                "cifar-10-batches-py-target_archive",
                _TORONTO_ORIGIN + "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                True,
            ),
        ),
        cache_subdir=_CACHE_SUBDIR,
        cache_names=(
            "cifar-10-batches-py-target_archive",
            "cifar-10-python.tar.gz",
            "cifar-10-batches-py.tar.gz",
            "cifar-10-batches-py-target",
            "cifar-10-batches-py",
        ),
        folder="cifar-10-batches-py",
        members={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        num_classes=10,
    ),
    "cifar100": _Spec(
        downloads=(
            _Download(
                "cifar-100-python-target_archive",
                _TORONTO_ORIGIN + "cifar-100-python.tar.gz",
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                True,
            ),
        ),
        cache_subdir=_CACHE_SUBDIR,
        cache_names=(
            "cifar-100-python-target_archive",
            "cifar-100-python.tar.gz",
            "cifar-100-python-target",
            "cifar-100-python",
        ),
        folder="cifar-100-python",
        members={"train": ("train",), "test": ("test",)},
        num_classes=100,
        num_coarse_classes=20,
    ),
}
DATASETS = tuple(_SPECS)
_CIFAR100_META = "meta"


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    official_sha256: str | None  # None: no official hash exists (a file of an extracted folder).

    @property
    def official(self) -> bool | None:
        return None if self.official_sha256 is None else self.sha256 == self.official_sha256


@dataclasses.dataclass(frozen=True)
class Member:
    split: str
    name: str  # Array, file or archive member holding the examples, e.g. "data_batch_3".
    offset: int  # Index of its first example in the official split.
    num_examples: int


@dataclasses.dataclass(frozen=True)
class KerasSource:
    """A resolved, checked copy of one dataset; small and picklable, it travels to workers."""

    dataset: str
    format: str  # NPZ, IDX_GZ, CIFAR_TAR or CIFAR_DIR.
    path: str  # The file or folder read (local path or fsspec URL).
    files: tuple[SourceFile, ...]
    members: tuple[Member, ...]
    class_names: tuple[str, ...]
    coarse_class_names: tuple[str, ...] | None

    @property
    def official(self) -> bool | None:
        """False if any file differs from the official one, None if one cannot be checked."""
        flags = [f.official for f in self.files]
        return False if False in flags else None if None in flags else True

    def num_examples(self, split: str) -> int:
        return sum(m.num_examples for m in self.members if m.split == split)

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready provenance for metadata.json."""
        return {
            "dataset": self.dataset,
            "format": self.format,
            "path": self.path,
            "official": self.official,
            "files": [{"path": f.path, "sha256": f.sha256, "official": f.official} for f in self.files],
        }


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Examples [start, stop) of an official split, all in one member."""

    split: str
    member: str
    start: int
    stop: int


def keras_cache_dir() -> str:
    """`$KERAS_HOME`, else ~/.keras (/tmp/.keras if home is read-only), Keras's rule, read now."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def _spec(dataset: str) -> _Spec:
    if dataset not in _SPECS:
        raise ValueError(f"--dataset={dataset!r}: this reader knows {', '.join(DATASETS)}.")
    return _SPECS[dataset]


def _join(path: str, *names: str) -> str:
    return posixpath.join(path, *names) if "://" in path else os.path.join(path, *names)


def _isfile(path: str) -> bool:
    fs, fs_path = fsspec.core.url_to_fs(path)
    return fs.isfile(fs_path)


def _isdir(path: str) -> bool:
    fs, fs_path = fsspec.core.url_to_fs(path)
    return fs.isdir(fs_path)


def _labels_file(images_file: str) -> str:
    return images_file.replace("-images-idx3-", "-labels-idx1-")


def _cached_copy(dataset: str, cache_dir: str) -> tuple[str, str] | None:
    """(format, path) of the first complete copy in Keras's cache folder."""
    for name in _SPECS[dataset].cache_names:
        path = os.path.join(cache_dir, _CACHE_SUBDIR, name)
        if os.path.exists(path):
            try:
                return _layout(dataset, path)
            except FileNotFoundError:  # An incomplete folder: try the next name, then download.
                continue
    return None


def _download(dataset: str, cache_dir: str) -> str:
    """Downloads through Keras's own `get_file`; offline, says which file to put where."""
    from keras.utils import get_file  # Imports TensorFlow: only the driver, only when needed.

    spec = _SPECS[dataset]
    target = os.path.join(cache_dir, spec.cache_subdir)
    try:
        paths = [
            get_file(
                fname=d.fname,
                origin=d.origin,
                cache_dir=cache_dir,
                cache_subdir=spec.cache_subdir,
                file_hash=d.sha256 if d.keras_checks_hash else None,
            )
            for d in spec.downloads
        ]
    except Exception as e:  # get_file raises a bare Exception for a failed fetch.
        files = ", ".join(posixpath.basename(d.origin) for d in spec.downloads)
        origin = (
            spec.downloads[0].origin if len(spec.downloads) == 1 else posixpath.dirname(spec.downloads[0].origin) + "/"
        )
        raise FileNotFoundError(
            f"{dataset}: no copy in the Keras cache and the download failed ({e}). "
            f"Put {files} (from {origin}) in {target}{os.sep} or pass --input=PATH."
        ) from e
    return os.path.dirname(paths[0]) if len(paths) > 1 else paths[0]


def _layout(dataset: str, path: str) -> tuple[str, str]:
    """(format, file or folder to read) for a user's path, or a clear error."""
    spec = _SPECS[dataset]
    if not _isfile(path) and not _isdir(path):
        raise FileNotFoundError(f"--input={path}: no such file or folder.")
    if dataset == "mnist":
        for candidate in (path, _join(path, "mnist.npz")):
            if _isfile(candidate):
                return NPZ, candidate
        raise FileNotFoundError(f"--input={path}: pass mnist.npz or a folder holding it.")
    if dataset == "fashion_mnist":
        missing = [d.fname for d in spec.downloads if not _isfile(_join(path, d.fname))]
        if missing:
            raise FileNotFoundError(
                f"--input={path}: pass the folder holding the four Fashion-MNIST files; missing {', '.join(missing)}."
            )
        return IDX_GZ, path
    if _isfile(path):
        return CIFAR_TAR, path
    assert spec.folder is not None, "every CIFAR spec names its archive's folder"
    for folder in (path, _join(path, spec.folder)):
        if _isfile(_join(folder, spec.members["test"][0])):
            return CIFAR_DIR, folder
    raise FileNotFoundError(
        f"--input={path}: pass {posixpath.basename(spec.downloads[0].origin)} or its extracted folder {spec.folder}."
    )


def _file_paths(dataset: str, fmt: str, path: str) -> list[tuple[str, str | None]]:
    """(path, official sha256) of every file the format reads."""
    spec = _SPECS[dataset]
    if fmt in (NPZ, CIFAR_TAR):
        return [(path, spec.downloads[0].sha256)]
    if fmt == IDX_GZ:
        return [(_join(path, d.fname), d.sha256) for d in spec.downloads]
    names = [m for members in spec.members.values() for m in members]
    if spec.num_coarse_classes:
        names.append(_CIFAR100_META)
    return [(_join(path, name), None) for name in names]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _hash_files(dataset: str, fmt: str, path: str) -> tuple[SourceFile, ...]:
    files = tuple(SourceFile(p, _sha256(p), official) for p, official in _file_paths(dataset, fmt, path))
    for f in files:
        if f.official is False:
            _log.warning(
                "%s: sha256 %s differs from the official file's %s; using it anyway. If it is a "
                "broken download, delete it to fetch it again.",
                f.path,
                f.sha256,
                f.official_sha256,
            )
    if any(f.official is None for f in files):
        _log.info(
            "%s: an extracted folder cannot be checked against the official archive's sha256; recording each file's.",
            path,
        )
    return files


@dataclasses.dataclass(frozen=True)
class _Decoded:
    members: dict[str, keras_formats.Examples]
    class_names: tuple[str, ...]
    coarse_class_names: tuple[str, ...] | None = None


def _decode(dataset: str, fmt: str, path: str) -> _Decoded:
    spec = _SPECS[dataset]
    names = [m for members in spec.members.values() for m in members]
    if fmt == NPZ:
        return _Decoded({m: keras_formats.read_npz(path, m[2:], spec.num_classes) for m in names}, CLASS_NAMES[dataset])
    if fmt == IDX_GZ:
        return _Decoded(
            {
                m: keras_formats.read_idx_pair(_join(path, m), _join(path, _labels_file(m)), spec.num_classes)
                for m in names
            },
            CLASS_NAMES[dataset],
        )
    wanted = names + [_CIFAR100_META] if spec.num_coarse_classes else names
    assert spec.folder is not None, "every CIFAR spec names its archive's folder"
    if fmt == CIFAR_TAR:
        blobs = keras_formats.iter_tar_members(path, spec.folder, wanted)
    else:
        blobs = ((name, keras_formats.read_file(_join(path, name))) for name in wanted)
    members, class_names, coarse_names = {}, CLASS_NAMES.get(dataset), None
    for name, data in blobs:  # Decode as read: raw and decoded copies never all coexist.
        where = f"{path} ({name})"
        if name == _CIFAR100_META and spec.num_coarse_classes:
            class_names, coarse_names = keras_formats.decode_cifar100_meta(
                data, where, spec.num_classes, spec.num_coarse_classes
            )
        else:
            members[name] = keras_formats.decode_cifar_batch(data, where, spec.num_classes, spec.num_coarse_classes)
    if class_names is None:
        raise keras_formats.MalformedSourceError(f"{path}: no {_CIFAR100_META} naming the classes")
    return _Decoded(members, class_names, coarse_names)


_cache_lock = threading.Lock()
_cache: dict[tuple[str, str, str], _Decoded] = {}


def _load(dataset: str, fmt: str, path: str) -> _Decoded:
    """Decodes a source once per process; holds one source at most (SDK threads share it)."""
    key = (dataset, fmt, path)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()  # Drop the previous source before decoding the next one.
            _cache[key] = _decode(dataset, fmt, path)
        return _cache[key]


def resolve_source(dataset: str, input_path: str | None) -> KerasSource:
    """Finds, hashes, decodes and checks one dataset in the driver; clear errors."""
    spec = _spec(dataset)
    if input_path:
        fmt, path = _layout(dataset, input_path if "://" in input_path else os.path.expanduser(input_path))
    else:
        cache_dir = keras_cache_dir()
        fmt, path = _cached_copy(dataset, cache_dir) or _layout(dataset, _download(dataset, cache_dir))
    files = _hash_files(dataset, fmt, path)
    decoded = _load(dataset, fmt, path)
    members = []
    for split, names in spec.members.items():
        offset = 0
        for name in names:
            count = len(decoded.members[name].labels)
            members.append(Member(split, name, offset, count))
            offset += count
    return KerasSource(dataset, fmt, path, files, tuple(members), decoded.class_names, decoded.coarse_class_names)


def plan_chunks(source: KerasSource, chunk_size: int = 5000) -> list[Chunk]:
    """Descriptors of at most `chunk_size` examples, each within one member."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: must be at least 1.")
    return [
        Chunk(m.split, m.name, start, min(start + chunk_size, m.offset + m.num_examples))
        for m in source.members
        for start in range(m.offset, m.offset + m.num_examples, chunk_size)
    ]


def read_chunk(source: KerasSource, chunk: Chunk) -> Iterator[tuple[int, np.ndarray, int, int | None]]:
    """Yields (index in the official split, uint8 HxWxC image, label, coarse label or None).

    Images are copies, so keeping one does not pin the decoded file in memory.
    """
    member = next((m for m in source.members if m.name == chunk.member and m.split == chunk.split), None)
    end = member.offset + member.num_examples if member else -1
    if member is None or not member.offset <= chunk.start <= chunk.stop <= end:
        raise ValueError(f"{chunk} does not belong to {source.path}.")
    examples = _load(source.dataset, source.format, source.path).members[chunk.member]
    if len(examples.labels) != member.num_examples:
        raise keras_formats.MalformedSourceError(
            f"{source.path}: {chunk.member} now holds {len(examples.labels)} examples, "
            f"{member.num_examples} when the pipeline started; the file changed."
        )
    for index in range(chunk.start, chunk.stop):
        i = index - member.offset
        coarse = examples.coarse_labels
        yield (index, examples.images[i].copy(), int(examples.labels[i]), None if coarse is None else int(coarse[i]))
