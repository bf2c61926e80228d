"""The shapes a release flag carries: routes (a variant's value) and the validated Release.

A flag file is a flagd document (https://flagd.dev/schema/v0/flags.json). Each flag is the
release of one model: every variant's value is a route, and the flag's `metadata` names the
model and which variants are the baseline and the candidate:

    {"state": "ENABLED", "defaultVariant": "baseline",
     "variants": {"baseline": {"serve": "1", "shadow": [{"version": "3", "percent": 10}]},
                  "candidate": {"serve": "2"}},
     "targeting": {"fractional": [["baseline", 90], ["candidate", 10]]},
     "metadata": {"model": "digits", "baseline": "baseline", "candidate": "candidate"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

if TYPE_CHECKING:
    from gateway.flags.policy import ReleasePolicy

SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"

META_MODEL = "model"
META_BASELINE = "baseline"
META_CANDIDATE = "candidate"
META_FALLBACK = "fallback"
COHORT_PREFIX = "cohort."
"""A named cohort is stored as metadata `cohort.<name>` = the rule as a JSON string."""

RELEASE_KEYS = (META_MODEL, META_BASELINE, META_CANDIDATE)

FlagState = Literal["ENABLED", "DISABLED"]
MetadataValue = str | int | float | bool

Percent = Annotated[int, msgspec.Meta(ge=0, le=100)] | Annotated[float, msgspec.Meta(ge=0, le=100)]
VersionName = Annotated[str, msgspec.Meta(min_length=1)]


class ShadowTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A version that runs beside the served one on `percent` of the requests."""

    version: VersionName
    percent: Percent


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A variant's value: the version that serves, and the versions that shadow it."""

    serve: VersionName
    shadow: tuple[ShadowTarget, ...] = ()

    def to_builtins(self) -> dict[str, Any]:
        """The route as the JSON object a flag holds."""
        value: dict[str, Any] = msgspec.to_builtins(self)
        return value


def decode_route(value: object) -> Route:
    """Read a variant value as a Route; raises msgspec.ValidationError saying what is wrong."""
    return msgspec.convert(value, Route)


class Release(msgspec.Struct, frozen=True):
    """One model's validated release flag."""

    key: str
    model: str
    baseline: str
    candidate: str
    routes: Mapping[str, Route]
    state: FlagState
    default_variant: str
    metadata: Mapping[str, MetadataValue]
    """The flag's metadata as written."""
    policy: ReleasePolicy
    """The metadata parsed (`gateway.flags.policy`)."""

    @property
    def enabled(self) -> bool:
        return self.state == "ENABLED"

    @property
    def baseline_route(self) -> Route:
        return self.routes[self.baseline]

    @property
    def candidate_route(self) -> Route:
        return self.routes[self.candidate]

    @property
    def fallback(self) -> bool:
        """Whether a failing candidate is answered from the baseline (on unless switched off)."""
        return self.policy.fallback
