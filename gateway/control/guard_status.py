"""What the release status shows of the guard: plain data from its figures and decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.control.in_force import InForce
from gateway.guard import GuardStats, RecordedDecision
from gateway.guard.window import ReleaseWindow
from gateway.shadow.summary import LiveAccuracy


def release_status(
    applied: InForce | None,
    window: ReleaseWindow | None,
    *,
    live: GuardStats,
    model: str,
    pool: dict[str, Any] | None,
    pairs: Mapping[tuple[str, str], LiveAccuracy],
    decisions: Sequence[RecordedDecision],
    now: float,
) -> dict[str, Any]:
    """The release's policy, automation, ramp, window (pooled over every process when the
    gateway pools), this process's counters per version since it started, the shadows' live
    accuracy per pair, and the last decisions."""
    release_policy = applied.release.policy if applied else None
    policy = release_policy.guard if release_policy else None
    quantile = policy.latency_quantile if policy else 0.99
    ramp = release_policy.ramp if release_policy else None
    return {
        "flag_version_in_force": applied.record.version if applied else None,
        "automation": None
        if release_policy is None
        else {"enabled": release_policy.automated, "problem": release_policy.problem or None},
        "policy": policy.to_metadata() if policy else None,
        "pool": pool,
        "ramp": ramp.describe(now) if ramp else None,
        "window": None
        if window is None
        else {
            "flag_version": window.flag_version,
            "started_at": window.started_at,
            "length_s": round(now - window.started_at, 3),
            "baseline": window.baseline.snapshot(quantile),
            "candidate": window.candidate.snapshot(quantile),
            "error_test": window.error_test.result(policy.alpha if policy else 0.005),
            "accuracy_test": window.accuracy_test.result(
                policy.accuracy_alpha if policy else 0.005
            ),
        },
        "versions": {v: s.snapshot(quantile) for v, s in live.served(model).items()},
        "shadow_versions": {v: s.snapshot(quantile) for v, s in live.shadowed(model).items()},
        "shadow_pairs": [
            {
                "primary": primary,
                "shadow": shadow,
                "labelled": accuracy.labelled,
                "primary_accuracy": accuracy.primary,
                "shadow_accuracy": accuracy.shadow,
            }
            for (primary, shadow), accuracy in sorted(pairs.items())
        ],
        "decisions": list(decisions),
    }
