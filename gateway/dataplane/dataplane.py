"""Runs a V2 request against one model version: validate, predict, check what came back."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.dataplane.tensors import check_output, decode_input
from gateway.dataplane.v2 import InferenceRequest, RequestInput
from gateway.errors import InferenceFailed, InvalidRequest
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, TensorSpec
from gateway.runtimes.base import Tensor


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


class DataPlane:
    """Validates a request against the version's manifest, runs it, and checks what came back."""

    def __init__(self, registry: ModelRegistry, limits: Limits, metrics: GatewayMetrics) -> None:
        self.registry = registry
        self.limits = limits
        self._metrics = metrics

    def infer(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None = None,
        *,
        variant: str = "",
    ) -> Prediction:
        """Serve `request` from `version` (the model's default when None), counting the outcome."""
        started = time.perf_counter()
        loaded = self.registry.version(model, version)
        outcome, latency = "unavailable", None
        try:
            manifest, runtime = loaded.ready_runtime()
            outcome = "invalid_request"
            inputs = decode_inputs(
                manifest, request.inputs, binary_inputs or {}, self.limits.max_batch_rows
            )
            wanted = _requested_outputs(manifest, request)
            rows = batch_rows(manifest, inputs)
            outcome = "error"
            try:
                raw = runtime.predict(inputs)
            except Exception as exc:
                raise InferenceFailed(
                    model, loaded.version, f"{type(exc).__name__}: {exc}"
                ) from exc
            finally:
                latency = time.perf_counter() - started
            _check_outputs(model, loaded.version, manifest, raw, rows)
            outcome = "ok"
            return Prediction(
                model, loaded.version, [(s, raw[s.name]) for s in wanted], latency, inputs, raw
            )
        finally:
            self._metrics.observe_request(model, loaded.version, outcome, latency, variant)


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


def _check_outputs(
    model: str, version: str, manifest: Manifest, raw: dict[str, Any], rows: int | None
) -> None:
    """A version whose output breaks its own signature has failed, whatever it returned."""
    for spec in manifest.outputs:
        problem = check_output(spec, raw.get(spec.name), rows)
        if problem is not None:
            raise InferenceFailed(model, version, problem, kind="invalid_output")


def batch_rows(manifest: Manifest, inputs: Mapping[str, Tensor]) -> int | None:
    """The shared batch size when inputs have a variable first dimension."""
    rows = {inputs[s.name].shape[0] for s in manifest.inputs if s.shape and s.shape[0] == -1}
    if len(rows) > 1:
        raise InvalidRequest(f"inputs disagree on the batch size: {sorted(rows)}")
    return rows.pop() if rows else None
