"""OpenFeature Remote Evaluation Protocol: other services evaluate the same release flags."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from gateway.dataplane.codec import encode_json
from gateway.flags.router import Router
from gateway.http.schemas import OfrepBulk, OfrepError, OfrepSuccess, body, ok

_ERROR_STATUS = {"FLAG_NOT_FOUND": 404, "PARSE_ERROR": 400, "INVALID_CONTEXT": 400}


class EvaluationRequest(msgspec.Struct):
    context: dict[str, Any] = msgspec.field(default_factory=dict)


def _context(raw: bytes) -> tuple[str | None, dict[str, Any]] | str:
    """(targeting key, attributes) from an OFREP body, or the reason it is invalid."""
    try:
        context = msgspec.json.decode(raw or b"{}", type=EvaluationRequest).context
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"invalid OFREP request body: {exc}"
    attributes = dict(context)
    key = attributes.pop("targetingKey", None)
    if key is not None and not isinstance(key, str):
        return "context.targetingKey must be a string"
    return key, attributes


def _evaluate(
    router: Router, key: str, targeting_key: str | None, attributes: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    details = router.evaluate(key, targeting_key, attributes)
    if details.error_code is not None:
        code = details.error_code.value
        return _ERROR_STATUS.get(code, 400), {
            "key": key,
            "errorCode": code,
            "errorDetails": details.error_message or code,
        }
    return 200, {
        "key": key,
        "value": details.value,
        "reason": str(details.reason),
        "variant": details.variant,
        "metadata": dict(details.flag_metadata),
    }


_CONTEXT_BODY = body(EvaluationRequest, "The evaluation context", required=False)


class OfrepController(Controller):
    path = "/ofrep/v1/evaluate/flags"
    tags = ["ofrep"]

    @post(
        "/{key:str}",
        status_code=200,
        summary="Evaluate one flag for a context",
        operation_class=_CONTEXT_BODY,
        responses={
            200: ok(OfrepSuccess),
            400: ok(OfrepError, "The context is invalid or the flag does not parse"),
            404: ok(OfrepError, "No such flag"),
        },
    )
    async def evaluate_one(
        self, request: Request[Any, Any, Any], key: FromPath[str], router: NamedDependency[Router]
    ) -> Response[bytes]:
        parsed = _context(await request.body())
        if isinstance(parsed, str):
            body = {"key": key, "errorCode": "INVALID_CONTEXT", "errorDetails": parsed}
            return Response(encode_json(body), status_code=400, media_type="application/json")
        status, body = _evaluate(router, key, *parsed)
        return Response(encode_json(body), status_code=status, media_type="application/json")

    @post(
        "/",
        status_code=200,
        summary="Evaluate every flag (ETag; If-None-Match gives 304)",
        operation_class=_CONTEXT_BODY,
        responses={
            200: ok(OfrepBulk),
            304: ResponseSpec(
                None,
                description="The flags are unchanged since If-None-Match",
                generate_examples=False,
            ),
            400: ok(OfrepError, "The context is invalid"),
        },
    )
    async def evaluate_all(
        self, request: Request[Any, Any, Any], router: NamedDependency[Router]
    ) -> Response[bytes]:
        parsed = _context(await request.body())
        if isinstance(parsed, str):
            body = {"errorCode": "INVALID_CONTEXT", "errorDetails": parsed}
            return Response(encode_json(body), status_code=400, media_type="application/json")
        flags = [_evaluate(router, release.key, *parsed)[1] for release in router.releases.values()]
        payload = encode_json({"flags": flags})
        tag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == tag:
            return Response(b"", status_code=304, headers={"etag": tag})
        return Response(payload, media_type="application/json", headers={"etag": tag})
