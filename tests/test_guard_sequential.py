"""The anytime-valid error test: its statistic, and why checking it often is safe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.guard.sequential import (
    THETAS,
    ErrorSplitTest,
    candidate_share,
    mixture_log_lr,
    threshold,
)


def fed(errors: list[tuple[bool, float]]) -> ErrorSplitTest:
    test = ErrorSplitTest()
    for candidate, p0 in errors:
        test.observe(candidate=candidate, p0=p0)
    return test


def test_it_starts_at_zero_and_rejects_at_log_one_over_alpha() -> None:
    """Before any error the statistic is log 1 = 0; the threshold is log(1/alpha), and the
    result says whether the statistic reached it."""
    test = ErrorSplitTest()
    assert test.statistic == 0.0
    assert threshold(0.01) == pytest.approx(math.log(100))
    result = test.result(0.01)
    assert not result.rejects
    assert (result.errors, result.candidate_errors) == (0, 0)


def test_with_a_fixed_share_it_is_the_closed_form_mixture_in_any_order() -> None:
    """With the same share for every error, the running statistic is the conditional binomial
    mixture computed from the counts alone, whatever order the errors came in."""
    rng = np.random.default_rng(7)
    arms = (rng.random(60) < 0.4).tolist()
    forward = fed([(arm, 0.1) for arm in arms])
    backward = fed([(arm, 0.1) for arm in reversed(arms)])
    closed = mixture_log_lr(sum(arms), len(arms) - sum(arms), 0.1)
    assert forward.statistic == pytest.approx(closed)
    assert backward.statistic == pytest.approx(closed)


def test_candidate_errors_raise_it_and_baseline_errors_lower_it() -> None:
    """An error in the candidate arm is evidence against it; one in the baseline arm is
    evidence for it."""
    test = fed([(True, 0.1)])
    after_candidate = test.statistic
    test.observe(candidate=False, p0=0.1)
    assert after_candidate > 0.0
    assert test.statistic < after_candidate


def test_under_the_null_its_expected_next_value_never_grows() -> None:
    """The supermartingale property, computed exactly: from many states, with the share
    changing between errors and the candidate as good as or better than the baseline, the
    expected mixture likelihood ratio after the next error is at most its current value."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        history = [(bool(rng.random() < 0.5), float(rng.uniform(0.02, 0.98))) for _ in range(30)]
        now = fed(history)
        p0 = float(rng.uniform(0.01, 0.99))
        ratio = float(rng.uniform(0.0, 1.0))  # candidate's error rate / baseline's: H0
        p = p0 * ratio / (p0 * ratio + 1 - p0)
        if_candidate, if_baseline = fed(history), fed(history)
        if_candidate.observe(candidate=True, p0=p0)
        if_baseline.observe(candidate=False, p0=p0)
        expected = p * math.exp(if_candidate.statistic) + (1 - p) * math.exp(if_baseline.statistic)
        assert expected <= math.exp(now.statistic) * (1 + 1e-9)


def test_merging_pools_the_errors_of_two_windows() -> None:
    """Two replicas' tests merged equal one test that saw every error."""
    first = [(True, 0.1), (False, 0.1), (True, 0.2)]
    second = [(False, 0.3), (True, 0.3)]
    merged = fed(first)
    merged.merge(fed(second))
    whole = fed(first + second)
    assert merged.statistic == pytest.approx(whole.statistic)
    assert (merged.errors, merged.candidate_errors) == (5, 3)


def test_one_candidate_error_is_never_enough() -> None:
    """A single failed candidate request cannot reach the threshold at any share down to 1 %
    (its likelihood ratio is at most 1/p0 for every alternative, averaged below that)."""
    for p0 in (0.01, 0.05, 0.5, 0.9):
        assert not fed([(True, p0)]).result(0.005).rejects


def test_the_share_is_smoothed_before_any_traffic() -> None:
    """p0 before any request is an even split, and follows the counts afterwards."""
    assert candidate_share(0, 0) == 0.5
    assert candidate_share(10, 90) == pytest.approx(10.5 / 101)


def test_it_refuses_a_share_outside_zero_and_one_and_alternatives_not_above_one() -> None:
    """p0 must lie strictly inside (0, 1), and every alternative must be a worse candidate."""
    with pytest.raises(ValueError, match="share"):
        ErrorSplitTest().observe(candidate=True, p0=1.0)
    with pytest.raises(ValueError, match="above 1"):
        ErrorSplitTest(thetas=(0.5, 2.0))
    assert min(THETAS) > 1.0
