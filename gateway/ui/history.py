"""A bounded history of each model's live figures, for the dashboard's charts.

The guard's figures are running totals (since the process started) and a snapshot of the
current window; a chart over time needs what happened between two looks. `ReleaseHistory`
keeps the last reading of every version and turns each new one into the interval's figures:
requests per second, error rate, latency p50/p99 of the interval's requests (from the
difference of two latency histograms), and live accuracy of the interval's labels. Plain
Python, no I/O; the sampler (`sampler.py`) feeds it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from gateway.guard.histogram import LatencyHistogram


@dataclass(frozen=True, slots=True)
class Reading:
    """One version's running totals at one moment."""

    requests: int
    errors: int
    fallbacks: int
    feedback_total: int
    feedback_correct: int
    latency_counts: Sequence[int] = ()
    """The latency histogram's bucket counts (successful requests), empty when unknown."""
    latency_min_s: float = math.inf
    latency_max_s: float = 0.0


class GuardPoint(msgspec.Struct, frozen=True, kw_only=True):
    """The guard's view of the release at a sample: its last decision and the error test."""

    decision: str | None = None
    statistic: float | None = None
    threshold: float | None = None
    candidate_requests: int | None = None
    baseline_requests: int | None = None


class VersionPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One version's figures over one interval."""

    requests: int
    errors: int
    fallbacks: int
    requests_per_s: float
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    labelled: int
    accuracy: float | None
    """Live accuracy of the predictions labelled during the interval."""


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    interval_s: float
    flag_version: int | None
    versions: dict[str, VersionPoint]
    shadow_versions: dict[str, VersionPoint]
    guard: GuardPoint | None


@dataclass(slots=True)
class _Last:
    at: float
    served: Mapping[str, Reading]
    shadowed: Mapping[str, Reading]


class ReleaseHistory:
    """The last `keep_s` seconds of samples per model (at most `keep_s / interval_s` + 1)."""

    def __init__(self, keep_s: float, interval_s: float) -> None:
        if keep_s <= 0 or interval_s <= 0:
            raise ValueError("keep_s and interval_s must be positive")
        self.keep_s = keep_s
        self.interval_s = interval_s
        self._size = math.ceil(keep_s / interval_s) + 1
        self._samples: dict[str, collections.deque[Sample]] = {}
        self._last: dict[str, _Last] = {}

    def record(
        self,
        model: str,
        now: float,
        served: Mapping[str, Reading],
        shadowed: Mapping[str, Reading] | None = None,
        *,
        flag_version: int | None = None,
        guard: GuardPoint | None = None,
    ) -> Sample | None:
        """Take a reading; the sample of the interval since the previous one (None for the
        first reading of a model, which only sets the baseline)."""
        shadowed = shadowed or {}
        last = self._last.get(model)
        self._last[model] = _Last(now, dict(served), dict(shadowed))
        if last is None or now <= last.at:
            return None
        elapsed = now - last.at
        sample = Sample(
            at=now,
            interval_s=round(elapsed, 3),
            flag_version=flag_version,
            versions=_points(served, last.served, elapsed),
            shadow_versions=_points(shadowed, last.shadowed, elapsed),
            guard=guard,
        )
        samples = self._samples.get(model)
        if samples is None:
            samples = self._samples[model] = collections.deque(maxlen=self._size)
        samples.append(sample)
        while samples and samples[0].at < now - self.keep_s:
            samples.popleft()
        return sample

    def samples(self, model: str, since: float | None = None) -> list[Sample]:
        """Oldest first; only those taken after `since` when given."""
        kept = self._samples.get(model, ())
        return [s for s in kept if since is None or s.at > since]

    def forget_except(self, models: set[str]) -> None:
        """Drop the history of models no longer served."""
        for model in set(self._last) - models:
            self._last.pop(model, None)
            self._samples.pop(model, None)


def _points(
    now: Mapping[str, Reading], before: Mapping[str, Reading], elapsed: float
) -> dict[str, VersionPoint]:
    return {
        version: _point(reading, before.get(version), elapsed)
        for version, reading in sorted(now.items())
    }


def _point(now: Reading, before: Reading | None, elapsed: float) -> VersionPoint:
    # Totals only grow; one that fell was reset (a new process, say): count it from zero.
    if before is None or now.requests < before.requests:
        before = Reading(0, 0, 0, 0, 0)
    requests = now.requests - before.requests
    errors = max(0, now.errors - before.errors)
    labelled = max(0, now.feedback_total - before.feedback_total)
    correct = max(0, now.feedback_correct - before.feedback_correct)
    latency = _interval_latency(now, before)
    return VersionPoint(
        requests=requests,
        errors=errors,
        fallbacks=max(0, now.fallbacks - before.fallbacks),
        requests_per_s=round(requests / elapsed, 3),
        error_rate=errors / requests if requests else None,
        p50_ms=_ms(latency.quantile(0.5)) if latency else None,
        p99_ms=_ms(latency.quantile(0.99)) if latency else None,
        labelled=labelled,
        accuracy=min(1.0, correct / labelled) if labelled else None,
    )


def _interval_latency(now: Reading, before: Reading) -> LatencyHistogram | None:
    """The histogram of the latencies recorded between two readings."""
    if not now.latency_counts:
        return None
    earlier = before.latency_counts or [0] * len(now.latency_counts)
    if len(earlier) != len(now.latency_counts):
        return None
    delta = [max(0, a - b) for a, b in zip(now.latency_counts, earlier, strict=True)]
    count = sum(delta)
    if count == 0:
        return None
    histogram = LatencyHistogram()
    histogram.counts = delta
    histogram.count = count
    # The interval's own extremes are unknown; the running ones bound every estimate.
    histogram.min_s, histogram.max_s = now.latency_min_s, now.latency_max_s
    return histogram


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)
