"""Subsets by count per class (`--split=train:1000/class,...`): in each split, the N images of each class with the
smallest selection hash.

An image's split is decided first, by its content alone (splits.py, in the counts' shares); the subset is then
drawn within its (split, class) by a second hash of the same key. So adding files never moves an image between
splits, and a new file enters a subset only by ranking among its N smallest, displacing the one ranked N-th.
The usable counts are known only after decoding and dedupe, so the job reports each (split, class)'s size and
the driver checks them (`check_selection`) before anything is committed; a class the listing alone shows short
fails before the job (`check_listed`).
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import math
from collections.abc import Iterable, Sequence

import apache_beam as beam

from data_prep.examples import Pointer
from data_prep.options import UserError
from data_prep.results import METRICS_NAMESPACE, NOT_SELECTED, SELECTION, result
from data_prep.splits import PER_CLASS, SplitSpec

# Of one (split, class): how many images it has, and the smallest selection ranks among them, in order.
Found = tuple[int, list[int]]


def selection_rank(key: str) -> int:
    """Independent of the split hash, so the subset is a fresh draw within the split's bucket."""
    return int.from_bytes(hashlib.sha256(b"select:" + key.encode()).digest(), "big")


class SmallestRanks(beam.CombineFn):
    """How many ranks a group has and its `n` smallest distinct ones: memory bounded by n, not by the size of a class.
    Equal ranks (byte-identical files, before dedupe) take one place, so the n are n examples."""

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self) -> tuple[int, list[int]]:
        return 0, []  # Count, and a max-heap (negated ranks) of the smallest seen.

    def add_input(self, accumulator: tuple[int, list[int]], rank: int) -> tuple[int, list[int]]:
        count, heap = accumulator
        if len(heap) < self._n:
            if -rank not in heap:
                heapq.heappush(heap, -rank)
        elif rank < -heap[0] and -rank not in heap:
            heapq.heapreplace(heap, -rank)
        return count + 1, heap

    def merge_accumulators(self, accumulators: Iterable[tuple[int, list[int]]]) -> tuple[int, list[int]]:
        total = 0
        ranks: list[int] = []
        for count, heap in accumulators:
            total += count
            ranks.extend(-negated for negated in heap)
        heap = [-rank for rank in heapq.nsmallest(self._n, set(ranks))]
        heapq.heapify(heap)
        return total, heap

    def extract_output(self, accumulator: tuple[int, list[int]]) -> Found:
        count, heap = accumulator
        return count, sorted(-negated for negated in heap)


class _Select(beam.DoFn):
    """Keeps a pointer ranked within its (split, class)'s cutoff; lists the others as not selected."""

    def setup(self):
        self._not_selected = beam.metrics.Metrics.counter(METRICS_NAMESPACE, NOT_SELECTED)

    def process(self, pointer: Pointer, cutoffs: dict[tuple[str | None, int], int]):
        info = pointer.info
        if selection_rank(info.key) <= cutoffs[(info.split, info.label)]:
            yield pointer
            return
        self._not_selected.inc()
        yield beam.pvalue.TaggedOutput(NOT_SELECTED, result(NOT_SELECTED, path=info.filename, split=info.split))


class SelectPerClass(beam.PTransform):
    """Pointers with their splits in; (selected pointers, not-selected result lines, one selection line per
    (split, class) found) out. A group with fewer images than asked keeps them all; the driver then fails the build."""

    def __init__(self, counts: dict[str, int]):
        super().__init__()
        self._counts = counts

    def expand(self, pointers: beam.PCollection):
        counts = self._counts
        found = (
            pointers
            | "Rank" >> beam.Map(lambda p: ((p.info.split, p.info.label), selection_rank(p.info.key)))
            | "SmallestRanks" >> beam.CombinePerKey(SmallestRanks(max(counts.values())))
        )
        cutoffs = found | "Cutoffs" >> beam.MapTuple(lambda group, f: (group, f[1][: counts[group[0]]][-1]))
        selections = found | "SelectionResults" >> beam.MapTuple(
            lambda group, f: result(SELECTION, split=group[0], label=group[1], available=f[0])
        )
        chosen = pointers | "Select" >> beam.ParDo(_Select(), beam.pvalue.AsDict(cutoffs)).with_outputs(
            NOT_SELECTED, main="selected"
        )
        return chosen.selected, chosen[NOT_SELECTED], selections


def check_fixed_splits(spec: SplitSpec, found: Iterable[str]) -> None:
    """Split folders with counts per class: the counts select within each folder split, so each needs one."""
    folders = sorted(set(found))
    if folders != sorted(spec.counts):
        raise UserError(
            f"{_flag(spec)}: the input's split folders are {', '.join(folders)}; with split folders, give a count per "
            "class for each of them and no other"
        )


def check_listed(spec: SplitSpec, class_names: Sequence[str], placed: Iterable[tuple[str | None, int]]) -> None:
    """Fails before the job when the listing alone shows a class short (decoding and dedupe only lose files):
    `placed` holds each labelled file's (folder split or None, label)."""
    found = collections.Counter(placed)
    fixed = any(split for split, _ in found)
    asked = sum(spec.counts.values())
    short = []
    for label, name in enumerate(class_names):
        if fixed:
            short += [
                f"{name!r} has {found[split, label]} in the {split} split folder ({n} asked)"
                for split, n in spec.per_class
                if found[split, label] < n
            ]
        elif found[None, label] < asked:
            short.append(f"{name!r} has {found[None, label]} ({asked} asked per class in all)")
    if short:
        raise UserError(
            f"{_flag(spec)}: too few files, before any was read: {'; '.join(short)}. Ask for fewer per class or add "
            "images."
        )


def check_selection(
    spec: SplitSpec, class_names: Sequence[str], selections: Iterable[dict], fixed_splits: bool
) -> dict[str, dict[str, dict[str, int]]]:
    """The report's table, split -> class -> {available, selected}; raises UserError if any class fell short.
    `fixed_splits`: the splits came from split folders, not from the hash shares."""
    available = {(s["split"], s["label"]): s["available"] for s in selections}
    table = {
        split: {
            name: {"available": (n := available.get((split, label), 0)), "selected": min(n, count)}
            for label, name in enumerate(class_names)
        }
        for split, count in spec.per_class
    }
    short = [
        f"{name!r} has {row['available']} in {split} ({spec.counts[split]} asked)"
        for split, by_class in table.items()
        for name, row in by_class.items()
        if row["available"] < spec.counts[split]
    ]
    if short:
        raise UserError(_too_few_message(spec, class_names, table, short, fixed_splits))
    return table


def _too_few_message(
    spec: SplitSpec,
    class_names: Sequence[str],
    table: dict[str, dict[str, dict[str, int]]],
    short: list[str],
    fixed_splits: bool,
) -> str:
    in_all = ", ".join(f"{name!r} {sum(table[split][name]['available'] for split in table)}" for name in class_names)
    shares = ", ".join(f"{split} {pct:.3g}%" for split, pct in spec.percentages)
    why = (
        "The split folders fix each image's split"
        if fixed_splits
        else f"Each image's split is drawn by its content hash in the counts' shares ({shares}), which vary, so a "
        f"class needs some margin: about {reliable_total(spec.counts.values())} images per class meet these counts "
        "reliably"
    )
    return (
        f"{_flag(spec)}: too few images: {'; '.join(short)}. Usable images per class in all (after rejected files "
        f"and duplicates): {in_all}, for {sum(spec.counts.values())} asked per class. {why}. Ask for fewer per class "
        "or add images; nothing was committed."
    )


def reliable_total(counts: Iterable[int]) -> int:
    """Images per class at which every split's hash share exceeds its count by 3 standard deviations.

    A split with share p of T images gets Binomial(T, p) of them: the smallest T with
    T p - 3 sqrt(T p (1 - p)) >= n, solved as a quadratic in sqrt(T).
    """
    counts = list(counts)
    total = sum(counts)
    needed = 0
    for n in counts:
        p = n / total
        spread = 3 * math.sqrt(p * (1 - p))
        root = (spread + math.sqrt(spread**2 + 4 * p * n)) / (2 * p)
        needed = max(needed, math.ceil(root**2 - 1e-9))  # Not one more for a float's last bit.
    return needed


def _flag(spec: SplitSpec) -> str:
    return "--split=" + ",".join(f"{split}:{n}{PER_CLASS}" for split, n in spec.per_class)
