"""A fixed, log-spaced latency histogram: O(1) to record, mergeable, good for p50/p99.

Buckets are the same for every histogram: [0, 10 µs) for underflow, then eight buckets per
doubling up to 100 s (each about 9 % wide, so a quantile is estimated within about 9 %), and
[100 s, inf) for overflow. The smallest and largest values seen are kept exactly, and every
estimate is clamped to them.
"""

from __future__ import annotations

import math
from typing import Final

LOWEST_S: Final = 1e-5
HIGHEST_S: Final = 100.0
PER_DOUBLING: Final = 8
_SCALE: Final = PER_DOUBLING / math.log(2)
BUCKETS: Final = math.ceil(math.log(HIGHEST_S / LOWEST_S) * _SCALE)
"""Log-spaced buckets between LOWEST_S and HIGHEST_S (one more on each side)."""


def bucket_of(seconds: float) -> int:
    """The bucket index of a latency: 0 below LOWEST_S, BUCKETS + 1 from HIGHEST_S up."""
    if seconds < LOWEST_S:
        return 0
    index = int(math.log(seconds / LOWEST_S) * _SCALE) + 1
    return index if index <= BUCKETS else BUCKETS + 1


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket, in seconds."""
    if index == 0:
        return 0.0, LOWEST_S
    if index > BUCKETS:
        return HIGHEST_S, math.inf
    return (
        LOWEST_S * math.exp((index - 1) / _SCALE),
        min(HIGHEST_S, LOWEST_S * math.exp(index / _SCALE)),
    )


class LatencyHistogram:
    """Counts of latencies per fixed bucket, with the exact minimum and maximum."""

    __slots__ = ("count", "counts", "max_s", "min_s")

    def __init__(self) -> None:
        self.counts = [0] * (BUCKETS + 2)
        self.count = 0
        self.min_s = math.inf
        self.max_s = 0.0

    def record(self, seconds: float, times: int = 1) -> None:
        """Add `times` observations of `seconds` (negative or non-finite values are ignored)."""
        if not 0.0 <= seconds < math.inf or times <= 0:
            return
        self.counts[bucket_of(seconds)] += times
        self.count += times
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every observation of `other` to this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds (nearest rank, ceil(q * n), interpolated geometrically
        inside its bucket); None when empty. With n * (1 - q) >= 2, the largest observation
        never decides it."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low, high = bucket_bounds(index)
                low, high = max(low, self.min_s), min(high, self.max_s)
                fraction = (rank - seen) / count
                if low <= 0.0 or not math.isfinite(high):
                    value = low + (high - low) * fraction if math.isfinite(high) else low
                else:
                    value = low * (high / low) ** fraction
                return min(max(value, self.min_s), self.max_s)
            seen += count
        return self.max_s  # not reached: the counts add up to self.count
