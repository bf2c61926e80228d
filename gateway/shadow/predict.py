"""Predicting a batch of shadow runs: one `predict` for all of them where the version's
signature allows it (inputs concatenated along their batch dimension, outputs split back
and checked once), else, or when the batch fails, one `predict` per run, so that a failure
is its own."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.dataplane.dataplane import batch_rows
from gateway.dataplane.tensors import check_output
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor
from gateway.shadow.compare import top_classes
from gateway.shadow.records import Answer


@dataclass(frozen=True, slots=True)
class Batch:
    """A batched prediction's outputs, `rows` rows per run, stacked in the runs' order."""

    outputs: dict[str, Tensor]
    rows: list[int]


def predict(
    manifest: Manifest, runtime: ModelRuntime, inputs: Sequence[Mapping[str, Tensor]]
) -> tuple[list[Answer], Batch | None]:
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
    return _checked(manifest, raw, batch_rows(manifest, inputs), latency)


def _checked(
    manifest: Manifest, raw: Mapping[str, Any], rows: int | None, latency_s: float
) -> Answer:
    for spec in manifest.outputs:
        problem = check_output(spec, raw.get(spec.name), rows)
        if problem is not None:
            return Answer(None, f"InvalidOutput: {problem}", latency_s)
    outputs = {spec.name: raw[spec.name] for spec in manifest.outputs}
    return Answer(outputs, "", latency_s, top_classes(outputs, manifest.outputs, manifest.labels))


def has_batch_dimension(manifest: Manifest) -> bool:
    """Every input and output of the version has a leading dimension of any size: requests
    can be stacked along it and its answer split back."""
    specs = (*manifest.inputs, *manifest.outputs)
    return all(spec.shape and spec.shape[0] == -1 for spec in specs)


def _batchable(manifest: Manifest, inputs: Sequence[Mapping[str, Tensor]]) -> bool:
    """The version has a batch dimension (`has_batch_dimension`), and the requests agree on
    the dtype and the other dimensions of each input."""
    if not has_batch_dimension(manifest):
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
) -> tuple[list[Answer], Batch] | None:
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
    return answers, Batch(arrays, rows)
