"""One shadow version's queued runs as one prediction, turned into their records.

Batching matters: per run, a thread wake-up and two GIL hand-offs cost more than a small
model's prediction, and every one of them is taken from the event loop that serves the
primaries. So the runs of a batch share one prediction (`predict`), one argmax per side and
one subtraction for the differences; what is left per run is its record. The common case, a
batch of one-row runs behind answered primaries, is worked out a column at a time
(`columns.OneRowBatch`): its agreements become the rows of one `AgreementBatch`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import structlog

from gateway.dataplane.dataplane import decode_inputs
from gateway.errors import InvalidRequest
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor
from gateway.shadow import gil
from gateway.shadow.columns import OneRowBatch
from gateway.shadow.compare import max_abs_diff, run_max_abs_diffs
from gateway.shadow.jobs import ShadowJob, ShadowRequest
from gateway.shadow.predict import Batch, predict
from gateway.shadow.records import Answer, RecordMaker
from gateway.state import AgreementBatch, ComparisonRecord

Claim = Callable[[Sequence[ShadowJob]], list[bool]]
"""Settles runs that have not timed out yet, saying for each run whether it was one of them:
their records are this batch's to emit."""

_log = structlog.get_logger("gateway.shadow")


class VersionBatches:
    """Runs the queued runs of one (model, shadow version) and records each of them."""

    def __init__(self, registry: ModelRegistry, metrics: GatewayMetrics, maker: RecordMaker):
        self._registry = registry
        self._metrics = metrics
        self._maker = maker

    def run(
        self, model: str, version: str, jobs: Sequence[ShadowJob], claim: Claim
    ) -> list[ComparisonRecord | AgreementBatch]:
        """Predict every run of `version` (batched where it can be), then record each run
        that `claim` still hands over (the others timed out meanwhile). One-row runs that
        agree come back as one `AgreementBatch` (`columns`); every other run as its own
        record."""
        started = time.perf_counter()
        try:
            manifest, runtime = self._registry.version(model, version).ready_runtime()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - started
            return [
                self._maker.record(
                    job, "shadow_error", shadow_error=error, shadow_latency_s=latency
                )
                for job in _claimed(jobs, claim)
            ]
        records: Callable[[list[bool]], list[ComparisonRecord | AgreementBatch]]
        one_row = OneRowBatch.prepare(self._maker, manifest, jobs)
        predicted = None
        if one_row is not None:
            gil.leave_gil()
            predicted = one_row.predict(runtime)
        if one_row is not None and predicted is not None:
            outputs, latency = predicted
            self._metrics.observe_shadow_latency(model, version, latency, len(jobs))
            records = partial(one_row.records, outputs, latency)
        else:
            answers, batch = self._predict(model, version, manifest, runtime, jobs)
            records = partial(self._records, manifest, jobs, answers, batch)
        live = claim(jobs)
        try:
            return records(live)
        except Exception as exc:  # a bug of ours: the claimed runs still get their records
            _log.exception("shadow_records_failed", model=model, shadow=version)
            claimed = (job for job, keep in zip(jobs, live, strict=True) if keep)
            return [*self._maker.internal_errors(claimed, exc)]

    def _predict(
        self,
        model: str,
        version: str,
        manifest: Manifest,
        runtime: ModelRuntime,
        jobs: Sequence[ShadowJob],
    ) -> tuple[list[Answer], Batch | None]:
        """Each run's answer, from one prediction where the runs' inputs batch."""
        failures: list[Answer | None] = []
        inputs: list[Mapping[str, Tensor]] = []
        for job in jobs:
            try:
                inputs.append(_inputs_for(job.request, manifest))
                failures.append(None)
            except Exception as exc:
                failures.append(Answer(None, f"{type(exc).__name__}: {exc}", 0.0))
        predicted, batch = predict(manifest, runtime, inputs)
        answered = iter(predicted)
        answers = [failed or next(answered) for failed in failures]
        latencies = Counter(
            answer.latency_s
            for answer, failed in zip(answers, failures, strict=True)
            if failed is None
        )
        for latency, runs in latencies.items():
            self._metrics.observe_shadow_latency(model, version, latency, runs)
        return answers, batch

    def _records(
        self,
        manifest: Manifest,
        jobs: Sequence[ShadowJob],
        answers: list[Answer],
        batch: Batch | None,
        live: list[bool],
    ) -> list[ComparisonRecord | AgreementBatch]:
        primaries, stacked = self._maker.primaries(jobs)
        diffs = None
        if batch is not None and stacked is not None and stacked.rows == batch.rows:
            diffs = run_max_abs_diffs(stacked.outputs, batch.outputs, batch.rows)
        records: list[ComparisonRecord | AgreementBatch] = []
        for index, job in enumerate(jobs):
            if index % gil.EVERY == gil.EVERY - 1:
                gil.leave_gil()
            if not live[index]:
                continue
            answer, primary = answers[index], primaries[index]
            diff = None
            if diffs is not None:
                diff = diffs[index]
            elif answer.outputs is not None and job.request.primary is not None:
                diff = max_abs_diff(primary.outputs, answer.outputs)
            records.append(self._maker.answered(job, manifest, answer, primary, diff))
        return records


def _claimed(jobs: Sequence[ShadowJob], claim: Claim) -> list[ShadowJob]:
    return [job for job, keep in zip(jobs, claim(jobs), strict=True) if keep]


def _inputs_for(request: ShadowRequest, manifest: Manifest) -> Mapping[str, Tensor]:
    if request.primary is not None and request.primary.inputs:
        return request.primary.inputs
    if request.request is None:
        raise InvalidRequest("the request's inputs are not available to the shadow")
    return decode_inputs(
        manifest, request.request.inputs, request.binary_inputs or {}, request.max_batch_rows
    )
