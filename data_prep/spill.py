"""Record bytes moved out of the pipeline: one append-only spill file per bundle, read back by offset."""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterable

import apache_beam as beam
import fsspec

from data_prep.examples import Example, Pointer


class SpillRecords(beam.DoFn):
    """Moves record bytes out of the pipeline into one append-only file per bundle."""

    def __init__(self, work_dir: str):
        self._spill_dir = posixpath.join(work_dir, "spill")

    def start_bundle(self):
        self._file = None
        self._path = ""  # Named when the bundle's first record comes.
        self._offset = 0  # Counted, not asked: tell() on a buffered file is a system call per record.

    def process(self, example: Example) -> Iterable[Pointer]:
        if self._file is None:
            self._path = posixpath.join(self._spill_dir, f"{uuid.uuid4().hex}.bin")
            self._file = fsspec.open(self._path, "wb", auto_mkdir=True).open()
        self._file.write(example.record)
        offset, self._offset = self._offset, self._offset + len(example.record)
        yield Pointer(example.info, spill_path=self._path, offset=offset, length=len(example.record))

    def finish_bundle(self):
        if self._file is not None:
            self._file.close()


def read_spilled(pointers: Iterable[Pointer]) -> dict[tuple[str, int], bytes]:
    """The records behind `pointers`, keyed by (spill file, offset); each spill file is opened once."""
    records: dict[tuple[str, int], bytes] = {}
    by_file: dict[str, list[Pointer]] = {}
    for p in pointers:
        by_file.setdefault(p.spill_path, []).append(p)
    for path, in_file in by_file.items():
        with fsspec.open(path, "rb") as f:
            for p in sorted(in_file, key=lambda p: p.offset):
                f.seek(p.offset)
                records[(path, p.offset)] = f.read(p.length)
    return records
