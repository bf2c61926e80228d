"""The admin API's release operations: release managers change a release; viewers read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter

from gateway.control import ReleaseControl
from gateway.control.guarding import GuardService
from gateway.control.releases import FlagEdit
from gateway.dataplane.codec import encode_json
from gateway.errors import InvalidRequest
from gateway.execution.pool import Executors
from gateway.flags import operations
from gateway.flags.document import VersionName
from gateway.http.auth import principal_of, release_manager_guard, viewer_guard
from gateway.http.schemas import (
    ADMIN_READ,
    ADMIN_WRITE,
    SECURITY,
    ReleaseStatus,
    ReleaseView,
    body,
    ok,
)
from gateway.state import FlagRecord

T = TypeVar("T")
MAX_AUDIT_LIMIT = 1000


Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]


class RolloutBody(msgspec.Struct, forbid_unknown_fields=True):
    version: VersionName
    percent: Percent
    reason: str = ""
    force: bool = False


class CohortBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    rule: Annotated[dict[str, Any], msgspec.Meta(min_length=1, max_length=1)]
    version: VersionName
    reason: str = ""


class ShadowBody(msgspec.Struct, forbid_unknown_fields=True):
    versions: list[VersionName]
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 100.0
    reason: str = ""


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


async def decode_body(request: Request[Any, Any, Any], kind: type[T]) -> T:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc


def etag(record: FlagRecord) -> str:
    return f'"{record.version}"'


def expected_version(request: Request[Any, Any, Any]) -> int | None:
    """The version named by If-Match (`"3"`), None when absent or `*`."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise InvalidRequest(f"If-Match {header!r} is not an ETag this gateway issued")
    return int(value)


def json_response(value: Any, record: FlagRecord | None = None) -> Response[bytes]:
    headers = {"etag": etag(record)} if record is not None else None
    return Response(encode_json(value), media_type="application/json", headers=headers)


def release_view(record: FlagRecord) -> dict[str, Any]:
    return {
        "flag": record.key,
        "flag_version": record.version,
        "updated_at": record.updated_at,
        "updated_by": record.updated_by,
        **operations.describe_release(record.flag),
    }


async def edit_release(
    request: Request[Any, Any, Any],
    control: ReleaseControl,
    model: str,
    action: str,
    reason: str,
    edit: FlagEdit,
    *,
    force: bool = False,
    extra: Callable[[], dict[str, Any]] | None = None,
) -> Response[bytes]:
    """One release operation on behalf of the caller: audited with their name and reason,
    refused on a stale If-Match (and behind the offline gate unless `force`); answers the
    release as it now is, with its ETag."""
    record = await control.edit(
        model,
        edit,
        action=action,
        expected_version=expected_version(request),
        actor=principal_of(request).name,
        reason=reason,
        force=force,
    )
    return json_response(release_view(record) | (extra() if extra else {}), record)


_SIMPLE_ACTIONS = {
    "promote": operations.promote,
    "rollback": operations.rollback,
    "disable": operations.disable,
    "enable": operations.enable,
}

_EDITED = {200: ok(ReleaseView, "The release as it now is, with its ETag"), **ADMIN_WRITE}


class ReleasesController(Controller):
    """Release operations: each edits the model's flag for the release manager."""

    path = "/admin/releases/{model:str}"
    tags = ["admin"]
    security = SECURITY

    @get(
        "/",
        guards=[viewer_guard],
        summary="Variants, split, cohorts, shadows, flag version",
        responses={200: ok(ReleaseStatus), **ADMIN_READ},
    )
    async def status(
        self,
        model: FromPath[str],
        control: NamedDependency[ReleaseControl],
        guard: NamedDependency[GuardService],
        executors: NamedDependency[Executors],
    ) -> Response[bytes]:
        record = await control.release_record(model)
        view = release_view(record)
        versions = {
            version
            for route in view["variants"].values()
            for version in (route["serve"], *(s["version"] for s in route.get("shadow", [])))
        }
        return json_response(
            view
            | {
                "guard": guard.status(model),
                "execution": executors.status(model, sorted(versions)),
            },
            record,
        )

    @post(
        "/rollout",
        guards=[release_manager_guard],
        status_code=200,
        summary="Candidate %",
        operation_class=body(
            RolloutBody,
            "The candidate version and its share of traffic",
            example={"version": "2", "percent": 10, "reason": "canary"},
        ),
        responses=_EDITED,
    )
    async def rollout(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        control: NamedDependency[ReleaseControl],
        guard: NamedDependency[GuardService],
    ) -> Response[bytes]:
        body = await decode_body(request, RolloutBody)
        return await edit_release(
            request,
            control,
            model,
            "rollout",
            body.reason,
            lambda flag: operations.set_rollout(flag, body.version, body.percent),
            force=body.force,
        )

    @post(
        "/cohorts",
        guards=[release_manager_guard],
        status_code=200,
        summary="Add a cohort rule",
        operation_class=body(
            CohortBody,
            "A named JSONLogic rule and the version it gets",
            example={"name": "staff", "rule": {"==": [{"var": "tier"}, "staff"]}, "version": "2"},
        ),
        responses=_EDITED,
    )
    async def add_cohort(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        control: NamedDependency[ReleaseControl],
    ) -> Response[bytes]:
        body = await decode_body(request, CohortBody)
        return await edit_release(
            request,
            control,
            model,
            "cohort_add",
            body.reason,
            lambda flag: operations.add_cohort(flag, body.name, body.rule, body.version),
        )

    @delete(
        "/cohorts/{name:str}",
        guards=[release_manager_guard],
        status_code=200,
        summary="Remove a cohort rule by name",
        responses=_EDITED,
    )
    async def remove_cohort(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        name: FromPath[str],
        control: NamedDependency[ReleaseControl],
        reason: FromQuery[str] = "",
    ) -> Response[bytes]:
        return await edit_release(
            request,
            control,
            model,
            "cohort_remove",
            reason,
            lambda flag: operations.remove_cohort(flag, name),
        )

    @post(
        "/shadow",
        guards=[release_manager_guard],
        status_code=200,
        summary="Shadow versions",
        operation_class=body(
            ShadowBody,
            "The versions that shadow the served one",
            example={"versions": ["3"], "percent": 20},
        ),
        responses=_EDITED,
    )
    async def shadow(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        control: NamedDependency[ReleaseControl],
    ) -> Response[bytes]:
        body = await decode_body(request, ShadowBody)
        return await edit_release(
            request,
            control,
            model,
            "shadow",
            body.reason,
            lambda flag: operations.set_shadow(flag, body.versions, body.percent),
        )

    @post(
        "/{action:str}",
        guards=[release_manager_guard],
        status_code=200,
        summary="promote, rollback, disable (kill switch) or enable",
        operation_class=body(ReasonBody, "Why, for the audit log", required=False),
        responses=_EDITED,
    )
    async def simple(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        action: Annotated[str, Parameter(schema_extra={"enum": sorted(_SIMPLE_ACTIONS)})],
        control: NamedDependency[ReleaseControl],
    ) -> Response[bytes]:
        edit = _SIMPLE_ACTIONS.get(action)
        if edit is None:
            raise InvalidRequest(
                f"unknown release action {action!r}; use one of {sorted(_SIMPLE_ACTIONS)}"
            )
        body = await decode_body(request, ReasonBody)
        return await edit_release(request, control, model, action, body.reason, edit)
