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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from gateway.state import ComparisonRecord, OutputRecord

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

    def run(self, model: str, version: str, jobs: Sequence[ShadowJob]) -> list[ComparisonRecord]:
        """Predict every run of `version` (batched where it can be), then record each."""
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
                for job in jobs
            ]
        failures: list[Answer | None] = []
        inputs: list[Mapping[str, Tensor]] = []
        for job in jobs:
            try:
                inputs.append(_inputs_for(job.request, manifest))
                failures.append(None)
            except Exception as exc:
                failures.append(Answer(None, f"{type(exc).__name__}: {exc}", 0.0))
        answers, batch = _predict(manifest, runtime, inputs)
        primaries, stacked = self._maker.primaries(jobs)
        diffs = None
        if batch is not None and stacked is not None and stacked.rows == batch.rows:
            diffs = run_max_abs_diffs(stacked.outputs, batch.outputs, batch.rows)
        predicted = iter(answers)
        latencies: Counter[float] = Counter()
        # One-row runs that agree share their sides' summaries, one pair per class: most runs
        # of a sound candidate agree, and their records then differ only in their own fields.
        shared: dict[str, tuple[OutputRecord, OutputRecord] | None] | None = None
        if diffs is not None and stacked is not None and all(n == 1 for n in stacked.rows):
            shared = {}
        records = []
        for index, (job, failed, primary) in enumerate(zip(jobs, failures, primaries, strict=True)):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                # Leave the GIL to the event loop, if it waits for it. (A zero sleep would not
                # do: this thread would take the GIL back before the woken loop thread runs,
                # and the loop would wait out the 5 ms switch interval.)
                time.sleep(YIELD_S)
            answer = failed or next(predicted)
            if failed is None:
                latencies[answer.latency_s] += 1
            diff = None
            if answer.outputs is not None and job.request.primary is not None:
                diff = (
                    diffs[index]
                    if diffs is not None
                    else max_abs_diff(primary.outputs, answer.outputs)
                )
            records.append(self._record(job, manifest, answer, primary, diff, shared))
        for latency, runs in latencies.items():
            self._metrics.observe_shadow_latency(model, version, latency, runs)
        return records

    def _record(
        self,
        job: ShadowJob,
        manifest: Manifest,
        answer: Answer,
        primary: PrimarySide,
        diff: float | None,
        shared: dict[str, tuple[OutputRecord, OutputRecord] | None] | None,
    ) -> ComparisonRecord:
        """The run's record; a one-row agreement shares its summaries through `shared`."""
        if shared is not None and answer.classes is not None and answer.classes == primary.classes:
            (top,) = answer.classes
            if top not in shared:
                shared[top] = self._maker.summary_outputs(manifest, answer, primary)
            summaries = shared[top]
            if summaries is not None:
                return self._maker.agreed(job, answer, primary, diff, summaries)
        return self._maker.answered(job, manifest, answer, primary, diff)


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
