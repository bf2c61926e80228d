"""Open Inference Protocol (V2) messages, as KServe and Triton define them."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.repository.manifest import TensorSpec


class RequestInput(msgspec.Struct, frozen=True):
    """An input tensor; `data` is absent when its bytes travel in the binary extension."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct, frozen=True):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, frozen=True):
    inputs: list[RequestInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


class ResponseOutput(msgspec.Struct, frozen=True, omit_defaults=True):
    """An output tensor: JSON `data`, or `parameters.binary_data_size` bytes after the JSON."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferenceResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    model_name: str
    model_version: str
    id: str
    outputs: list[ResponseOutput]
    parameters: dict[str, Any] | None = None


class ServerMetadata(msgspec.Struct, frozen=True):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, Any] | None = None


class V1PredictRequest(msgspec.Struct, frozen=True):
    """KServe V1 `:predict`: one instance per row of the model's single input."""

    instances: list[Any]


class V1PredictResponse(msgspec.Struct, frozen=True):
    predictions: list[Any]
    model_name: str
    model_version: str
    id: str
