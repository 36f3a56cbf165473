"""The dataset directory: built aside, checked, described, then moved into place.

A build writes into a hidden sibling `.NAME.incomplete-<id>` and renames it to NAME
only after every shard, the metadata and the report are written and the counts
reconcile. Killing the job at any moment therefore leaves the previous dataset (or
none) at NAME; the next build removes the siblings that no running build owns
(data_prep/ownership.py).

Object storage (gs://) has no rename: there the commit deletes the old dataset's
marker files first, copies the new files, and writes the markers last, so a reader
that finds `dataset_info.json` and `metadata.json` finds a complete dataset.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from data_prep import logs, ownership, schema


class OutputError(ValueError):
    """The output directory cannot be used as asked; the message says what to do."""


def check_replaceable(output_dir: str, overwrite: bool) -> None:
    """Raises OutputError if output_dir exists and may not be replaced; cheap, so builds call it before any work."""
    fs, path = fsspec.core.url_to_fs(output_dir)
    if fs.exists(path.rstrip("/")) and not overwrite:
        raise OutputError(f"--output_dir={output_dir} already exists; pass --overwrite to replace it")


class AtomicOutput:
    """A temporary sibling directory, committed by rename (local) or by ordered copies (object storage)."""

    # A reader takes a directory holding these for a complete dataset (TFDS needs the first, our trainer the second):
    # they are removed first from a dataset being replaced and written last.
    MARKERS = (schema.TFDS_INFO_FILE, schema.METADATA_FILE)

    def __init__(self, output_dir: str, overwrite: bool):
        check_replaceable(output_dir, overwrite)
        self.fs, path = fsspec.core.url_to_fs(output_dir)
        self.path = path.rstrip("/")
        parent, base = posixpath.split(self.path)
        ownership.remove_abandoned(self.fs, posixpath.join(parent, f".{base}.incomplete-*"))
        self.temp_path = posixpath.join(parent, f".{base}.incomplete-{uuid.uuid4().hex[:12]}")
        self._replaced = posixpath.join(parent, f".{base}.replaced-{uuid.uuid4().hex[:12]}")
        self.fs.makedirs(self.temp_path, exist_ok=True)
        self._heartbeat = ownership.Heartbeat(self.fs, self.temp_path)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.temp_url = self.temp_path if self.is_local else self.fs.unstrip_protocol(self.temp_path)

    def commit(self) -> None:
        self._heartbeat.stop()
        if not self.is_local:
            self._commit_by_copies()
        elif self.fs.exists(self.path):
            self.fs.mv(self.path, self._replaced, recursive=True)
            self.fs.mv(self.temp_path, self.path, recursive=True)
            self.fs.rm(self._replaced, recursive=True)
        else:
            self.fs.mv(self.temp_path, self.path, recursive=True)

    def _commit_by_copies(self) -> None:
        """Object storage has no directory rename: the markers make the switch instead."""
        if self.fs.exists(self.path):
            for marker in self.MARKERS:
                if self.fs.exists(posixpath.join(self.path, marker)):
                    self.fs.rm(posixpath.join(self.path, marker))
            self.fs.rm(self.path, recursive=True)
        names = sorted(posixpath.basename(p) for p in self.fs.find(self.temp_path))
        for name in sorted(names, key=lambda n: n in self.MARKERS):
            self.fs.copy(posixpath.join(self.temp_path, name), posixpath.join(self.path, name))
        self.fs.rm(self.temp_path, recursive=True)

    def abort(self) -> None:
        self._heartbeat.stop()
        if self.fs.exists(self.temp_path):
            self.fs.rm(self.temp_path, recursive=True)


def write_metadata(dataset_dir: str, metadata: schema.DatasetMetadata) -> None:
    """dataset_info.json and features.json (TFDS) plus metadata.json (ours).

    TFDS writes through tf.io.gfile, which has no emulator endpoint for gs://, and finds the dataset name from
    the shard file names; so it writes into a local staging folder holding empty files of those names, and the
    result is copied with fsspec.
    """
    tfds = logs.import_tensorflow_datasets()
    with tempfile.TemporaryDirectory() as staging:
        shard_names = {
            posixpath.basename(path) for split in metadata.splits for path in metadata.shard_paths(staging, split)
        }
        for shard in shard_names:
            open(os.path.join(staging, shard), "wb").close()
        tfds.folder_dataset.write_metadata(
            data_dir=staging,
            features=schema.tfds_features(metadata),
            split_infos=[
                tfds.core.SplitInfo(name=split, shard_lengths=list(info.shard_lengths), num_bytes=info.num_bytes)
                for split, info in metadata.splits.items()
            ],
            check_data=False,
            supervised_keys=(schema.FEATURES if metadata.features else schema.IMAGE, schema.LABEL),
            description=f"Built by data_prep from {metadata.source.get('input', 'a source')}.",
        )
        for file_name in sorted(set(os.listdir(staging)) - shard_names):
            with (
                open(os.path.join(staging, file_name), "rb") as src,
                fsspec.open(posixpath.join(dataset_dir, file_name), "wb") as dst,
            ):
                dst.write(src.read())
    metadata.write(dataset_dir)


@contextlib.contextmanager
def write_whole(url: str) -> Iterator[BinaryIO]:
    """A file that appears complete or not at all: local files are renamed from a temporary name;
    objects in object storage appear only when their upload completes (and renaming them is a copy)."""
    fs, path = fsspec.core.url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        with fs.open(path, "wb") as f:
            yield f
        return
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    temp = f"{path}.incomplete-{uuid.uuid4().hex}"
    with fs.open(temp, "wb") as f:
        yield f
    fs.mv(temp, path)
