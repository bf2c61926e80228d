"""Ground truth for earlier predictions: joined to what each version predicted."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.control.guarding import GuardService
from gateway.dataplane.codec import encode_json
from gateway.errors import InvalidRequest
from gateway.guard import FeedbackItem
from gateway.guard.feedback import FeedbackResult
from gateway.http.schemas import BAD_REQUEST, NOT_FOUND, TOO_LARGE, body, ok
from gateway.repository import ModelRegistry

MAX_FEEDBACK_ITEMS = 10_000
_decoder = msgspec.json.Decoder(FeedbackItem | list[FeedbackItem])


class FeedbackController(Controller):
    tags = ["inference"]

    @post(
        "/v2/models/{model:str}/feedback",
        status_code=200,
        summary="True labels for earlier predictions: {id, label} or a list of them",
        operation_class=body(FeedbackItem | list[FeedbackItem], "One {id, label} or a list"),
        responses={200: ok(FeedbackResult), **BAD_REQUEST, **NOT_FOUND, **TOO_LARGE},
    )
    async def feedback(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        guard: NamedDependency[GuardService],
        registry: NamedDependency[ModelRegistry],
    ) -> Response[bytes]:
        registry.model(model)
        try:
            decoded = _decoder.decode(await request.body())
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid feedback: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"malformed JSON: {exc}") from exc
        items = decoded if isinstance(decoded, list) else [decoded]
        if len(items) > MAX_FEEDBACK_ITEMS:
            raise InvalidRequest(f"at most {MAX_FEEDBACK_ITEMS} feedback items per request")
        result = await guard.join_feedback(model, items)
        return Response(encode_json(result), media_type="application/json")
