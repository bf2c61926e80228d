"""Shadow mode as one service: queue shadow runs, record their comparisons, review them.

The request path draws the sample (`sample`) and hands the request, once its primary has
answered or failed, to `submit`, which offers one run per drawn shadow to that version's
executor (`gateway.execution`): the executor's bounded shadow queue admits it or refuses it,
and a refused run is dropped and counted, never waited for. The executor runs the shadow's
queued runs as one call, on its shadow thread, within the shadows' CPU budget, and hands
them back to `_answered` there, which turns each into a comparison record for the bounded
recorder, counts it, and posts what the guard needs (the shadow's latency, error and
predicted classes, for live accuracy from feedback) to the event loop. A background task
flushes the records to the store, prunes them, and logs dropped work. Nothing a shadow does
reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from gateway.errors import ModelNotReady
from gateway.execution.batch import Answer
from gateway.execution.pool import Executors
from gateway.execution.shadow_lane import CPU_BUDGET, ShadowRun
from gateway.flags.document import Release, ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow.policy import ShadowConfig, ShadowPolicy
from gateway.shadow.recorder import ComparisonRecorder
from gateway.shadow.records import RecordMaker, ShadowJob, ShadowRequest
from gateway.shadow.summary import LiveAccuracy, ShadowSummary, summarise
from gateway.state import ComparisonRecord, Store

__all__ = ["ShadowOutcome", "ShadowRequest", "ShadowService"]

PRIMARY_BUSY = "primary_busy"
"""Why a shadow run is dropped while the primaries have no spare capacity."""

_log = structlog.get_logger("gateway.shadow")

MAX_DISAGREEMENTS = 1000


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """What the guard learns from one shadow run: its latency or error, and its predicted
    classes (joined to feedback for the shadow's live accuracy)."""

    model: str
    version: str
    request_id: str
    latency_s: float | None
    error: str | None
    """The error kind (exception, invalid_output, timeout), None when it answered."""
    classes: list[str] | None


OutcomeSink = Callable[[Sequence[ShadowOutcome]], None]
AccuracySource = Callable[[str], Mapping[tuple[str, str], LiveAccuracy]]
"""model -> (primary, shadow) -> both sides' live accuracy from feedback."""


class ShadowService:
    """Runs shadow versions on their executors, records the comparisons, answers the review."""

    def __init__(
        self,
        registry: ModelRegistry,
        executors: Executors,
        metrics: GatewayMetrics,
        store: Store,
        config: ShadowConfig,
        *,
        on_outcomes: OutcomeSink | None = None,
        live_accuracy: AccuracySource | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._executors = executors
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._on_outcomes = on_outcomes
        self._live_accuracy = live_accuracy
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not secrets
        self._records = RecordMaker(registry, config)
        self.recorder = ComparisonRecorder(store, metrics, capacity=config.buffer_records)
        self._policies: dict[str, tuple[Release, ShadowPolicy]] = {}
        self._drops: Counter[tuple[str, str, str, str]] = Counter()
        self._drops_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        executors.on_shadow_answers(self._answered)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._housekeeping(), name="shadow-housekeeping")]

    async def stop(self) -> None:
        """Start no more shadow runs, then write what is buffered."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.flush()
        self._log_drops()

    # -- the request path (event loop) -------------------------------------------------------

    def sample(self, decision: RouteDecision, primaries_in_flight: int = 0) -> list[ShadowTarget]:
        """The shadows of `decision` this request runs, drawn by their sample percentages
        (first, so that the requests a 10 % shadow skips build nothing more). Shadows use
        spare capacity only: while more than `max_primaries_in_flight` primaries are in
        flight (`primaries_in_flight`, this one included), or the shadows' CPU budget is
        spent, the drawn ones are dropped here, before anything is built for them."""
        if self._closed:
            return []
        drawn = []
        for target in decision.shadows:
            percent = float(target.percent)
            if percent >= 100.0 or (percent > 0.0 and self._random() * 100.0 < percent):
                drawn.append(target)
        if not drawn:
            return drawn
        limit = self.config.max_primaries_in_flight
        if limit and primaries_in_flight > limit:
            refused = PRIMARY_BUSY
        else:
            budget = self._executors.shadow_budget
            if budget is None or budget.admits():
                return drawn
            refused = CPU_BUDGET
        for target in drawn:
            self._drop(decision.model, decision.serve, target.version, refused)
        return []

    def submit(self, request: ShadowRequest, targets: Sequence[ShadowTarget]) -> int:
        """Offer the request's run of each of `targets` to its version's executor; how many
        were queued. Never blocks and never raises: a refused run is dropped and counted."""
        decision = request.decision
        policy = self._policy_of(decision.release)
        deadline = time.monotonic() + policy.timeout_s
        rows = _rows(request)
        job = ShadowJob(request, policy)
        queued = 0
        for target in targets:
            try:
                executor = self._executors.get(decision.model, target.version)
            except ModelNotReady:
                self._drop(decision.model, decision.serve, target.version, "unavailable")
                continue
            refused = executor.offer_shadow(ShadowRun(request.inputs, rows, deadline, job))
            if refused is None:
                queued += 1
            else:
                self._drop(decision.model, decision.serve, target.version, refused)
        return queued

    def _policy_of(self, release: Release | None) -> ShadowPolicy:
        defaults = self.config.defaults
        if release is None:
            return defaults
        cached = self._policies.get(release.key)
        if cached is not None and cached[0] is release:
            return cached[1]
        policy = release.policy.shadow.resolve(defaults)
        self._policies[release.key] = (release, policy)
        return policy

    def _drop(self, model: str, primary: str, shadow: str, reason: str) -> None:
        self._metrics.count_shadow(model, primary, shadow, "dropped")
        self._metrics.count_shadow_drop(reason)
        with self._drops_lock:
            self._drops[(model, primary, shadow, reason)] += 1

    # -- answers (an executor's shadow thread, or the loop for timeouts) ----------------------

    def _answered(
        self, model: str, version: str, runs: Sequence[ShadowRun], answers: Sequence[Answer]
    ) -> None:
        """Record shadow runs that ended; a bug here is logged, never raised into the
        executor."""
        try:
            records, outcomes = self._records_of(model, version, runs, answers)
        except Exception:
            _log.exception("shadow_records_failed", model=model, shadow=version)
            return
        self._count(records)
        self.recorder.add(records)
        if self._on_outcomes is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                self._loop.call_soon_threadsafe(self._on_outcomes, outcomes)

    def _records_of(
        self, model: str, version: str, runs: Sequence[ShadowRun], answers: Sequence[Answer]
    ) -> tuple[list[ComparisonRecord], list[ShadowOutcome]]:
        records = []
        outcomes = []
        for run, answer in zip(runs, answers, strict=True):
            job: ShadowJob = run.job
            answered = answer.outputs is not None
            records.append(self._records.record(job, version, answer))
            outcomes.append(
                ShadowOutcome(
                    model,
                    version,
                    job.request.request_id,
                    answer.latency_s if answered else None,
                    None if answered else answer.kind,
                    answer.classes,
                )
            )
        return records, outcomes

    def _count(self, records: Sequence[ComparisonRecord]) -> None:
        """Count records in the metrics, once per pair and outcome."""
        metrics = self._metrics
        outcomes: Counter[tuple[str, str, str, str]] = Counter()
        compared: dict[tuple[str, str, str], tuple[int, int, list[float]]] = {}
        for record in records:
            pair = (record.model, record.primary_version, record.shadow_version)
            outcomes[(*pair, record.outcome)] += 1
            if record.shadow_latency_ms is not None and record.outcome != "timeout":
                metrics.observe_shadow_latency(
                    record.model, record.shadow_version, record.shadow_latency_ms / 1000
                )
            if record.outcome != "compared":
                continue
            rows, agreed, diffs = compared.get(pair, (0, 0, []))
            if record.agreed_rows is not None:
                rows, agreed = rows + record.rows, agreed + record.agreed_rows
            if record.max_abs_diff is not None:
                diffs.append(record.max_abs_diff)
            compared[pair] = (rows, agreed, diffs)
        for (model, primary, shadow, outcome), count in outcomes.items():
            metrics.count_shadow(model, primary, shadow, outcome, count)
        for (model, primary, shadow), (rows, agreed, diffs) in compared.items():
            metrics.observe_shadow_comparisons(
                model, primary, shadow, rows=rows, agreed_rows=agreed, differences=diffs
            )

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

    def take_drops(self) -> dict[tuple[str, str, str, str], int]:
        """Runs dropped since the last call, by (model, primary, shadow, reason): the reason
        is `queue_full` (the shadow version's queue had no room) or `unavailable` (it has no
        executor: it failed to load)."""
        with self._drops_lock:
            drops, self._drops = dict(self._drops), Counter()
        return drops

    def _log_drops(self) -> None:
        drops = self.take_drops()
        lost_records = self.recorder.take_dropped()
        if not drops and not lost_records:
            return
        by_pair: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        for (model, primary, shadow, reason), count in drops.items():
            by_pair[f"{model}:{primary}->{shadow}"] += count
            by_reason[reason] += count
        _log.warning(
            "shadow_work_dropped",
            runs_dropped=sum(drops.values()),
            by_pair=dict(by_pair),
            by_reason=dict(by_reason),
            records_dropped=lost_records,
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
        accuracy = self._live_accuracy(model) if self._live_accuracy is not None else None
        return summarise(model, records, since=since, until=until, accuracy=accuracy)

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


def _rows(request: ShadowRequest) -> int:
    for array in request.inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
