"""Hash-assigned splits for inputs that have none: `--split=train:80,validation:10,test:10`,
or counts per class, `--split=train:1000/class,validation:500/class,test:500/class` (drawn by subsets.py)."""

from __future__ import annotations

import dataclasses
import hashlib

PER_CLASS = "/class"
_EXPECTED = (
    "expected name:percent pairs adding up to 100 (train:80,validation:10,test:10) or a count per class for every "
    "split (train:1000/class,validation:500/class,test:500/class)"
)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """`--split`: the hash buckets of inputs without splits and, when given per class, each split's count.

    With counts, the buckets take the counts' shares (1000:500:500 is 50/25/25), so an image's split still depends
    on its content alone; subsets.py then keeps the N images of each class in each split.
    """

    percentages: tuple[tuple[str, float], ...]
    per_class: tuple[tuple[str, int], ...] = ()  # (split, images of each class); empty for percentages.

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        items = [item.split(":") for item in text.split(",")]
        if any(len(item) != 2 for item in items):
            raise ValueError(f"--split={text}: {_EXPECTED}")
        names = [name.strip() for name, _ in items]
        if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
            raise ValueError(f"--split={text}: split names must be distinct identifiers")
        values = [value.strip() for _, value in items]
        counted = [v.endswith(PER_CLASS) for v in values]
        if any(counted) and not all(counted):
            raise ValueError(
                f"--split={text}: give every split as a count per class (train:1000/class) or every split as a "
                "percentage, not both"
            )
        if all(counted):
            return cls._counts(text, names, [v[: -len(PER_CLASS)] for v in values])
        try:
            pairs = tuple(zip(names, map(float, values), strict=True))
        except ValueError:
            raise ValueError(f"--split={text}: {_EXPECTED}") from None
        if any(p < 0 for _, p in pairs) or abs(sum(p for _, p in pairs) - 100) > 1e-6:
            raise ValueError(f"--split={text}: percentages must be non-negative and add up to 100")
        return cls(pairs)

    @classmethod
    def _counts(cls, text: str, names: list[str], values: list[str]) -> SplitSpec:
        if not all(v.isdigit() and int(v) > 0 for v in values):
            raise ValueError(f"--split={text}: counts per class must be whole numbers of at least 1")
        counts = [int(v) for v in values]
        total = sum(counts)
        return cls(
            percentages=tuple((name, 100 * n / total) for name, n in zip(names, counts, strict=True)),
            per_class=tuple(zip(names, counts, strict=True)),
        )

    @property
    def counts(self) -> dict[str, int]:
        """Images of each class per split; empty unless --split gave counts per class."""
        return dict(self.per_class)

    def assign(self, key: str) -> str:
        """Depends on the key alone, so adding files never moves an existing one."""
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key.encode()).digest()[:8], "big") / 2**64 * 100
        cumulative = 0.0
        for name, pct in self.percentages:
            cumulative += pct
            if bucket < cumulative:
                return name
        return self.percentages[-1][0]
