"""Progress across workers: each drops its count of files done in a file the driver sums.

Beam's own metrics reach the driver only when a local run ends; files work on every runner.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
import uuid

import fsspec


class Progress:
    """Counts work done in a worker and drops the count in a file the driver sums every few seconds."""

    INTERVAL_S = 5.0

    def __init__(self, work_dir: str):
        self._dir = posixpath.join(work_dir, "progress")
        self._path = posixpath.join(self._dir, f"{uuid.uuid4().hex}.txt")
        self._done = 0
        self._last = 0.0

    def add(self, n: int = 1) -> None:
        self._done += n
        if time.monotonic() - self._last >= self.INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        with fsspec.open(self._path, "w", auto_mkdir=True) as f:
            f.write(str(self._done))


def read_progress(work_dir: str) -> int:
    fs, root = fsspec.core.url_to_fs(posixpath.join(work_dir, "progress"))
    done = 0
    for path in fs.glob(posixpath.join(root, "*.txt")):
        with contextlib.suppress(FileNotFoundError, ValueError):  # Being rewritten right now; next poll sees it.
            done += int(fs.cat_file(path) or 0)
    return done


def count_shard_files(output_dir: str) -> int:
    """Shard files begun in the dataset directory, written or being written: the job's work after the last decode."""
    fs, path = fsspec.core.url_to_fs(output_dir)
    try:
        names = fs.ls(path, detail=False, refresh=True)  # refresh: gcsfs would answer from its listing cache.
    except FileNotFoundError:
        return 0
    return sum(".tfrecord-" in posixpath.basename(name) for name in names)
