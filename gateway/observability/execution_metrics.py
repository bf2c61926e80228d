"""The executors' metrics: queue depth, batch sizes, time queued, timeouts, overloads, late
results, per model version.

Executor threads record a batch at a time under one lock (a call's requests share one step);
queue depths are read from the executors at scrape time, so the request path pays nothing
for them. Exported through a custom collector as the families prometheus-client would give.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.observability.histograms import HistogramCounts

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

Depths = Callable[[], Iterable[tuple[str, str, int, int]]]
"""(model, version, primary requests waiting, shadow runs waiting) for every executor."""

_Key = tuple[str, str, str]  # model, version, priority


def _by_priority(counts: dict[_Key, int], key: tuple[str, str]) -> dict[str, int]:
    return {priority: counts.get((*key, priority), 0) for priority in ("primary", "shadow")}


class ExecutionMetrics(Collector):
    """`gateway_executor_*` families (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timeouts: dict[_Key, int] = {}
        self._overloads: dict[_Key, int] = {}
        self._late: dict[tuple[str, str], int] = {}
        self._depths: Depths = tuple
        self._batch_rows = HistogramCounts(
            "gateway_executor_batch_size",
            "Rows per model call, by model and version (requests queued together run as one).",
            ["model", "version"],
            BATCH_BUCKETS,
        )
        self._queued = HistogramCounts(
            "gateway_executor_queue_seconds",
            "Time a primary request waited in its version's queue before its call started.",
            ["model", "version"],
            QUEUE_BUCKETS,
        )

    def read_depths_from(self, depths: Depths) -> None:
        """Where queue depths are read at scrape time (the executor pool)."""
        self._depths = depths

    def observe_batch(self, model: str, version: str, rows: int, waits: Sequence[float]) -> None:
        """One call of `rows` rows; `waits` are its primary requests' times in the queue."""
        with self._lock:
            self._batch_rows.observe((model, version), rows)
            self._queued.observe_many((model, version), waits)

    def count_timeout(self, model: str, version: str, priority: str, count: int = 1) -> None:
        with self._lock:
            key = (model, version, priority)
            self._timeouts[key] = self._timeouts.get(key, 0) + count

    def count_overload(self, model: str, version: str, priority: str) -> None:
        with self._lock:
            key = (model, version, priority)
            self._overloads[key] = self._overloads.get(key, 0) + 1

    def count_late(self, model: str, version: str, count: int) -> None:
        with self._lock:
            self._late[(model, version)] = self._late.get((model, version), 0) + count

    def summary(self, model: str, version: str) -> dict[str, object]:
        """This version's figures since the process started, for the release status: calls
        and their rows (with the batch size histogram), time queued, and by priority the
        timeouts and overloads; late results."""
        key = (model, version)
        with self._lock:
            calls, rows, by_size = self._batch_rows.totals(key)
            waits, waited_s, _ = self._queued.totals(key)
            return {
                "calls": calls,
                "rows": int(rows),
                "mean_batch_size": rows / calls if calls else None,
                "batch_sizes": by_size,
                "mean_queue_ms": 1000 * waited_s / waits if waits else None,
                "timeouts": _by_priority(self._timeouts, key),
                "overloads": _by_priority(self._overloads, key),
                "late_results": self._late.get(key, 0),
            }

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "gateway_executor_queue_depth",
            "Requests waiting in a version's queue now, by priority (primary, shadow).",
            labels=["model", "version", "priority"],
        )
        versions = []
        for model, version, primaries, shadows in self._depths():
            depth.add_metric([model, version, "primary"], primaries)
            depth.add_metric([model, version, "shadow"], shadows)
            versions.append((model, version))
        yield depth
        timeouts = CounterMetricFamily(
            "gateway_executor_timeouts",
            "Requests abandoned at their deadline, by model, version and priority.",
            labels=["model", "version", "priority"],
        )
        overloads = CounterMetricFamily(
            "gateway_executor_overloads",
            "Requests refused because their version's queue was full (primaries answered by "
            "the fallback or 503, shadows dropped), by model, version and priority.",
            labels=["model", "version", "priority"],
        )
        late = CounterMetricFamily(
            "gateway_executor_late_results",
            "Calls that finished after their request was abandoned (the result was dropped).",
            labels=["model", "version"],
        )
        # Every executor's series from the start, at 0 until something happens: a query over
        # them (a rate, an alert) sees no gap between "none yet" and "no such series".
        with self._lock:
            counted = [key[:2] for key in (*self._timeouts, *self._overloads)]
            for pair in dict.fromkeys([*versions, *counted, *self._late]):
                for priority in ("primary", "shadow"):
                    key = (*pair, priority)
                    timeouts.add_metric(list(key), self._timeouts.get(key, 0))
                    overloads.add_metric(list(key), self._overloads.get(key, 0))
                late.add_metric(list(pair), self._late.get(pair, 0))
            families = [self._batch_rows.family(), self._queued.family()]
        yield from (timeouts, overloads, late, *families)
