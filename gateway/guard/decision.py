"""The guard's decision rule: plain Python, no I/O, one call per look at a window.

A breach needs a minimum sample and one of:

- error test: the anytime-valid sequential test (`sequential`) finds the candidate's error
  rate worse than the baseline's (statistic >= log(1/alpha)), both arms at `min_sample`;
- latency: the candidate's latency at `latency_quantile` exceeds the baseline's times
  `latency_factor` and by at least `latency_min_delta_ms`, both arms at
  `latency_min_sample` successes (with at least two requests beyond the quantile, so one
  slow request cannot move it);
- ceilings: the candidate's error rate above `max_error_rate` (at `min_sample` requests), or
  its latency at the quantile above `max_latency_ms` (at `latency_min_sample` successes);
- accuracy: ground truth from feedback says the candidate is less accurate than the
  baseline by more than `accuracy_margin`: the same anytime-valid test over wrong
  predictions, with that margin in its null (`window`), at `accuracy_alpha`, both arms at
  `accuracy_min_feedback` labelled predictions.

Without a breach: not enough data until both arms reach `min_sample`; then ready to advance,
unless a promotion criterion (live accuracy) is not met yet, which leaves it healthy. An A/A
release (both arms serve the same version) is never a breach. Between two errors nothing a
breach depends on can start to hold except a minimum sample being reached: the error test's
statistic changes only with an error, and an error rate only falls.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from gateway.guard.policy import GuardPolicy
from gateway.guard.stats import VersionStats
from gateway.guard.window import ArmStats, ReleaseWindow


class DecisionKind(enum.StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    HEALTHY = "healthy"
    BREACH = "breach"
    READY_TO_ADVANCE = "ready_to_advance"


class Trigger(enum.StrEnum):
    """Which rule found a breach."""

    ERROR_TEST = "error_test"
    LATENCY = "latency"
    ERROR_CEILING = "error_ceiling"
    LATENCY_CEILING = "latency_ceiling"
    ACCURACY_TEST = "accuracy_test"


class Decision(msgspec.Struct, frozen=True):
    """What the guard concluded about a window, why (in words), and the figures behind it."""

    kind: DecisionKind
    reason: str
    evidence: dict[str, Any]
    """JSON-ready: counts per arm, error rates, the test's statistic and threshold, latency
    quantiles and factor, the window's start, length and flag version, the triggers."""
    triggers: tuple[Trigger, ...] = ()


def decide(window: ReleaseWindow, policy: GuardPolicy, now: float) -> Decision:
    """Judge the candidate against the baseline over `window` at time `now`."""
    base, cand = window.baseline, window.candidate
    q = policy.latency_quantile
    base_q, cand_q = base.latency_ms(q), cand.latency_ms(q)
    test = window.error_test.result(policy.alpha)
    accuracy_test = window.accuracy_test.result(policy.accuracy_alpha)
    base_acc, cand_acc = base.accuracy.accuracy, cand.accuracy.accuracy
    total = cand.requests + base.requests
    evidence: dict[str, Any] = {
        "model": window.model,
        "window": {
            "flag_version": window.flag_version,
            "started_at": window.started_at,
            "length_s": window.length_s(now),
            "candidate_share": cand.requests / total if total else None,
        },
        "baseline": _arm_evidence(base, q, base_q),
        "candidate": _arm_evidence(cand, q, cand_q),
        "error_test": msgspec.to_builtins(test),
        "latency": {
            "quantile": q,
            "factor": policy.latency_factor,
            "min_delta_ms": policy.latency_min_delta_ms,
            "min_sample": policy.latency_min_sample,
            "baseline_ms": base_q,
            "candidate_ms": cand_q,
            "ratio": cand_q / base_q if cand_q is not None and base_q else None,
        },
        "min_sample": policy.min_sample,
        "accuracy": {
            "baseline": base_acc,
            "candidate": cand_acc,
            "baseline_labelled": base.accuracy.total,
            "candidate_labelled": cand.accuracy.total,
            "difference": None if base_acc is None or cand_acc is None else base_acc - cand_acc,
            "margin": policy.accuracy_margin,
            "null_ratio": window.accuracy_null(),
            "min_feedback": policy.accuracy_min_feedback,
            "test": msgspec.to_builtins(accuracy_test),
        },
    }

    def decision(kind: DecisionKind, reason: str, triggers: tuple[Trigger, ...] = ()) -> Decision:
        evidence["triggers"] = [str(t) for t in triggers]
        return Decision(kind, reason, evidence, triggers)

    if window.same_version:
        return decision(
            DecisionKind.HEALTHY,
            f"both arms serve version {cand.version!r} (A/A): the guard never rolls it back",
        )
    enough = cand.requests >= policy.min_sample and base.requests >= policy.min_sample
    latency_enough = cand.latency.count >= policy.latency_min_sample
    breaches: list[tuple[Trigger, str]] = []
    if enough and test.rejects:
        breaches.append(
            (
                Trigger.ERROR_TEST,
                f"candidate error rate {_rate(cand)} is worse than baseline {_rate(base)}: "
                f"sequential log-LR {test.statistic:.2f} >= {test.threshold:.2f} "
                f"(alpha {policy.alpha:g})",
            )
        )
    if (
        latency_enough
        and base.latency.count >= policy.latency_min_sample
        and cand_q is not None
        and base_q is not None
        and cand_q > policy.latency_factor * base_q
        and cand_q - base_q >= policy.latency_min_delta_ms
    ):
        breaches.append(
            (
                Trigger.LATENCY,
                f"candidate p{_pct(q)} latency {cand_q:.3g} ms is more than "
                f"{policy.latency_factor:g}x baseline {base_q:.3g} ms",
            )
        )
    rate = cand.error_rate
    if cand.requests >= policy.min_sample and rate is not None and rate > policy.max_error_rate:
        breaches.append(
            (
                Trigger.ERROR_CEILING,
                f"candidate error rate {_rate(cand)} is above the ceiling "
                f"{policy.max_error_rate:.2%}",
            )
        )
    ceiling = policy.max_latency_ms
    if latency_enough and ceiling is not None and cand_q is not None and cand_q > ceiling:
        breaches.append(
            (
                Trigger.LATENCY_CEILING,
                f"candidate p{_pct(q)} latency {cand_q:.3g} ms is above the ceiling {ceiling:g} ms",
            )
        )
    needed = policy.accuracy_min_feedback
    if (
        needed is not None
        and cand.accuracy.total >= needed
        and base.accuracy.total >= needed
        and accuracy_test.rejects
        and base_acc is not None
        and cand_acc is not None
    ):
        breaches.append(
            (
                Trigger.ACCURACY_TEST,
                f"candidate live accuracy {cand_acc:.3f} ({cand.accuracy.total} labels) is "
                f"more than {policy.accuracy_margin:g} below baseline {base_acc:.3f} "
                f"({base.accuracy.total} labels): sequential log-LR "
                f"{accuracy_test.statistic:.2f} >= {accuracy_test.threshold:.2f} (alpha "
                f"{policy.accuracy_alpha:g})",
            )
        )
    if breaches:
        return decision(
            DecisionKind.BREACH,
            "; ".join(reason for _, reason in breaches),
            tuple(trigger for trigger, _ in breaches),
        )
    if not enough:
        return decision(
            DecisionKind.INSUFFICIENT_DATA,
            f"waiting for {policy.min_sample} requests per arm: candidate {cand.requests}, "
            f"baseline {base.requests}",
        )
    summary = (
        f"no rule breached over {cand.requests} candidate and {base.requests} baseline "
        f"requests (error rates {_rate(cand)} vs {_rate(base)})"
    )
    wanted = policy.min_live_accuracy
    if wanted is not None:
        labelled, accuracy = cand.accuracy.total, cand.accuracy.accuracy
        if labelled < policy.min_feedback or accuracy is None:
            return decision(
                DecisionKind.HEALTHY,
                f"{summary}; waiting for {policy.min_feedback} labelled candidate predictions "
                f"({labelled} so far) to check live accuracy >= {wanted:g}",
            )
        if accuracy < wanted:
            return decision(
                DecisionKind.HEALTHY,
                f"{summary}; live accuracy {accuracy:.3f} over {labelled} labels is below "
                f"the {wanted:g} needed to advance",
            )
    return decision(DecisionKind.READY_TO_ADVANCE, summary)


def _arm_evidence(arm: ArmStats, quantile: float, at_quantile: float | None) -> dict[str, Any]:
    return {
        "variant": arm.variant,
        "version": arm.version,
        "requests": arm.requests,
        "errors": arm.errors,
        "error_rate": arm.error_rate,
        "errors_by_kind": dict(arm.errors_by_kind),
        "fallbacks": arm.fallbacks,
        "latency_count": arm.latency.count,
        "latency_p50_ms": arm.latency_ms(0.5),
        "latency_at_quantile_ms": at_quantile,
        "quantile": quantile,
        "feedback_total": arm.accuracy.total,
        "live_accuracy": arm.accuracy.accuracy,
    }


def _rate(stats: VersionStats) -> str:
    rate = stats.error_rate
    text = "n/a" if rate is None else f"{rate:.2%}"
    return f"{text} ({stats.errors}/{stats.requests})"


def _pct(quantile: float) -> str:
    return f"{quantile * 100:g}"
