"""A release's guard policy, read from its flag's metadata (so it stays a valid flagd document).

Every key is optional; a missing key takes the default. Unknown `guard.*` keys are refused,
so a typo never silently falls back to a default.

| metadata key | field | default | meaning |
| --- | --- | --- | --- |
| `guard.minSample` | min_sample | 100 | requests each arm needs before any breach or advance |
| `guard.alpha` | alpha | 0.005 | false-alarm bound of the sequential error test, per window |
| `guard.latencyQuantile` | latency_quantile | 0.99 | the latency quantile compared |
| `guard.latencyFactor` | latency_factor | 1.5 | breach when candidate > factor * baseline |
| `guard.latencyMinSample` | latency_min_sample | 500 | successes each arm needs for latency |
| `guard.latencyMinDeltaMs` | latency_min_delta_ms | 5.0 | ...and slower by at least this much |
| `guard.maxErrorRate` | max_error_rate | 0.2 | ceiling on the candidate's error rate (1 = off) |
| `guard.maxLatencyMs` | max_latency_ms | off | ceiling on the candidate's quantile (0 = off) |
| `guard.minLiveAccuracy` | min_live_accuracy | off | live accuracy needed to advance (0 = off) |
| `guard.minFeedback` | min_feedback | 50 | labelled predictions that accuracy needs |
| `guard.accuracyAlpha` | accuracy_alpha | 0.005 | false-alarm bound of the accuracy test |
| `guard.accuracyMargin` | accuracy_margin | 0.01 | how much less accurate the candidate may be |
| `guard.accuracyMinFeedback` | accuracy_min_feedback | 100 | labels each arm needs (0 = rule off) |
| `guard.offlineTolerance` | offline_tolerance | 0.01 | how far below the baseline offline |
| `guard.offlineMetrics` | offline_metrics | "accuracy,macro_f1" | what the offline gate compares |
| `guard.offlineOverride` | offline_override | none | versions let past the offline gate |
| `guard.autoRollback` | auto_rollback | true | false: decide and report, never roll back |
| `fallback` | fallback | true | a failing candidate is answered by the baseline |

`fallback` is the release's existing key (`Release.fallback` reads the same one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from gateway.flags.document import META_FALLBACK, MetadataValue
from gateway.flags.errors import InvalidPolicy

GUARD_PREFIX: Final = "guard."
OFFLINE_METRICS: Final = ("accuracy", "macro_f1")
MIN_TAIL: Final = 2
"""Requests that must lie beyond the latency quantile at its minimum sample, so that a single
slow request can never move the quantile."""


class GuardPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How the guard judges a release (see the module docstring for the metadata keys)."""

    min_sample: int = 100
    alpha: float = 0.005
    latency_quantile: float = 0.99
    latency_factor: float = 1.5
    latency_min_sample: int = 500
    # Latency is what the client waits (queue and call included): a version serving a tenth
    # of the traffic wakes its idle threads more often, which costs it a little more tail
    # than a busy one; 5 ms keeps that, and the scheduling noise of a shared machine, from
    # ever reading as a slower model.
    latency_min_delta_ms: float = 5.0
    max_error_rate: float = 0.2
    max_latency_ms: float | None = None
    min_live_accuracy: float | None = None
    min_feedback: int = 50
    accuracy_alpha: float = 0.005
    accuracy_margin: float = 0.01
    accuracy_min_feedback: int | None = 100
    offline_tolerance: float = 0.01
    offline_metrics: tuple[str, ...] = OFFLINE_METRICS
    offline_override: tuple[str, ...] = ()
    """Versions that pass the offline gate whatever their metrics (a forced start written
    into the flag, for flag files, which have no `force`)."""
    auto_rollback: bool = True
    fallback: bool = True

    @classmethod
    def from_metadata(cls, policy: Mapping[str, MetadataValue]) -> GuardPolicy:
        """The policy a release's metadata declares (`Release.policy`, or the flag's whole
        `metadata`: keys outside `guard.*` and `fallback` are ignored). Raises InvalidPolicy
        naming the first bad key."""
        values: dict[str, Any] = {}
        for key, value in policy.items():
            if key == META_FALLBACK:
                values["fallback"] = _boolean(key, value)
            elif key.startswith(GUARD_PREFIX):
                spec = _KEYS.get(key)
                if spec is None:
                    raise InvalidPolicy(
                        f"metadata {key!r} is not a guard setting; the guard reads "
                        + ", ".join(repr(k) for k in _KEYS)
                    )
                field, read = spec
                parsed = read(key, value)
                if parsed is not _OFF:
                    values[field] = parsed
        return cls(**values)

    def to_metadata(self) -> dict[str, MetadataValue]:
        """Every setting under its metadata key (what `from_metadata` reads back)."""
        metadata: dict[str, MetadataValue] = {}
        for key, (field, _) in _KEYS.items():
            value = getattr(self, field)
            if value is None:
                value = 0
            elif isinstance(value, tuple):
                if not value:
                    continue
                value = ",".join(value)
            metadata[key] = value
        metadata[META_FALLBACK] = self.fallback
        return metadata

    def __post_init__(self) -> None:
        """Built directly or from metadata, a policy holds only values its keys accept."""
        for key, (field, read) in _KEYS.items():
            value = getattr(self, field)
            if value is not None and value != ():
                parsed = read(key, ",".join(value) if isinstance(value, tuple) else value)
                if parsed is _OFF:  # only metadata spells "off" as 0; a field says None
                    raise InvalidPolicy(f"{field} is off as None, not 0 (metadata {key!r}: 0)")
        if self.latency_min_sample * (1 - self.latency_quantile) < MIN_TAIL - 1e-9:
            needed = math.ceil(MIN_TAIL / (1 - self.latency_quantile) - 1e-9)
            raise InvalidPolicy(
                f"metadata 'guard.latencyMinSample' is {self.latency_min_sample}, which at "
                f"'guard.latencyQuantile' {self.latency_quantile:g} leaves fewer than {MIN_TAIL} "
                f"requests beyond the quantile, so one slow request could move it; it must be "
                f"at least {needed}"
            )


class _Off:
    """A setting written as 0 that switches its rule off."""


_OFF: Final = _Off()
_Reader = Callable[[str, MetadataValue], Any]


def _boolean(key: str, value: MetadataValue) -> bool:
    if not isinstance(value, bool):
        raise InvalidPolicy(f"metadata {key!r} must be true or false, not {value!r}")
    return value


def _integer(minimum: int) -> _Reader:
    def read(key: str, value: MetadataValue) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidPolicy(
                f"metadata {key!r} must be an integer of at least {minimum}, not {value!r}"
            )
        return value

    return read


def _number(span: str, accepts: Callable[[float], bool], *, off: bool = False) -> _Reader:
    """A finite number for which `accepts` holds (`span` says which in words); with `off`,
    0 also, meaning the rule is off."""
    extra = " (0 switches it off)" if off else ""

    def read(key: str, value: MetadataValue) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidPolicy(f"metadata {key!r} must be a number {span}{extra}, not {value!r}")
        if off and value == 0:
            return _OFF
        if not math.isfinite(value) or not accepts(value):
            raise InvalidPolicy(f"metadata {key!r} must be a number {span}{extra}, not {value!r}")
        return float(value)

    return read


def _integer_or_off(minimum: int) -> _Reader:
    exact = _integer(minimum)

    def read(key: str, value: MetadataValue) -> Any:
        if value == 0 and not isinstance(value, bool):
            return _OFF
        try:
            return exact(key, value)
        except InvalidPolicy:
            raise InvalidPolicy(
                f"metadata {key!r} must be an integer of at least {minimum} (0 switches it "
                f"off), not {value!r}"
            ) from None

    return read


def _versions(key: str, value: MetadataValue) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else ()
    if not names or not all(names):
        raise InvalidPolicy(
            f"metadata {key!r} must name versions separated by commas, like '5' or '5,6'; "
            f"not {value!r}"
        )
    return tuple(dict.fromkeys(names))


def _metrics(key: str, value: MetadataValue) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else ()
    if not names or any(name not in OFFLINE_METRICS for name in names):
        raise InvalidPolicy(
            f"metadata {key!r} must list offline metrics separated by commas, from "
            f"{', '.join(OFFLINE_METRICS)}; not {value!r}"
        )
    return tuple(dict.fromkeys(names))


_KEYS: Final[dict[str, tuple[str, _Reader]]] = {
    "guard.minSample": ("min_sample", _integer(1)),
    "guard.alpha": ("alpha", _number("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)),
    "guard.latencyQuantile": (
        "latency_quantile",
        _number("between 0 and 1 (exclusive)", lambda v: 0 < v < 1),
    ),
    "guard.latencyFactor": ("latency_factor", _number("of at least 1", lambda v: v >= 1)),
    "guard.latencyMinSample": ("latency_min_sample", _integer(1)),
    "guard.latencyMinDeltaMs": ("latency_min_delta_ms", _number("of at least 0", lambda v: v >= 0)),
    "guard.maxErrorRate": (
        "max_error_rate",
        _number("above 0 and at most 1", lambda v: 0 < v <= 1),
    ),
    "guard.maxLatencyMs": ("max_latency_ms", _number("above 0", lambda v: v > 0, off=True)),
    "guard.minLiveAccuracy": (
        "min_live_accuracy",
        _number("above 0 and at most 1", lambda v: 0 < v <= 1, off=True),
    ),
    "guard.minFeedback": ("min_feedback", _integer(1)),
    "guard.accuracyAlpha": (
        "accuracy_alpha",
        _number("between 0 and 1 (exclusive)", lambda v: 0 < v < 1),
    ),
    "guard.accuracyMargin": ("accuracy_margin", _number("from 0 to 1", lambda v: 0 <= v <= 1)),
    "guard.accuracyMinFeedback": ("accuracy_min_feedback", _integer_or_off(1)),
    "guard.offlineTolerance": ("offline_tolerance", _number("from 0 to 1", lambda v: 0 <= v <= 1)),
    "guard.offlineMetrics": ("offline_metrics", _metrics),
    "guard.offlineOverride": ("offline_override", _versions),
    "guard.autoRollback": ("auto_rollback", _boolean),
}
