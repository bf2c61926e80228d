"""V2 infer (routed and pinned) and KServe V1 `:predict`: decode, hand to the data plane, encode."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.dataplane import DataPlane, InferenceRequest, Prediction, RequestInput, new_request_id
from gateway.dataplane.codec import (
    check_content_type,
    decode_request,
    encode_json,
    encode_response,
    wants_binary,
)
from gateway.dataplane.v2 import V1PredictRequest
from gateway.errors import InvalidRequest, VersionNotFound
from gateway.flags.router import RouteDecision, Router
from gateway.http.context import CONTEXT_HEADER_PREFIX, attributes, targeting_key
from gateway.observability.access import AccessLog

_v1_decoder = msgspec.json.Decoder(V1PredictRequest)
HEADER_LENGTH = "inference-header-content-length"


class InferenceController(Controller):
    """Open Inference Protocol endpoints for application clients."""

    tags = ["inference"]

    @post(
        "/v2/models/{model:str}/infer",
        status_code=200,
        summary="Infer with the model's serving version",
    )
    async def infer(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        dataplane: NamedDependency[DataPlane],
        access_log: NamedDependency[AccessLog],
        router: NamedDependency[Router],
    ) -> Response[bytes]:
        return await _infer(request, model, None, dataplane, access_log, router)

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
        dataplane: NamedDependency[DataPlane],
        access_log: NamedDependency[AccessLog],
        router: NamedDependency[Router],
    ) -> Response[bytes]:
        return await _infer(request, model, version, dataplane, access_log, router)

    @post(
        "/v1/models/{target:str}",
        status_code=200,
        summary="KServe V1 predict: /v1/models/{model}:predict",
    )
    async def predict_v1(
        self,
        request: Request[Any, Any, Any],
        target: FromPath[str],
        dataplane: NamedDependency[DataPlane],
        access_log: NamedDependency[AccessLog],
        router: NamedDependency[Router],
    ) -> Response[bytes]:
        model, _, verb = target.rpartition(":")
        if verb != "predict" or not model:
            raise VersionNotFound(f"no such V1 endpoint {target!r}; use /v1/models/<model>:predict")
        check_content_type(request.headers.get("content-type"))
        v1 = _decode_v1(await request.body())
        request_id = new_request_id()
        decision = route_request(router, model, request.headers, None, request_id)
        manifest, _ = dataplane.registry.version(model, decision.serve).ready_runtime()
        if len(manifest.inputs) != 1:
            raise InvalidRequest("V1 :predict serves single-input models; use the V2 endpoint")
        spec = manifest.inputs[0]
        v2 = InferenceRequest(
            inputs=[
                RequestInput(
                    spec.name, [len(v1.instances), *spec.shape[1:]], spec.datatype, v1.instances
                )
            ]
        )
        variant = decision.variant or ""
        prediction = dataplane.infer(model, decision.serve, v2, variant=variant)
        access_log.served(
            request_id=request_id,
            model=model,
            version=prediction.version,
            latency_s=prediction.latency_s,
        )
        body = encode_json(
            {
                "predictions": _rows(prediction),
                "model_name": model,
                "model_version": prediction.version,
                "id": request_id,
            }
        )
        return Response(
            body, media_type="application/json", headers={"x-model-version": prediction.version}
        )


async def _infer(
    request: Request[Any, Any, Any],
    model: str,
    version: str | None,
    dataplane: DataPlane,
    access_log: AccessLog,
    router: Router,
) -> Response[bytes]:
    headers = request.headers
    check_content_type(headers.get("content-type"))
    decoded = decode_request(await request.body(), headers.get(HEADER_LENGTH))
    v2 = decoded.request
    request_id = v2.id or new_request_id()
    variant = reason = ""
    if version is None:
        decision = route_request(router, model, headers, v2.parameters, request_id)
        version, variant, reason = decision.serve, decision.variant or "", decision.reason
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        prediction = dataplane.infer(model, version, v2, decoded.binary_inputs, variant=variant)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    access_log.served(
        request_id=request_id,
        model=model,
        version=prediction.version,
        latency_s=prediction.latency_s,
        variant=variant,
        reason=reason,
    )
    body, json_length = encode_response(
        model, prediction.version, request_id, prediction.outputs, wants_binary(v2)
    )
    response_headers = {"x-model-version": prediction.version}
    if reason:
        response_headers["x-route-variant"] = variant
        response_headers["x-route-reason"] = reason
    if json_length is None:
        return Response(body, media_type="application/json", headers=response_headers)
    response_headers["inference-header-content-length"] = str(json_length)
    return Response(body, media_type="application/octet-stream", headers=response_headers)


def route_request(
    router: Router,
    model: str,
    headers: Any,
    parameters: dict[str, Any] | None,
    request_id: str,
) -> RouteDecision:
    """Evaluate the model's release flag once for this request's context."""
    key = targeting_key(headers, parameters)
    context = attributes(headers.items() if _has_context(headers) else [], parameters)
    if key is None:
        # The request id is not sticky: evaluate, but keep it out of the repeat-user cache.
        return router.route(model, request_id, context, cacheable=False)
    return router.route(model, key, context)


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
