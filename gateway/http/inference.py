"""V2 infer (routed and pinned) and KServe V1 `:predict`: decode, serve, encode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.dataplane import InferenceRequest, Prediction, RequestInput, new_request_id
from gateway.dataplane.codec import (
    check_content_type,
    decode_request,
    encode_json,
    encode_response,
    wants_binary,
)
from gateway.dataplane.v2 import InferenceResponse, V1PredictRequest, V1PredictResponse
from gateway.errors import InvalidRequest, VersionNotFound
from gateway.flags.router import Attribute
from gateway.http.context import attributes, targeting_key
from gateway.http.schemas import INFER_EXAMPLE, INFERENCE_ERRORS, V1_EXAMPLE, body, ok
from gateway.serving import Served, Serving

_v1_decoder = msgspec.json.Decoder(V1PredictRequest)
HEADER_LENGTH = "inference-header-content-length"  # the binary extension's JSON length


_INFER_HELP = (
    "An Open Inference Protocol (V2) request. With the binary tensor data extension the body "
    "is application/octet-stream: the JSON header (its length in "
    "Inference-Header-Content-Length) followed by the tensors' bytes."
)
_INFER_BODY = body(InferenceRequest, "A V2 inference request", example=INFER_EXAMPLE)
_INFER_RESPONSES = {200: ok(InferenceResponse, "The V2 inference response"), **INFERENCE_ERRORS}


class InferenceController(Controller):
    """Open Inference Protocol endpoints for application clients."""

    tags = ["inference"]

    @post(
        "/v2/models/{model:str}/infer",
        status_code=200,
        summary="Infer with the version the model's release flag routes to",
        description=_INFER_HELP,
        operation_class=_INFER_BODY,
        responses=_INFER_RESPONSES,
    )
    async def infer(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        serving: NamedDependency[Serving],
    ) -> Response[bytes]:
        return await _infer(request, model, None, serving)

    @post(
        "/v2/models/{model:str}/versions/{version:str}/infer",
        status_code=200,
        summary="Infer with one pinned version, bypassing routing",
        description=_INFER_HELP,
        operation_class=_INFER_BODY,
        responses=_INFER_RESPONSES,
    )
    async def infer_version(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        version: FromPath[str],
        serving: NamedDependency[Serving],
    ) -> Response[bytes]:
        return await _infer(request, model, version, serving)

    @post(
        "/v1/models/{target:str}",
        status_code=200,
        summary="KServe V1 predict: /v1/models/{model}:predict",
        operation_class=body(
            V1PredictRequest, "One instance per row of the model's input", example=V1_EXAMPLE
        ),
        responses={200: ok(V1PredictResponse), **INFERENCE_ERRORS},
    )
    async def predict_v1(
        self,
        request: Request[Any, Any, Any],
        target: FromPath[str],
        serving: NamedDependency[Serving],
    ) -> Response[bytes]:
        model, _, verb = target.rpartition(":")
        if verb != "predict" or not model:
            raise VersionNotFound(f"no such V1 endpoint {target!r}; use /v1/models/<model>:predict")
        check_content_type(request.headers.get("content-type"))
        v1 = _decode_v1(await request.body())
        # The V1 body has no room for tensor metadata: the serving version's signature says
        # what one instance is (every version of a model shares its input signature).
        spec = _single_input(serving, model)
        v2 = InferenceRequest(
            inputs=[
                RequestInput(
                    spec.name, [len(v1.instances), *spec.shape[1:]], spec.datatype, v1.instances
                )
            ]
        )
        request_id = new_request_id()
        key, context = _context(request.headers, None)
        served = await serving.serve(
            model, None, v2, None, request_id=request_id, targeting_key=key, attributes=context
        )
        body = encode_json(
            {
                "predictions": _rows(served.prediction),
                "model_name": model,
                "model_version": served.prediction.version,
                "id": request_id,
            }
        )
        return Response(body, media_type="application/json", headers=_headers(served))


@dataclass(frozen=True, slots=True)
class InferReply:
    """A V2 infer answer, ready for whichever HTTP adapter sends it."""

    body: bytes
    media_type: str
    headers: dict[str, str]


async def answer_infer(
    serving: Serving, model: str, version: str | None, body: bytes, headers: Mapping[str, str]
) -> InferReply:
    """Decode a V2 infer body, serve it (routed when `version` is None), encode the answer.

    `headers` maps lower-case header names to values. Both the Litestar handlers and the
    ASGI fast path (`gateway.http.fast_path`) call this, so they answer alike.
    """
    check_content_type(headers.get("content-type"))
    decoded = decode_request(body, headers.get(HEADER_LENGTH))
    v2 = decoded.request
    request_id = v2.id or new_request_id()
    key, context = _context(headers, v2.parameters) if version is None else (None, {})
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        served = await serving.serve(
            model,
            version,
            v2,
            decoded.binary_inputs,
            request_id=request_id,
            targeting_key=key,
            attributes=context,
        )
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    prediction = served.prediction
    encoded, json_length = encode_response(
        model, prediction.version, request_id, prediction.outputs, wants_binary(v2)
    )
    response_headers = _headers(served)
    if json_length is None:
        return InferReply(encoded, "application/json", response_headers)
    response_headers[HEADER_LENGTH] = str(json_length)
    return InferReply(encoded, "application/octet-stream", response_headers)


async def _infer(
    request: Request[Any, Any, Any], model: str, version: str | None, serving: Serving
) -> Response[bytes]:
    reply = await answer_infer(serving, model, version, await request.body(), request.headers)
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


def _context(
    headers: Mapping[str, str], parameters: dict[str, Any] | None
) -> tuple[str | None, dict[str, Attribute]]:
    """The targeting key and attributes of a request (DESIGN §4)."""
    return targeting_key(headers, parameters), attributes(headers.items(), parameters)


def _headers(served: Served) -> dict[str, str]:
    headers = {"x-model-version": served.prediction.version}
    if served.reason:
        headers["x-route-variant"] = served.variant
        headers["x-route-reason"] = served.reason
    if served.fallback:
        headers["x-fallback"] = "true"
    return headers


def _single_input(serving: Serving, model: str) -> Any:
    manifest, _ = serving.dataplane.registry.version(model).ready_runtime()
    if len(manifest.inputs) != 1:
        raise InvalidRequest("V1 :predict serves single-input models; use the V2 endpoint")
    return manifest.inputs[0]


def _decode_v1(body: bytes) -> V1PredictRequest:
    try:
        return _v1_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid V1 predict request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc


def _rows(prediction: Prediction) -> list[Any]:
    """One prediction per instance: the value itself for a single output, else a dict by name."""
    columns = [(spec.name, array.tolist()) for spec, array in prediction.outputs]
    if len(columns) == 1:
        return columns[0][1]  # type: ignore[no-any-return]
    rows = len(columns[0][1])
    return [{name: values[i] for name, values in columns} for i in range(rows)]
