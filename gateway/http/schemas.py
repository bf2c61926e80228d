"""The bodies the HTTP API answers with, as the OpenAPI document declares them.

Most handlers encode their answer themselves (one msgspec pass, no Litestar re-encoding), so
these types exist for the document: each names the fields the handler really writes. The
contract test (tests/test_openapi_contract.py) runs schemathesis against the real server to
keep the two in step.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from gateway.repository.manifest import TensorSpec


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error the gateway answers with (the V2 error shape)."""

    error: str


class Live(msgspec.Struct, frozen=True):
    live: bool


class Ready(msgspec.Struct, frozen=True):
    ready: bool


class VersionReadiness(msgspec.Struct, frozen=True, omit_defaults=True):
    """Whether one version can answer; `reason` says why it cannot."""

    name: str
    version: str
    ready: bool
    reason: str | None = None


class ServerMetadataBody(msgspec.Struct, frozen=True):
    name: str
    version: str
    extensions: list[str]


class ModelMetadataBody(msgspec.Struct, frozen=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, Any]


class FlagSummary(msgspec.Struct, frozen=True):
    key: str
    model: str
    version: int
    etag: str
    updated_at: float
    updated_by: str


class FlagList(msgspec.Struct, frozen=True):
    flags: list[FlagSummary]


class VariantRef(msgspec.Struct, frozen=True):
    variant: str | None
    version: str | None


class Cohort(msgspec.Struct, frozen=True):
    name: str
    rule: dict[str, Any]
    variant: str
    version: str | None


class ReleaseView(msgspec.Struct, frozen=True, kw_only=True):
    """A release as its flag now stands; the ETag header carries `flag_version`."""

    flag: str
    flag_version: int
    updated_at: float
    updated_by: str
    model: str | None
    state: str | None
    default_variant: str | None
    baseline: VariantRef
    candidate: VariantRef
    variants: dict[str, dict[str, Any]]
    split: dict[str, float] | None
    cohorts: list[Cohort]
    shadows: list[dict[str, Any]]
    policy: dict[str, Any]


class RampView(ReleaseView, frozen=True, kw_only=True):
    """A release after a ramp operation, with the guard's view of it."""

    guard: dict[str, Any]


class ReleaseStatus(ReleaseView, frozen=True, kw_only=True):
    """A release with the guard's view and each serving or shadow version's executor."""

    guard: dict[str, Any]
    execution: dict[str, dict[str, Any]]


class AuditList(msgspec.Struct, frozen=True):
    entries: list[dict[str, Any]]


class Disagreements(msgspec.Struct, frozen=True):
    model: str
    disagreements: list[dict[str, Any]]


class OfrepSuccess(msgspec.Struct, frozen=True, omit_defaults=True):
    key: str
    reason: str
    metadata: dict[str, Any]
    value: Any = None
    variant: str | None = None


class OfrepError(msgspec.Struct, frozen=True, omit_defaults=True):
    errorCode: str  # noqa: N815 -- OFREP's own field names
    errorDetails: str  # noqa: N815
    key: str | None = None


class OfrepBulk(msgspec.Struct, frozen=True):
    flags: list[dict[str, Any]]


class History(msgspec.Struct, frozen=True):
    model: str
    interval_s: float
    keep_s: float
    samples: list[dict[str, Any]]


def ok(body: type[Any], description: str = "Success") -> ResponseSpec:
    return ResponseSpec(data_container=body, description=description)


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description)


BAD_REQUEST = {400: error("The request is invalid; the message names the problem")}
NOT_FOUND = {404: error("No such model, version, flag or release")}
UNAUTHORIZED = {401: error("No valid bearer token (or dashboard session)")}
FORBIDDEN = {403: error("The token's role may not do this (or a session change lacks CSRF)")}
VIEWER = UNAUTHORIZED
MANAGER = UNAUTHORIZED | FORBIDDEN
STORE = {503: error("The state store is unavailable")}
