"""Simulations of the guard's decision rule (no HTTP, seeded numpy RNG): the issue's bar.

Each run draws, per request, which arm serves it (the candidate with probability `share`) and
whether it fails, then feeds the real `ReleaseWindow` and asks the real `decide` whether to
roll back. Deciding after every one of 20,000 requests in Python would be slow, and is not
needed to find the first request at which the guard would roll back:

- between two errors, nothing a breach depends on can start to hold except a minimum sample
  being reached: the sequential statistic changes only when an error arrives, and the
  candidate's error rate only falls (latency is not simulated);
- a baseline error cannot start a breach either: it multiplies every likelihood ratio of the
  mixture by 1 / (p0 θ + 1 - p0) < 1, and leaves the candidate's error rate alone.

So a run records the successes between two errors in one call per arm, records every error
itself (each one moves the statistic), and decides after every candidate error, at the request
where the candidate reaches the minimum sample (the ceilings' gate) and at the one where both
arms have (the sequential test's gate): exactly where deciding after every request could first
see a breach.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gateway.guard.decision import DecisionKind, Trigger, decide
from gateway.guard.policy import GuardPolicy
from gateway.guard.stats import ErrorKind
from gateway.guard.window import Arm, ReleaseWindow


class Rollback(NamedTuple):
    candidate_requests: int
    baseline_requests: int
    triggers: tuple[Trigger, ...]


SEED = 20240601
POLICY = GuardPolicy()


def first_rollback(
    rng: np.random.Generator,
    *,
    requests: int,
    share: float,
    baseline_rate: float,
    candidate_rate: float,
    policy: GuardPolicy = POLICY,
) -> Rollback | None:
    """Each arm's request count when the guard first decides BREACH, with the rules that
    fired; None when it never does within `requests`."""
    to_candidate = rng.random(requests) < share
    fails = rng.random(requests) < np.where(to_candidate, candidate_rate, baseline_rate)
    candidate_so_far = np.cumsum(to_candidate)
    baseline_so_far = np.arange(1, requests + 1) - candidate_so_far
    errors = np.flatnonzero(fails)
    events = set(errors.tolist())
    looks = set(errors[to_candidate[errors]].tolist())
    for enough in (
        candidate_so_far >= policy.min_sample,
        (candidate_so_far >= policy.min_sample) & (baseline_so_far >= policy.min_sample),
    ):
        if enough.any():
            looks.add(int(np.argmax(enough)))
    events |= looks
    # Two different versions with the same behaviour: the rule itself is on trial, not the
    # A/A shortcut for a release whose arms serve the very same version.
    window = ReleaseWindow(
        "digits", 1, 0.0, baseline=("baseline", "1"), candidate=("candidate", "2")
    )
    done = 0  # requests recorded so far
    for t in sorted(events):
        if t >= requests:
            break
        before = int(candidate_so_far[t - 1]) if t else 0
        candidates = before - (int(candidate_so_far[done - 1]) if done else 0)
        window.record_successes(Arm.CANDIDATE, candidates)
        window.record_successes(Arm.BASELINE, t - done - candidates)
        arm = Arm.CANDIDATE if to_candidate[t] else Arm.BASELINE
        window.record(arm, error=ErrorKind.EXCEPTION if fails[t] else None)
        done = t + 1
        if t not in looks:
            continue
        decision = decide(window, policy, now=60.0)
        if decision.kind is DecisionKind.BREACH:
            cand, base = window.candidate.requests, window.baseline.requests
            assert (cand, base) == (candidate_so_far[t], baseline_so_far[t])
            return Rollback(cand, base, decision.triggers)
    return None


@pytest.mark.parametrize("share", [0.10, 0.50], ids=["candidate-10pct", "candidate-50pct"])
def test_aa_releases_rarely_roll_back(share: float) -> None:
    """Over 1,000 simulated A/A releases of 20,000 requests each, both arms failing 1 % of
    requests, at most 1 % roll back although the guard looks after every request."""
    rng = np.random.default_rng([SEED, int(share * 100)])
    runs = [
        first_rollback(rng, requests=20_000, share=share, baseline_rate=0.01, candidate_rate=0.01)
        for _ in range(1_000)
    ]
    rolled_back = sum(run is not None for run in runs)
    assert rolled_back <= 10, f"{rolled_back} of 1000 A/A releases rolled back"


def test_a_five_times_worse_candidate_rolls_back_within_600_requests() -> None:
    """A candidate failing 5 % of requests against the baseline's 1 %, on 10 % of the
    traffic, is rolled back within 600 candidate requests in at least 95 % of 1,000 runs."""
    rng = np.random.default_rng([SEED, 5])
    runs = [
        first_rollback(rng, requests=8_000, share=0.10, baseline_rate=0.01, candidate_rate=0.05)
        for _ in range(1_000)
    ]
    when = [run.candidate_requests if run is not None else np.inf for run in runs]
    within = sum(n <= 600 for n in when)
    assert within >= 950, f"only {within} of 1000 runs rolled back within 600 requests"
    assert float(np.median(when)) <= 300
    assert all(run is None or Trigger.ERROR_TEST in run.triggers for run in runs)


@pytest.mark.parametrize("share", [0.01, 0.10, 0.50, 0.90])
def test_a_candidate_failing_every_request_rolls_back_within_its_minimum_sample(
    share: float,
) -> None:
    """A candidate that fails every request (the baseline 1 %) is rolled back at the very
    request that completes its minimum sample, whatever its share of the traffic."""
    rng = np.random.default_rng([SEED, 100, int(share * 100)])
    requests = int(POLICY.min_sample / share * 2)
    for _ in range(30):
        run = first_rollback(
            rng, requests=requests, share=share, baseline_rate=0.01, candidate_rate=1.0
        )
        assert run is not None
        assert run.candidate_requests == POLICY.min_sample
        assert Trigger.ERROR_CEILING in run.triggers


@pytest.mark.parametrize("share", [0.01, 0.10, 0.50, 0.90])
def test_the_error_test_alone_rolls_back_a_failing_candidate_at_the_minimum_sample(
    share: float,
) -> None:
    """With the error-rate ceiling off, the sequential test alone rolls back a candidate that
    fails every request at the request where both arms first have their minimum sample."""
    policy = GuardPolicy(max_error_rate=1.0)
    rng = np.random.default_rng([SEED, 101, int(share * 100)])
    requests = int(max(policy.min_sample / share, policy.min_sample / (1 - share)) * 2)
    for _ in range(30):
        run = first_rollback(
            rng,
            requests=requests,
            share=share,
            baseline_rate=0.01,
            candidate_rate=1.0,
            policy=policy,
        )
        assert run is not None
        assert run.triggers == (Trigger.ERROR_TEST,)
        assert min(run.candidate_requests, run.baseline_requests) == policy.min_sample
