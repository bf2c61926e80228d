"""The admin API's whole flags (versioned with ETags) and its audit log."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter

from gateway.control import ReleaseControl
from gateway.http.admin import MAX_AUDIT_LIMIT, decode_body, etag, expected_version, json_response
from gateway.http.auth import principal_of, release_manager_guard, viewer_guard
from gateway.http.schemas import (
    ADMIN_READ,
    ADMIN_WRITE,
    FLAG_EXAMPLE,
    SECURITY,
    AuditList,
    Flag,
    FlagList,
    body,
    ok,
)


class FlagsController(Controller):
    """Whole flagd flag objects, versioned with ETags."""

    path = "/admin/flags"
    tags = ["admin"]
    security = SECURITY

    @get(
        "/",
        guards=[viewer_guard],
        summary="Flag keys with their version and ETag",
        responses={200: ok(FlagList), **ADMIN_READ},
    )
    async def list_flags(self, control: NamedDependency[ReleaseControl]) -> Response[bytes]:
        records = await control.flags()
        return json_response(
            {
                "flags": [
                    {
                        "key": r.key,
                        "model": r.flag.get("metadata", {}).get("model", ""),
                        "version": r.version,
                        "etag": etag(r),
                        "updated_at": r.updated_at,
                        "updated_by": r.updated_by,
                    }
                    for r in records
                ]
            }
        )

    @get(
        "/{key:str}",
        guards=[viewer_guard],
        summary="One flagd flag object, with its ETag",
        responses={200: ok(Flag), **ADMIN_READ},
    )
    async def get_flag(
        self, key: FromPath[str], control: NamedDependency[ReleaseControl]
    ) -> Response[bytes]:
        record = await control.flag(key)
        return json_response(record.flag, record)

    @put(
        "/{key:str}",
        guards=[release_manager_guard],
        status_code=200,
        summary="Replace a flag (If-Match: a stale ETag gets 412); ?reason= is audited",
        operation_class=body(Flag, "The whole flagd flag", example=FLAG_EXAMPLE),
        responses={200: ok(Flag), **ADMIN_WRITE},
    )
    async def put_flag(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        control: NamedDependency[ReleaseControl],
        reason: FromQuery[str] = "",
        force: FromQuery[bool] = False,
    ) -> Response[bytes]:
        flag = await decode_body(request, dict[str, Any])
        record = await control.replace(
            key,
            flag,
            expected_version=expected_version(request),
            actor=principal_of(request).name,
            reason=reason,
            force=force,
        )
        return json_response(record.flag, record)


class AuditController(Controller):
    path = "/admin/audit"
    tags = ["admin"]
    security = SECURITY

    @get(
        "/",
        guards=[viewer_guard],
        summary="Who changed what, when, why, with the diff",
        responses={200: ok(AuditList), 400: ADMIN_WRITE[400], **ADMIN_READ},
    )
    async def audit(
        self,
        control: NamedDependency[ReleaseControl],
        model: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_AUDIT_LIMIT)] = 50,
    ) -> Response[bytes]:
        entries = await control.store.audit(model=model, limit=limit)
        return json_response({"entries": entries})
