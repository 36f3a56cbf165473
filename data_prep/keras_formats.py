"""Safe readers for the distribution formats of the Keras datasets.

Every reader treats its file as untrusted: pickles go through an allow-list
unpickler, tar members are read in memory (nothing is extracted, links and
devices are refused), sizes are capped before anything is allocated, and every
array is checked for shape, dtype and label range. Any problem raises
`MalformedSourceError` naming the file, never a bare numpy or pickle error.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import posixpath
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import fsspec
import numpy as np

# Largest decoded member accepted; the largest real one (CIFAR-100 `train`) is 155 MB.
MAX_MEMBER_BYTES = 512 * 2**20

CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE
MNIST_SIDE = 28

# The only globals a real CIFAR pickle (Python 2 cPickle of dicts, lists, strings,
# ints and one uint8 ndarray) references: numpy's array reconstructor (named
# `numpy.core` by numpy < 2, `numpy._core` by numpy >= 2), ndarray and dtype.
# They map to this numpy's objects so no module is imported by name.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

_DECODE_ERRORS = (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile, tarfile.TarError, struct.error)


class MalformedSourceError(ValueError):
    """A dataset file is truncated, malformed or hostile."""


class Examples(NamedTuple):
    """One member of a dataset file, decoded and checked."""

    images: np.ndarray  # uint8 [N, H, W, C], possibly a strided view
    labels: np.ndarray  # int64 [N]
    coarse_labels: np.ndarray | None  # int64 [N], CIFAR-100 only


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def safe_unpickle(data: bytes, where: str) -> Any:
    """Unpickles CIFAR data; any other global (os.system, eval, ...) is refused."""
    try:
        # encoding="bytes": Python 2 strings stay bytes, as Keras's own loader reads them.
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # Untrusted bytes: any failure of the unpickler means a bad file.
        raise MalformedSourceError(
            f"{where}: not a valid CIFAR pickle ({type(e).__name__}: {e}). The file is corrupt "
            "or was tampered with; download the official archive again."
        ) from e


def _unsafe_member_reason(info: tarfile.TarInfo) -> str | None:
    if info.name.startswith("/"):
        return "absolute path"
    if ".." in info.name.split("/"):
        return "'..' in its path"
    if not (info.isreg() or info.isdir()):
        return "a link or special file"
    return None


def iter_tar_members(path: str, folder: str, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yields (name, bytes) of `folder/name` members, read in memory from a tar(.gz) archive.

    The archive is streamed once and checked whole: links, devices, absolute or
    `..` names and duplicates of a wanted member are refused (the official
    archives have none), so a hostile archive can neither write nor redirect.
    """
    wanted = {posixpath.join(folder, name): name for name in names}
    seen: set[str] = set()
    try:
        with fsspec.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                reason = _unsafe_member_reason(info)
                if reason:
                    raise MalformedSourceError(
                        f"{path}: refusing archive member {info.name!r} ({reason}); "
                        "the official archive has none. Download it again."
                    )
                name = wanted.get(posixpath.normpath(info.name))
                if name is None:
                    continue
                if name in seen:
                    raise MalformedSourceError(f"{path}: member {info.name!r} appears twice.")
                if info.size > MAX_MEMBER_BYTES:
                    raise MalformedSourceError(
                        f"{path}: member {info.name!r} declares {info.size} bytes, "
                        f"more than the {MAX_MEMBER_BYTES} accepted."
                    )
                seen.add(name)
                member = tar.extractfile(info)
                if member is None:  # Not a regular file; links and devices were refused above.
                    raise MalformedSourceError(f"{path}: member {info.name!r} is not a regular file.")
                yield name, member.read()
    except MalformedSourceError:
        raise
    except _DECODE_ERRORS as e:
        raise MalformedSourceError(f"{path}: truncated or not a tar archive ({type(e).__name__}: {e}).") from e
    missing = sorted(set(wanted.values()) - seen)
    if missing:
        raise MalformedSourceError(
            f"{path}: archive lacks {', '.join(posixpath.join(folder, m) for m in missing)}; "
            "is it the right dataset's archive?"
        )


def read_file(path: str) -> bytes:
    """Reads a whole (small) file, refusing anything above MAX_MEMBER_BYTES."""
    with fsspec.open(path, "rb") as f:
        data = f.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise MalformedSourceError(f"{path}: larger than the {MAX_MEMBER_BYTES} bytes accepted.")
    return data


def _read_npy(archive: zipfile.ZipFile, key: str, path: str) -> np.ndarray:
    try:
        member = archive.open(key + ".npy")
    except KeyError:
        raise MalformedSourceError(f"{path}: no array {key!r} (it has {sorted(archive.namelist())}).") from None
    with member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )  # 3.0 differs only in text encoding.
        shape, fortran_order, dtype = read_header(member)
        if dtype.hasobject:
            raise MalformedSourceError(f"{path}: array {key!r} holds Python objects; refused.")
        num_bytes = math.prod(shape) * dtype.itemsize
        if num_bytes > MAX_MEMBER_BYTES:
            raise MalformedSourceError(f"{path}: array {key!r} of shape {shape} is too large.")
        data = member.read(num_bytes)
    if len(data) != num_bytes:
        raise MalformedSourceError(f"{path}: array {key!r} is truncated.")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def read_npz(path: str, split: str, num_classes: int) -> Examples:
    """Reads `x_{split}` / `y_{split}` of Keras's mnist.npz without allowing pickles."""
    try:
        with fsspec.open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            images = _read_npy(archive, f"x_{split}", path)
            labels = _read_npy(archive, f"y_{split}", path)
    except MalformedSourceError:
        raise
    except _DECODE_ERRORS as e:
        raise MalformedSourceError(f"{path}: truncated or not an .npz file ({type(e).__name__}: {e}).") from e
    return _grayscale_examples(images, labels, num_classes, f"{path} (x_{split}, y_{split})")


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes (magic 0x08 type code, then `ndim`)."""
    try:
        with fsspec.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
            header = f.read(4 * (1 + ndim))
            if len(header) != 4 * (1 + ndim):
                raise MalformedSourceError(f"{path}: truncated IDX header.")
            magic, *dims = struct.unpack(f">{1 + ndim}I", header)
            if magic != 0x800 + ndim:
                raise MalformedSourceError(
                    f"{path}: IDX magic number {magic:#010x}, expected {0x800 + ndim:#010x}; is this the right file?"
                )
            num_bytes = math.prod(dims)
            if num_bytes > MAX_MEMBER_BYTES:
                raise MalformedSourceError(f"{path}: IDX dimensions {dims} are too large.")
            data = f.read(num_bytes)
            if len(data) != num_bytes:
                raise MalformedSourceError(f"{path}: truncated ({len(data)} of {num_bytes} bytes).")
            if f.read(1):
                raise MalformedSourceError(f"{path}: data after the {dims} array declared.")
    except MalformedSourceError:
        raise
    except _DECODE_ERRORS as e:
        raise MalformedSourceError(f"{path}: truncated or not a gzip file ({type(e).__name__}: {e}).") from e
    return np.frombuffer(data, np.uint8).reshape(dims)


def read_idx_pair(images_path: str, labels_path: str, num_classes: int) -> Examples:
    """Reads one split of the original (Fashion-)MNIST IDX files."""
    return _grayscale_examples(
        _read_idx(images_path, 3), _read_idx(labels_path, 1), num_classes, f"{images_path} + {labels_path}"
    )


def _grayscale_examples(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> Examples:
    if images.dtype != np.uint8 or images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise MalformedSourceError(
            f"{where}: images are {images.dtype} {images.shape}, expected uint8 [N, {MNIST_SIDE}, {MNIST_SIDE}]."
        )
    return Examples(images[..., np.newaxis], check_labels(labels, len(images), num_classes, where), None)


def check_labels(labels: Any, count: int, num_classes: int, where: str) -> np.ndarray:
    """Labels as int64 [count], each in [0, num_classes)."""
    array = np.asarray(labels)
    if array.dtype.kind not in "iu" or array.shape != (count,):
        raise MalformedSourceError(f"{where}: labels are {array.dtype} {array.shape}, expected {count} integers.")
    if count and (array.min() < 0 or array.max() >= num_classes):
        raise MalformedSourceError(
            f"{where}: labels range over [{array.min()}, {array.max()}], expected [0, {num_classes - 1}]."
        )
    return array.astype(np.int64)


def _text_keys(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MalformedSourceError(f"{where}: holds a {type(obj).__name__}, not a CIFAR dict.")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def decode_cifar_batch(data: bytes, where: str, num_classes: int, num_coarse_classes: int | None = None) -> Examples:
    """Decodes a CIFAR batch pickle: `data` rows are 3072 bytes, R then G then B planes."""
    batch = _text_keys(safe_unpickle(data, where), where)
    pixels = batch.get("data")
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != CIFAR_PIXELS
    ):
        shape = getattr(pixels, "shape", None)
        raise MalformedSourceError(
            f"{where}: 'data' is {type(pixels).__name__} {shape}, expected uint8 [N, {CIFAR_PIXELS}]."
        )
    # An HWC view, not a copy: readers copy each image they hand out anyway.
    images = pixels.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    count = len(images)
    if num_coarse_classes is None:
        return Examples(images, check_labels(batch.get("labels"), count, num_classes, where), None)
    return Examples(
        images,
        check_labels(batch.get("fine_labels"), count, num_classes, f"{where} fine"),
        check_labels(batch.get("coarse_labels"), count, num_coarse_classes, f"{where} coarse"),
    )


def _names(values: Any, count: int, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or len(values) != count or not all(isinstance(v, (bytes, str)) for v in values):
        raise MalformedSourceError(f"{where}: expected a list of {count} names.")
    names = tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in values)
    if len(set(names)) != count:
        raise MalformedSourceError(f"{where}: class names are not unique.")
    return names


def decode_cifar100_meta(
    data: bytes, where: str, num_classes: int, num_coarse_classes: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fine names, coarse names) from CIFAR-100's `meta` pickle."""
    meta = _text_keys(safe_unpickle(data, where), where)
    return (
        _names(meta.get("fine_label_names"), num_classes, f"{where} fine_label_names"),
        _names(meta.get("coarse_label_names"), num_coarse_classes, f"{where} coarse_label_names"),
    )
