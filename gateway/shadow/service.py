"""Shadow mode as one service: run shadows, keep their records, prune them, review them.

The composition root builds one `ShadowService`; the inference handlers hand it each routed
request after the primary answered, and the admin API reads its summaries. A background task
flushes buffered records to the store, prunes them by age and count, and logs dropped work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import structlog

from gateway.flags.document import ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow.load import LoopLoad
from gateway.shadow.policy import ShadowConfig
from gateway.shadow.recorder import ComparisonRecorder
from gateway.shadow.runner import ShadowRequest, ShadowRunner
from gateway.shadow.summary import ShadowSummary, summarise
from gateway.state import ComparisonRecord, Store

_log = structlog.get_logger("gateway.shadow")

MAX_DISAGREEMENTS = 1000


class ShadowService:
    """Runs shadow versions, records the comparisons, and answers the review."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: GatewayMetrics,
        store: Store,
        config: ShadowConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self.recorder = ComparisonRecorder(store, metrics, capacity=config.buffer_records)
        self.load = LoopLoad(shed_start=config.shed_start, shed_full=config.shed_full)
        self.runner = ShadowRunner(registry, metrics, config, self.recorder.add, load=self.load)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._housekeeping(), name="shadow-housekeeping"),
            asyncio.create_task(self.load.run(self._metrics.set_loop_busy), name="loop-load"),
            asyncio.create_task(self.runner.watch(), name="shadow-timeouts"),
        ]

    async def stop(self) -> None:
        """Start no more shadow runs, then write what is buffered (runs still in their
        threads are abandoned: their records would come after the store closes)."""
        self.runner.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.flush()
        self._log_drops()

    # -- the request path --------------------------------------------------------------------

    def sample(self, decision: RouteDecision) -> list[ShadowTarget]:
        """The shadows this request runs (drawn by their sample percentages)."""
        return self.runner.sample(decision)

    def submit(self, request: ShadowRequest, targets: Sequence[ShadowTarget] | None = None) -> None:
        """Start the request's shadow runs (`targets` from `sample`, None: draw them now);
        a failure here is logged, never raised."""
        try:
            self.runner.submit(request, targets)
        except Exception:
            _log.exception("shadow_submit_failed", model=request.decision.model)

    # -- storage -------------------------------------------------------------------------------

    async def flush(self) -> int:
        return await self.recorder.flush()

    async def prune(self) -> int:
        """Delete records past the retention age and beyond the most kept."""
        deleted = await self._store.prune_comparisons(
            older_than=self._clock() - self.config.retention_s,
            keep_newest=self.config.max_records,
        )
        if deleted:
            _log.info("shadow_records_pruned", deleted=deleted)
        return deleted

    async def _housekeeping(self) -> None:
        config = self.config
        last_prune = last_drop_log = time.monotonic()
        while True:
            await asyncio.sleep(config.flush_interval_s)
            now = time.monotonic()
            try:
                await self.flush()
                if now - last_prune >= config.prune_interval_s:
                    last_prune = now
                    await self.prune()
            except Exception:
                _log.exception("shadow_housekeeping_failed")
            if now - last_drop_log >= config.drop_log_interval_s:
                last_drop_log = now
                self._log_drops()

    def _log_drops(self) -> None:
        drops = self.runner.take_drops()
        lost_records = self.recorder.take_dropped()
        if not drops and not lost_records:
            return
        by_pair: dict[str, int] = {}
        by_reason: dict[str, int] = {}
        for (model, primary, shadow, reason), count in sorted(drops.items()):
            pair = f"{model}:{primary}->{shadow}"
            by_pair[pair] = by_pair.get(pair, 0) + count
            by_reason[reason] = by_reason.get(reason, 0) + count
        _log.warning(
            "shadow_work_dropped",
            runs_dropped=sum(drops.values()),
            by_pair=by_pair,
            by_reason=by_reason,
            records_dropped=lost_records,
            threads=self.config.threads,
            loop_busy=round(self.load.busy, 3),
        )

    # -- review --------------------------------------------------------------------------------

    async def summary(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        primary: str | None = None,
        shadow: str | None = None,
    ) -> ShadowSummary:
        """Per (primary, shadow) pair and per cohort, over `since <= at < until`."""
        await self.flush()
        records = await self._store.comparisons(
            model, since=since, until=until, primary=primary, shadow=shadow, payload=False
        )
        return summarise(model, records, since=since, until=until)

    async def disagreements(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        primary: str | None = None,
        shadow: str | None = None,
        limit: int = 50,
    ) -> list[ComparisonRecord]:
        """Requests whose top classes differ, newest first, with outputs (and inputs if kept)."""
        await self.flush()
        return await self._store.comparisons(
            model,
            since=since,
            until=until,
            primary=primary,
            shadow=shadow,
            disagreements_only=True,
            limit=limit,
        )
