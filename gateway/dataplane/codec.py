"""V2 REST bodies in and out, JSON and the binary tensor data extension that tritonclient uses.

With the extension the body is the JSON header (its length in the
`Inference-Header-Content-Length` header) followed by each binary tensor's raw bytes, in
the order of the inputs (or outputs) that carry `parameters.binary_data_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from gateway.dataplane.tensors import encode_output
from gateway.dataplane.v2 import InferenceRequest, InferenceResponse, ResponseOutput
from gateway.errors import InvalidRequest, UnsupportedMediaType
from gateway.repository.manifest import TensorSpec
from gateway.runtimes.base import Tensor

_request_decoder = msgspec.json.Decoder(InferenceRequest)
_encoder = msgspec.json.Encoder()
_JSON_TYPES = ("application/json", "application/octet-stream", "")


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    request: InferenceRequest
    binary_inputs: dict[str, bytes]


def check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"content type {media_type!r} is not supported; send application/json"
        )


def decode_request(body: bytes, header_length: str | None) -> DecodedRequest:
    """Parse a V2 request body, splitting off binary tensors when the extension is used."""
    json_part, tail = body, b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidRequest("Inference-Header-Content-Length is not an integer") from None
        if not 0 < length <= len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes"
            )
        json_part, tail = body[:length], body[length:]
    if not json_part.strip():
        raise InvalidRequest("empty request body; send a V2 inference request as JSON")
    try:
        request = _request_decoder.decode(json_part)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid inference request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
    return DecodedRequest(request, _split_binary(request, tail))


def _split_binary(request: InferenceRequest, tail: bytes) -> dict[str, bytes]:
    chunks: dict[str, bytes] = {}
    offset = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise InvalidRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"input {tensor.name!r}: binary_data_size must be a byte count")
        if offset + size > len(tail):
            raise InvalidRequest(
                f"input {tensor.name!r}: binary_data_size {size} runs past the end of the body"
            )
        chunks[tensor.name] = tail[offset : offset + size]
        offset += size
    if offset != len(tail):
        raise InvalidRequest(
            f"{len(tail) - offset} bytes after the tensors are not claimed by any input"
        )
    return chunks


def wants_binary(request: InferenceRequest) -> set[str] | None:
    """Output names to send as binary; None means all outputs as JSON."""
    params = request.parameters or {}
    default = bool(params.get("binary_data_output", False))
    if request.outputs is None:
        return {"*"} if default else None
    names = {
        o.name for o in request.outputs if (o.parameters or {}).get("binary_data", default) is True
    }
    return names or None


def encode_response(
    model: str,
    version: str,
    request_id: str,
    outputs: list[tuple[TensorSpec, Tensor]],
    binary: set[str] | None,
) -> tuple[bytes, int | None]:
    """The response body and, when binary tensors follow the JSON, the JSON's length."""
    encoded: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for spec, array in outputs:
        if binary is not None and ("*" in binary or spec.name in binary):
            blob = _tensor_bytes(spec, array)
            blobs.append(blob)
            encoded.append(
                ResponseOutput(
                    name=spec.name,
                    shape=list(array.shape),
                    datatype=spec.datatype,
                    parameters={"binary_data_size": len(blob)},
                )
            )
        else:
            encoded.append(encode_output(spec, array))
    header = _encoder.encode(
        InferenceResponse(model_name=model, model_version=version, id=request_id, outputs=encoded)
    )
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _tensor_bytes(spec: TensorSpec, array: Tensor) -> bytes:
    if spec.datatype != "BYTES":
        return np.ascontiguousarray(array).tobytes()
    parts: list[bytes] = []
    for item in array.ravel().tolist():
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(raw).to_bytes(4, "little") + raw)
    return b"".join(parts)


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)
