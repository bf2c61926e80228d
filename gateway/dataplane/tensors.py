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

# `ndarray.all()` and `ndarray.max()` go through Python wrappers; ufuncs' reduce does not.
_isfinite = np.isfinite
_all = np.logical_and.reduce
_abs = np.abs
_max = np.maximum.reduce
_FLOAT_MAX = {name: float(np.finfo(NUMPY_DTYPES[name]).max) for name in ("FP16", "FP32", "FP64")}

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
        if array.dtype.kind == "f" and not _all(_isfinite(array), axis=None):
            raise _non_finite(name, spec.datatype)
    elif given.data is not None:
        array = _as_array(name, given.data, spec.datatype)
    else:
        raise InvalidRequest(f"input {name!r} has no data")
    if array.size != expected_count:
        raise InvalidRequest(
            f"input {name!r} declares shape {shape} ({expected_count} elements) "
            f"but its data has {array.size}"
        )
    return array.reshape(shape)


def _check_shape(name: str, expected: list[int], shape: list[int]) -> None:
    if len(shape) == len(expected):
        for want, dim in zip(expected, shape, strict=True):
            if dim < 0 or (want != dim and want != -1):  # noqa: PLR1714 - -1 is any size
                break
        else:
            return
    raise InvalidRequest(
        f"input {name!r} has shape {shape}; the model expects {expected} (-1: any size)"
    )


def _as_array(name: str, data: list[Any], datatype: str) -> Tensor:
    target = NUMPY_DTYPES[datatype]
    try:
        inferred = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidRequest(f"input {name!r}: data is not a regular nested list ({exc})") from exc
    kind = inferred.dtype.kind
    if target.kind == "f" and kind in "iuf":
        # One reduction checks both: NaN compares false, infinity and values the target
        # cannot hold are above its largest finite value (checked before the cast, which
        # would turn them into infinity with a warning).
        if inferred.size and not _max(_abs(inferred), axis=None) <= _FLOAT_MAX[datatype]:
            raise _non_finite(name, datatype)
        return inferred if inferred.dtype == target else inferred.astype(target)
    if inferred.size and kind not in _ACCEPTED_KINDS[target.kind]:
        raise InvalidRequest(
            f"input {name!r}: data holds {_describe_kind(kind)}, not {datatype} values"
        )
    if target.kind in "iu" and inferred.size:
        limits = np.iinfo(target)
        if inferred.min() < limits.min or inferred.max() > limits.max:
            raise InvalidRequest(f"input {name!r}: a value is out of {datatype} range")
    return inferred.astype(target, copy=False)


def _non_finite(name: str, datatype: str) -> InvalidRequest:
    return InvalidRequest(
        f"input {name!r} holds a non-finite value (NaN, infinity, or out of {datatype} range)"
    )


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
    shape = array.shape
    if batch_rows is not None and shape and spec.shape[0] == -1 and shape[0] != batch_rows:
        return f"output {spec.name!r} has {shape[0]} rows for {batch_rows} input rows"
    for want, dim in zip(spec.shape, shape, strict=True):
        if want != dim and want != -1:  # noqa: PLR1714 - -1 is any size
            return f"output {spec.name!r} has shape {list(shape)}; declared {spec.shape}"
    if array.dtype.kind == "f" and not _all(_isfinite(array), axis=None):
        return f"output {spec.name!r} holds non-finite values"
    return None
