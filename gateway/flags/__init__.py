"""Release flags: flagd flag definitions whose variants are routes to model versions.

Plain Python, no I/O: validation (`validation`), the OpenFeature provider (`provider`), the
per-request router (`router`), release-manager operations (`operations`) and the audit diff
(`diff`).
"""

from gateway.flags.diff import json_diff
from gateway.flags.document import SCHEMA_URL, Release, Route, ShadowTarget
from gateway.flags.errors import (
    CohortExists,
    CohortNotFound,
    FlagError,
    InvalidFlag,
    InvalidOperation,
)
from gateway.flags.provider import ReleaseFlagProvider
from gateway.flags.router import NO_FLAG, RouteDecision, RouteError, Router
from gateway.flags.validation import validate_document, validate_flag
from gateway.flags.versions import (
    KnownVersions,
    VersionLookup,
    VersionStatus,
    registry_versions,
    version_lookup,
)

__all__ = [
    "NO_FLAG",
    "SCHEMA_URL",
    "CohortExists",
    "CohortNotFound",
    "FlagError",
    "InvalidFlag",
    "InvalidOperation",
    "KnownVersions",
    "Release",
    "ReleaseFlagProvider",
    "Route",
    "RouteDecision",
    "RouteError",
    "Router",
    "ShadowTarget",
    "VersionLookup",
    "VersionStatus",
    "json_diff",
    "registry_versions",
    "validate_document",
    "validate_flag",
    "version_lookup",
]
