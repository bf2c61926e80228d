"""V2 infer (routed and pinned) and KServe V1 `:predict`: decode, serve, encode."""

from __future__ import annotations

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
from gateway.dataplane.v2 import V1PredictRequest
from gateway.errors import InvalidRequest, VersionNotFound
from gateway.flags.router import Attribute
from gateway.http.context import CONTEXT_HEADER_PREFIX, attributes, targeting_key
from gateway.serving import Served, Serving

_v1_decoder = msgspec.json.Decoder(V1PredictRequest)
HEADER_LENGTH = "inference-header-content-length"


class InferenceController(Controller):
    """Open Inference Protocol endpoints for application clients."""

    tags = ["inference"]

    @post(
        "/v2/models/{model:str}/infer",
        status_code=200,
        summary="Infer with the version the model's release flag routes to",
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
        served = serving.serve(
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


async def _infer(
    request: Request[Any, Any, Any], model: str, version: str | None, serving: Serving
) -> Response[bytes]:
    headers = request.headers
    check_content_type(headers.get("content-type"))
    decoded = decode_request(await request.body(), headers.get(HEADER_LENGTH))
    v2 = decoded.request
    request_id = v2.id or new_request_id()
    key, context = _context(headers, v2.parameters) if version is None else (None, {})
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        served = serving.serve(
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
    body, json_length = encode_response(
        model, prediction.version, request_id, prediction.outputs, wants_binary(v2)
    )
    response_headers = _headers(served)
    if json_length is None:
        return Response(body, media_type="application/json", headers=response_headers)
    response_headers["inference-header-content-length"] = str(json_length)
    return Response(body, media_type="application/octet-stream", headers=response_headers)


def _context(
    headers: Any, parameters: dict[str, Any] | None
) -> tuple[str | None, dict[str, Attribute]]:
    """The targeting key and attributes of a request (DESIGN §4)."""
    items = headers.items() if _has_context(headers) else []
    return targeting_key(headers, parameters), attributes(items, parameters)


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


def _has_context(headers: Any) -> bool:
    return any(name.startswith(CONTEXT_HEADER_PREFIX) for name in headers.keys())  # noqa: SIM118


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
