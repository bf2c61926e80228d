"""The decision rule over one window: not enough data, healthy, breach, ready to advance."""

from __future__ import annotations

import math

import msgspec
import pytest

from gateway.guard.decision import Decision, DecisionKind, Trigger, decide
from gateway.guard.policy import GuardPolicy
from gateway.guard.stats import ErrorKind
from gateway.guard.window import Arm, ReleaseWindow

POLICY = GuardPolicy()
START = 1_000.0


def window(candidate_version: str = "2") -> ReleaseWindow:
    return ReleaseWindow(
        "digits", 7, START, baseline=("baseline", "1"), candidate=("candidate", candidate_version)
    )


def serve(
    target: ReleaseWindow,
    arm: Arm,
    requests: int,
    *,
    errors: int = 0,
    latency_s: float | None = None,
) -> None:
    """`requests` requests of `arm`, the first `errors` of them failed, spread evenly so the
    error test sees a realistic share."""
    for index in range(requests):
        failed = index < errors
        target.record(arm, None if failed else latency_s, ErrorKind.EXCEPTION if failed else None)


def spread(part: int, whole: int, index: int) -> bool:
    """Whether item `index` of `whole` is one of `part` items spread evenly among them."""
    return (index + 1) * part // whole > index * part // whole


def interleave(
    target: ReleaseWindow,
    *,
    baseline: int,
    candidate: int,
    baseline_errors: int = 0,
    candidate_errors: int = 0,
    baseline_latency: float | None = None,
    candidate_latency: float | None = None,
) -> None:
    """Requests of both arms interleaved in proportion, errors spread evenly through each."""
    sizes = {Arm.BASELINE: baseline, Arm.CANDIDATE: candidate}
    failing = {Arm.BASELINE: baseline_errors, Arm.CANDIDATE: candidate_errors}
    latency = {Arm.BASELINE: baseline_latency, Arm.CANDIDATE: candidate_latency}
    done = {Arm.BASELINE: 0, Arm.CANDIDATE: 0}
    for index in range(baseline + candidate):
        arm = Arm.CANDIDATE if spread(candidate, baseline + candidate, index) else Arm.BASELINE
        fails = spread(failing[arm], sizes[arm], done[arm])
        target.record(arm, None if fails else latency[arm], ErrorKind.EXCEPTION if fails else None)
        done[arm] += 1


def kind(target: ReleaseWindow, policy: GuardPolicy = POLICY) -> Decision:
    return decide(target, policy, START + 120.0)


def test_without_the_minimum_sample_there_is_not_enough_data() -> None:
    """Below the minimum sample per arm the guard waits, even when every candidate request so
    far failed."""
    target = window()
    interleave(target, baseline=900, candidate=99, candidate_errors=99)
    decision = kind(target)
    assert decision.kind is DecisionKind.INSUFFICIENT_DATA
    assert "100 requests per arm" in decision.reason


def test_a_single_failed_request_never_breaches() -> None:
    """One failed candidate request, at the minimum sample and against a baseline with no
    error at all, is not a breach."""
    target = window()
    interleave(target, baseline=900, candidate=100, candidate_errors=1)
    assert kind(target).kind is DecisionKind.READY_TO_ADVANCE


def test_an_aa_release_never_breaches() -> None:
    """When both arms serve the same version, the guard calls it healthy whatever it sees."""
    target = window(candidate_version="1")
    interleave(target, baseline=900, candidate=300, candidate_errors=300)
    decision = kind(target)
    assert decision.kind is DecisionKind.HEALTHY
    assert "A/A" in decision.reason


def test_a_candidate_failing_more_often_breaches_on_the_error_test() -> None:
    """5 % errors against 1 % at the minimum sample and beyond: a breach by the sequential
    test, with its statistic over its threshold in the evidence."""
    target = window()
    interleave(target, baseline=5_400, candidate=600, baseline_errors=54, candidate_errors=30)
    decision = kind(target)
    assert decision.kind is DecisionKind.BREACH
    assert decision.triggers == (Trigger.ERROR_TEST,)
    test = decision.evidence["error_test"]
    assert test["statistic"] >= test["threshold"] == pytest.approx(-math.log(POLICY.alpha))
    assert "sequential log-LR" in decision.reason


def test_an_error_rate_above_the_ceiling_breaches_even_when_the_baseline_is_as_bad() -> None:
    """The absolute ceiling holds whatever the baseline does: 30 % errors in both arms is a
    breach of the 20 % ceiling, not of the comparison."""
    target = window()
    interleave(target, baseline=400, candidate=100, baseline_errors=120, candidate_errors=30)
    decision = kind(target)
    assert decision.kind is DecisionKind.BREACH
    assert decision.triggers == (Trigger.ERROR_CEILING,)


def test_slower_candidate_breaches_on_latency_once_both_arms_have_the_latency_sample() -> None:
    """A candidate three times slower at p99 breaches once both arms have 500 successes; at
    499 it does not yet."""
    target = window()
    serve(target, Arm.BASELINE, 500, latency_s=0.010)
    serve(target, Arm.CANDIDATE, 499, latency_s=0.030)
    assert kind(target).kind is DecisionKind.READY_TO_ADVANCE
    serve(target, Arm.CANDIDATE, 1, latency_s=0.030)
    decision = kind(target)
    assert decision.kind is DecisionKind.BREACH
    assert decision.triggers == (Trigger.LATENCY,)
    latency = decision.evidence["latency"]
    assert latency["factor"] == 1.5
    assert latency["ratio"] == pytest.approx(3.0, rel=0.1)


def test_a_single_slow_request_never_breaches() -> None:
    """One candidate request 1,000 times slower than the rest moves neither the relative
    rule nor the latency ceiling."""
    target = window()
    serve(target, Arm.BASELINE, 500, latency_s=0.002)
    serve(target, Arm.CANDIDATE, 499, latency_s=0.002)
    serve(target, Arm.CANDIDATE, 1, latency_s=2.0)
    decision = kind(target, GuardPolicy(max_latency_ms=50.0))
    assert decision.kind is DecisionKind.READY_TO_ADVANCE


def test_a_tiny_absolute_slowdown_is_not_a_breach() -> None:
    """Twice as slow but only 0.2 ms slower stays under the minimum latency difference."""
    target = window()
    serve(target, Arm.BASELINE, 500, latency_s=0.0002)
    serve(target, Arm.CANDIDATE, 500, latency_s=0.0004)
    assert kind(target).kind is DecisionKind.READY_TO_ADVANCE
    assert kind(target, GuardPolicy(latency_min_delta_ms=0.1)).kind is DecisionKind.BREACH


def test_latency_above_its_ceiling_breaches_even_when_the_baseline_is_as_slow() -> None:
    """The latency ceiling is absolute: 80 ms at p99 against a 50 ms ceiling breaches with a
    baseline just as slow, once the candidate has the latency sample."""
    policy = GuardPolicy(max_latency_ms=50.0)
    target = window()
    serve(target, Arm.BASELINE, 500, latency_s=0.080)
    serve(target, Arm.CANDIDATE, 499, latency_s=0.080)
    assert kind(target, policy).kind is DecisionKind.READY_TO_ADVANCE
    serve(target, Arm.CANDIDATE, 1, latency_s=0.080)
    decision = kind(target, policy)
    assert decision.triggers == (Trigger.LATENCY_CEILING,)


def test_live_accuracy_gates_readiness_but_never_breaches() -> None:
    """With a minimum live accuracy, a healthy window waits for enough labels, stays healthy
    while the accuracy is below it, and is ready once it is met."""
    policy = GuardPolicy(min_live_accuracy=0.9, min_feedback=50)
    target = window()
    interleave(target, baseline=900, candidate=100)
    assert kind(target, policy).kind is DecisionKind.HEALTHY
    assert "waiting for 50 labelled" in kind(target, policy).reason
    target.candidate.accuracy.add(40, 50)
    decision = kind(target, policy)
    assert decision.kind is DecisionKind.HEALTHY
    assert "below" in decision.reason
    target.candidate.accuracy.add(50, 50)
    assert kind(target, policy).kind is DecisionKind.READY_TO_ADVANCE


def test_the_evidence_holds_the_figures_and_is_json() -> None:
    """The evidence names counts and error rates per arm, the test's statistic and threshold,
    the latency quantiles and factor, and the window's flag version, start and length."""
    target = window()
    interleave(
        target,
        baseline=900,
        candidate=100,
        baseline_errors=9,
        candidate_errors=1,
        baseline_latency=0.001,
        candidate_latency=0.001,
    )
    decision = kind(target)
    evidence = msgspec.json.decode(msgspec.json.encode(decision.evidence))
    assert evidence["window"] == {
        "flag_version": 7,
        "started_at": START,
        "length_s": 120.0,
        "candidate_share": 0.1,
    }
    assert evidence["baseline"]["requests"] == 900
    assert evidence["baseline"]["errors"] == 9
    assert evidence["candidate"]["error_rate"] == 0.01
    assert evidence["candidate"]["version"] == "2"
    assert set(evidence["error_test"]) >= {"statistic", "threshold", "alpha"}
    assert evidence["latency"]["quantile"] == 0.99
    assert evidence["candidate"]["latency_at_quantile_ms"] == pytest.approx(1.0, rel=0.1)
    assert evidence["triggers"] == []
