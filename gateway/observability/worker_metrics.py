"""`/metrics` for the whole server when it runs several worker processes.

Each worker has its own registry (its own counters, kept cheap on its request path), so a
scrape answered by one worker would report its share only. Like prometheus-client's
multiprocess mode, each worker writes its samples to a shared directory (here a snapshot
every second, and at stop), and the worker that answers a scrape adds every worker's up:
counters and histograms summed over every worker that ever wrote (a finished worker's counts
stay counted), gauges summed over the workers alive (`MIN_GAUGES`: the smallest instead: a
flag version or a readiness holds for the server once it holds in every worker), and
the shadow agreement ratio recomputed from the summed rows. The answering worker reads its
own registry afresh, so its own latest counts are never behind.

Why not prometheus-client's multiprocess mode itself: it only covers the library's own metric
classes (their values live in memory-mapped files chosen at import time), while much of the
gateway's figures come from custom collectors (histograms kept as bucket counts under one
lock, the executors' queue depths) that it would leave out of every scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.registry import Collector

_log = structlog.get_logger("gateway.observability")

MIN_GAUGES = frozenset({"gateway_model_version_ready", "gateway_flag_version"})
AGREEMENT = "gateway_shadow_agreement_ratio"
ROWS = "gateway_shadow_rows_total"


class _Sample(msgspec.Struct, array_like=True):
    name: str
    labels: dict[str, str]
    value: float


class _Family(msgspec.Struct, array_like=True):
    name: str
    kind: str
    documentation: str
    samples: list[_Sample]


class _Snapshot(msgspec.Struct):
    pid: int
    families: list[_Family]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Snapshot).decode


def _families(registry: CollectorRegistry) -> list[_Family]:
    return [
        _Family(
            family.name,
            family.type,
            family.documentation,
            [
                _Sample(s.name, dict(s.labels), float(s.value))
                for s in family.samples
                if not s.name.endswith("_created")
            ],
        )
        for family in registry.collect()
    ]


class WorkerMetrics:
    """Writes this worker's snapshot to `directory` and merges every worker's for a scrape."""

    def __init__(
        self, registry: CollectorRegistry, directory: Path, *, interval_s: float = 1.0
    ) -> None:
        self._registry = registry
        self._directory = directory
        self._interval_s = interval_s
        self._pid = os.getpid()
        self._task: asyncio.Task[None] | None = None

    @property
    def _path(self) -> Path:
        return self._directory / f"{self._pid}.msgpack"

    def write(self) -> None:
        """Write this worker's snapshot (atomically: a scrape never reads half of one)."""
        self._directory.mkdir(parents=True, exist_ok=True)
        data = _encode(_Snapshot(self._pid, _families(self._registry)))
        partial = self._path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(self._path)

    async def start(self) -> None:
        await asyncio.to_thread(self.write)
        self._task = asyncio.create_task(self._write_every(), name="worker-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.write)

    async def _write_every(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await asyncio.to_thread(self.write)
            except OSError:
                _log.exception("worker_metrics_not_written", directory=str(self._directory))

    def exposition(self) -> bytes:
        """Every worker's samples added up, in the Prometheus text format."""
        snapshots = {self._pid: _families(self._registry)}
        for path in self._directory.glob("*.msgpack"):
            try:
                snapshot = _decode(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue  # replaced while read, or not a snapshot: the next scrape has it
            if snapshot.pid != self._pid:
                snapshots[snapshot.pid] = snapshot.families
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Merged(snapshots))
        return generate_latest(merged)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Merged(Collector):
    def __init__(self, snapshots: dict[int, list[_Family]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        kinds: dict[str, tuple[str, str]] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for pid, families in self._snapshots.items():
            alive = _alive(pid)
            for family in families:
                if family.kind == "gauge" and not alive:
                    continue
                kinds.setdefault(family.name, (family.kind, family.documentation))
                samples = values.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if family.kind == "gauge" and family.name in MIN_GAUGES:
                        samples[key] = min(samples.get(key, sample.value), sample.value)
                    else:
                        samples[key] = samples.get(key, 0.0) + sample.value
        if AGREEMENT in values:
            values[AGREEMENT] = _agreement(values.get(_family_of(ROWS, kinds), {}))
        for name, (kind, documentation) in kinds.items():
            metric = Metric(name, documentation, kind)
            for (sample_name, labels), value in values.get(name, {}).items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


def _family_of(sample: str, kinds: dict[str, tuple[str, str]]) -> str:
    return sample if sample in kinds else sample.removesuffix("_total")


def _agreement(
    rows: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agreement ratio per pair from the summed rows (a ratio does not add up)."""
    by_pair: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for (_, labels), value in rows.items():
        result = dict(labels).get("result")
        pair = tuple(item for item in labels if item[0] != "result")
        totals = by_pair.setdefault(pair, [0.0, 0.0])
        totals[0] += value if result == "agree" else 0.0
        totals[1] += value
    return {(AGREEMENT, pair): agreed / total for pair, (agreed, total) in by_pair.items() if total}
