"""A seeded simulation of the pooled guard over three replicas (no HTTP, numpy RNG).

Each request goes to one of three replicas (at random, as a load balancer spreads them),
and there to the candidate with probability `share`; each replica counts its own share in
its own `ReleaseWindow` (its error test reading its own traffic split), and the guard decides
on the three windows' figures pooled the way the store pools them (`guard.tally`). As in
tests/test_guard_simulation.py, nothing a breach depends on can start to hold between two
errors except a minimum sample being reached, so a run records successes in bulk and looks
after every candidate error and where the pooled arms first reach the minimum sample.
"""

from __future__ import annotations

import numpy as np

from gateway.guard.decision import DecisionKind, decide
from gateway.guard.policy import GuardPolicy
from gateway.guard.stats import ErrorKind
from gateway.guard.tally import pooled, tally_of
from gateway.guard.window import Arm, ReleaseWindow

SEED = 20261202
POLICY = GuardPolicy()
REPLICAS = 3


def first_pooled_rollback(
    rng: np.random.Generator,
    *,
    requests: int,
    share: float,
    baseline_rate: float,
    candidate_rate: float,
) -> int | None:
    """The pooled candidate requests when the guard first decides BREACH; None if never."""
    replica = rng.integers(REPLICAS, size=requests)
    to_candidate = rng.random(requests) < share
    fails = rng.random(requests) < np.where(to_candidate, candidate_rate, baseline_rate)
    candidate_so_far = np.cumsum(to_candidate)
    baseline_so_far = np.arange(1, requests + 1) - candidate_so_far
    errors = np.flatnonzero(fails)
    looks = set(errors[to_candidate[errors]].tolist())
    for enough in (
        candidate_so_far >= POLICY.min_sample,
        (candidate_so_far >= POLICY.min_sample) & (baseline_so_far >= POLICY.min_sample),
    ):
        if enough.any():
            looks.add(int(np.argmax(enough)))
    windows = [
        ReleaseWindow("digits", 1, 0.0, baseline=("baseline", "1"), candidate=("candidate", "2"))
        for _ in range(REPLICAS)
    ]
    done = 0
    for t in sorted(set(errors.tolist()) | looks):
        if t >= requests:
            break
        for index, window in enumerate(windows):  # the successes since the last event
            mine = replica[done:t] == index
            candidates = int((mine & to_candidate[done:t]).sum())
            window.record_successes(Arm.CANDIDATE, candidates)
            window.record_successes(Arm.BASELINE, int(mine.sum()) - candidates)
        arm = Arm.CANDIDATE if to_candidate[t] else Arm.BASELINE
        windows[replica[t]].record(arm, error=ErrorKind.EXCEPTION if fails[t] else None)
        done = t + 1
        if t not in looks:
            continue
        whole = pooled("digits", 1, [tally_of(w) for w in windows], accuracy_margin=0.01)
        assert whole is not None
        if decide(whole, POLICY, now=60.0).kind is DecisionKind.BREACH:
            return whole.candidate.requests
    return None


def test_pooled_aa_releases_over_three_replicas_rarely_roll_back() -> None:
    """Over 1,000 simulated A/A releases of 20,000 requests spread over three replicas, both
    arms failing 1 % of requests, at most 1 % roll back on the pooled figures."""
    rng = np.random.default_rng([SEED, 1])
    runs = [
        first_pooled_rollback(
            rng, requests=20_000, share=0.10, baseline_rate=0.01, candidate_rate=0.01
        )
        for _ in range(1_000)
    ]
    rolled_back = sum(run is not None for run in runs)
    assert rolled_back <= 10, f"{rolled_back} of 1000 pooled A/A releases rolled back"


def test_pooled_figures_catch_a_worse_candidate_like_one_process() -> None:
    """A candidate failing 5 % of requests against 1 %, on 10 % of the traffic spread over
    three replicas, is rolled back on the pooled figures within 600 of its requests in at
    least 95 % of 300 runs, as on one process (tests/test_guard_simulation.py)."""
    share = 0.10
    rng = np.random.default_rng([SEED, 5])
    runs = [
        first_pooled_rollback(
            rng, requests=int(600 / share), share=share, baseline_rate=0.01, candidate_rate=0.05
        )
        for _ in range(300)
    ]
    within = sum(run is not None for run in runs)
    assert within >= 285, f"only {within} of 300 runs rolled back within 600 requests"
