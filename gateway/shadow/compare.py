"""Comparing a shadow version's answer with the primary's: plain Python and numpy, no I/O.

Agreement is on the predicted class of each row, by the rule every part of the gateway uses
(`gateway.dataplane.classes`). The difference is the largest absolute difference between
same-named floating-point outputs of the same shape (for the demo, the probabilities).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from gateway.dataplane.tensors import NUMPY_DTYPES
from gateway.repository.manifest import TensorSpec
from gateway.runtimes.base import Tensor
from gateway.state import OutputRecord, TensorData

_DATATYPE_OF = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


class Comparison(NamedTuple):
    """How two answers to one request compare.

    `agreed_rows` and `agree` are None when either side has no class output (or the two
    disagree on the number of rows): such answers are only compared by their difference.
    """

    rows: int
    agreed_rows: int | None
    agree: bool | None
    max_abs_diff: float | None


def _comparable(
    primary: Mapping[str, Tensor], shadow: Mapping[str, Tensor]
) -> Iterator[tuple[Tensor, Tensor]]:
    """The pairs of same-named floating-point outputs of the same shape: what is compared."""
    for name, mine in primary.items():
        theirs = shadow.get(name)
        if (
            theirs is not None
            and mine.dtype.kind == "f"
            and theirs.dtype.kind == "f"
            and mine.shape == theirs.shape
        ):
            yield mine, theirs


def max_abs_diff(primary: Mapping[str, Tensor], shadow: Mapping[str, Tensor]) -> float | None:
    """The largest |primary - shadow| over the floating-point outputs both have, same shape."""
    largest: float | None = None
    for mine, theirs in _comparable(primary, shadow):
        if mine.size == 0:
            continue
        delta = np.subtract(mine, theirs, dtype=np.float64)
        diff = float(np.abs(delta, out=delta).max())
        largest = diff if largest is None else max(largest, diff)
    return largest


def compare(
    primary_classes: list[str] | None,
    shadow_classes: list[str] | None,
    primary: Mapping[str, Tensor],
    shadow: Mapping[str, Tensor],
) -> Comparison:
    """Agreement on the top class row by row, and the largest difference of the outputs."""
    return agreement(primary_classes, shadow_classes, primary, max_abs_diff(primary, shadow))


def agreement(
    primary_classes: list[str] | None,
    shadow_classes: list[str] | None,
    primary: Mapping[str, Tensor],
    diff: float | None,
) -> Comparison:
    """The comparison of two answers whose difference is known: agreement row by row on the
    top class, where both sides name one for the same number of rows (the rows are the
    primary's)."""
    if primary_classes is None or shadow_classes is None:
        return Comparison(_rows(primary_classes, primary), None, None, diff)
    if len(primary_classes) != len(shadow_classes):
        return Comparison(len(primary_classes), None, None, diff)
    agreed = sum(map(operator.eq, primary_classes, shadow_classes))
    return Comparison(len(primary_classes), agreed, agreed == len(primary_classes), diff)


def _rows(classes: list[str] | None, outputs: Mapping[str, Tensor]) -> int:
    if classes is not None:
        return len(classes)
    for array in outputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def output_record(
    outputs: Mapping[str, Tensor],
    specs: Sequence[TensorSpec],
    classes: list[str] | None,
    max_values: int,
) -> OutputRecord:
    """One side's answer as a record keeps it: every declared output's shape and datatype,
    with its data while the side's total stays within `max_values` elements."""
    tensors: dict[str, TensorData] = {}
    budget = max_values
    for spec in specs:
        array = outputs.get(spec.name)
        if array is None:
            continue
        keep = array.size <= budget
        if keep:
            budget -= array.size
        tensors[spec.name] = tensor_data(array, spec.datatype, keep=keep)
    return OutputRecord(classes=classes, tensors=tensors)


def input_record(
    inputs: Mapping[str, Tensor], specs: Sequence[TensorSpec], max_bytes: int
) -> dict[str, TensorData] | None:
    """The inputs as a record keeps them, or None when together they exceed `max_bytes`."""
    if sum(tensor_bytes(array) for array in inputs.values()) > max_bytes:
        return None
    datatypes = {spec.name: spec.datatype for spec in specs}
    return {
        name: tensor_data(array, datatypes.get(name) or _datatype(array), keep=True)
        for name, array in inputs.items()
    }


def tensor_bytes(array: Tensor) -> int:
    """The bytes a tensor's values take (for BYTES, the sum of the elements' lengths)."""
    if array.dtype.kind == "O":
        return sum(len(v) if isinstance(v, bytes | str) else 8 for v in array.ravel().tolist())
    return int(array.nbytes)


def tensor_data(array: Tensor, datatype: str, *, keep: bool) -> TensorData:
    data: list[Any] | None = None
    if keep:
        data = array.ravel().tolist()
        if array.dtype.kind == "O":
            data = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in data]
    return TensorData(shape=list(array.shape), datatype=datatype, data=data)


def _datatype(array: Tensor) -> str:
    return _DATATYPE_OF.get(array.dtype, str(array.dtype))
