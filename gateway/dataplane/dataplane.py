"""Runs a V2 request against one model version: validate on the loop, predict on its executor."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from gateway.dataplane.tensors import decode_input
from gateway.dataplane.v2 import InferenceRequest, RequestInput
from gateway.errors import InferenceFailed, InvalidRequest
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, TensorSpec
from gateway.runtimes.base import Tensor

if TYPE_CHECKING:
    from gateway.execution.pool import Executors


class Limits(msgspec.Struct, frozen=True):
    """Per-request bounds a client cannot exceed."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_rows: int = 1024


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a version answered: its outputs in manifest (or requested) order.

    `inputs` are the decoded input tensors it ran on, and `raw_outputs` every output it
    returned (checked against its manifest), whichever the client asked for: shadow mode
    compares them with other versions after the response is sent.
    """

    model: str
    version: str
    outputs: list[tuple[TensorSpec, Tensor]]
    latency_s: float
    inputs: Mapping[str, Tensor] = field(default_factory=dict)
    raw_outputs: Mapping[str, Tensor] = field(default_factory=dict)
    classes: list[str] | None = None
    """The predicted class of each row (`dataplane.classes`); None for a model without one."""


class _RequestIds:
    """24 hex digits: 16 drawn at random per process, then a counter.

    Unique across processes without a system call per request; a forked worker draws its
    own prefix, so workers never share one.
    """

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    return _request_ids.next()


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request decoded against one version's signature, ready to run."""

    model: str
    version: str
    manifest: Manifest
    inputs: dict[str, Tensor]
    wanted: list[TensorSpec]
    rows: int | None
    started: float
    """`time.perf_counter()` when decoding began: a prediction's latency counts from it."""


class DataPlane:
    """Validates a request against the version's manifest, runs it on the version's executor,
    and hands back what it answered (checked against the signature by the executor)."""

    def __init__(
        self, registry: ModelRegistry, executors: Executors, limits: Limits, metrics: GatewayMetrics
    ) -> None:
        self.registry = registry
        self.executors = executors
        self.limits = limits
        self._metrics = metrics

    def decode(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None = None,
        *,
        variant: str = "",
    ) -> Decoded:
        """`request` as `version`'s inputs (the model's default when None); a request that
        cannot be is counted (invalid_request, unavailable) and raised."""
        started = time.perf_counter()
        loaded = self.registry.version(model, version)
        outcome = "unavailable"
        try:
            manifest, _ = loaded.ready_runtime()
            outcome = "invalid_request"
            inputs = decode_inputs(
                manifest, request.inputs, binary_inputs or {}, self.limits.max_batch_rows
            )
            wanted = _requested_outputs(manifest, request)
            rows = batch_rows(manifest, inputs)
        except Exception:
            self._metrics.observe_request(model, loaded.version, outcome, None, variant)
            raise
        return Decoded(model, loaded.version, manifest, inputs, wanted, rows, started)

    async def run(self, decoded: Decoded, *, variant: str = "") -> Prediction:
        """Serve `decoded` on its version's executor, counting the outcome: ok, or the
        failure's kind (error, timeout, overloaded)."""
        model, version = decoded.model, decoded.version
        outcome, latency = "unavailable", None
        try:
            executor = self.executors.get(model, version)
            outcome = "error"
            try:
                answer = await executor.infer(decoded.inputs, decoded.rows or 1)
            except InferenceFailed as failure:
                if failure.kind in ("timeout", "overloaded"):
                    outcome = failure.kind
                raise
            finally:
                latency = time.perf_counter() - decoded.started
            outcome = "ok"
            raw = answer.outputs
            assert raw is not None  # infer raises for an answer without outputs
            return Prediction(
                model,
                version,
                [(spec, raw[spec.name]) for spec in decoded.wanted],
                latency,
                decoded.inputs,
                raw,
                answer.classes,
            )
        finally:
            self._metrics.observe_request(model, version, outcome, latency, variant)

    async def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None = None,
        *,
        variant: str = "",
    ) -> Prediction:
        """Decode and run `request` on `version` (the model's default when None)."""
        decoded = self.decode(model, version, request, binary_inputs, variant=variant)
        return await self.run(decoded, variant=variant)


def decode_inputs(
    manifest: Manifest,
    given: list[RequestInput],
    binary: Mapping[str, bytes],
    max_batch_rows: int,
) -> dict[str, Tensor]:
    """The request's inputs as arrays checked against `manifest`'s signature, by name."""
    by_name = {tensor.name: tensor for tensor in given}
    if len(by_name) != len(given):
        raise InvalidRequest("inputs repeat a name; each input appears once")
    unknown = by_name.keys() - {spec.name for spec in manifest.inputs}
    if unknown:
        raise InvalidRequest(
            f"unknown input(s) {sorted(unknown)}; the model takes "
            f"{[spec.name for spec in manifest.inputs]}"
        )
    inputs: dict[str, Tensor] = {}
    for spec in manifest.inputs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise InvalidRequest(f"missing input {spec.name!r} ({spec.datatype} {spec.shape})")
        inputs[spec.name] = decode_input(spec, tensor, max_batch_rows, binary.get(spec.name))
    return inputs


def _requested_outputs(manifest: Manifest, request: InferenceRequest) -> list[TensorSpec]:
    if not request.outputs:
        return manifest.outputs
    declared = {spec.name: spec for spec in manifest.outputs}
    missing = [o.name for o in request.outputs if o.name not in declared]
    if missing:
        raise InvalidRequest(
            f"requested output(s) {missing} do not exist; the model has {list(declared)}"
        )
    return [declared[o.name] for o in request.outputs]


def batch_rows(manifest: Manifest, inputs: Mapping[str, Tensor]) -> int | None:
    """The shared batch size when inputs have a variable first dimension."""
    rows = {inputs[s.name].shape[0] for s in manifest.inputs if s.shape and s.shape[0] == -1}
    if len(rows) > 1:
        raise InvalidRequest(f"inputs disagree on the batch size: {sorted(rows)}")
    return rows.pop() if rows else None
