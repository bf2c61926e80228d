"""One shadow version's queued runs as one prediction, turned into their records.

Batching matters: per run, a thread wake-up and two GIL hand-offs cost more than a small
model's prediction, and every one of them is taken from the event loop that serves the
primaries. So the runs of a batch share one `predict` (inputs concatenated along their batch
dimension, outputs split back), one output check, one argmax per side and one subtraction
for the differences; what is left per run is building its record. Runs that cannot be
batched (no batch dimension, mismatched shapes), or whose batch fails, run one at a time, so
that a failure is its own.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from gateway.dataplane.dataplane import decode_inputs
from gateway.dataplane.tensors import check_output
from gateway.errors import InvalidRequest
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor
from gateway.shadow.compare import max_abs_diff, run_max_abs_diffs, top_classes
from gateway.shadow.jobs import ShadowJob, ShadowRequest
from gateway.shadow.records import Answer, PrimarySide, RecordMaker
from gateway.state import AgreementBatch, ComparisonRecord

Claim = Callable[[Sequence[ShadowJob]], list[bool]]
"""Settles runs that have not timed out yet, saying for each run whether it was one of them:
their records are this batch's to emit."""

_log = structlog.get_logger("gateway.shadow")

YIELD_EVERY = 32  # records built between two pauses that leave the GIL to the event loop
YIELD_S = 0.0002  # long enough for a loop thread waiting on the GIL to be scheduled and take it


@dataclass(frozen=True, slots=True)
class _Batch:
    """A batched prediction's outputs, `rows` rows per run, stacked in the runs' order."""

    outputs: dict[str, Tensor]
    rows: list[int]


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
        agree come back as one `AgreementBatch`; every other run as its own record."""
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
        failures: list[Answer | None] = []
        inputs: list[Mapping[str, Tensor]] = []
        for job in jobs:
            try:
                inputs.append(_inputs_for(job.request, manifest))
                failures.append(None)
            except Exception as exc:
                failures.append(Answer(None, f"{type(exc).__name__}: {exc}", 0.0))
        predicted, batch = _predict(manifest, runtime, inputs)
        answered = iter(predicted)
        answers = [failed or next(answered) for failed in failures]
        latencies = Counter(
            answer.latency_s
            for answer, failed in zip(answers, failures, strict=True)
            if failed is None
        )
        for latency, runs in latencies.items():
            self._metrics.observe_shadow_latency(model, version, latency, runs)
        live = claim(jobs)
        try:
            return self._records(manifest, jobs, answers, batch, live)
        except Exception as exc:  # a bug of ours: the claimed runs still get their records
            _log.exception("shadow_records_failed", model=model, shadow=version)
            return [
                self._maker.record(job, "shadow_error", shadow_error=f"internal error: {exc}")
                for job, keep in zip(jobs, live, strict=True)
                if keep
            ]

    def _records(
        self,
        manifest: Manifest,
        jobs: Sequence[ShadowJob],
        answers: list[Answer],
        batch: _Batch | None,
        live: list[bool],
    ) -> list[ComparisonRecord | AgreementBatch]:
        primaries, stacked = self._maker.primaries(jobs)
        diffs = None
        if batch is not None and stacked is not None and stacked.rows == batch.rows:
            diffs = run_max_abs_diffs(stacked.outputs, batch.outputs, batch.rows)
        agreements = None
        if (
            diffs is not None
            and stacked is not None
            and all(rows == 1 for rows in stacked.rows)
            and not any(job.policy.keep_inputs for job in jobs)
        ):
            agreements = _Agreements(self._maker)
        records: list[ComparisonRecord | AgreementBatch] = []
        for index, job in enumerate(jobs):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                # Leave the GIL to the event loop, if it waits for it. (A zero sleep would not
                # do: this thread would take the GIL back before the woken loop thread runs,
                # and the loop would wait out the 5 ms switch interval.)
                time.sleep(YIELD_S)
            if not live[index]:
                continue
            answer, primary = answers[index], primaries[index]
            diff = None
            if diffs is not None:
                diff = diffs[index]
            elif answer.outputs is not None and job.request.primary is not None:
                diff = max_abs_diff(primary.outputs, answer.outputs)
            if agreements is not None and agreements.add(job, manifest, answer, primary, diff):
                continue
            records.append(self._maker.answered(job, manifest, answer, primary, diff))
        if agreements is not None and agreements.batch is not None:
            records.append(agreements.batch)
        return records


class _Agreements:
    """The agreeing one-row runs of a batch, gathered column by column."""

    def __init__(self, maker: RecordMaker) -> None:
        self._maker = maker
        self.batch: AgreementBatch | None = None

    def add(
        self,
        job: ShadowJob,
        manifest: Manifest,
        answer: Answer,
        primary: PrimarySide,
        diff: float | None,
    ) -> bool:
        """Take the run if it agrees and agreements keep their summary only; else False."""
        if answer.outputs is None or answer.classes is None or answer.classes != primary.classes:
            return False
        batch = self.batch
        if batch is None:
            summaries = self._maker.summary_outputs(manifest, answer, primary)
            if summaries is None:  # agreements keep their outputs: a record each
                return False
            batch = self.batch = AgreementBatch(
                model=job.request.decision.model,
                primary_version=primary.version,
                shadow_version=job.version,
                shadow_latency_ms=answer.latency_s * 1000,
                primary_tensors=summaries[0].tensors,
                shadow_tensors=summaries[1].tensors,
                request_ids=[],
                ats=[],
                variants=[],
                cohorts=[],
                contexts=[],
                classes=[],
                max_abs_diffs=[],
                primary_latencies_ms=[],
            )
        request = job.request
        batch.request_ids.append(request.request_id)
        batch.ats.append(request.at)
        batch.variants.append(request.decision.variant or "")
        batch.cohorts.append(self._maker.cohort(job))
        batch.contexts.append(self._maker.context(job))
        batch.classes.append(answer.classes[0])
        batch.max_abs_diffs.append(diff)
        batch.primary_latencies_ms.append(self._maker.primary_latency_ms(job))
        return True


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


def _batch_rows(manifest: Manifest, inputs: Mapping[str, Tensor]) -> int | None:
    for spec in manifest.inputs:
        if spec.shape and spec.shape[0] == -1 and spec.name in inputs:
            return int(inputs[spec.name].shape[0])
    return None


def _predict(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> tuple[list[Answer], _Batch | None]:
    """One answer per request: from one batched prediction where the signature allows it
    (and the batch's outputs), else (or when the batch fails) from one prediction per request."""
    if len(inputs) > 1 and _batchable(manifest, inputs):
        batched = _predict_batch(manifest, runtime, inputs)
        if batched is not None:
            return batched
    return [_predict_one(manifest, runtime, one) for one in inputs], None


def _predict_one(manifest: Manifest, runtime: ModelRuntime, inputs: Mapping[str, Tensor]) -> Answer:
    started = time.perf_counter()
    try:
        raw = runtime.predict(inputs)
    except Exception as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    latency = time.perf_counter() - started
    return _checked(manifest, raw, _batch_rows(manifest, inputs), latency)


def _checked(
    manifest: Manifest, raw: Mapping[str, Any], rows: int | None, latency_s: float
) -> Answer:
    for spec in manifest.outputs:
        problem = check_output(spec, raw.get(spec.name), rows)
        if problem is not None:
            return Answer(None, f"InvalidOutput: {problem}", latency_s)
    outputs = {spec.name: raw[spec.name] for spec in manifest.outputs}
    return Answer(outputs, "", latency_s, top_classes(outputs, manifest.outputs, manifest.labels))


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
) -> tuple[list[Answer], _Batch] | None:
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
            answers.append(Answer(part, "", latency, classes))
        else:  # find which parts break the signature
            answers.append(_checked(manifest, part, count, latency))
        offset += count
    return answers, _Batch(arrays, rows)
