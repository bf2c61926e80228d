"""One release's guard window: the baseline and candidate arms since the flag last changed.

Arms are told apart by the variant that served (so an A/A release, the same version in both
variants, still has two arms). A window belongs to one flag version: when the flag changes
(a ramp step, a rollout, a pause) the guard starts a new window, because the traffic split
it judged no longer holds. The running tests live here: the error test, updated as errors
arrive, and the accuracy test, the same test over wrong predictions, updated as feedback
joins. Its null is "the candidate is wrong at most `accuracy_margin` more often than the
baseline": a ratio of wrong-prediction rates θ0 = (r + margin) / r, with r the baseline's
wrong rate so far (smoothed), so a wrong prediction is the candidate's with probability
p(θ0) at the candidate's share of the labels (`sequential.null_share`). Equally accurate
arms (θ = 1 < θ0) keep the test a supermartingale whatever r's estimate says.
"""

from __future__ import annotations

import enum

from gateway.guard.sequential import (
    ACCURACY_THETAS,
    ErrorSplitTest,
    candidate_share,
    null_share,
)
from gateway.guard.stats import ErrorKind, VersionStats

MAX_NULL_RATIO = 50.0
"""The accuracy test's null ratio at most: a nearly perfect baseline does not make the
candidate's every mistake count for nothing."""


class Arm(enum.StrEnum):
    BASELINE = "baseline"
    CANDIDATE = "candidate"


class ArmStats(VersionStats):
    """A version's counters inside a window, with the variant that served them."""

    __slots__ = ("variant",)

    def __init__(self, variant: str, version: str) -> None:
        super().__init__(version)
        self.variant = variant


class ReleaseWindow:
    """Live counts of both arms of one release since `started_at` (epoch seconds), under
    flag version `flag_version`."""

    __slots__ = (
        "accuracy_margin",
        "accuracy_test",
        "baseline",
        "candidate",
        "error_test",
        "flag_version",
        "model",
        "started_at",
    )

    def __init__(
        self,
        model: str,
        flag_version: int,
        started_at: float,
        *,
        baseline: tuple[str, str],
        candidate: tuple[str, str],
        accuracy_margin: float = 0.0,
    ) -> None:
        """`baseline` and `candidate` are (variant, version) pairs; `accuracy_margin` how
        much less accurate than the baseline the candidate may be (the accuracy test's null)."""
        self.model = model
        self.flag_version = flag_version
        self.started_at = started_at
        self.baseline = ArmStats(*baseline)
        self.candidate = ArmStats(*candidate)
        self.error_test = ErrorSplitTest()
        self.accuracy_margin = accuracy_margin
        self.accuracy_test = ErrorSplitTest(ACCURACY_THETAS)

    @property
    def same_version(self) -> bool:
        """An A/A release: both arms serve the same version."""
        return self.baseline.version == self.candidate.version

    def arm_of(self, variant: str | None) -> Arm | None:
        if variant == self.candidate.variant:
            return Arm.CANDIDATE
        if variant == self.baseline.variant:
            return Arm.BASELINE
        return None

    def stats(self, arm: Arm) -> ArmStats:
        return self.candidate if arm is Arm.CANDIDATE else self.baseline

    def record(
        self,
        arm: Arm,
        latency_s: float | None = None,
        error: ErrorKind | None = None,
        *,
        fallback: bool = False,
    ) -> None:
        """One request served by `arm` (see `VersionStats.record`). A failed candidate
        request answered by the baseline counts once, against the candidate, with
        `fallback=True`; the baseline's answer to it is not recorded in the window."""
        if error is not None:
            p0 = candidate_share(self.candidate.requests, self.baseline.requests)
            self.error_test.observe(candidate=arm is Arm.CANDIDATE, p0=p0)
        self.stats(arm).record(latency_s, error, fallback=fallback)

    def record_labels(self, arm: Arm, correct: int, total: int) -> None:
        """`total` labelled predictions of `arm`, `correct` of them right: each wrong one
        moves the accuracy test (at the candidate's share of the labels before it)."""
        stats = self.stats(arm)
        for _ in range(total - correct):
            share = candidate_share(self.candidate.accuracy.total, self.baseline.accuracy.total)
            p0 = null_share(share, self.accuracy_null())
            self.accuracy_test.observe(candidate=arm is Arm.CANDIDATE, p0=p0)
            stats.accuracy.add(0, 1)
        stats.accuracy.add(correct, correct)

    def accuracy_null(self) -> float:
        """θ0 of the accuracy test now (see the module docstring)."""
        if self.accuracy_margin <= 0:
            return 1.0
        labels = self.baseline.accuracy
        wrong = (labels.total - labels.correct + 0.5) / (labels.total + 1.0)
        return min((wrong + self.accuracy_margin) / wrong, MAX_NULL_RATIO)

    def record_successes(self, arm: Arm, count: int, latency_s: float | None = None) -> None:
        """`count` successful requests of `arm` at once (see `VersionStats.record_successes`)."""
        self.stats(arm).record_successes(count, latency_s)

    def length_s(self, now: float) -> float:
        return max(0.0, now - self.started_at)
