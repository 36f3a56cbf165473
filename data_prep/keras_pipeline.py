"""The Keras datasets as a pipeline source: chunk descriptors in, Examples out.

Only small chunk descriptors go through `beam.Create` (Dataflow caps a job request at
about 20 MB); each worker reads its chunks from the source file itself. The official
train and test splits are kept; `validation` is carved out of train only, by a hash of
each example's key, so it never depends on order or parallelism.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

import apache_beam as beam

from data_prep import examples, images, keras_sources, progress, results, schema, stats


def example_key(dataset: str, split: str, index: int) -> str:
    """An example's stable identity: its place in the official distribution."""
    return hashlib.sha256(f"{dataset}:{split}:{index}".encode()).hexdigest()


def parse_validation_size(text: str, num_train: int) -> int:
    """`--validation_size`: a count (`5000`) or a percentage of train (`10%`)."""
    try:
        count = round(num_train * float(text[:-1]) / 100) if text.endswith("%") else int(text)
    except ValueError:
        raise ValueError(f"--validation_size={text}: expected a count like 5000 or a percentage like 10%") from None
    if not 0 <= count < num_train:
        raise ValueError(f"--validation_size={text}: must leave some of the {num_train} training examples")
    return count


def carve_validation(dataset: str, num_train: int, count: int) -> frozenset[int]:
    """The official-train indices that become validation: the `count` smallest key hashes."""

    def rank(index: int) -> bytes:
        return hashlib.sha256(b"validation:" + example_key(dataset, "train", index).encode()).digest()

    return frozenset(sorted(range(num_train), key=rank)[:count])


class ReadChunk(beam.DoFn):
    def __init__(
        self,
        source: keras_sources.KerasSource,
        options: images.ImageOptions,
        validation: AbstractSet[int],
        work_dir: str,
    ):
        self._source, self._options, self._validation, self._work_dir = source, options, validation, work_dir

    def setup(self):
        self._progress = progress.Progress(self._work_dir)
        self._files_seen = beam.metrics.Metrics.counter(results.METRICS_NAMESPACE, "files_seen")

    def process(self, chunk: keras_sources.Chunk) -> Iterable[examples.Example]:
        dataset = self._source.dataset
        for index, pixels, label, coarse in keras_sources.read_chunk(self._source, chunk):
            key = example_key(dataset, chunk.split, index)
            split = "validation" if chunk.split == "train" and index in self._validation else chunk.split
            filename = f"{chunk.split}/{index:05d}"
            self._files_seen.inc()
            self._progress.add()
            yield examples.Example(
                # Official examples are never merged as duplicates: their key is their dedupe key.
                examples.ExampleInfo(
                    key=key,
                    filename=filename,
                    label=label,
                    split=split,
                    dedupe_key=key,
                    num_pixels=pixels.shape[0] * pixels.shape[1],
                    moments=stats.channel_moments(pixels),
                ),
                schema.serialize_example(
                    images.encode(pixels, self._options), filename, key, label, coarse_label=coarse
                ),
            )

    def finish_bundle(self):
        self._progress.flush()


class ReadKeras(beam.PTransform):
    """The examples of `chunks` (keras_sources.plan_chunks), spread over workers."""

    def __init__(
        self,
        source: keras_sources.KerasSource,
        options: images.ImageOptions,
        validation: AbstractSet[int],
        work_dir: str,
        chunks: Sequence[keras_sources.Chunk],
    ):
        super().__init__()
        self._read = ReadChunk(source, options, validation, work_dir)
        self._chunks = list(chunks)

    def expand(self, pbegin):
        return (
            pbegin
            | "Chunks" >> beam.Create(self._chunks)
            | "Spread" >> beam.Reshuffle()
            | "ReadChunks" >> beam.ParDo(self._read)
        )
