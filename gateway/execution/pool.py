"""Every loaded version's executor, built once by the composition root."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import structlog

from gateway.errors import ModelNotReady
from gateway.execution.batch import Answer
from gateway.execution.budget import CpuBudget
from gateway.execution.executor import VersionExecutor
from gateway.execution.shadow_lane import ShadowRun, ShadowSink
from gateway.observability.execution_metrics import ExecutionMetrics
from gateway.repository import ModelRegistry, VersionState

_log = structlog.get_logger("gateway.execution")

SWEEP_INTERVAL_S = 0.02
"""How often overdue shadow runs are settled as timeouts (primaries: each executor's timer)."""
JOIN_TIMEOUT_S = 2.0


class Executors:
    """An executor per READY version; looked up by (model, version) on the request path."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: ExecutionMetrics,
        shadow_budget: CpuBudget | None = None,
    ) -> None:
        """`shadow_budget`: the CPU time all versions' shadow runs share (None: no limit but
        their queues)."""
        self._shadow_sink: ShadowSink | None = None
        self.shadow_budget = shadow_budget
        self._executors: dict[tuple[str, str], VersionExecutor] = {}
        for entry in registry:
            for loaded in entry.versions.values():
                if loaded.state is not VersionState.READY:
                    continue
                manifest, runtime = loaded.ready_runtime()
                assert loaded.execution is not None  # a READY version has its config
                self._executors[(entry.name, loaded.version)] = VersionExecutor(
                    entry.name,
                    loaded.version,
                    manifest,
                    runtime,
                    loaded.execution,
                    metrics,
                    self._shadow_done,
                    shadow_budget,
                )
        metrics.read_depths_from(self._depths)
        self._metrics = metrics
        self._sweeper: asyncio.Task[None] | None = None

    def on_shadow_answers(self, sink: ShadowSink) -> None:
        """Where every executor hands its finished (or timed-out) shadow runs."""
        self._shadow_sink = sink

    def get(self, model: str, version: str) -> VersionExecutor:
        executor = self._executors.get((model, version))
        if executor is None:
            raise ModelNotReady(f"model {model!r} version {version!r} has no executor: not loaded")
        return executor

    def __iter__(self) -> Iterator[VersionExecutor]:
        return iter(self._executors.values())

    def status(self, model: str, versions: Iterable[str]) -> dict[str, dict[str, Any]]:
        """For each of the model's `versions` that has an executor: its configuration, what
        waits in its queues now, and its figures since the process started."""
        found: dict[str, dict[str, Any]] = {}
        for version in versions:
            executor = self._executors.get((model, version))
            if executor is None:
                continue
            primaries, shadows = executor.depths()
            found[version] = {
                "config": msgspec.to_builtins(executor.config),
                "batching": executor.max_rows > 1,
                "queued": {"primary": primaries, "shadow": shadows},
                "busy_instances": executor.busy,
                **self._metrics.summary(model, version),
            }
        return found

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for executor in self._executors.values():
            executor.bind(loop)
        self._sweeper = asyncio.create_task(self._sweep(), name="executor-shadow-timeouts")

    async def stop(self) -> None:
        """Close every executor, then give their threads a moment to end (a thread stuck in
        a hung call is a daemon and is left behind)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for executor in self._executors.values():
            executor.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for executor in self._executors.values():
            await asyncio.to_thread(executor.join, max(0.0, deadline - time.monotonic()))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            for executor in self._executors.values():
                try:
                    executor.expire_shadows(now)
                except Exception:
                    _log.exception("shadow_expiry_failed", model=executor.model)

    def _shadow_done(
        self, model: str, version: str, runs: Sequence[ShadowRun], answers: Sequence[Answer]
    ) -> None:
        sink = self._shadow_sink
        if sink is not None:
            sink(model, version, runs, answers)

    def _depths(self) -> Iterator[tuple[str, str, int, int]]:
        for (model, version), executor in list(self._executors.items()):
            primaries, shadows = executor.depths()
            yield model, version, primaries, shadows
