"""Running shadow versions beside the primary, off the request path, within a budget.

The request path calls `ShadowRunner.submit` once the primary has answered (or failed). For
each shadow target of the route it draws the sample, asks the loop's load whether the primary
leaves room (`load.LoopLoad`), then takes a slot of the concurrency budget without waiting:
when the primary is too busy or the budget is full the run is dropped and counted, never
queued beyond the budget. An admitted run is appended to a queue; that is all the request
path does (no thread is woken per request but the first of a batch).

A few daemon worker threads drain the queue in batches: they wait `batch_window_s` after the
first run arrives so that more gather, then take the queued runs of one (model, version) and
run them as one batch (inputs concatenated along their batch dimension, one `predict`,
outputs split back), and check, compare and record each run. Batching matters: per run, a
thread wake-up and two GIL hand-offs cost more than a small model's prediction, and every
one of them is taken from the event loop that serves the primaries. Runs that cannot be
batched (no batch dimension, mismatched shapes), or whose batch fails, run one at a time.
Workers pause every few runs so that the loop never waits long for the GIL.

A slot is held from the submit until the run's batch returns, so a version that hangs keeps
its slots (and its worker) busy: later runs are dropped, threads never pile up, and other
versions' runs go on in other batches. The run itself is settled as a timeout once the
release's timeout passes, by `watch` on the event loop; its late answer is discarded. The
workers are daemon threads, so a hung model cannot hold up the process's exit. Nothing a
shadow does reaches the client's response: every failure becomes a record.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from gateway.dataplane import InferenceRequest, Prediction
from gateway.dataplane.dataplane import decode_inputs
from gateway.dataplane.tensors import check_output
from gateway.errors import InvalidRequest
from gateway.flags.document import Release, ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, TensorSpec
from gateway.runtimes.base import ModelRuntime, Tensor
from gateway.shadow.cohorts import Attribute, CohortResolver
from gateway.shadow.compare import compare, input_record, output_record, top_classes
from gateway.shadow.load import LoopLoad, thread_demand_s
from gateway.shadow.policy import ShadowConfig, ShadowPolicy, release_policy
from gateway.state import ComparisonOutcome, ComparisonRecord, OutputRecord, TensorData

_log = structlog.get_logger("gateway.shadow")

RecordSink = Callable[[list[ComparisonRecord]], object]
"""Where finished records go, a batch at a time; called from worker threads and the event
loop alike."""


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    """A routed request whose primary has answered (`primary`) or failed (`primary_error`).

    `request` and `binary_inputs` are only needed when the primary failed: the shadow then
    decodes the inputs itself, off the request path.
    """

    decision: RouteDecision
    request_id: str
    targeting_key: str
    context: Mapping[str, Attribute]
    at: float
    primary: Prediction | None
    primary_error: str = ""
    primary_latency_s: float | None = None
    max_batch_rows: int = 1024
    request: InferenceRequest | None = None
    binary_inputs: Mapping[str, bytes] | None = None


_QUEUED, _RUNNING, _SETTLED = 0, 1, 2
YIELD_EVERY = 4  # runs between two pauses that leave the GIL to the event loop
YIELD_S = 0.0002  # long enough for a loop thread waiting on the GIL to be scheduled and take it


@dataclass(slots=True, eq=False)
class _Job:
    request: ShadowRequest
    version: str
    policy: ShadowPolicy
    deadline: float
    """`time.monotonic()` past which the run is settled as a timeout."""
    state: int = _QUEUED
    """Queued, running in a batch, or settled (its record emitted, or discarded)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """One run's share of a (batched) prediction: its outputs and their top classes, or why
    it has none."""

    outputs: dict[str, Tensor] | None
    error: str
    latency_s: float
    classes: list[str] | None = None


@dataclass(frozen=True, slots=True)
class _Primary:
    """The primary's side of every record for one request."""

    version: str
    outputs: Mapping[str, Tensor]
    classes: list[str] | None
    specs: Sequence[TensorSpec]
    inputs: Mapping[str, Tensor] | None
    manifest: Manifest | None


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
        self._queue: deque[_Job] = deque()
        self._jobs: set[_Job] = set()  # every job holding a slot
        self._in_flight = 0
        self._in_flight_by_model: dict[str, int] = {}
        self._max_in_flight = config.threads * config.batch_max
        self._drops: Counter[tuple[str, str, str, str]] = Counter()
        self._policies: dict[str, tuple[Release, ShadowPolicy]] = {}
        self._cohorts = CohortResolver()
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
            job = _Job(request, target.version, policy, now + policy.timeout_s)
            if not self._enqueue(job):
                self._drop(model, primary, target.version, "budget")
                continue
            queued += 1
        return queued

    def _enqueue(self, job: _Job) -> bool:
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

    def _release(self, jobs: Sequence[_Job]) -> None:
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
                started = thread_demand_s()
                self._run_batch(batch)
                if self._load is not None:
                    self._load.add_shadow_cpu(thread_demand_s() - started)

    def _take_batch(self, most: int) -> list[_Job]:
        """Up to `most` queued runs of the first queued (model, version), in order; the lock
        is held. A batch holds one version, so a version that hangs holds up only its own
        runs. Runs that timed out while queued leave the queue and give their slots back."""
        batch: list[_Job] = []
        expired: list[_Job] = []
        others: deque[_Job] = deque()
        key: tuple[str, str] | None = None
        while self._queue:
            job = self._queue.popleft()
            if job.state != _QUEUED:
                expired.append(job)
                continue
            job_key = (job.request.decision.model, job.version)
            key = key or job_key
            if job_key == key and len(batch) < most:
                job.state = _RUNNING
                batch.append(job)
            else:
                others.append(job)
        self._queue = others
        self._release(expired)
        return batch

    def _run_batch(self, batch: list[_Job]) -> None:
        groups: dict[tuple[str, str], list[_Job]] = {}
        for job in batch:  # one group as `_take_batch` builds them; more if called otherwise
            groups.setdefault((job.request.decision.model, job.version), []).append(job)
        primaries: dict[int, _Primary] = {}
        for (model, version), jobs in groups.items():
            try:
                records = self._run_group(model, version, jobs, primaries)
            except Exception as exc:  # a bug of ours must not kill the worker or leak slots
                _log.exception("shadow_run_failed", model=model, shadow=version)
                records = [
                    self._record(job, "shadow_error", shadow_error=f"internal error: {exc}")
                    for job in jobs
                ]
            finally:
                with self._cond:
                    self._release(jobs)
            self._settle(jobs, records)

    def _run_group(
        self, model: str, version: str, jobs: list[_Job], primaries: dict[int, _Primary]
    ) -> list[ComparisonRecord]:
        """Predict every run of one version (batched where it can be), then record each."""
        started = time.perf_counter()
        try:
            manifest, runtime = self._registry.version(model, version).ready_runtime()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - started
            return [
                self._record(job, "shadow_error", shadow_error=error, shadow_latency_s=latency)
                for job in jobs
            ]
        answers: list[_Answer | None] = []
        inputs: list[Mapping[str, Tensor]] = []
        for job in jobs:
            try:
                inputs.append(self._inputs_for(job.request, manifest))
                answers.append(None)
            except Exception as exc:
                answers.append(_Answer(None, f"{type(exc).__name__}: {exc}", 0.0))
        predicted = iter(_predict(manifest, runtime, inputs))
        records = []
        for index, (job, failed) in enumerate(zip(jobs, answers, strict=True)):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                # Leave the GIL to the event loop, if it waits for it: a batch's bookkeeping
                # never holds up a request for longer than a few runs' worth. (A zero sleep
                # would not do: this thread would take the GIL back before the woken loop
                # thread runs, and the loop would wait out the 5 ms switch interval.)
                time.sleep(YIELD_S)
            answer = failed or next(predicted)
            if failed is None:
                self._metrics.observe_shadow_latency(model, version, answer.latency_s)
            primary = primaries.get(id(job.request))
            if primary is None:
                primary = primaries[id(job.request)] = self._primary(job)
            records.append(self._shadow_record(job, manifest, answer, primary))
        return records

    def _shadow_record(
        self, job: _Job, manifest: Manifest, answer: _Answer, primary: _Primary
    ) -> ComparisonRecord:
        outputs = answer.outputs
        if outputs is None:
            return self._record(
                job,
                "shadow_error",
                shadow_error=answer.error,
                shadow_latency_s=answer.latency_s,
                primary=primary,
            )
        classes = answer.classes
        if job.request.primary is None:
            shadow_output = output_record(
                outputs, manifest.outputs, classes, self._config.max_output_values
            )
            return self._record(
                job,
                "primary_error",
                shadow_latency_s=answer.latency_s,
                shadow_output=shadow_output,
                primary=primary,
            )
        comparison = compare(primary.classes, classes, primary.outputs, outputs)
        # An agreement is kept as its summary (top classes, difference) unless asked otherwise.
        summary_only = comparison.agree is True and not self._config.keep_agreeing_outputs
        shadow_output = output_record(
            outputs,
            manifest.outputs,
            classes,
            0 if summary_only else self._config.max_output_values,
        )
        return self._record(
            job,
            "compared",
            shadow_latency_s=answer.latency_s,
            shadow_output=shadow_output,
            primary=primary,
            rows=comparison.rows,
            agreed_rows=comparison.agreed_rows,
            agree=comparison.agree,
            max_abs_diff=comparison.max_abs_diff,
        )

    def _inputs_for(self, request: ShadowRequest, manifest: Manifest) -> Mapping[str, Tensor]:
        if request.primary is not None and request.primary.inputs:
            return request.primary.inputs
        if request.request is None:
            raise InvalidRequest("the request's inputs are not available to the shadow")
        return decode_inputs(
            manifest, request.request.inputs, request.binary_inputs or {}, request.max_batch_rows
        )

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
            overdue = [job for job in self._jobs if job.state != _SETTLED and job.deadline <= now]
            for job in overdue:
                job.state = _SETTLED
        records = []
        for job in overdue:
            timeout_ms = job.policy.timeout_s * 1000
            records.append(
                self._record(
                    job,
                    "timeout",
                    shadow_error=f"no answer within the {timeout_ms:g} ms timeout",
                    shadow_latency_s=job.policy.timeout_s,
                )
            )
        self._emit(records)
        return len(overdue)

    def _settle(self, jobs: list[_Job], records: list[ComparisonRecord]) -> None:
        """Emit the records of the runs that have not timed out meanwhile."""
        with self._cond:
            settled = []
            for job, record in zip(jobs, records, strict=True):
                if job.state == _RUNNING:
                    job.state = _SETTLED
                    settled.append(record)
        self._emit(settled)

    def _emit(self, records: list[ComparisonRecord]) -> None:
        """Count the records in the metrics (once per pair and outcome) and hand them on."""
        if not records:
            return
        metrics = self._metrics
        outcomes: Counter[tuple[str, str, str, str]] = Counter()
        compared: dict[tuple[str, str, str], list[Any]] = {}  # pair -> [rows, agreed, diffs]
        for record in records:
            pair = (record.model, record.primary_version, record.shadow_version)
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

    # -- records -----------------------------------------------------------------------------

    def _primary(self, job: _Job) -> _Primary:
        request = job.request
        prediction = request.primary
        version = request.decision.serve
        if prediction is None:
            return _Primary(version, {}, None, (), None, None)
        manifest = self._registry.version(request.decision.model, prediction.version).manifest
        specs = manifest.outputs if manifest is not None else [s for s, _ in prediction.outputs]
        labels = manifest.labels if manifest is not None else None
        outputs = prediction.raw_outputs or {s.name: a for s, a in prediction.outputs}
        classes = top_classes(outputs, specs, labels)
        return _Primary(prediction.version, outputs, classes, specs, prediction.inputs, manifest)

    def _record(
        self,
        job: _Job,
        outcome: ComparisonOutcome,
        *,
        shadow_error: str = "",
        shadow_latency_s: float | None = None,
        shadow_output: OutputRecord | None = None,
        primary: _Primary | None = None,
        rows: int = 0,
        agreed_rows: int | None = None,
        agree: bool | None = None,
        max_abs_diff: float | None = None,
    ) -> ComparisonRecord:
        request = job.request
        decision = request.decision
        if primary is None:
            primary = self._primary(job)
        inputs: dict[str, TensorData] | None = None
        inputs_dropped = False
        if job.policy.keep_inputs and primary.inputs:
            specs = primary.manifest.inputs if primary.manifest is not None else []
            inputs = input_record(primary.inputs, specs, job.policy.max_input_bytes)
            inputs_dropped = inputs is None
        if not rows and primary.classes is not None:
            rows = len(primary.classes)
        latency = request.primary_latency_s
        if latency is None and request.primary is not None:
            latency = request.primary.latency_s
        primary_output = None
        if request.primary is not None:
            summary_only = agree is True and not self._config.keep_agreeing_outputs
            primary_output = output_record(
                primary.outputs,
                primary.specs,
                primary.classes,
                0 if summary_only else self._config.max_output_values,
            )
        return ComparisonRecord(
            request_id=request.request_id,
            at=request.at,
            model=decision.model,
            primary_version=primary.version,
            shadow_version=job.version,
            outcome=outcome,
            variant=decision.variant or "",
            cohort=self._cohorts.cohort(
                decision.release, decision.reason, request.targeting_key, request.context
            ),
            context=dict(request.context),
            rows=rows,
            agreed_rows=agreed_rows,
            agree=agree,
            max_abs_diff=max_abs_diff,
            primary_latency_ms=None if latency is None else latency * 1000,
            shadow_latency_ms=None if shadow_latency_s is None else shadow_latency_s * 1000,
            primary_error=request.primary_error,
            shadow_error=shadow_error,
            primary_output=primary_output,
            shadow_output=shadow_output,
            inputs=inputs,
            inputs_dropped=inputs_dropped,
        )

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
            abandoned = [job for job in self._queue if job.state == _QUEUED]
            for job in abandoned:
                job.state = _SETTLED
            self._release(list(self._queue))
            self._queue.clear()
            self._cond.notify_all()
        self._metrics.set_shadow_in_flight(self.in_flight)


def _batch_rows(manifest: Manifest, inputs: Mapping[str, Tensor]) -> int | None:
    for spec in manifest.inputs:
        if spec.shape and spec.shape[0] == -1 and spec.name in inputs:
            return int(inputs[spec.name].shape[0])
    return None


def _predict(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> list[_Answer]:
    """One answer per request: from one batched prediction where the signature allows it,
    else (or when the batch fails) from one prediction per request."""
    if len(inputs) > 1 and _batchable(manifest, inputs):
        answers = _predict_batch(manifest, runtime, inputs)
        if answers is not None:
            return answers
    return [_predict_one(manifest, runtime, one) for one in inputs]


def _predict_one(
    manifest: Manifest, runtime: ModelRuntime, inputs: Mapping[str, Tensor]
) -> _Answer:
    started = time.perf_counter()
    try:
        raw = runtime.predict(inputs)
    except Exception as exc:
        return _Answer(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    latency = time.perf_counter() - started
    return _checked(manifest, raw, _batch_rows(manifest, inputs), latency)


def _checked(
    manifest: Manifest, raw: Mapping[str, Any], rows: int | None, latency_s: float
) -> _Answer:
    for spec in manifest.outputs:
        problem = check_output(spec, raw.get(spec.name), rows)
        if problem is not None:
            return _Answer(None, f"InvalidOutput: {problem}", latency_s)
    outputs = {spec.name: raw[spec.name] for spec in manifest.outputs}
    return _Answer(outputs, "", latency_s, top_classes(outputs, manifest.outputs, manifest.labels))


def _batchable(manifest: Manifest, inputs: Sequence[Mapping[str, Tensor]]) -> bool:
    """Every input and output has a leading batch dimension, and the requests agree on the
    dtype and the other dimensions of each input."""
    specs = (*manifest.inputs, *manifest.outputs)
    if not all(spec.shape and spec.shape[0] == -1 for spec in specs):
        return False
    for spec in manifest.inputs:
        first = inputs[0][spec.name]
        if any(
            one[spec.name].dtype != first.dtype or one[spec.name].shape[1:] != first.shape[1:]
            for one in inputs
        ):
            return False
    return True


def _predict_batch(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> list[_Answer] | None:
    """The requests as one batch, split back; None when the batch fails or its outputs do
    not split by rows (each request then runs alone, so a failure is its own)."""
    rows = [int(one[manifest.inputs[0].name].shape[0]) for one in inputs]
    total = sum(rows)
    merged = {
        spec.name: np.concatenate([one[spec.name] for one in inputs]) for spec in manifest.inputs
    }
    started = time.perf_counter()
    try:
        raw = runtime.predict(merged)
    except Exception:
        return None
    latency = time.perf_counter() - started
    arrays: dict[str, Tensor] = {}
    for spec in manifest.outputs:
        array = raw.get(spec.name)
        if not isinstance(array, np.ndarray) or array.ndim < 1 or array.shape[0] != total:
            return None
        arrays[spec.name] = array
    whole = _checked(manifest, arrays, total, latency)  # classes of every row at once
    answers = []
    offset = 0
    for count in rows:
        part = {name: array[offset : offset + count] for name, array in arrays.items()}
        if whole.outputs is not None:  # the batch is sound, and so is every part of it
            classes = None if whole.classes is None else whole.classes[offset : offset + count]
            answers.append(_Answer(part, "", latency, classes))
        else:  # find which parts break the signature
            answers.append(_checked(manifest, part, count, latency))
        offset += count
    return answers
