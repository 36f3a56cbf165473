"""The source-independent half of every build: dedupe, split, shard and write.

Sources (raw folders, Keras datasets) emit `Example`s; from there each build runs the
same graph, modelled on TFDS's writer but with memory bounded by one shard:

1. `SpillRecords` appends each serialized record to a per-bundle spill file and passes
   on only a small `Pointer`; no later shuffle carries image bytes.
2. Pointers are grouped by the hash of their stored image: one survivor per group, the rest are duplicates.
3. The survivor's split is the layout's, or a stable hash of its content key.
4. The shard count of a split follows from its total bytes; each record goes to shard
   `md5(split + key) * N >> 128` and is ordered by that hash inside the shard, so the
   bytes written never depend on arrival order or parallelism.
5. `WriteShard` reads its records back from the spill files and writes the shard under
   a temporary name, then renames it.

With `--augment_copies=K`, each training survivor also yields K augmented copies
(after dedupe and split assignment, so copies never leave their source's split).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import posixpath
import struct
import time
import uuid
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import apache_beam as beam
import fsspec
import google_crc32c
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from data_prep import augmentation, example_proto, images, schema, stats

METRICS_NAMESPACE = "data_prep"
# Result kinds collected by the driver after the run.
SHARD, REJECTED, SKIPPED, DUPLICATE, WARNING, STATISTICS = (
    "shard", "rejected", "skipped", "duplicate", "warning", "statistics")
RESULTS_DIR = "results"


@dataclasses.dataclass(frozen=True)
class ExampleInfo:
    """Everything about a record except its bytes: what travels through the shuffles."""

    key: str  # Stable content key: drives split and shard assignment.
    filename: str
    label: int
    split: str | None  # Fixed by the source, or None for hash-assigned.
    dedupe_key: str  # Equal for examples whose stored images are identical.
    num_pixels: int
    moments: stats.Moments  # Of the stored pixels.
    source_key: str | None = None  # Set on offline-augmented copies: the key they were made from.


@dataclasses.dataclass(frozen=True)
class Example:
    """One candidate record, as a source produces it."""

    info: ExampleInfo
    record: bytes  # Serialized tf.train.Example (schema.serialize_example).


@dataclasses.dataclass(frozen=True)
class Pointer:
    """An Example without its bytes: where SpillRecords put them."""

    info: ExampleInfo
    spill_path: str
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """`--split=train:80,validation:10,test:10`: hash buckets for inputs without splits."""

    percentages: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> "SplitSpec":
        try:
            pairs = tuple((name.strip(), float(pct)) for name, pct in (item.split(":") for item in text.split(",")))
        except ValueError:
            raise ValueError(f"--split={text}: expected name:percent pairs, e.g. train:80,validation:10,test:10") from None
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
            raise ValueError(f"--split={text}: split names must be distinct identifiers")
        if any(p < 0 for _, p in pairs) or abs(sum(p for _, p in pairs) - 100) > 1e-6:
            raise ValueError(f"--split={text}: percentages must be non-negative and add up to 100")
        return cls(pairs)

    def assign(self, key: str) -> str:
        """Depends on the key alone, so adding files never moves an existing one."""
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key.encode()).digest()[:8], "big") / 2**64 * 100
        cumulative = 0.0
        for name, pct in self.percentages:
            cumulative += pct
            if bucket < cumulative:
                return name
        return self.percentages[-1][0]


def shard_hash(split: str, key: str) -> int:
    return int.from_bytes(hashlib.md5((split + key).encode()).digest(), "big")


def num_shards(num_examples: int, num_bytes: int, shard_size_bytes: int, fixed: int = 0) -> int:
    """Fixed by --num_shards, else by bytes; never more shards than examples."""
    wanted = fixed if fixed > 0 else math.ceil(num_bytes / shard_size_bytes)
    return max(1, min(wanted, num_examples))


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


def result(kind: str, **fields: Any) -> str:
    return json.dumps({"kind": kind, **fields}, sort_keys=True)


class Progress:
    """Counts work done in a worker and drops the count in a file the driver sums every few seconds.

    Beam's own metrics reach the driver only when a local run ends; files work on every runner.
    """

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
        try:
            done += int(fs.cat_file(path) or 0)
        except (FileNotFoundError, ValueError):  # Being rewritten right now; next poll sees it.
            pass
    return done


def count_shard_files(output_dir: str) -> int:
    """Shard files begun in the dataset directory, written or being written: the job's work after the last decode."""
    fs, path = fsspec.core.url_to_fs(output_dir)
    try:
        names = fs.ls(path, detail=False, refresh=True)  # refresh: gcsfs would answer from its listing cache.
    except FileNotFoundError:
        return 0
    return sum(".tfrecord-" in posixpath.basename(name) for name in names)


class SpillRecords(beam.DoFn):
    """Moves record bytes out of the pipeline into one append-only file per bundle."""

    def __init__(self, work_dir: str):
        self._spill_dir = posixpath.join(work_dir, "spill")

    def start_bundle(self):
        self._file = None
        self._path = None
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


def pick_survivor(group: tuple[str, Iterable[Pointer]]):
    """Keeps the first of identical examples by file name; the others are reported as its duplicates."""
    _, pointers = group
    ordered = sorted(pointers, key=lambda p: p.info.filename)
    survivor = ordered[0].info
    for duplicate in (p.info for p in ordered[1:]):
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates").inc()
        note = {} if duplicate.label == survivor.label else {"note": "labelled differently"}
        yield beam.pvalue.TaggedOutput(DUPLICATE, result(DUPLICATE, path=duplicate.filename,
                                                         duplicate_of=survivor.filename, **note))
    yield ordered[0]


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


class AugmentCopies(beam.DoFn):
    """K offline-augmented copies of a training example, deterministic from (seed, key, copy index)."""

    def __init__(self, copies: int, seed: int, policy: schema.AugmentationPolicy,
                 image_options: images.ImageOptions):
        self._copies, self._seed, self._policy, self._image_options = copies, seed, policy, image_options

    def process(self, pointer: Pointer) -> Iterable[Example]:
        record = read_spilled([pointer])[(pointer.spill_path, pointer.offset)]
        feature = example_proto.Example.FromString(record).features.feature
        coarse = feature[schema.COARSE_LABEL].int64_list.value if schema.COARSE_LABEL in feature else None
        source = pointer.info
        pixels = images.decode(feature[schema.IMAGE].bytes_list.value[0],
                               dataclasses.replace(self._image_options, resize_policy="none")).pixels
        for copy in range(self._copies):
            rng = np.random.default_rng([self._seed, int(source.key[:16], 16), copy])
            augmented, params = augmentation.random_transform(pixels, self._policy, rng)
            key = hashlib.sha256(f"{source.key}:augment:{self._seed}:{copy}".encode()).hexdigest()
            filename = f"{source.filename}#augment{copy}"
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "augmented").inc()
            yield Example(
                ExampleInfo(key=key, filename=filename, label=source.label, split=source.split, dedupe_key=key,
                            num_pixels=source.num_pixels, moments=source.moments, source_key=source.key),
                schema.serialize_example(images.encode(augmented, self._image_options), filename, key, source.label,
                                         coarse_label=coarse[0] if coarse else None,
                                         augment_source_key=source.key, augment_params=params))


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
        with write_whole(posixpath.join(self._output_dir, schema.shard_filename(self._name, split, index, count))) as f:
            for window in _windows(ordered, READ_WINDOW_BYTES):
                records = read_spilled(window)
                for p in window:
                    framed = tfrecord_frame(records.pop((p.spill_path, p.offset)))
                    num_augmented += p.info.source_key is not None
                    num_bytes += len(framed)
                    f.write(framed)
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "written").inc(len(ordered))
        yield result(SHARD, split=split, index=index, count=count, num_examples=len(ordered), num_bytes=num_bytes,
                     num_augmented=num_augmented)


class WriteResults(beam.DoFn):
    """Result lines, one file per bundle, renamed into `results/` only when the bundle completes.

    Every line describes one input or shard, so a retried bundle's second file repeats lines
    exactly; the driver drops repeated lines.
    """

    def __init__(self, work_dir: str):
        self._dir = posixpath.join(work_dir, RESULTS_DIR)

    def start_bundle(self):
        self._lines: list[str] = []

    def process(self, line: str) -> None:
        self._lines.append(line)

    def finish_bundle(self):
        if not self._lines:
            return
        with write_whole(posixpath.join(self._dir, f"{uuid.uuid4().hex}.jsonl")) as f:
            f.write("".join(line + "\n" for line in self._lines).encode())


def read_lines(path: str) -> Iterable[str]:
    """Lines of a text file (local or any fsspec URL), streamed: Beam's text IO would need its own GCS client."""
    with fsspec.open(path, "r") as f:
        for line in f:
            yield line.rstrip("\n")


def _assign_split(pointer: Pointer, split_spec: SplitSpec) -> Pointer:
    info = pointer.info
    return pointer if info.split else dataclasses.replace(
        pointer, info=dataclasses.replace(info, split=split_spec.assign(info.key)))


def _shard_key(pointer: Pointer, counts: dict[str, int]):
    split = pointer.info.split
    return (split, shard_hash(split, pointer.info.key) * counts[split] >> 128, counts[split]), pointer


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    examples = total = 0
    for n, size in pairs:
        examples += n
        total += size
    return examples, total


@dataclasses.dataclass(frozen=True)
class WriteOptions:
    output_dir: str  # The temporary dataset directory.
    work_dir: str
    name: str
    split_spec: SplitSpec
    image_options: images.ImageOptions
    shard_size_bytes: int = 128 * 2**20
    fixed_num_shards: int = 0
    augment_copies: int = 0  # Offline-augmented copies per training example.
    augment_seed: int = 0
    policy: schema.AugmentationPolicy = schema.AugmentationPolicy()
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
        deduped = (pointers
                   | "ByPixels" >> beam.Map(lambda p: (p.info.dedupe_key, p))
                   | "GroupIdentical" >> beam.GroupByKey()
                   | "PickSurvivor" >> beam.FlatMap(pick_survivor).with_outputs(DUPLICATE, main="survivors"))
        assigned = deduped.survivors | "AssignSplit" >> beam.Map(_assign_split, o.split_spec)
        train = assigned | "TrainOnly" >> beam.Filter(lambda p: p.info.split == o.train_split)
        if o.augment_copies:
            copies = (train
                      | "Augment" >> beam.ParDo(AugmentCopies(o.augment_copies, o.augment_seed, o.policy,
                                                              o.image_options))
                      | "SpillCopies" >> beam.ParDo(SpillRecords(o.work_dir)))
            assigned = (assigned, copies) | "WithCopies" >> beam.Flatten()
        counts = (assigned
                  | "SizeBySplit" >> beam.Map(lambda p: (p.info.split, (1, p.length)))
                  | "SumBySplit" >> beam.CombinePerKey(_sum_pairs)
                  | "NumShards" >> beam.MapTuple(
                      lambda split, sizes: (split, num_shards(*sizes, o.shard_size_bytes, o.fixed_num_shards))))
        shards = (assigned
                  | "ShardKey" >> beam.Map(_shard_key, beam.pvalue.AsDict(counts))
                  | "GroupShards" >> beam.GroupByKey()
                  | "WriteShards" >> beam.ParDo(WriteShard(o.output_dir, o.name)))
        # Per key rather than global: no default-value stage for an empty split, which simply has no statistics.
        statistics = (train
                      | "Moments" >> beam.Map(lambda p: (p.info.split, (p.info.num_pixels, p.info.moments)))
                      | "CombineStats" >> beam.CombinePerKey(stats.ChannelStatsFn())
                      | "StatsResult" >> beam.MapTuple(lambda split, s: result(STATISTICS, split=split, values=s)))
        return ((shards, deduped[DUPLICATE], statistics, *self._problems)
                | "AllResults" >> beam.Flatten()
                | "WriteResults" >> beam.ParDo(WriteResults(o.work_dir)))
