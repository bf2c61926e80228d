"""The common batch worked out a column at a time: one-row runs whose primaries all answered.

Most shadow runs of a release look alike: one row in, one row out, the primary answered by
one version. For a batch of such runs the inputs and both sides' outputs stack as they are,
so the prediction, both sides' top classes and the differences are each one call for the
whole batch, and the runs that agree become the rows of one `AgreementBatch` without an
object per run. A run that disagrees gets the record the general path (`batch`) gives it.

`OneRowBatch.prepare` says whether a batch qualifies before anything runs; a batch that does
not, or whose prediction fails or breaks the version's signature, is left to the general
path, which predicts run by run where it must, so that a failure is only its own run's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.dataplane import Prediction
from gateway.dataplane.tensors import check_output
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor
from gateway.shadow import gil
from gateway.shadow.compare import run_max_abs_diffs, top_classes
from gateway.shadow.jobs import ShadowJob
from gateway.shadow.predict import has_batch_dimension
from gateway.shadow.records import Answer, PrimarySide, RecordMaker
from gateway.state import AgreementBatch, ComparisonRecord


class OneRowBatch:
    """A batch of one-row runs of one shadow version, all behind answered primaries of one
    version, none keeping inputs or agreeing outputs; built by `prepare`."""

    def __init__(
        self,
        maker: RecordMaker,
        manifest: Manifest,
        jobs: Sequence[ShadowJob],
        primaries: Sequence[Prediction],
        inputs: dict[str, Tensor],
        primary_outputs: dict[str, Tensor],
    ) -> None:
        self._maker = maker
        self._manifest = manifest
        self._jobs = jobs
        self._primaries = primaries
        self._inputs = inputs
        self._primary_outputs = primary_outputs
        # One primary version for the whole batch: one signature.
        self._primary_manifest, self._primary_specs, self._primary_labels = maker.signature(
            primaries[0]
        )

    @classmethod
    def prepare(
        cls, maker: RecordMaker, manifest: Manifest, jobs: Sequence[ShadowJob]
    ) -> OneRowBatch | None:
        """The batch with its inputs and primary outputs stacked, or None when it does not
        qualify (the general path then takes it)."""
        if len(jobs) < 2 or maker.keeps_agreeing_outputs:
            return None
        if not has_batch_dimension(manifest):
            return None
        primaries = _answered_primaries(jobs)
        if primaries is None:
            return None
        inputs = _stack_rows([p.inputs for p in primaries], [s.name for s in manifest.inputs])
        outputs = _stack_rows([p.raw_outputs for p in primaries], list(primaries[0].raw_outputs))
        if inputs is None or outputs is None:
            return None
        return cls(maker, manifest, jobs, primaries, inputs, outputs)

    def predict(self, runtime: ModelRuntime) -> tuple[dict[str, Tensor], float] | None:
        """The shadow's outputs for the whole batch and how long they took, or None when the
        prediction fails or breaks the signature."""
        started = time.perf_counter()
        try:
            raw = runtime.predict(self._inputs)
        except Exception:
            return None
        latency = time.perf_counter() - started
        rows = len(self._jobs)
        outputs = {}
        for spec in self._manifest.outputs:
            array = raw.get(spec.name)
            if not isinstance(array, np.ndarray) or check_output(spec, array, rows) is not None:
                return None
            outputs[spec.name] = array
        return outputs, latency

    def records(
        self, outputs: Mapping[str, Tensor], latency_s: float, live: Sequence[bool]
    ) -> list[ComparisonRecord | AgreementBatch]:
        """The records of the runs `live` keeps: one `AgreementBatch` for those that agree,
        a record of its own for each of the others."""
        maker, manifest, jobs = self._maker, self._manifest, self._jobs
        primary_classes = top_classes(
            self._primary_outputs, self._primary_specs, self._primary_labels
        )
        shadow_classes = top_classes(outputs, manifest.outputs, manifest.labels)
        diffs = run_max_abs_diffs(self._primary_outputs, outputs, [1] * len(jobs))
        if diffs is None:
            diffs = [None] * len(jobs)
        agreeing: list[int] = []
        others: list[int] = []
        for index, keep in enumerate(live):
            if not keep:
                continue
            agrees = (
                primary_classes is not None
                and shadow_classes is not None
                and primary_classes[index] == shadow_classes[index]
            )
            (agreeing if agrees else others).append(index)
        records: list[ComparisonRecord | AgreementBatch] = []
        for count, index in enumerate(others):
            if count % gil.EVERY == gil.EVERY - 1:
                gil.leave_gil()
            answer, primary = self._sides(
                index, outputs, latency_s, primary_classes, shadow_classes
            )
            records.append(maker.answered(jobs[index], manifest, answer, primary, diffs[index]))
        if agreeing:
            gil.leave_gil()
            assert shadow_classes is not None  # the runs agreed on them
            records.append(
                self._agreements(
                    agreeing, outputs, latency_s, primary_classes, shadow_classes, diffs
                )
            )
        return records

    def _sides(
        self,
        index: int,
        outputs: Mapping[str, Tensor],
        latency_s: float,
        primary_classes: list[str] | None,
        shadow_classes: list[str] | None,
    ) -> tuple[Answer, PrimarySide]:
        """Run `index`'s share of the batch, as the general path has it for one run."""
        prediction = self._primaries[index]
        row = slice(index, index + 1)
        answer = Answer(
            {name: array[row] for name, array in outputs.items()},
            "",
            latency_s,
            None if shadow_classes is None else shadow_classes[row],
        )
        primary = PrimarySide(
            prediction.version,
            prediction.raw_outputs,
            None if primary_classes is None else primary_classes[row],
            self._primary_specs,
            prediction.inputs,
            self._primary_manifest,
        )
        return answer, primary

    def _agreements(
        self,
        agreeing: list[int],
        outputs: Mapping[str, Tensor],
        latency_s: float,
        primary_classes: list[str] | None,
        shadow_classes: list[str],
        diffs: list[float | None],
    ) -> AgreementBatch:
        """The agreeing runs as one batch, sharing the first one's summary outputs."""
        maker, jobs = self._maker, self._jobs
        first = agreeing[0]
        answer, primary = self._sides(first, outputs, latency_s, primary_classes, shadow_classes)
        primary_summary, shadow_summary = maker.summary_outputs(self._manifest, answer, primary)
        runs = [jobs[index] for index in agreeing]
        requests = [job.request for job in runs]
        return AgreementBatch(
            model=requests[0].decision.model,
            primary_version=self._primaries[first].version,
            shadow_version=runs[0].version,
            shadow_latency_ms=latency_s * 1000,
            primary_tensors=primary_summary.tensors,
            shadow_tensors=shadow_summary.tensors,
            request_ids=[request.request_id for request in requests],
            ats=[request.at for request in requests],
            variants=[request.decision.variant or "" for request in requests],
            cohorts=[maker.cohort(job) for job in runs],
            contexts=[maker.context(job) for job in runs],
            classes=[shadow_classes[index] for index in agreeing],
            max_abs_diffs=[diffs[index] for index in agreeing],
            primary_latencies_ms=[maker.primary_latency_ms(job) for job in runs],
        )


def _answered_primaries(jobs: Sequence[ShadowJob]) -> list[Prediction] | None:
    """The runs' primary answers, when every run has one, of one version, with its outputs
    (as many as the first's), and keeps no inputs; else None."""
    primaries: list[Prediction] = []
    for job in jobs:
        prediction = job.request.primary
        if prediction is None or job.policy.keep_inputs or not prediction.raw_outputs:
            return None
        primaries.append(prediction)
    version, outputs = primaries[0].version, len(primaries[0].raw_outputs)
    if any(p.version != version or len(p.raw_outputs) != outputs for p in primaries):
        return None
    return primaries


def _stack_rows(
    tensors: Sequence[Mapping[str, Tensor]], names: Sequence[str]
) -> dict[str, Tensor] | None:
    """Each named tensor of every run stacked along the rows, when each run has it with one
    row, all of one shape and of the first run's dtype; else None."""
    stacked: dict[str, Tensor] = {}
    for name in names:
        arrays: list[Any] = [one.get(name) for one in tensors]
        first = arrays[0]
        try:
            if first is None or any(len(array) != 1 for array in arrays):
                return None
            joined = np.concatenate(arrays)  # raises when the shapes past the rows differ
        except (TypeError, ValueError):  # a missing or 0-d tensor
            return None
        if joined.dtype != first.dtype:  # a wider dtype among the runs
            return None
        stacked[name] = joined
    return stacked
