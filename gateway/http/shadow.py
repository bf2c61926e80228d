"""The shadow review for on-call (viewer role): summaries and disagreements of a model."""

from __future__ import annotations

import time
from typing import Annotated

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter

from gateway.dataplane.codec import encode_json
from gateway.errors import InvalidRequest
from gateway.http.auth import viewer_guard
from gateway.http.schemas import ADMIN_READ, BAD_REQUEST, SECURITY, Disagreements, ok
from gateway.repository import ModelRegistry
from gateway.shadow.service import MAX_DISAGREEMENTS, ShadowService
from gateway.shadow.summary import ShadowSummary
from gateway.shadow.timerange import time_range

RANGE_HELP = (
    "since/until: epoch seconds, ISO 8601 (UTC unless zoned), or an age such as 15m, 2h, 7d"
)


def _range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    try:
        return time_range(since, until, time.time())
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def _json(value: object) -> Response[bytes]:
    return Response(encode_json(value), media_type="application/json")


class ShadowController(Controller):
    """Comparisons of shadow versions with the served one."""

    path = "/admin/shadow/{model:str}"
    tags = ["admin"]
    security = SECURITY

    @get(
        "/",
        guards=[viewer_guard],
        summary="Shadow summary per (primary, shadow) pair and per cohort",
        description="Count, agreement on the top class with its 95 % Wilson interval, "
        "quantiles of the largest absolute output difference, p50/p99 latency of each side, "
        f"and error counts, over records with since <= time < until. {RANGE_HELP}.",
        responses={200: ok(ShadowSummary), **BAD_REQUEST, **ADMIN_READ},
    )
    async def summary(
        self,
        model: FromPath[str],
        registry: NamedDependency[ModelRegistry],
        shadow_service: NamedDependency[ShadowService],
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        primary: FromQuery[str | None] = None,
        shadow: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        registry.model(model)  # an unknown model is a 404, not an empty summary
        start, end = _range(since, until)
        summary = await shadow_service.summary(
            model, since=start, until=end, primary=primary, shadow=shadow
        )
        return _json(summary)

    @get(
        "/disagreements",
        guards=[viewer_guard],
        summary="Requests whose shadow disagreed with the primary, newest first",
        description="Each with both outputs, and its inputs when the release keeps them. "
        f"{RANGE_HELP}.",
        responses={200: ok(Disagreements), **BAD_REQUEST, **ADMIN_READ},
    )
    async def disagreements(
        self,
        model: FromPath[str],
        registry: NamedDependency[ModelRegistry],
        shadow_service: NamedDependency[ShadowService],
        limit: Annotated[int, Parameter(ge=1, le=MAX_DISAGREEMENTS)] = 50,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        primary: FromQuery[str | None] = None,
        shadow: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        registry.model(model)
        start, end = _range(since, until)
        records = await shadow_service.disagreements(
            model, since=start, until=end, primary=primary, shadow=shadow, limit=limit
        )
        return _json({"model": model, "disagreements": records})
