"""The bodies the HTTP API answers with, as the OpenAPI document declares them.

Most handlers encode their answer themselves (one msgspec pass, no Litestar re-encoding), so
these types exist for the document: each names the fields the handler really writes. The
contract test (tests/test_openapi_contract.py) runs schemathesis against the real server to
keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

from gateway.flags.document import MetadataValue, VersionName
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


class ShadowTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: VersionName
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)]


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A variant's value (gateway.flags.document.Route, whose percent is an integer or a
    number: JSON Schema's `number` says both without two overlapping alternatives)."""

    serve: VersionName
    shadow: list[ShadowTarget] = []


class Flag(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A flagd flag that releases one model: `metadata.model` names it, `metadata.baseline`
    and `metadata.candidate` name its variants; each variant routes to loaded versions."""

    state: Literal["ENABLED", "DISABLED"]
    defaultVariant: str  # noqa: N815 -- flagd's field names
    variants: dict[str, Route]
    metadata: dict[str, MetadataValue]
    targeting: dict[str, Any] | None = None


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
    return ResponseSpec(data_container=body, description=description, generate_examples=False)


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


BAD_REQUEST = {400: error("The request is invalid; the message names the problem")}
TOO_LARGE = {413: error("The body is larger than the gateway accepts")}
NOT_FOUND = {404: error("No such model, version, flag or release")}
UNAUTHORIZED = {401: error("No valid bearer token (or dashboard session)")}
FORBIDDEN = {403: error("The token's role may not do this (or a session change lacks CSRF)")}
VIEWER = UNAUTHORIZED
MANAGER = UNAUTHORIZED | FORBIDDEN
STORE = {503: error("The state store is unavailable")}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with every `#/$defs/...` reference replaced by its definition (the request
    types here are not recursive)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def json_schema(kind: Any) -> dict[str, Any]:
    """The JSON schema of what msgspec decodes as `kind`: the handler's own decoder is the
    judge of a body, so the document describes exactly what it accepts."""
    raw = msgspec.json.schema(kind)
    inlined: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    return inlined


def body(
    kind: Any, description: str, *, required: bool = True, example: Any = None
) -> type[Operation]:
    """An operation class whose request body is `kind`, for handlers that read the raw body
    themselves (to decode it once, or to split off binary tensors). `example` is a request
    the demo repository (`gateway demo`) accepts."""
    schema = json_schema(kind)
    media = OpenAPIMediaType(schema=schema, example=example)  # type: ignore[arg-type]

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": media}, description=description, required=required
            )

    return WithBody


INFERENCE_ERRORS = {
    **BAD_REQUEST,
    **NOT_FOUND,
    **TOO_LARGE,
    415: error("The content type is neither JSON nor the binary extension's"),
    502: error("The model failed on this request"),
    503: error("The version is not loaded, or its queue is full (Retry-After)"),
    504: error("The model did not answer in time"),
}

BEARER = "bearer"
SECURITY: list[dict[str, list[str]]] = [{BEARER: []}]
ADMIN_READ = {**BAD_REQUEST, **UNAUTHORIZED, **NOT_FOUND, **STORE}
ADMIN_WRITE = {
    **BAD_REQUEST,
    **UNAUTHORIZED,
    **FORBIDDEN,
    **NOT_FOUND,
    409: error("Refused by the offline gate (send force), or a ramp is (not) in progress"),
    412: error("If-Match names a version of the flag that is no longer current"),
    **TOO_LARGE,
    **STORE,
}


# Requests the demo model `digits` accepts: the document's examples.
DIGIT = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] + [0.0, 8.0, 15.0, 10.0, 15.0, 5.0, 0.0, 0.0] * 7
INFER_EXAMPLE = {
    "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": DIGIT}]
}
V1_EXAMPLE = {"instances": [DIGIT]}
FLAG_EXAMPLE = {
    "state": "ENABLED",
    "defaultVariant": "baseline",
    "variants": {"baseline": {"serve": "1"}, "candidate": {"serve": "2"}},
    "targeting": {"fractional": [["baseline", 90], ["candidate", 10]]},
    "metadata": {"model": "digits", "baseline": "baseline", "candidate": "candidate"},
}
