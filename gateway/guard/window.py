"""One release's guard window: the baseline and candidate arms since the flag last changed.

Arms are told apart by the variant that served (so an A/A release, the same version in both
variants, still has two arms). A window belongs to one flag version: when the flag changes
(a ramp step, a rollout, a pause) the guard starts a new window, because the traffic split
it judged no longer holds. The running error test lives here, updated as errors arrive.
"""

from __future__ import annotations

import enum

from gateway.guard.sequential import ErrorSplitTest, candidate_share
from gateway.guard.stats import ErrorKind, VersionStats


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

    __slots__ = ("baseline", "candidate", "error_test", "flag_version", "model", "started_at")

    def __init__(
        self,
        model: str,
        flag_version: int,
        started_at: float,
        *,
        baseline: tuple[str, str],
        candidate: tuple[str, str],
    ) -> None:
        """`baseline` and `candidate` are (variant, version) pairs."""
        self.model = model
        self.flag_version = flag_version
        self.started_at = started_at
        self.baseline = ArmStats(*baseline)
        self.candidate = ArmStats(*candidate)
        self.error_test = ErrorSplitTest()

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

    def record_successes(self, arm: Arm, count: int, latency_s: float | None = None) -> None:
        """`count` successful requests of `arm` at once (see `VersionStats.record_successes`)."""
        self.stats(arm).record_successes(count, latency_s)

    def length_s(self, now: float) -> float:
        return max(0.0, now - self.started_at)
