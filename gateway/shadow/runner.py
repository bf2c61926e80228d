"""Running shadow versions beside the primary, off the request path, within a budget.

The request path calls `ShadowRunner.submit` once the primary has answered (or failed). For
each shadow target of the route it draws the sample, asks the loop's load whether the primary
leaves room (`load.LoopLoad`), then takes a slot of the concurrency budget without waiting:
when the primary is too busy or the budget is full the run is dropped and counted, never
queued beyond the budget. An admitted run is appended to a queue; that is all the request
path does (no thread is woken per request but the first of a batch).

A few daemon worker threads drain the queue in batches: they wait `batch_window_s` after the
first run arrives so that more gather, then take the queued runs of one (model, version),
run them as one batch and record each run (`batch.VersionBatches`), pausing every few
records so that the loop never waits long for the GIL.

A slot is held from the submit until the run's batch returns, so a version that hangs keeps
its slots (and its worker) busy: later runs are dropped, threads never pile up, and other
versions' runs go on in other batches. The run itself is settled as a timeout once the
release's timeout passes, by `watch` on the event loop; its late answer is discarded. The
workers are daemon threads, so a hung model cannot hold up the process's exit. Nothing a
shadow does reaches the client's response: every failure becomes a record.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from gateway.flags.document import Release, ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow import gil
from gateway.shadow.batch import VersionBatches
from gateway.shadow.jobs import QUEUED, RUNNING, SETTLED, ShadowJob, ShadowRequest
from gateway.shadow.load import LoopLoad, thread_demand_s
from gateway.shadow.policy import ShadowConfig, ShadowPolicy, release_policy
from gateway.shadow.records import RecordMaker
from gateway.state import AgreementBatch, ComparisonRecord

__all__ = ["RecordSink", "ShadowRequest", "ShadowRunner"]

_log = structlog.get_logger("gateway.shadow")

RecordSink = Callable[[Sequence[ComparisonRecord | AgreementBatch]], object]
"""Where finished records go, a batch at a time; called from worker threads and the event
loop alike."""


class ShadowRunner:
    """Runs shadow targets in batches on a few worker threads; see the module's description."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: GatewayMetrics,
        config: ShadowConfig,
        sink: RecordSink,
        *,
        load: LoopLoad | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._config = config
        self._sink = sink
        self._load = load
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not secrets
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[ShadowJob] = deque()
        self._jobs: set[ShadowJob] = set()  # every job holding a slot
        self._earliest_deadline = math.inf  # no job in `_jobs` is due before it
        self._in_flight = 0
        self._in_flight_by_model: dict[str, int] = {}
        self._max_in_flight = config.threads * config.batch_max
        self._drops: Counter[tuple[str, str, str, str]] = Counter()
        self._policies: dict[str, tuple[Release, ShadowPolicy]] = {}
        self._records = RecordMaker(registry, config)
        self._batches = VersionBatches(registry, metrics, self._records)
        self._workers: list[threading.Thread] = []
        self._closed = False

    # -- the request path ------------------------------------------------------------------

    def sample(self, decision: RouteDecision) -> list[ShadowTarget]:
        """The shadows of `decision` this request runs, drawn by their sample percentages.

        The request path calls this first, so that the 90 % of requests a 10 % shadow skips
        build nothing more."""
        if self._closed:
            return []
        drawn = []
        for target in decision.shadows:
            percent = float(target.percent)
            if percent >= 100.0 or (percent > 0.0 and self._random() * 100.0 < percent):
                drawn.append(target)
        return drawn

    def submit(self, request: ShadowRequest, targets: Sequence[ShadowTarget] | None = None) -> int:
        """Queue the shadow runs of `request` that fit the budget; return how many.

        `targets` are the shadows `sample` drew (None: draw them here). Never blocks and
        never raises for a shadow's sake: a busy primary or a full budget drops the run.
        Timeouts are enforced by `watch` (a task on the event loop).
        """
        decision = request.decision
        if targets is None:
            targets = self.sample(decision)
        if not targets or self._closed:
            return 0
        policy = self._policy_of(decision.release)
        now = time.monotonic()
        model, primary = decision.model, decision.serve
        queued = 0
        for target in targets:
            if self._load is not None and not self._load.admit():
                self._drop(model, primary, target.version, "load")
                continue
            job = ShadowJob(request, target.version, policy, now + policy.timeout_s)
            if not self._enqueue(job):
                self._drop(model, primary, target.version, "budget")
                continue
            queued += 1
        return queued

    def _enqueue(self, job: ShadowJob) -> bool:
        model = job.request.decision.model
        with self._cond:
            held = self._in_flight_by_model.get(model, 0)
            if (
                self._closed
                or self._in_flight >= self._max_in_flight
                or held >= min(job.policy.concurrency, self._max_in_flight)
            ):
                return False
            self._in_flight += 1
            self._in_flight_by_model[model] = held + 1
            self._jobs.add(job)
            self._earliest_deadline = min(self._earliest_deadline, job.deadline)
            self._queue.append(job)
            if len(self._queue) == 1:
                if not self._workers:
                    self._start_workers()
                self._cond.notify()
        return True

    def _start_workers(self) -> None:
        for index in range(self._config.threads):
            worker = threading.Thread(
                target=self._work, name=f"gateway-shadow-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _drop(self, model: str, primary: str, shadow: str, reason: str) -> None:
        self._metrics.count_shadow(model, primary, shadow, "dropped")
        self._metrics.count_shadow_drop(reason)
        with self._cond:
            self._drops[(model, primary, shadow, reason)] += 1

    def _release(self, jobs: Sequence[ShadowJob]) -> None:
        """Give the slots of finished (or never started) runs back; the caller holds the lock."""
        for job in jobs:
            self._in_flight -= 1
            self._in_flight_by_model[job.request.decision.model] -= 1
            self._jobs.discard(job)

    def _policy_of(self, release: Release | None) -> ShadowPolicy:
        defaults = self._config.defaults
        if release is None:
            return defaults
        cached = self._policies.get(release.key)
        if cached is not None and cached[0] is release:
            return cached[1]
        policy = release_policy(release.policy, defaults)
        self._policies[release.key] = (release, policy)
        return policy

    # -- the worker threads -----------------------------------------------------------------

    def _work(self) -> None:
        config = self._config
        demand = thread_demand_s()  # read once a batch: a /proc read costs a few microseconds
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            if config.batch_window_s > 0:
                time.sleep(config.batch_window_s)  # let a batch gather (the GIL is free)
            with self._cond:
                batch = self._take_batch(config.batch_max)
                if self._queue:
                    self._cond.notify()  # more runs wait: wake another worker
            if batch:
                self._run_batch(batch)
                del batch  # its requests go here, not under the lock the request path takes
                if self._load is not None:  # the thread's demand since the last batch's end
                    demand, before = thread_demand_s(), demand
                    self._load.add_shadow_cpu(demand - before)
                gil.leave_gil()

    def _take_batch(self, most: int) -> list[ShadowJob]:
        """Up to `most` queued runs of the first queued (model, version), in order; the lock
        is held. A batch holds one version, so a version that hangs holds up only its own
        runs. Runs that timed out while queued leave the queue and give their slots back."""
        batch: list[ShadowJob] = []
        expired: list[ShadowJob] = []
        others: deque[ShadowJob] = deque()
        key: tuple[str, str] | None = None
        while self._queue:
            job = self._queue.popleft()
            if job.state != QUEUED:
                expired.append(job)
                continue
            job_key = (job.request.decision.model, job.version)
            key = key or job_key
            if job_key == key and len(batch) < most:
                job.state = RUNNING
                batch.append(job)
            else:
                others.append(job)
        self._queue = others
        self._release(expired)
        return batch

    def _run_batch(self, batch: list[ShadowJob]) -> None:
        """Run a batch `_take_batch` built (one model and version) and emit its records."""
        model, version = batch[0].request.decision.model, batch[0].version
        try:
            records = self._batches.run(model, version, batch, self._claim)
        except Exception as exc:  # a bug of ours must not kill the worker or leak slots
            _log.exception("shadow_run_failed", model=model, shadow=version)
            claimed = self._claim(batch)
            records = [
                *self._records.internal_errors(
                    (job for job, keep in zip(batch, claimed, strict=True) if keep), exc
                )
            ]
        finally:
            with self._cond:
                self._release(batch)
        self._emit(records)

    def _claim(self, jobs: Sequence[ShadowJob]) -> list[bool]:
        """Settle the runs of a returned batch that have not timed out meanwhile; say which."""
        with self._cond:
            claimed = []
            for job in jobs:
                claimed.append(job.state == RUNNING)
                if job.state == RUNNING:
                    job.state = SETTLED
        return claimed

    # -- settling --------------------------------------------------------------------------

    async def watch(self, interval_s: float = 0.02) -> None:
        """Until cancelled, on the event loop: settle overdue runs as timeouts, and publish the
        runs in flight. A timeout is so enforced within `interval_s`."""
        while True:
            await asyncio.sleep(interval_s)
            self.expire_overdue()
            self._metrics.set_shadow_in_flight(self.in_flight)

    def expire_overdue(self, now: float | None = None) -> int:
        """Settle every run past its deadline as a timeout (a queued one never starts; a
        running one's answer will be discarded); return how many."""
        now = time.monotonic() if now is None else now
        with self._cond:
            if now < self._earliest_deadline:  # most calls: nothing can be due yet
                return 0
            overdue = [job for job in self._jobs if job.state != SETTLED and job.deadline <= now]
            for job in overdue:
                job.state = SETTLED
            self._earliest_deadline = min(
                (job.deadline for job in self._jobs if job.state != SETTLED), default=math.inf
            )
        records = []
        for job in overdue:
            timeout_ms = job.policy.timeout_s * 1000
            records.append(
                self._records.record(
                    job,
                    "timeout",
                    shadow_error=f"no answer within the {timeout_ms:g} ms timeout",
                    shadow_latency_s=job.policy.timeout_s,
                )
            )
        self._emit(records)
        return len(overdue)

    def _emit(self, records: Sequence[ComparisonRecord | AgreementBatch]) -> None:
        """Count the records in the metrics (once per pair and outcome) and hand them on."""
        if not records:
            return
        metrics = self._metrics
        outcomes: Counter[tuple[str, str, str, str]] = Counter()
        compared: dict[tuple[str, str, str], list[Any]] = {}  # pair -> [rows, agreed, diffs]
        for record in records:
            pair = (record.model, record.primary_version, record.shadow_version)
            if isinstance(record, AgreementBatch):
                outcomes[(*pair, "compared")] += len(record)
                totals = compared.setdefault(pair, [0, 0, []])
                totals[0] += len(record)
                totals[1] += len(record)
                totals[2].extend(diff for diff in record.max_abs_diffs if diff is not None)
                continue
            outcomes[(*pair, record.outcome)] += 1
            if record.outcome == "compared":
                totals = compared.setdefault(pair, [0, 0, []])
                if record.agreed_rows is not None:
                    totals[0] += record.rows
                    totals[1] += record.agreed_rows
                if record.max_abs_diff is not None:
                    totals[2].append(record.max_abs_diff)
        for (model, primary, shadow, outcome), count in outcomes.items():
            metrics.count_shadow(model, primary, shadow, outcome, count)
        for (model, primary, shadow), (rows, agreed, diffs) in compared.items():
            metrics.observe_shadow_comparisons(
                model, primary, shadow, rows=rows, agreed_rows=agreed, differences=diffs
            )
        self._sink(records)

    # -- housekeeping ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Runs holding a slot: queued, or in a batch that has not returned."""
        with self._cond:
            return self._in_flight

    def take_drops(self) -> dict[tuple[str, str, str, str], int]:
        """Runs dropped since the last call, by (model, primary, shadow, reason), the reason
        being `budget` (no free slot) or `load` (the primary needs the capacity)."""
        with self._cond:
            drops, self._drops = dict(self._drops), Counter()
        return drops

    def shutdown(self) -> None:
        """Queue no more runs and let the idle workers end; queued runs are abandoned, and a
        running batch finishes on its own (a daemon thread: it cannot hold up the exit)."""
        with self._cond:
            self._closed = True
            abandoned = [job for job in self._queue if job.state == QUEUED]
            for job in abandoned:
                job.state = SETTLED
            self._release(list(self._queue))
            self._queue.clear()
            self._cond.notify_all()
        self._metrics.set_shadow_in_flight(self.in_flight)
