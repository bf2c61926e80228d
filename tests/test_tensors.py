"""Decoding V2 tensors against a signature, unit by unit, and a round-trip property."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dataplane.codec import decode_request, wants_binary
from gateway.dataplane.tensors import NUMPY_DTYPES, check_output, decode_input, encode_output
from gateway.dataplane.v2 import RequestInput
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.repository.manifest import TensorSpec

PIXELS = TensorSpec("pixels", "FP32", [-1, 64])


def tensor(**fields: Any) -> RequestInput:
    base: dict[str, Any] = {"name": "pixels", "shape": [1, 64], "datatype": "FP32"}
    base["data"] = [0.5] * 64
    base.update(fields)
    return RequestInput(**base)


def test_flat_and_nested_data_decode_alike() -> None:
    """Flat and nested data with the same shape give the same array of the spec's dtype."""
    flat = decode_input(PIXELS, tensor(shape=[2, 64], data=[1.0] * 128), 10)
    nested = decode_input(PIXELS, tensor(shape=[2, 64], data=[[1.0] * 64] * 2), 10)
    assert flat.dtype == np.float32
    assert flat.shape == (2, 64)
    assert np.array_equal(flat, nested)


def test_integers_are_accepted_as_floats() -> None:
    """JSON integers are valid FP32 values."""
    array = decode_input(PIXELS, tensor(data=[3] * 64), 10)
    assert array.dtype == np.float32
    assert array[0, 0] == 3.0


def test_batch_limit() -> None:
    """More rows than the configured limit raise PayloadTooLarge naming the limit."""
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        decode_input(PIXELS, tensor(shape=[3, 64], data=[0.0] * 192), 2)


def test_integer_range_is_checked() -> None:
    """An integer outside the target type's range is refused instead of wrapping around."""
    spec = TensorSpec("x", "UINT8", [-1])
    with pytest.raises(InvalidRequest, match="out of UINT8 range"):
        decode_input(spec, RequestInput("x", [2], "UINT8", [1, 300]), 10)
    with pytest.raises(InvalidRequest, match="floating-point"):
        decode_input(spec, RequestInput("x", [1], "UINT8", [1.5]), 10)


def test_binary_bytes_must_fill_whole_values() -> None:
    """Binary data whose length is not a multiple of the item size is refused."""
    with pytest.raises(InvalidRequest, match="whole number"):
        decode_input(PIXELS, tensor(data=None), 10, raw=b"\x00" * 7)


def test_output_checks() -> None:
    """Outputs with wrong rows, wrong rank or non-finite values are reported; sound ones pass."""
    spec = TensorSpec("probabilities", "FP32", [-1, 10])
    assert check_output(spec, np.zeros((2, 10), np.float32), 2) is None
    assert "rows" in str(check_output(spec, np.zeros((3, 10), np.float32), 2))
    assert "dimensions" in str(check_output(spec, np.zeros(10, np.float32), 2))
    assert "non-finite" in str(check_output(spec, np.full((2, 10), np.nan, np.float32), 2))
    assert "not a tensor" in str(check_output(spec, None, 2))


def test_binary_output_selection() -> None:
    """binary_data_output asks for all outputs in binary; per-output flags pick some."""
    everything = decode_request(
        b'{"inputs":[],"parameters":{"binary_data_output":true}}', None
    ).request
    assert wants_binary(everything) == {"*"}
    some = decode_request(
        b'{"inputs":[],"outputs":[{"name":"label","parameters":{"binary_data":true}},'
        b'{"name":"probabilities"}]}',
        None,
    ).request
    assert wants_binary(some) == {"label"}
    assert wants_binary(decode_request(b'{"inputs":[]}', None).request) is None


NUMERIC = ["FP32", "FP64", "INT32", "INT64", "UINT8", "INT8"]


@given(
    datatype=st.sampled_from(NUMERIC),
    rows=st.integers(min_value=0, max_value=4),
    cols=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_round_trip_json_and_binary(
    datatype: str, rows: int, cols: int, data: st.DataObject
) -> None:
    """Any valid tensor decodes from JSON and from binary to the same array, and encodes back."""
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind == "f":
        element = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
    else:
        info = np.iinfo(dtype)
        element = st.integers(
            min_value=max(int(info.min), -(2**31)), max_value=min(int(info.max), 2**31)
        )
    values = data.draw(st.lists(element, min_size=rows * cols, max_size=rows * cols))
    spec = TensorSpec("x", datatype, [-1, cols])  # type: ignore[arg-type]
    from_json = decode_input(spec, RequestInput("x", [rows, cols], datatype, values), 100)
    expected = np.array(values, dtype=dtype).reshape(rows, cols)
    assert np.array_equal(from_json, expected)
    from_binary = decode_input(
        spec, RequestInput("x", [rows, cols], datatype), 100, raw=expected.tobytes()
    )
    assert np.array_equal(from_binary, expected)
    encoded = encode_output(spec, from_json)
    assert encoded.shape == [rows, cols]
    assert encoded.data == expected.ravel().tolist()
