"""What the processes of one gateway share through its store, beside flags and the audit log:
predictions waiting for their ground truth, and each process's figures of a guard window.

With several worker processes or replicas, a request is served by one process and its
feedback may reach another; and the guard must judge all of a release's traffic, not one
process's share. So each process keeps its own figures and hands them to the store in
batches (never on the request path): predictions (`StoredPrediction`) to be claimed by
whichever process the feedback reaches, and its cumulative figures of each release window
(`WindowTally`, replaced whole on every write, so a retried write never counts twice), which
the guard adds up over every process before it decides.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class StoredPrediction(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a version predicted for a request (the classes of its rows), and the shadows'
    predictions for it as they arrive."""

    request_id: str
    version: str
    variant: str | None
    labels: tuple[str, ...]
    at: float
    shadows: dict[str, tuple[str, ...]] = {}


class ShadowLabels(msgspec.Struct, frozen=True, gc=False):
    """A shadow version's predicted classes for a request it ran on."""

    request_id: str
    version: str
    labels: tuple[str, ...]


Claim = StoredPrediction | Literal["unknown", "duplicate"]
"""A prediction claimed for feedback: the prediction (the first claim), "duplicate" (it was
claimed before) or "unknown" (never stored, or no longer)."""


class ArmTally(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One arm of a window, as one process saw it: additive counts."""

    variant: str
    version: str
    requests: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = {}
    fallbacks: int = 0
    latency: dict[int, int] = {}
    """Latency histogram bucket -> count (`gateway.guard.histogram`), sparse."""
    latency_min_s: float | None = None
    latency_max_s: float | None = None
    labelled: int = 0
    correct: int = 0


class EvidenceTally(msgspec.Struct, kw_only=True):
    """A sequential test's evidence from one process: the log likelihood ratio per
    alternative, which add up over processes (each error enters exactly one of them)."""

    log_lr: list[float]
    errors: int = 0
    candidate_errors: int = 0


class WindowTally(msgspec.Struct, kw_only=True):
    """One process's cumulative figures of a release's window (one flag version)."""

    started_at: float
    baseline: ArmTally
    candidate: ArmTally
    error_test: EvidenceTally
    accuracy_test: EvidenceTally
