"""Errors of the guard. They know nothing of HTTP; the edge maps them to status codes.

Suggested statuses: InvalidPolicy 400; RampNotFound, RampInProgress and RampStateConflict 409;
InvalidRamp 400 (it is an InvalidOperation, so the existing table already answers 400);
OfflineGateRefused 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.flags.errors import InvalidOperation, InvalidPolicy

if TYPE_CHECKING:
    from gateway.guard.offline_gate import OfflineComparison


class GuardError(GatewayError):
    """Base of every error the guard raises on purpose."""


__all__ = [
    "GuardError",
    "InvalidPolicy",
    "InvalidRamp",
    "OfflineGateRefused",
    "RampInProgress",
    "RampNotFound",
    "RampStateConflict",
    "WebhookFailed",
]


class InvalidRamp(GuardError, InvalidOperation):
    """A ramp operation that cannot apply: bad steps or bake time, a paused ramp asked to
    advance, `ramp.*` metadata that does not describe a ramp."""


class RampNotFound(InvalidRamp):
    """The release has no ramp in progress (pause, resume, abort or advance need one)."""


class RampStateConflict(InvalidRamp):
    """The ramp is not in the state the operation needs: pausing a paused ramp, resuming or
    advancing a running or paused one the wrong way round."""


class RampInProgress(InvalidRamp):
    """A ramp is already in progress; abort it before starting another."""


class OfflineGateRefused(GuardError):
    """The candidate's offline metrics are worse than the baseline's by more than the policy
    allows (or a manifest lacks them). `comparison` holds the figures, for the audit log
    when the caller overrides the gate with `force`."""

    def __init__(self, comparison: OfflineComparison) -> None:
        super().__init__(comparison.summary())
        self.comparison = comparison


class WebhookFailed(GuardError):
    """A webhook that could not be posted or did not answer 2xx (logged, never blocking)."""
