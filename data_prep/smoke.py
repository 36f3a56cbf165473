"""Smoke builds (`--max_examples_per_split=N`, TFDS's name): a quick build of a huge folder, at most N examples per
split, chosen by content hash before anything is decoded.

Every listed file is read once for its key (the sha256 of its bytes, as in any build) and its split (the folder's,
or the key's hash bucket), and its header is checked (a file that is no accepted image is rejected there, as decoding
would reject it). Each split keeps the files of its N smallest distinct selection ranks (the rank counts per class
use); only those are decoded, and the others are listed as not selected. What this saves is the decode, resize and
encode of every file not kept, most of a build's work; every file is still listed and read (BUILD_NOTES, "Smoke
builds").

A kept file that still proves unusable (image data truncated after a good header, or stored identically to another
kept file) is not replaced: finding its replacement would take another pass. So a split holds at most N.
"""

from __future__ import annotations

import functools

import apache_beam as beam

from data_prep import folders, images, results, subsets
from data_prep.splits import SplitSpec

Hashed = tuple[folders.ManifestEntry, str]  # A readable labelled file and its key.


class _Keep(beam.DoFn):
    """Passes on a file ranked within its split's cutoff; lists the others as not selected."""

    def __init__(self, n: int, split_spec: SplitSpec):
        self._n = n
        self._split_spec = split_spec

    def setup(self):
        self._not_selected = beam.metrics.Metrics.counter(results.METRICS_NAMESPACE, results.NOT_SELECTED)

    def process(self, hashed: Hashed, cutoffs: dict[str, int]):
        entry, key = hashed
        split = split_of(hashed, self._split_spec)
        if subsets.selection_rank(key) <= cutoffs[split]:
            yield entry
            return
        self._not_selected.inc()
        reason = f"beyond the first {self._n} of its split by content hash (--max_examples_per_split)"
        yield beam.pvalue.TaggedOutput(
            results.NOT_SELECTED, results.result(results.NOT_SELECTED, path=entry.relpath, split=split, reason=reason)
        )


def split_of(hashed: Hashed, split_spec: SplitSpec) -> str:
    """The split the write graph will give the file: its folder's, or its key's hash bucket."""
    entry, key = hashed
    return entry.split or split_spec.assign(key)


class SelectPerSplit(beam.PTransform):
    """(entry, key) pairs in; (the entries of each split's n smallest distinct ranks, not-selected result lines) out.
    The cutoffs are order-independent, so the choice does not depend on parallelism."""

    def __init__(self, n: int, split_spec: SplitSpec):
        super().__init__()
        self._n = n
        self._split_spec = split_spec

    def expand(self, hashed: beam.PCollection):
        spec = self._split_spec
        cutoffs = (
            hashed
            | "Rank" >> beam.Map(lambda h: (split_of(h, spec), subsets.selection_rank(h[1])))
            | "SmallestRanks" >> beam.CombinePerKey(subsets.SmallestRanks(self._n))
            | "Cutoffs" >> beam.MapTuple(lambda split, found: (split, found[1][-1]))
        )
        kept = hashed | "Keep" >> beam.ParDo(_Keep(self._n, spec), beam.pvalue.AsDict(cutoffs)).with_outputs(
            results.NOT_SELECTED, main="kept"
        )
        return kept.kept, kept[results.NOT_SELECTED]


class ReadFolderSmoke(beam.PTransform):
    """folders.ReadFolder's contract (examples, problem result lines...) for a smoke build: every file hashed,
    the kept ones decoded."""

    def __init__(
        self,
        manifest_path: str,
        options: images.ImageOptions,
        work_dir: str,
        threads: int,
        n: int,
        split_spec: SplitSpec,
    ):
        super().__init__()
        self._manifest_path = manifest_path
        self._options = options
        self._work_dir = work_dir
        self._threads = threads
        self._n = n
        self._split_spec = split_spec

    def expand(self, pbegin):
        hash_file = functools.partial(folders.hash_file, options=self._options)
        hashed = (
            pbegin
            | "Batches" >> folders.ManifestBatches(self._manifest_path)
            | "Hash" >> folders.ProcessFiles(hash_file, self._work_dir, self._threads).with_problems()
        )
        kept, not_selected = hashed.files | "Select" >> SelectPerSplit(self._n, self._split_spec)
        read = functools.partial(folders.read_file, options=self._options)
        decoded = (
            kept
            | "Rebatch"
            >> beam.BatchElements(min_batch_size=folders.FILES_PER_BATCH, max_batch_size=folders.FILES_PER_BATCH)
            | "Decode" >> folders.ProcessFiles(read, self._work_dir, self._threads, seen=False).with_problems()
        )
        return decoded.files, not_selected, *folders.problems(hashed), *folders.problems(decoded)
