"""What shadow mode queues for a request, and the comparison record each shadow run becomes.

Plain Python and numpy, no I/O. The records are built on the shadow version's executor
thread, at the lowest scheduling priority, from the primary's answer and the shadow's.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.dataplane import Prediction
from gateway.execution.batch import Answer
from gateway.flags.router import RouteDecision
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, TensorSpec
from gateway.runtimes.base import Tensor
from gateway.shadow.cohorts import Attribute, cohort_of
from gateway.shadow.compare import agreement, input_record, max_abs_diff, output_record
from gateway.shadow.policy import ShadowConfig, ShadowPolicy
from gateway.state import ComparisonOutcome, ComparisonRecord, OutputRecord, TensorData

TIMEOUT = "timeout"


class ShadowRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A routed request whose primary answered (`primary`) or failed (`primary_error`), with
    the inputs it was decoded to, which its shadows run on. (Untracked by the garbage
    collector: the request path builds one per shadowed request, and it refers to nothing
    that refers back to it.)"""

    decision: RouteDecision
    request_id: str
    targeting_key: str
    context: Mapping[str, Attribute]
    at: float
    inputs: Mapping[str, Tensor]
    primary: Prediction | None
    primary_error: str = ""
    primary_latency_s: float | None = None


class ShadowJob(msgspec.Struct, frozen=True, gc=False):
    """One shadow version's run of a request, under its release's shadow policy."""

    request: ShadowRequest
    policy: ShadowPolicy


class _Side(msgspec.Struct, frozen=True, gc=False):
    outputs: Mapping[str, Tensor]
    specs: list[TensorSpec]
    classes: list[str] | None


class RecordMaker:
    """Builds the record of a shadow run, whatever its outcome."""

    def __init__(self, registry: ModelRegistry, config: ShadowConfig) -> None:
        self._registry = registry
        self._config = config

    def record(self, job: ShadowJob, version: str, answer: Answer) -> ComparisonRecord:
        """The record of `version`'s run of `job`."""
        classes = answer.classes
        request = job.request
        primary = self._primary(request)
        if answer.outputs is None:
            outcome: ComparisonOutcome = "timeout" if answer.kind == TIMEOUT else "shadow_error"
            return self._record(job, version, outcome, primary, answer, shadow_error=answer.error)
        manifest = self._manifest(request.decision.model, version)
        specs = manifest.outputs if manifest is not None else []
        if primary is None:
            shadow_output = output_record(
                answer.outputs, specs, classes, self._config.max_output_values
            )
            return self._record(
                job, version, "primary_error", None, answer, shadow_output=shadow_output
            )
        comparison = agreement(
            primary.classes, classes, primary.outputs, max_abs_diff(primary.outputs, answer.outputs)
        )
        # An agreement is kept as its summary (top classes, shapes) unless asked otherwise.
        summary_only = comparison.agree is True and not self._config.keep_agreeing_outputs
        budget = 0 if summary_only else self._config.max_output_values
        return self._record(
            job,
            version,
            "compared",
            primary,
            answer,
            primary_output=output_record(primary.outputs, primary.specs, primary.classes, budget),
            shadow_output=output_record(answer.outputs, specs, classes, budget),
            rows=comparison.rows,
            agreed_rows=comparison.agreed_rows,
            agree=comparison.agree,
            max_abs_diff=comparison.max_abs_diff,
        )

    def _primary(self, request: ShadowRequest) -> _Side | None:
        prediction = request.primary
        if prediction is None:
            return None
        manifest = self._manifest(prediction.model, prediction.version)
        specs = (
            manifest.outputs if manifest is not None else [spec for spec, _ in prediction.outputs]
        )
        return _Side(prediction.raw_outputs, specs, prediction.classes)

    def _manifest(self, model: str, version: str) -> Manifest | None:
        try:
            return self._registry.version(model, version).manifest
        except Exception:  # a version the repository lacks has no manifest to read
            return None

    def _record(
        self,
        job: ShadowJob,
        version: str,
        outcome: ComparisonOutcome,
        primary: _Side | None,
        answer: Answer,
        *,
        shadow_error: str = "",
        primary_output: OutputRecord | None = None,
        shadow_output: OutputRecord | None = None,
        rows: int = 0,
        agreed_rows: int | None = None,
        agree: bool | None = None,
        max_abs_diff: float | None = None,
    ) -> ComparisonRecord:
        request = job.request
        decision = request.decision
        if primary is not None and primary_output is None:
            primary_output = output_record(
                primary.outputs, primary.specs, primary.classes, self._config.max_output_values
            )
        if not rows and primary is not None and primary.classes is not None:
            rows = len(primary.classes)
        inputs, inputs_dropped = self._inputs(job)
        latency = request.primary_latency_s
        if latency is None and request.primary is not None:
            latency = request.primary.latency_s
        return ComparisonRecord(
            request_id=request.request_id,
            at=request.at,
            model=decision.model,
            primary_version=decision.serve,
            shadow_version=version,
            outcome=outcome,
            variant=decision.variant or "",
            cohort=cohort_of(
                decision.release, decision.reason, request.targeting_key, request.context
            ),
            context=dict(request.context),
            rows=rows,
            agreed_rows=agreed_rows,
            agree=agree,
            max_abs_diff=max_abs_diff,
            primary_latency_ms=None if latency is None else latency * 1000,
            shadow_latency_ms=_shadow_latency_ms(job, outcome, answer),
            primary_error=request.primary_error,
            shadow_error=shadow_error,
            primary_output=primary_output,
            shadow_output=shadow_output,
            inputs=inputs,
            inputs_dropped=inputs_dropped,
        )

    def _inputs(self, job: ShadowJob) -> tuple[dict[str, TensorData] | None, bool]:
        """The request's inputs as the record keeps them (when the release asks), and whether
        they were asked for but too large."""
        if not job.policy.keep_inputs:
            return None, False
        request = job.request
        manifest = self._manifest(request.decision.model, request.decision.serve)
        specs = manifest.inputs if manifest is not None else []
        kept = input_record(request.inputs, specs, job.policy.max_input_bytes)
        return kept, kept is None


def _shadow_latency_ms(job: ShadowJob, outcome: ComparisonOutcome, answer: Answer) -> float | None:
    if outcome == "timeout":
        return job.policy.timeout_s * 1000
    return answer.latency_s * 1000 if answer.outputs is not None or answer.latency_s else None
