"""The offline gate: a rollout or ramp of a candidate that did worse than its baseline on the
held-out set (its manifest's metrics) is refused, unless the caller forces it (and audits the
override with the comparison's evidence).

The candidate passes when each metric the policy names (`guard.offlineMetrics`) is at least
the baseline's minus `guard.offlineTolerance`. Metrics measured on different data sets or
splits are not comparable, and a manifest without metrics cannot be judged: both refuse.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.guard.errors import OfflineGateRefused
from gateway.guard.policy import GuardPolicy
from gateway.repository.manifest import Manifest


class MetricComparison(msgspec.Struct, frozen=True):
    metric: str
    baseline: float
    candidate: float
    difference: float
    """candidate - baseline: negative when the candidate is worse."""
    passed: bool


class OfflineComparison(msgspec.Struct, frozen=True, kw_only=True):
    """The figures behind the gate's verdict, for its message and the audit log."""

    baseline_version: str
    candidate_version: str
    tolerance: float
    metrics: tuple[MetricComparison, ...]
    problems: tuple[str, ...]
    """Why it is refused, one line each (empty when it passes)."""
    forced: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (
            f"offline gate: candidate version {self.candidate_version!r} against baseline "
            f"version {self.baseline_version!r}"
        )
        if self.passed:
            return f"{head}: within tolerance {self.tolerance:g}"
        verdict = "overridden (forced)" if self.forced else "refused"
        return f"{head} {verdict}: " + "; ".join(self.problems)

    def evidence(self) -> dict[str, Any]:
        """JSON-ready, for the audit entry of a forced start."""
        evidence: dict[str, Any] = msgspec.to_builtins(self)
        evidence["passed"] = self.passed
        return evidence


def compare_offline(
    baseline: Manifest,
    candidate: Manifest,
    policy: GuardPolicy,
    *,
    baseline_version: str = "baseline",
    candidate_version: str = "candidate",
) -> OfflineComparison:
    """Compare the two manifests' offline metrics under the policy (no exception)."""
    problems: list[str] = []
    compared: list[MetricComparison] = []
    base, cand = baseline.metrics, candidate.metrics
    for name, metrics in ((baseline_version, base), (candidate_version, cand)):
        if metrics is None:
            problems.append(
                f"version {name!r} has no offline metrics in its manifest, so it cannot be "
                "compared (force to start anyway)"
            )
    if base is not None and cand is not None:
        if (base.dataset, base.split) != (cand.dataset, cand.split):
            problems.append(
                f"the metrics were measured on different data ({cand.dataset}, {cand.split} "
                f"against {base.dataset}, {base.split}), so they cannot be compared"
            )
        else:
            for metric in policy.offline_metrics:
                before, after = float(getattr(base, metric)), float(getattr(cand, metric))
                passed = after >= before - policy.offline_tolerance - 1e-12
                compared.append(MetricComparison(metric, before, after, after - before, passed))
                if not passed:
                    problems.append(
                        f"{metric} {after:.4f} is {before - after:.4f} below the baseline's "
                        f"{before:.4f} (tolerance {policy.offline_tolerance:g})"
                    )
    return OfflineComparison(
        baseline_version=baseline_version,
        candidate_version=candidate_version,
        tolerance=policy.offline_tolerance,
        metrics=tuple(compared),
        problems=tuple(problems),
    )


def check_offline(
    baseline: Manifest,
    candidate: Manifest,
    policy: GuardPolicy,
    *,
    force: bool = False,
    baseline_version: str = "baseline",
    candidate_version: str = "candidate",
) -> OfflineComparison:
    """The comparison when the candidate passes, or when `force` overrides a refusal (then
    `forced` is True: audit its `evidence()`); otherwise raise OfflineGateRefused."""
    comparison = compare_offline(
        baseline,
        candidate,
        policy,
        baseline_version=baseline_version,
        candidate_version=candidate_version,
    )
    if comparison.passed:
        return comparison
    if not force:
        raise OfflineGateRefused(comparison)
    return msgspec.structs.replace(comparison, forced=True)
