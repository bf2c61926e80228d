"""Labelled histograms kept as plain numbers, for paths where prometheus-client's cost shows.

`Histogram.observe` takes a lock and finds the bucket with a Python loop, once per value: a
few microseconds, which the inference path pays per request and shadow mode per run (a
batch of runs shares one latency). `HistogramCounts` counts a value once or many times in
one step, and a whole batch of values with one numpy call; its owner exports it through a
custom collector (prometheus-client's documented extension point) as the same family a
`Histogram` would give. It takes no lock: its owner says which threads may write.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import cast

import numpy as np
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus-client writes bucket bounds (`le`), so these read like its own histograms.
_go_float = cast(Callable[[float], str], floatToGoString)


class HistogramCounts:
    """One histogram family: per label set, a count per bucket (the last is +Inf), and the sum."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._bounds = tuple(buckets)
        self._bound_array = np.asarray(self._bounds, dtype=np.float64)  # for searchsorted
        self._edges = [_go_float(bound) for bound in self._bounds] + ["+Inf"]
        self._counts: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float, count: int = 1) -> None:
        """Count `value` `count` times under the label values `key`."""
        counts = self._counts_of(key)
        counts[bisect_left(self._bounds, value)] += count
        counts[-1] += value * count

    def observe_many(self, key: tuple[str, ...], values: Sequence[float]) -> None:
        """Count each of `values` under the label values `key`."""
        if not values:
            return
        array = np.asarray(values, dtype=np.float64)
        # side="left" puts a value equal to a bound in that bound's bucket (le, inclusive).
        per_bucket = np.bincount(
            np.searchsorted(self._bound_array, array, side="left"),
            minlength=len(self._bounds) + 1,
        )
        counts = self._counts_of(key)
        for index, in_bucket in enumerate(per_bucket.tolist()):
            counts[index] += in_bucket
        counts[-1] += float(array.sum())

    def _counts_of(self, key: tuple[str, ...]) -> list[float]:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0.0] * (len(self._bounds) + 2)
        return counts

    def totals(self, key: tuple[str, ...]) -> tuple[int, float, dict[str, int]]:
        """Under the label values `key`: how many values, their sum, and the count in each
        bucket by its upper bound (not cumulative; empty buckets left out)."""
        counts = self._counts.get(key)
        if counts is None:
            return 0, 0.0, {}
        by_bucket = {
            edge: int(count) for edge, count in zip(self._edges, counts[:-1], strict=True) if count
        }
        return int(sum(counts[:-1])), counts[-1], by_bucket

    def family(self) -> HistogramMetricFamily:
        """The family as prometheus-client exports it: cumulative buckets, then the sum."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, counts in list(self._counts.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for edge, in_bucket in zip(self._edges, counts[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, counts[-1])
        return family


class HistogramCollector(Collector):
    """Exports `HistogramCounts` families, reading them under the lock their writers hold."""

    def __init__(self, lock: AbstractContextManager[object], *families: HistogramCounts) -> None:
        self._lock = lock
        self._families = families

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            exported = [family.family() for family in self._families]
        yield from exported
