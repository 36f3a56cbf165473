"""Hash-assigned splits for inputs that have none: `--split=train:80,validation:10,test:10`."""

from __future__ import annotations

import dataclasses
import hashlib


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """`--split=train:80,validation:10,test:10`: hash buckets for inputs without splits."""

    percentages: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        try:
            pairs = tuple((name.strip(), float(pct)) for name, pct in (item.split(":") for item in text.split(",")))
        except ValueError:
            raise ValueError(
                f"--split={text}: expected name:percent pairs, e.g. train:80,validation:10,test:10"
            ) from None
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
