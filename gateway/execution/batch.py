"""Running several requests to one version as one call, and each request's share of it.

A batch is stacked along the batch dimension (the leading -1 of every input and output the
manifest declares), predicted once, split back by rows and checked against the signature.
A batch that raises, or whose outputs do not split by rows, is retried request by request, so
one bad input never fails its neighbours; a batch whose outputs are sound except for some
rows (say a NaN) fails only the requests those rows belong to. Plain numpy, no I/O; the
executor's threads call it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from gateway.dataplane.classes import predicted_classes
from gateway.dataplane.tensors import check_output
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor

EXCEPTION = "exception"
INVALID_OUTPUT = "invalid_output"


class Answer(msgspec.Struct, frozen=True, gc=False):
    """One request's share of a call: its outputs (every output the manifest declares,
    checked), or why it has none. `latency_s` is the call's time, shared by its requests.
    (Untracked by the garbage collector: a call makes one per request, none in a cycle.)"""

    outputs: dict[str, Tensor] | None
    error: str = ""
    kind: str = ""
    """`exception` (the version raised) or `invalid_output` (its answer broke its own
    signature); empty when answered."""
    latency_s: float = 0.0
    classes: list[str] | None = None
    """The predicted class of each row (`dataplane.classes`), found once for the whole call
    on the executor's thread, so the event loop never computes it; None without one."""


def has_batch_dimension(manifest: Manifest) -> bool:
    """Every input and output leads with a dimension of any size: requests can be stacked
    along it and the answer split back."""
    return all(spec.shape and spec.shape[0] == -1 for spec in (*manifest.inputs, *manifest.outputs))


def predict(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> list[Answer]:
    """One answer per request: from one call where the requests stack, else one call each."""
    if len(inputs) > 1 and _stackable(manifest, inputs):
        answers = _predict_stacked(manifest, runtime, inputs)
        if answers is not None:
            return answers
    return [_predict_one(manifest, runtime, one) for one in inputs]


def rows_of(manifest: Manifest, inputs: Mapping[str, Tensor]) -> int | None:
    """The request's rows along the batch dimension (None for a version without one)."""
    for spec in manifest.inputs:
        if spec.shape and spec.shape[0] == -1:
            return int(inputs[spec.name].shape[0])
    return None


def _predict_one(manifest: Manifest, runtime: ModelRuntime, inputs: Mapping[str, Tensor]) -> Answer:
    started = time.perf_counter()
    try:
        raw = runtime.predict(inputs)
    except Exception as exc:
        return Answer(
            None, f"{type(exc).__name__}: {exc}", EXCEPTION, time.perf_counter() - started
        )
    return _checked(manifest, raw, rows_of(manifest, inputs), time.perf_counter() - started)


def _checked(
    manifest: Manifest, raw: Mapping[str, object], rows: int | None, latency_s: float
) -> Answer:
    for spec in manifest.outputs:
        problem = check_output(spec, raw.get(spec.name), rows)
        if problem is not None:
            return Answer(None, problem, INVALID_OUTPUT, latency_s)
    outputs: dict[str, Tensor] = {spec.name: raw[spec.name] for spec in manifest.outputs}  # type: ignore[misc]
    classes = predicted_classes(outputs, manifest.outputs, manifest.labels)
    return Answer(outputs, latency_s=latency_s, classes=classes)


def _stackable(manifest: Manifest, inputs: Sequence[Mapping[str, Tensor]]) -> bool:
    """The version has a batch dimension, and the requests agree on each input's dtype and
    the dimensions past the first."""
    if not has_batch_dimension(manifest):
        return False
    for spec in manifest.inputs:
        first = inputs[0][spec.name]
        for one in inputs[1:]:
            array = one[spec.name]
            if array.dtype != first.dtype or array.shape[1:] != first.shape[1:]:
                return False
    return True


def _predict_stacked(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> list[Answer] | None:
    """The requests as one call, split back; None when the call raises or its outputs do not
    split by rows (each request then runs alone)."""
    counts = [int(one[manifest.inputs[0].name].shape[0]) for one in inputs]
    total = sum(counts)
    stacked = {
        spec.name: np.concatenate([one[spec.name] for one in inputs]) for spec in manifest.inputs
    }
    started = time.perf_counter()
    try:
        raw = runtime.predict(stacked)
    except Exception:
        return None
    latency = time.perf_counter() - started
    arrays: dict[str, Tensor] = {}
    for spec in manifest.outputs:
        array = raw.get(spec.name)
        if not isinstance(array, np.ndarray) or array.ndim < 1 or array.shape[0] != total:
            return None
        arrays[spec.name] = array
    whole = _checked(manifest, arrays, total, latency)
    classes = whole.classes
    answers = []
    offset = 0
    for count in counts:
        end = offset + count
        part = {name: array[offset:end] for name, array in arrays.items()}
        # A sound call is sound in every part; otherwise find the parts that break it.
        if whole.outputs is None:
            answers.append(_checked(manifest, part, count, latency))
        else:
            rows = None if classes is None else classes[offset:end]
            answers.append(Answer(part, latency_s=latency, classes=rows))
        offset = end
    return answers
