"""Live statistics of one model version: what the request path counts, cheaply.

Every `record` is O(1) and takes no lock (one event loop). What counts as an error is the
version's fault: an exception, a timeout, or an output that is non-finite or mis-shaped. A
request the client got wrong (a 400) is not recorded at all. Latency is recorded for the
requests that succeeded.
"""

from __future__ import annotations

import enum

import msgspec

from gateway.guard.histogram import LatencyHistogram


class ErrorKind(enum.StrEnum):
    """Why a version failed a request."""

    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    """No answer within the version's deadline."""
    OVERLOADED = "overloaded"
    """The version's queue was full: the request was refused without running."""
    INVALID_OUTPUT = "invalid_output"
    """Non-finite numbers, or a shape or datatype the manifest does not declare."""


class LiveAccuracy:
    """Labelled predictions of one version (from feedback) and how many were right."""

    __slots__ = ("correct", "total")

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def add(self, correct: int, total: int) -> None:
        self.correct += correct
        self.total += total

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


class PairAccuracy(msgspec.Struct, frozen=True):
    """Feedback joined to both sides of shadowed requests: how often the version that served
    and the shadow were right about the very same labelled rows."""

    labelled: int
    primary_correct: int
    shadow_correct: int

    @property
    def primary_accuracy(self) -> float | None:
        return self.primary_correct / self.labelled if self.labelled else None

    @property
    def shadow_accuracy(self) -> float | None:
        return self.shadow_correct / self.labelled if self.labelled else None

    def added(self, primary_correct: int, shadow_correct: int, labelled: int) -> PairAccuracy:
        return PairAccuracy(
            self.labelled + labelled,
            self.primary_correct + primary_correct,
            self.shadow_correct + shadow_correct,
        )


class LatencySummary(msgspec.Struct, frozen=True):
    """Latency quantiles in milliseconds over `count` successful requests."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    quantile: float
    at_quantile_ms: float | None
    """The quantile the policy compares (may be p99 again)."""


class VersionSnapshot(msgspec.Struct, frozen=True):
    """A copy of a version's counters, for the guard's evidence, the admin API and metrics."""

    version: str
    requests: int
    errors: int
    error_rate: float | None
    errors_by_kind: dict[str, int]
    fallbacks: int
    latency: LatencySummary
    feedback_total: int
    feedback_correct: int
    live_accuracy: float | None


class VersionStats:
    """Counters of one version (in one arm of a window, or since the process started)."""

    __slots__ = (
        "accuracy",
        "errors",
        "errors_by_kind",
        "fallbacks",
        "latency",
        "requests",
        "version",
    )

    def __init__(self, version: str) -> None:
        self.version = version
        self.requests = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.fallbacks = 0
        self.latency = LatencyHistogram()
        self.accuracy = LiveAccuracy()

    def record(
        self,
        latency_s: float | None = None,
        error: ErrorKind | None = None,
        *,
        fallback: bool = False,
    ) -> None:
        """One request: its latency when it succeeded, or why it failed, and whether the
        baseline answered it instead (`fallback`, only with an error)."""
        self.requests += 1
        if error is None:
            if latency_s is not None:
                self.latency.record(latency_s)
            return
        self.errors += 1
        kind = error.value
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        if fallback:
            self.fallbacks += 1

    def record_successes(self, count: int, latency_s: float | None = None) -> None:
        """`count` successful requests at once (an aggregated batch; `latency_s` when they
        all took the same time)."""
        if count <= 0:
            return
        self.requests += count
        if latency_s is not None:
            self.latency.record(latency_s, count)

    def merge(self, other: VersionStats) -> None:
        """Add `other`'s counters (another replica's, say) to these."""
        self.requests += other.requests
        self.errors += other.errors
        for kind, count in other.errors_by_kind.items():
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + count
        self.fallbacks += other.fallbacks
        self.latency.merge(other.latency)
        self.accuracy.add(other.accuracy.correct, other.accuracy.total)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def latency_ms(self, quantile: float) -> float | None:
        seconds = self.latency.quantile(quantile)
        return None if seconds is None else seconds * 1000.0

    def snapshot(self, quantile: float = 0.99) -> VersionSnapshot:
        return VersionSnapshot(
            version=self.version,
            requests=self.requests,
            errors=self.errors,
            error_rate=self.error_rate,
            errors_by_kind=dict(self.errors_by_kind),
            fallbacks=self.fallbacks,
            latency=LatencySummary(
                count=self.latency.count,
                p50_ms=self.latency_ms(0.5),
                p99_ms=self.latency_ms(0.99),
                quantile=quantile,
                at_quantile_ms=self.latency_ms(quantile),
            ),
            feedback_total=self.accuracy.total,
            feedback_correct=self.accuracy.correct,
            live_accuracy=self.accuracy.accuracy,
        )
