"""Errors of the flags domain. They know nothing of HTTP; the edge maps them to status codes."""

from __future__ import annotations

from gateway.errors import GatewayError


class FlagError(GatewayError):
    """Base of every error the flags domain raises on purpose."""


class InvalidFlag(FlagError):
    """A flag or flag document that is not a valid release: wrong flagd structure, a route
    that is not a route, a version the repository lacks, metadata that names no variant."""


class InvalidPolicy(InvalidFlag):
    """A release policy entry of a flag's metadata (`guard.*`, `shadow.*`, `ramp.*`,
    `cohort.*`, `fallback`, or a key no release reads) that is unknown, of the wrong type or
    out of range. The message names the key, the value and what is allowed."""


class InvalidOperation(FlagError):
    """A release-manager operation that cannot apply to this flag as it stands
    (a percentage out of range, a rollout to the baseline's own version, ...)."""


class CohortNotFound(InvalidOperation):
    """No cohort by that name in the release."""


class CohortExists(InvalidOperation):
    """A cohort by that name (or with the very same rule) is already in the release."""
