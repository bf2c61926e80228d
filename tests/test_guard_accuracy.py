"""Simulations of the guard's accuracy rule over ground truth (no HTTP, seeded numpy RNG).

Each run draws, per labelled prediction, which arm made it (the candidate with probability
`share`) and whether it was right, feeds the real `ReleaseWindow` (its `record_labels`, as
feedback does) and asks the real `decide` whether to roll back. The accuracy test's statistic
moves only at a wrong prediction, and rises only at the candidate's, so a run records the
right predictions between two wrong ones in one call per arm, and looks after every wrong
candidate prediction and where both arms first reach the minimum feedback: exactly where
deciding after every label could first see a breach. (No request fails and no latency is
recorded, so no other rule can fire: `decide` is asked only once the test itself rejects.)
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.guard.decision import DecisionKind, Trigger, decide
from gateway.guard.policy import GuardPolicy
from gateway.guard.window import Arm, ReleaseWindow

SEED = 20261201
POLICY = GuardPolicy()


def first_rollback(
    rng: np.random.Generator,
    *,
    labels: int,
    share: float,
    baseline_accuracy: float,
    candidate_accuracy: float,
    policy: GuardPolicy = POLICY,
) -> int | None:
    """The candidate's labelled predictions when the guard first decides BREACH on accuracy;
    None when it never does within `labels` labelled predictions in all."""
    to_candidate = rng.random(labels) < share
    right = rng.random(labels) < np.where(to_candidate, candidate_accuracy, baseline_accuracy)
    candidate_so_far = np.cumsum(to_candidate)
    baseline_so_far = np.arange(1, labels + 1) - candidate_so_far
    needed = policy.accuracy_min_feedback or 0
    enough = (candidate_so_far >= needed) & (baseline_so_far >= needed)
    start = int(np.argmax(enough)) if enough.any() else labels
    wrong = np.flatnonzero(~right)
    looks = {start, *wrong[to_candidate[wrong]].tolist()}
    # Two versions with the same behaviour in the A/A case: the rule is on trial, not the
    # shortcut for a release whose arms serve the very same version.
    window = ReleaseWindow(
        "digits", 1, 0.0, baseline=("baseline", "1"), candidate=("candidate", "2")
    )
    # Enough error-free requests that only the accuracy rule can decide anything.
    window.record_successes(Arm.CANDIDATE, 10**6)
    window.record_successes(Arm.BASELINE, 10**6)
    done = 0
    for t in sorted([*wrong.tolist(), start]):
        if t >= labels or t < done:
            continue
        if t > done:  # the right predictions since the last label recorded
            between = int(to_candidate[done:t].sum())
            window.record_labels(Arm.CANDIDATE, between, between)
            window.record_labels(Arm.BASELINE, t - done - between, t - done - between)
        arm = Arm.CANDIDATE if to_candidate[t] else Arm.BASELINE
        window.record_labels(arm, int(right[t]), 1)
        done = t + 1
        # The statistic rises only at these looks, so a first rejection is first seen at one.
        if t in looks and t >= start and window.accuracy_test.result(policy.accuracy_alpha).rejects:
            decision = decide(window, policy, now=60.0)
            if decision.kind is DecisionKind.BREACH:
                assert decision.triggers == (Trigger.ACCURACY_TEST,)
                return int(candidate_so_far[t])
    return None


@pytest.mark.parametrize("share", [0.10, 0.50], ids=["candidate-10pct", "candidate-50pct"])
def test_equally_accurate_releases_rarely_roll_back(share: float) -> None:
    """Over 1,000 simulated A/A releases of 5,000 labelled predictions each, both arms right
    92 % of the time, at most 1 % roll back on accuracy although the guard looks after every
    wrong prediction (and every label while the test rejects)."""
    rng = np.random.default_rng([SEED, int(share * 100)])
    runs = [
        first_rollback(
            rng, labels=5_000, share=share, baseline_accuracy=0.92, candidate_accuracy=0.92
        )
        for _ in range(1_000)
    ]
    rolled_back = sum(run is not None for run in runs)
    print(f"A/A at {share:.0%}: {rolled_back} of 1000 releases rolled back")
    assert rolled_back <= 10, f"{rolled_back} of 1000 A/A releases rolled back"


def test_a_candidate_ten_points_less_accurate_rolls_back_within_400_labels() -> None:
    """A candidate right 82 % of the time against the baseline's 92 %, on 10 % of the
    traffic with feedback for every prediction, is rolled back within 400 of its labelled
    predictions in at least 95 % of 1,000 runs."""
    rng = np.random.default_rng([SEED, 10])
    runs = [
        first_rollback(
            rng, labels=4_000, share=0.10, baseline_accuracy=0.92, candidate_accuracy=0.82
        )
        for _ in range(1_000)
    ]
    when = [run if run is not None else np.inf for run in runs]
    within = sum(n <= 400 for n in when)
    assert within >= 950, f"only {within} of 1000 runs rolled back within 400 labels"
    assert float(np.median(when)) <= 250


def test_a_candidate_within_the_margin_is_left_alone() -> None:
    """A candidate half a point less accurate (92 % against 92.5 %), within the 1-point
    margin, is rolled back in at most 1 % of 1,000 releases of 10,000 labelled predictions."""
    rng = np.random.default_rng([SEED, 1])
    runs = [
        first_rollback(
            rng, labels=10_000, share=0.5, baseline_accuracy=0.925, candidate_accuracy=0.92
        )
        for _ in range(1_000)
    ]
    rolled_back = sum(run is not None for run in runs)
    print(f"within the margin: {rolled_back} of 1000 releases rolled back")
    assert rolled_back <= 10, f"{rolled_back} of 1000 releases within the margin rolled back"


def test_the_accuracy_rule_waits_for_its_minimum_feedback_and_can_be_switched_off() -> None:
    """A candidate wrong on every prediction is not rolled back before both arms have the
    minimum feedback, and is at that very label; with the rule off it never is."""
    rng = np.random.default_rng([SEED, 2])
    run = first_rollback(
        rng, labels=2_000, share=0.5, baseline_accuracy=0.92, candidate_accuracy=0.0
    )
    assert run is not None
    assert run >= POLICY.accuracy_min_feedback  # type: ignore[operator]
    off = GuardPolicy(accuracy_min_feedback=None)
    rng = np.random.default_rng([SEED, 2])
    assert (
        first_rollback(
            rng, labels=2_000, share=0.5, baseline_accuracy=0.92, candidate_accuracy=0.0, policy=off
        )
        is None
    )
