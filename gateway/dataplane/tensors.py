"""Turning V2 JSON tensors into numpy arrays checked against a signature, and back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.dataplane.v2 import RequestInput, ResponseOutput
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.repository.manifest import TensorSpec
from gateway.runtimes.base import Tensor

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# Which kinds of JSON values numpy may infer for each target kind: strings never pass as
# numbers, floats never pass as integers, numbers never pass as booleans.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", "O": "U"}


def decode_input(
    spec: TensorSpec, given: RequestInput, max_batch_rows: int, raw: bytes | None = None
) -> Tensor:
    """Return `given` (or its binary `raw` bytes) as an array of the spec's dtype and shape."""
    name = spec.name
    if given.datatype != spec.datatype:
        raise InvalidRequest(
            f"input {name!r} has datatype {given.datatype}; the model expects {spec.datatype}"
        )
    shape = given.shape
    _check_shape(name, spec.shape, shape)
    if spec.shape and spec.shape[0] == -1 and shape[0] > max_batch_rows:
        raise PayloadTooLarge(
            f"input {name!r} has {shape[0]} rows; the limit is {max_batch_rows} per request"
        )
    expected_count = math.prod(shape)
    if raw is not None:
        array = _from_bytes(name, raw, spec.datatype)
    elif given.data is not None:
        array = _as_array(name, given.data, spec.datatype)
    else:
        raise InvalidRequest(f"input {name!r} has no data")
    if array.size != expected_count:
        raise InvalidRequest(
            f"input {name!r} declares shape {shape} ({expected_count} elements) "
            f"but its data has {array.size}"
        )
    array = array.reshape(shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidRequest(
            f"input {name!r} holds a non-finite value "
            f"(NaN, infinity, or out of {spec.datatype} range)"
        )
    return array


def _check_shape(name: str, expected: list[int], shape: list[int]) -> None:
    if len(shape) != len(expected) or any(
        dim < 0 or want not in {-1, dim} for want, dim in zip(expected, shape, strict=True)
    ):
        raise InvalidRequest(
            f"input {name!r} has shape {shape}; the model expects {expected} (-1: any size)"
        )


def _as_array(name: str, data: list[Any], datatype: str) -> Tensor:
    target = NUMPY_DTYPES[datatype]
    try:
        inferred = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidRequest(f"input {name!r}: data is not a regular nested list ({exc})") from exc
    if inferred.size and inferred.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise InvalidRequest(
            f"input {name!r}: data holds {_describe_kind(inferred.dtype.kind)}, "
            f"not {datatype} values"
        )
    if target.kind in "iu" and inferred.size:
        limits = np.iinfo(target)
        if inferred.min() < limits.min or inferred.max() > limits.max:
            raise InvalidRequest(f"input {name!r}: a value is out of {datatype} range")
    with np.errstate(over="ignore"):
        return inferred.astype(target, copy=False)


def _from_bytes(name: str, raw: bytes, datatype: str) -> Tensor:
    if datatype == "BYTES":
        items: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidRequest(f"input {name!r}: truncated BYTES length prefix")
            length = int.from_bytes(raw[offset : offset + 4], "little")
            offset += 4
            if offset + length > len(raw):
                raise InvalidRequest(f"input {name!r}: BYTES element runs past its data")
            items.append(raw[offset : offset + length])
            offset += length
        return np.array(items, dtype=np.object_)
    dtype = NUMPY_DTYPES[datatype]
    if len(raw) % dtype.itemsize:
        raise InvalidRequest(
            f"input {name!r}: {len(raw)} binary bytes are not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype)


def _describe_kind(kind: str) -> str:
    return {
        "U": "strings",
        "b": "booleans",
        "f": "floating-point numbers",
        "i": "integers",
        "u": "integers",
        "O": "mixed or oversized values",
    }.get(kind, f"values of kind {kind!r}")


def encode_output(spec: TensorSpec, array: Tensor) -> ResponseOutput:
    """A V2 output tensor, data flattened in row-major order as the protocol says."""
    data = array.ravel().tolist()
    if spec.datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
    return ResponseOutput(
        name=spec.name, shape=list(array.shape), datatype=spec.datatype, data=data
    )


def check_output(spec: TensorSpec, array: object, batch_rows: int | None) -> str | None:
    """Why `array` breaks the declared output signature, or None when it is sound."""
    if not isinstance(array, np.ndarray):
        return f"output {spec.name!r} is {type(array).__name__}, not a tensor"
    if array.ndim != len(spec.shape):
        return (
            f"output {spec.name!r} has {array.ndim} dimensions; the manifest declares {spec.shape}"
        )
    for index, (want, dim) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want == -1 and index == 0 and batch_rows is not None and dim != batch_rows:
            return f"output {spec.name!r} has {dim} rows for {batch_rows} input rows"
        if want not in {-1, dim}:
            return f"output {spec.name!r} has shape {list(array.shape)}; declared {spec.shape}"
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return f"output {spec.name!r} holds non-finite values"
    return None
