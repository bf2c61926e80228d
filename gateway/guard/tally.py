"""A release window as figures a store can keep (`WindowTally`), and back, pooled.

Every count of a window is additive, and so is each sequential test's evidence in log space
(an error enters exactly one process's likelihood ratio, and the ratios multiply; see
`sequential.ErrorSplitTest.merge`). So each process writes its own window's cumulative
figures, and the guard adds every process's up into one window before it decides: the
decision over all of a release's traffic, wherever each request was served.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.guard.histogram import LatencyHistogram
from gateway.guard.sequential import ErrorSplitTest
from gateway.guard.window import ArmStats, ReleaseWindow
from gateway.state import ArmTally, EvidenceTally, WindowTally


def tally_of(window: ReleaseWindow) -> WindowTally:
    """This process's figures of `window`."""
    return WindowTally(
        started_at=window.started_at,
        baseline=_arm_tally(window.baseline),
        candidate=_arm_tally(window.candidate),
        error_test=_evidence(window.error_test),
        accuracy_test=_evidence(window.accuracy_test),
    )


def pooled(
    model: str, flag_version: int, tallies: Iterable[WindowTally], *, accuracy_margin: float
) -> ReleaseWindow | None:
    """One window holding every tally's figures added up; None when there are none."""
    tallies = list(tallies)
    if not tallies:
        return None
    first = tallies[0]
    window = ReleaseWindow(
        model,
        flag_version,
        min(tally.started_at for tally in tallies),
        baseline=(first.baseline.variant, first.baseline.version),
        candidate=(first.candidate.variant, first.candidate.version),
        accuracy_margin=accuracy_margin,
    )
    for tally in tallies:
        _add_arm(window.baseline, tally.baseline)
        _add_arm(window.candidate, tally.candidate)
        window.error_test.merge(_test_of(tally.error_test, window.error_test))
        window.accuracy_test.merge(_test_of(tally.accuracy_test, window.accuracy_test))
    return window


def _arm_tally(arm: ArmStats) -> ArmTally:
    histogram = arm.latency
    return ArmTally(
        variant=arm.variant,
        version=arm.version,
        requests=arm.requests,
        errors=arm.errors,
        errors_by_kind=dict(arm.errors_by_kind),
        fallbacks=arm.fallbacks,
        latency={index: count for index, count in enumerate(histogram.counts) if count},
        latency_min_s=histogram.min_s if histogram.count else None,
        latency_max_s=histogram.max_s if histogram.count else None,
        labelled=arm.accuracy.total,
        correct=arm.accuracy.correct,
    )


def _add_arm(arm: ArmStats, tally: ArmTally) -> None:
    arm.requests += tally.requests
    arm.errors += tally.errors
    for kind, count in tally.errors_by_kind.items():
        arm.errors_by_kind[kind] = arm.errors_by_kind.get(kind, 0) + count
    arm.fallbacks += tally.fallbacks
    histogram = LatencyHistogram()
    for index, count in tally.latency.items():
        histogram.counts[index] += count
        histogram.count += count
    if tally.latency_min_s is not None and tally.latency_max_s is not None:
        histogram.min_s, histogram.max_s = tally.latency_min_s, tally.latency_max_s
    arm.latency.merge(histogram)
    arm.accuracy.add(tally.correct, tally.labelled)


def _evidence(test: ErrorSplitTest) -> EvidenceTally:
    return EvidenceTally(
        log_lr=test.log_lrs, errors=test.errors, candidate_errors=test.candidate_errors
    )


def _test_of(tally: EvidenceTally, like: ErrorSplitTest) -> ErrorSplitTest:
    test = like.empty()
    test.restore(tally.log_lr, tally.errors, tally.candidate_errors)
    return test
