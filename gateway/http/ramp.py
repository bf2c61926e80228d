"""Staged ramps: start one behind the offline gate; pause, resume or abort it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from gateway.control import ReleaseControl
from gateway.control.guarding import GuardService
from gateway.errors import InvalidRequest
from gateway.flags.document import VersionName
from gateway.guard import ramp as ramps
from gateway.http.admin import ReasonBody, decode_body, edit_release
from gateway.http.auth import release_manager_guard
from gateway.http.schemas import ADMIN_WRITE, SECURITY, RampView, body, ok

Step = Annotated[int, msgspec.Meta(ge=1, le=100)]


class RampBody(msgspec.Struct, forbid_unknown_fields=True):
    version: VersionName
    steps: Annotated[list[Step], msgspec.Meta(min_length=2)] = msgspec.field(
        default_factory=lambda: [1, 5, 25, 50, 100]
    )
    bake_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    force: bool = False
    reason: str = ""


def _pause(flag: dict[str, Any], _now: float) -> dict[str, Any]:
    return ramps.pause(flag)


def _abort(flag: dict[str, Any], _now: float) -> dict[str, Any]:
    return ramps.abort(flag)


_CONTROLS: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = {
    "pause": _pause,
    "resume": ramps.resume,
    "abort": _abort,
}


_RAMPED = {200: ok(RampView, "The release as it now is, with its ETag"), **ADMIN_WRITE}


class RampController(Controller):
    path = "/admin/releases/{model:str}/ramp"
    tags = ["admin"]
    security = SECURITY

    @post(
        "/",
        guards=[release_manager_guard],
        status_code=200,
        summary="Start a staged ramp",
        operation_class=body(
            RampBody,
            "The candidate, its steps (percent) and bake time",
            example={"version": "2", "steps": [10, 50, 100], "bake_s": 30},
        ),
        responses=_RAMPED,
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        control: NamedDependency[ReleaseControl],
        guard: NamedDependency[GuardService],
    ) -> Response[bytes]:
        body = await decode_body(request, RampBody)
        now = time.time()
        return await edit_release(
            request,
            control,
            model,
            "ramp_start",
            body.reason,
            lambda flag: ramps.start_ramp(flag, body.version, body.steps, body.bake_s, now),
            force=body.force,
            extra=lambda: {"guard": guard.status(model)},
        )

    @post(
        "/{action:str}",
        guards=[release_manager_guard],
        status_code=200,
        summary="pause, resume or abort the ramp",
        operation_class=body(ReasonBody, "Why, for the audit log", required=False),
        responses=_RAMPED,
    )
    async def control_ramp(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        action: Annotated[str, Parameter(schema_extra={"enum": list(_CONTROLS)})],
        control: NamedDependency[ReleaseControl],
        guard: NamedDependency[GuardService],
    ) -> Response[bytes]:
        edit = _CONTROLS.get(action)
        if edit is None:
            raise InvalidRequest(f"unknown ramp action {action!r}; use pause, resume or abort")
        body = await decode_body(request, ReasonBody)
        now = time.time()
        return await edit_release(
            request,
            control,
            model,
            f"ramp_{action}",
            body.reason,
            lambda flag: edit(flag, now),
            extra=lambda: {"guard": guard.status(model)},
        )
