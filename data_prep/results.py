"""The result-line protocol: how the job accounts for every input and shard, and how the driver reads it back.

Workers write one JSON line per rejected, skipped, duplicate, not selected or warned-about
input, per shard written, per statistics summary and per (split, class) of a per-class
selection (`result`, `WriteResults`); the driver collects them (`read_results`) and
reconciles the counts (`build_report`).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import fsspec

from data_prep import schema
from data_prep.output import write_whole

# Beam counters: files_seen, written, augmented, rejected, skipped, duplicates, not_selected.
METRICS_NAMESPACE = "data_prep"
SHARD, REJECTED, SKIPPED, DUPLICATE, NOT_SELECTED, WARNING, STATISTICS, SELECTION = (
    "shard",
    "rejected",
    "skipped",
    "duplicate",
    "not_selected",
    "warning",
    "statistics",
    "selection",
)
RESULTS_DIR = "results"


def result(kind: str, **fields: Any) -> str:
    return json.dumps({"kind": kind, **fields}, sort_keys=True)


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


@dataclasses.dataclass
class Results:
    """What the pipeline reported, read back from its result lines."""

    shards: dict[str, dict[int, dict]] = dataclasses.field(default_factory=dict)  # split -> index -> line
    shard_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)
    duplicates: list[dict] = dataclasses.field(default_factory=list)
    not_selected: list[dict] = dataclasses.field(default_factory=list)  # Left out by --split counts per class.
    warnings: list[dict] = dataclasses.field(default_factory=list)
    statistics: dict | None = None
    selections: list[dict] = dataclasses.field(default_factory=list)  # Per (split, label) found: available.

    @property
    def written(self) -> int:
        return sum(s["num_examples"] for by_index in self.shards.values() for s in by_index.values())

    def split_sizes(self) -> dict[str, int]:
        return {split: sum(s["num_examples"] for s in by_index.values()) for split, by_index in self.shards.items()}


def read_results(work_dir: str) -> Results:
    """Collects the result lines; a line repeated by a retried bundle counts once. Order is deterministic."""
    fs, root = fsspec.core.url_to_fs(work_dir)
    lines: set[str] = set()
    for path in fs.glob(posixpath.join(root, RESULTS_DIR, "*.jsonl")):
        with fs.open(path, "r") as f:
            lines.update(f)
    results = Results()
    lists = {
        REJECTED: results.rejected,
        SKIPPED: results.skipped,
        DUPLICATE: results.duplicates,
        NOT_SELECTED: results.not_selected,
        WARNING: results.warnings,
        SELECTION: results.selections,
    }
    for line in sorted(lines):
        item = json.loads(line)
        kind = item.pop("kind")
        if kind == SHARD:
            results.shards.setdefault(item["split"], {})[item["index"]] = item
            results.shard_counts[item["split"]] = item["count"]
        elif kind == STATISTICS:
            results.statistics = item["values"] and {"split": item["split"], **item["values"]}
        else:
            lists[kind].append(item)
    return results


def complete_empty_shards(results: Results, dataset_dir: str, name: str) -> None:
    """A shard that the hash left without records still has to exist (as an empty file) for TFDS."""
    for split, count in results.shard_counts.items():
        for index in range(count):
            if index not in results.shards[split]:
                path = posixpath.join(dataset_dir, schema.shard_filename(name, split, index, count))
                with fsspec.open(path, "wb"):
                    pass
                results.shards[split][index] = {
                    "split": split,
                    "index": index,
                    "count": count,
                    "num_examples": 0,
                    "num_bytes": 0,
                    "per_label": {},
                }


def ordered_splits(splits: Sequence[str]) -> list[str]:
    known = [s for s in schema.SPLIT_ORDER if s in splits]
    return known + sorted(s for s in splits if s not in known)


def split_infos(results: Results, num_classes: int) -> dict[str, schema.SplitInfo]:
    """Each split's shard lengths, bytes and records per class, as the shard writers reported them; splits in
    SPLIT_ORDER first."""
    infos = {}
    for split in ordered_splits(list(results.shards)):
        by_index = results.shards[split]
        lengths = tuple(by_index[i]["num_examples"] for i in range(len(by_index)))
        infos[split] = schema.SplitInfo(
            num_examples=sum(lengths),
            shard_lengths=lengths,
            num_bytes=sum(s["num_bytes"] for s in by_index.values()),
            num_examples_per_class=label_counts(results, split, num_classes),
        )
    return infos


def label_counts(results: Results, split: str, num_classes: int, field: str = "per_label") -> tuple[int, ...]:
    """Records per label of `split` as its shard writers counted them; field `augmented_per_label`: copies only."""
    counts = [0] * num_classes
    for line in results.shards[split].values():
        for label, n in line.get(field, {}).items():
            counts[int(label)] += n
    return tuple(counts)


def class_report(results: Results, class_names: Sequence[str], imbalance_warning_ratio: float) -> dict[str, Any]:
    """The report's per-class fields: `class_counts` (split -> class -> records, copies included, so each split's
    counts sum to its size), `augmented_copies_per_class` (splits that have copies) and `class_imbalance` (splits
    whose largest class exceeds `imbalance_warning_ratio` times their smallest; 0: not checked)."""
    names = list(class_names)
    totals, copies = {}, {}
    imbalanced = []
    for split in ordered_splits(list(results.shards)):
        written = label_counts(results, split, len(names))
        augmented = label_counts(results, split, len(names), "augmented_per_label")
        totals[split] = dict(zip(names, written, strict=True))
        if any(augmented):
            copies[split] = dict(zip(names, augmented, strict=True))
        found = imbalance(totals[split], imbalance_warning_ratio)  # Copies are K per original: the same ratio.
        if found:
            imbalanced.append({"split": split, **found})
    return {"class_counts": totals, "augmented_copies_per_class": copies, "class_imbalance": imbalanced}


def imbalance(counts: dict[str, int], ratio: float) -> dict[str, Any] | None:
    """The largest and smallest class of one split when the largest has more than `ratio` times the smallest
    (`ratio` null when the smallest has none); None when balanced within `ratio`, or when `ratio` is 0 (off)."""
    if not ratio or len(counts) < 2:
        return None
    largest = max(counts, key=lambda name: counts[name])
    smallest = min(counts, key=lambda name: counts[name])
    if counts[largest] <= ratio * counts[smallest]:
        return None
    return {
        "largest": largest,
        "largest_count": counts[largest],
        "smallest": smallest,
        "smallest_count": counts[smallest],
        "ratio": counts[largest] / counts[smallest] if counts[smallest] else None,
    }


def build_report(results: Results, files_seen: int) -> dict[str, Any]:
    """The reconciled account of every input; raises if any input is unaccounted for."""
    augmented = sum(s.get("num_augmented", 0) for by_index in results.shards.values() for s in by_index.values())
    counts = {
        "files_seen": files_seen,
        "written": results.written - augmented,
        "rejected": len(results.rejected),
        "duplicates": len(results.duplicates),
        "skipped": len(results.skipped),
        "not_selected": len(results.not_selected),
    }
    kinds = ("written", "rejected", "duplicates", "skipped", "not_selected")
    if sum(counts[kind] for kind in kinds) != files_seen:
        raise RuntimeError(f"counts do not reconcile: {counts}; the dataset was not committed")
    return {
        "counts": {**counts, "augmented_copies": augmented},
        "splits": results.split_sizes(),
        "rejected": results.rejected,
        "duplicates": results.duplicates,
        "skipped": results.skipped,
        "not_selected": results.not_selected,
        "warnings": results.warnings,
    }
