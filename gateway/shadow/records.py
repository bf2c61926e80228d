"""Turning finished shadow runs into comparison records: plain Python and numpy, no I/O.

A record holds both sides of one request. The primary's side (its outputs, top classes,
manifest) is the same for every shadow of a request; `RecordMaker.primaries` works it out
for a whole batch of runs at once where their outputs stack (one argmax for all of them),
else run by run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from gateway.dataplane import Prediction
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, TensorSpec
from gateway.runtimes.base import Tensor
from gateway.shadow.cohorts import Attribute, CohortResolver
from gateway.shadow.compare import agreement, input_record, output_record, top_classes
from gateway.shadow.jobs import ShadowJob
from gateway.shadow.policy import ShadowConfig
from gateway.state import ComparisonOutcome, ComparisonRecord, OutputRecord, TensorData


class Answer(msgspec.Struct, frozen=True, gc=False):
    """One run's share of a (batched) prediction: its outputs and their top classes, or why
    it has none. (Untracked by the garbage collector, like the other per-run structs here:
    a batch makes one per run, and none is part of a reference cycle.)"""

    outputs: Mapping[str, Tensor] | None
    error: str
    latency_s: float
    classes: list[str] | None = None


class PrimarySide(msgspec.Struct, frozen=True, gc=False):
    """The primary's side of every record for one request."""

    version: str
    outputs: Mapping[str, Tensor]
    classes: list[str] | None
    specs: Sequence[TensorSpec]
    inputs: Mapping[str, Tensor] | None
    manifest: Manifest | None


@dataclass(frozen=True, slots=True)
class StackedPrimaries:
    """The primaries of a batch's runs as one: each output stacked along its first
    dimension, `rows` rows per run, in the runs' order."""

    outputs: dict[str, Tensor]
    rows: list[int]


class RecordMaker:
    """Builds the records of shadow runs, whatever their outcome."""

    def __init__(self, registry: ModelRegistry, config: ShadowConfig) -> None:
        self._registry = registry
        self._config = config
        self._cohorts = CohortResolver()

    # -- the primary's side --------------------------------------------------------------

    def primaries(
        self, jobs: Sequence[ShadowJob]
    ) -> tuple[list[PrimarySide], StackedPrimaries | None]:
        """The primary's side of each run, and the runs' primary outputs stacked when every
        run has a primary answer of one version whose outputs stack (else None)."""
        stacked = _stack(jobs)
        if stacked is None:
            return [self.primary(job) for job in jobs], None
        first = jobs[0].request.primary
        assert first is not None  # _stack checked that every run has one
        manifest, specs, labels = self.signature(first)
        classes = top_classes(stacked.outputs, specs, labels)  # every run's rows at once
        sides = []
        offset = 0
        for job, count in zip(jobs, stacked.rows, strict=True):
            prediction = job.request.primary
            assert prediction is not None
            sides.append(
                PrimarySide(
                    prediction.version,
                    prediction.raw_outputs,
                    None if classes is None else classes[offset : offset + count],
                    specs,
                    prediction.inputs,
                    manifest,
                )
            )
            offset += count
        return sides, stacked

    def primary(self, job: ShadowJob) -> PrimarySide:
        """The primary's side of `job`'s record, worked out for this run alone."""
        request = job.request
        prediction = request.primary
        if prediction is None:
            return PrimarySide(request.decision.serve, {}, None, (), None, None)
        manifest, specs, labels = self.signature(prediction)
        outputs = prediction.raw_outputs or {s.name: a for s, a in prediction.outputs}
        classes = top_classes(outputs, specs, labels)
        return PrimarySide(prediction.version, outputs, classes, specs, prediction.inputs, manifest)

    def signature(
        self, prediction: Prediction
    ) -> tuple[Manifest | None, Sequence[TensorSpec], Sequence[str] | None]:
        """The primary version's manifest, output specs and class labels (the specs of its
        answer, and no labels, when the version has no manifest)."""
        manifest = self._registry.version(prediction.model, prediction.version).manifest
        if manifest is None:
            return None, [spec for spec, _ in prediction.outputs], None
        return manifest, manifest.outputs, manifest.labels

    # -- records ---------------------------------------------------------------------------

    def answered(
        self,
        job: ShadowJob,
        manifest: Manifest,
        answer: Answer,
        primary: PrimarySide,
        diff: float | None,
    ) -> ComparisonRecord:
        """The record of a run that came back: compared, or the shadow's error, or the
        shadow's answer alone when the primary failed. `diff` is the largest difference of
        the two sides' outputs (see `compare.max_abs_diff`)."""
        outputs = answer.outputs
        if outputs is None:
            return self.record(
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
            return self.record(
                job,
                "primary_error",
                shadow_latency_s=answer.latency_s,
                shadow_output=shadow_output,
                primary=primary,
            )
        comparison = agreement(primary.classes, classes, primary.outputs, diff)
        # An agreement is kept as its summary (top classes, difference) unless asked otherwise.
        summary_only = comparison.agree is True and not self._config.keep_agreeing_outputs
        shadow_output = output_record(
            outputs,
            manifest.outputs,
            classes,
            0 if summary_only else self._config.max_output_values,
        )
        return self.record(
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

    def cohort(self, job: ShadowJob) -> str:
        """The named cohort the run's request was routed by, or ""."""
        request = job.request
        decision = request.decision
        return self._cohorts.cohort(
            decision.release, decision.reason, request.targeting_key, request.context
        )

    def context(self, job: ShadowJob) -> dict[str, Attribute]:
        """The request's context attributes, as a record keeps them."""
        context = job.request.context
        return context if type(context) is dict else dict(context)

    def primary_latency_ms(self, job: ShadowJob) -> float | None:
        """How long the primary took, in milliseconds (None when unknown)."""
        request = job.request
        latency = request.primary_latency_s
        if latency is None and request.primary is not None:
            latency = request.primary.latency_s
        return None if latency is None else latency * 1000

    @property
    def keeps_agreeing_outputs(self) -> bool:
        """Whether an agreement keeps both outputs (else only its top classes and shapes)."""
        return self._config.keep_agreeing_outputs

    def summary_outputs(
        self, manifest: Manifest, answer: Answer, primary: PrimarySide
    ) -> tuple[OutputRecord, OutputRecord]:
        """Both sides of an answered run as an agreement keeps them: top classes and shapes
        (the tensors of an `AgreementBatch`)."""
        assert answer.outputs is not None
        return (
            output_record(primary.outputs, primary.specs, primary.classes, 0),
            output_record(answer.outputs, manifest.outputs, answer.classes, 0),
        )

    def internal_errors(
        self, jobs: Iterable[ShadowJob], error: Exception
    ) -> list[ComparisonRecord]:
        """The records of runs a bug of ours cut short: a shadow error each, saying so."""
        return [
            self.record(job, "shadow_error", shadow_error=f"internal error: {error}")
            for job in jobs
        ]

    def record(
        self,
        job: ShadowJob,
        outcome: ComparisonOutcome,
        *,
        shadow_error: str = "",
        shadow_latency_s: float | None = None,
        shadow_output: OutputRecord | None = None,
        primary: PrimarySide | None = None,
        rows: int = 0,
        agreed_rows: int | None = None,
        agree: bool | None = None,
        max_abs_diff: float | None = None,
    ) -> ComparisonRecord:
        """One run's record; the primary's side is worked out here when not given."""
        request = job.request
        decision = request.decision
        if primary is None:
            primary = self.primary(job)
        inputs: dict[str, TensorData] | None = None
        inputs_dropped = False
        if job.policy.keep_inputs and primary.inputs:
            specs = primary.manifest.inputs if primary.manifest is not None else []
            inputs = input_record(primary.inputs, specs, job.policy.max_input_bytes)
            inputs_dropped = inputs is None
        if not rows and primary.classes is not None:
            rows = len(primary.classes)
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
            cohort=self.cohort(job),
            context=self.context(job),
            rows=rows,
            agreed_rows=agreed_rows,
            agree=agree,
            max_abs_diff=max_abs_diff,
            primary_latency_ms=self.primary_latency_ms(job),
            shadow_latency_ms=None if shadow_latency_s is None else shadow_latency_s * 1000,
            primary_error=request.primary_error,
            shadow_error=shadow_error,
            primary_output=primary_output,
            shadow_output=shadow_output,
            inputs=inputs,
            inputs_dropped=inputs_dropped,
        )


def _stack(jobs: Sequence[ShadowJob]) -> StackedPrimaries | None:
    """The runs' primary outputs stacked, when there are several of one version, each output
    with rows, one dtype and the same shape past the rows."""
    if len(jobs) < 2:
        return None
    answers = []
    version = None
    for job in jobs:
        prediction = job.request.primary
        if prediction is None or not prediction.raw_outputs:
            return None
        if version is None:
            version = prediction.version
        elif prediction.version != version:
            return None
        answers.append(prediction.raw_outputs)
    first = answers[0]
    names = list(first)
    rows = []
    for outputs in answers:
        if len(outputs) != len(names):
            return None
        count = -1
        for name in names:
            array, model = outputs.get(name), first[name]
            if (
                array is None
                or array.ndim == 0
                or array.dtype != model.dtype
                or array.shape[1:] != model.shape[1:]
                or (count >= 0 and array.shape[0] != count)
            ):
                return None
            count = array.shape[0]
        rows.append(max(count, 0))
    stacked = {name: np.concatenate([outputs[name] for outputs in answers]) for name in names}
    return StackedPrimaries(stacked, rows)
