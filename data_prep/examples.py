"""What a source emits and what travels through the write graph's shuffles.

Sources (raw folders, Keras datasets) produce `Example`s; the write graph spills their
bytes and passes on `Pointer`s, so no shuffle carries image bytes.
"""

from __future__ import annotations

import dataclasses

from data_prep import stats


@dataclasses.dataclass(frozen=True)
class ExampleInfo:
    """Everything about a record except its bytes: what travels through the shuffles."""

    key: str  # Stable content key: drives split and shard assignment.
    filename: str
    label: int
    split: str | None  # Fixed by the source, or None for hash-assigned.
    dedupe_key: str  # Equal for examples whose stored images are identical.
    num_pixels: int
    moments: stats.Moments | None  # Of the stored pixels; None for features.
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
