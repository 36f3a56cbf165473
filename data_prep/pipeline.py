"""The source-independent half of every build: dedupe, split, shard and write.

Sources (raw folders, Keras datasets) emit `Example`s; from there each build runs the
same graph, modelled on TFDS's writer but with memory bounded by one shard:

1. `SpillRecords` appends each serialized record to a per-bundle spill file and passes
   on only a small `Pointer`; no later shuffle carries image bytes.
2. Pointers are grouped by the hash of their stored image: one survivor per group, the rest are duplicates.
3. The survivor's split is the layout's, or a stable hash of its content key. With counts per
   class (`--split=train:1000/class,...`), each split then keeps the N images of each class
   with the smallest selection hash (subsets.py); the others are listed as not selected.
4. The shard count of a split follows from its total bytes; each record goes to shard
   `md5(split + key) * N >> 128` and is ordered by that hash inside the shard, so the
   bytes written never depend on arrival order or parallelism.
5. `WriteShard` reads its records back from the spill files and writes the shard under
   a temporary name, then renames it.

With `--augment_copies=K`, each training survivor also yields K augmented copies
(after dedupe, split assignment and selection, so copies never leave their source's split).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import posixpath
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam

from data_prep import images, schema, stats, subsets
from data_prep.augmentation import AugmentCopies
from data_prep.examples import Pointer
from data_prep.output import write_whole
from data_prep.results import DUPLICATE, METRICS_NAMESPACE, SHARD, STATISTICS, WriteResults, result
from data_prep.spill import SpillRecords, read_spilled
from data_prep.splits import SplitSpec
from data_prep.tfrecord import tfrecord_frame


def shard_hash(split: str, key: str) -> int:
    return int.from_bytes(hashlib.md5((split + key).encode()).digest(), "big")


def num_shards(num_examples: int, num_bytes: int, shard_size_bytes: int, fixed: int = 0) -> int:
    """Fixed by --num_shards, else by bytes; never more shards than examples."""
    wanted = fixed if fixed > 0 else math.ceil(num_bytes / shard_size_bytes)
    return max(1, min(wanted, num_examples))


def pick_survivor(group: tuple[str, Iterable[Pointer]]):
    """Keeps the first of identical examples by file name; the others are reported as its duplicates."""
    _, pointers = group
    ordered = sorted(pointers, key=lambda p: p.info.filename)
    survivor = ordered[0].info
    for duplicate in (p.info for p in ordered[1:]):
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates").inc()
        note = {} if duplicate.label == survivor.label else {"note": "labelled differently"}
        yield beam.pvalue.TaggedOutput(
            DUPLICATE, result(DUPLICATE, path=duplicate.filename, duplicate_of=survivor.filename, **note)
        )
    yield ordered[0]


READ_WINDOW_BYTES = 16 * 2**20  # Record bytes a shard writer holds at once, however big the shard.


def _windows(ordered: Sequence[Pointer], limit: int) -> Iterator[list[Pointer]]:
    """Consecutive runs of `ordered` holding about `limit` record bytes each."""
    window, size = [], 0
    for p in ordered:
        window.append(p)
        size += p.length
        if size >= limit:
            yield window
            window, size = [], 0
    if window:
        yield window


class WriteShard(beam.DoFn):
    """Writes one shard in hash order, whole or not at all (a retried bundle never leaves half a file)."""

    def __init__(self, output_dir: str, name: str):
        self._output_dir = output_dir
        self._name = name

    def process(self, element: tuple[tuple[str, int, int], Iterable[Pointer]]) -> Iterable[str]:
        (split, index, count), pointers = element
        ordered = sorted(pointers, key=lambda p: (shard_hash(split, p.info.key), p.info.key))
        num_bytes = num_augmented = 0
        per_label: collections.Counter[int] = collections.Counter()
        augmented_per_label: collections.Counter[int] = collections.Counter()
        with write_whole(posixpath.join(self._output_dir, schema.shard_filename(self._name, split, index, count))) as f:
            for window in _windows(ordered, READ_WINDOW_BYTES):
                records = read_spilled(window)
                for p in window:
                    framed = tfrecord_frame(records.pop((p.spill_path, p.offset)))
                    num_augmented += p.info.source_key is not None
                    per_label[p.info.label] += 1
                    augmented_per_label[p.info.label] += p.info.source_key is not None
                    num_bytes += len(framed)
                    f.write(framed)
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "written").inc(len(ordered))
        yield result(
            SHARD,
            split=split,
            index=index,
            count=count,
            num_examples=len(ordered),
            num_bytes=num_bytes,
            num_augmented=num_augmented,
            # The labels of what was written, so per-class counts reconcile with the split sizes (JSON keys are text).
            per_label={str(label): n for label, n in per_label.items()},
            augmented_per_label={str(label): n for label, n in augmented_per_label.items() if n},
        )


def _assign_split(pointer: Pointer, split_spec: SplitSpec) -> Pointer:
    info = pointer.info
    return (
        pointer
        if info.split
        else dataclasses.replace(pointer, info=dataclasses.replace(info, split=split_spec.assign(info.key)))
    )


def _shard_key(pointer: Pointer, counts: dict[str, int]):
    split = pointer.info.split
    assert split is not None, "shard keys are taken after split assignment"
    return (split, shard_hash(split, pointer.info.key) * counts[split] >> 128, counts[split]), pointer


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    examples = total = 0
    for n, size in pairs:
        examples += n
        total += size
    return examples, total


@dataclasses.dataclass(frozen=True)
class WriteOptions:
    """What the write graph needs of a build (options.BuildOptions, resolved by the driver; no defaults here)."""

    output_dir: str  # The temporary dataset directory.
    work_dir: str
    name: str
    split_spec: SplitSpec
    image_options: images.ImageOptions | None  # How offline copies are stored; None for feature datasets.
    shard_size_bytes: int
    num_shards: int  # Per split; 0: from shard_size_bytes.
    augment_copies: int  # Offline-augmented copies per training example.
    seed: int  # Of the offline augmentation.
    policy: schema.AugmentationPolicy
    train_split: str = "train"  # Statistics and offline augmentation use this split only.


class WriteDataset(beam.PTransform):
    """Examples (plus the sources' problem reports) in; result lines for the driver out."""

    def __init__(self, options: WriteOptions, problems: Sequence[beam.PCollection] = ()):
        super().__init__()
        self._options = options
        self._problems = problems

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        o = self._options
        pointers = examples | "Spill" >> beam.ParDo(SpillRecords(o.work_dir))
        deduped = (
            pointers
            | "ByPixels" >> beam.Map(lambda p: (p.info.dedupe_key, p))
            | "GroupIdentical" >> beam.GroupByKey()
            | "PickSurvivor" >> beam.FlatMap(pick_survivor).with_outputs(DUPLICATE, main="survivors")
        )
        assigned = deduped.survivors | "AssignSplit" >> beam.Map(_assign_split, o.split_spec)
        selection: list[beam.PCollection] = []
        if o.split_spec.per_class:
            assigned, *selection = assigned | "SelectPerClass" >> subsets.SelectPerClass(o.split_spec.counts)
        # Statistics and offline copies cover the selected training images only.
        train = assigned | "TrainOnly" >> beam.Filter(lambda p: p.info.split == o.train_split)
        if o.augment_copies:
            assert o.image_options is not None, "offline copies are made of images"
            copies = (
                train
                | "Augment" >> beam.ParDo(AugmentCopies(o.augment_copies, o.seed, o.policy, o.image_options))
                | "SpillCopies" >> beam.ParDo(SpillRecords(o.work_dir))
            )
            assigned = (assigned, copies) | "WithCopies" >> beam.Flatten()
        counts = (
            assigned
            | "SizeBySplit" >> beam.Map(lambda p: (p.info.split, (1, p.length)))
            | "SumBySplit" >> beam.CombinePerKey(_sum_pairs)
            | "NumShards"
            >> beam.MapTuple(
                lambda split, sizes: (split, num_shards(sizes[0], sizes[1], o.shard_size_bytes, o.num_shards))
            )
        )
        shards = (
            assigned
            | "ShardKey" >> beam.Map(_shard_key, beam.pvalue.AsDict(counts))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShard(o.output_dir, o.name))
        )
        # Per key rather than global: no default-value stage for an empty split, which simply has no statistics.
        statistics = (
            train
            | "Moments" >> beam.Map(lambda p: (p.info.split, (p.info.num_pixels, p.info.moments)))
            | "CombineStats" >> beam.CombinePerKey(stats.ChannelStatsFn())
            | "StatsResult" >> beam.MapTuple(lambda split, s: result(STATISTICS, split=split, values=s))
        )
        return (
            (shards, deduped[DUPLICATE], statistics, *selection, *self._problems)
            | "AllResults" >> beam.Flatten()
            | "WriteResults" >> beam.ParDo(WriteResults(o.work_dir))
        )
