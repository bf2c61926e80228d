"""What the request path hands to shadow mode, and one shadow run of it while it is pending."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.dataplane import InferenceRequest, Prediction
from gateway.flags.router import RouteDecision
from gateway.shadow.cohorts import Attribute
from gateway.shadow.policy import ShadowPolicy

QUEUED, RUNNING, SETTLED = 0, 1, 2


class ShadowRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A routed request whose primary has answered (`primary`) or failed (`primary_error`).

    `request` and `binary_inputs` are only needed when the primary failed: the shadow then
    decodes the inputs itself, off the request path. (A msgspec struct, untracked by the
    garbage collector: the request path builds one per shadowed request, and it refers to
    nothing that refers back to it.)
    """

    decision: RouteDecision
    request_id: str
    targeting_key: str
    context: Mapping[str, Attribute]
    at: float
    primary: Prediction | None
    primary_error: str = ""
    primary_latency_s: float | None = None
    max_batch_rows: int = 1024
    request: InferenceRequest | None = None
    binary_inputs: Mapping[str, bytes] | None = None


class ShadowJob(msgspec.Struct, eq=False, gc=False):
    """One shadow version's run of one request, from its admission until it is settled.

    Compared and hashed by identity (the runner keeps its jobs in a set)."""

    request: ShadowRequest
    version: str
    policy: ShadowPolicy
    deadline: float
    """`time.monotonic()` past which the run is settled as a timeout."""
    state: int = QUEUED
    """Queued, running in a batch, or settled (its record emitted, or discarded)."""
