"""An anytime-valid test that the candidate fails more often than the baseline.

The test looks only at how errors split between the two arms. Let p0 be the candidate's
share of the requests when an error happens. If both arms fail at the same rate, that error
is the candidate's with probability p0. If the candidate fails θ times as often as the
baseline (θ = r_candidate / r_baseline), the probability is

    p(θ) = p0 θ / (p0 θ + 1 - p0),

which is above p0 exactly when θ > 1. Each error is a Bernoulli trial given the requests
before it: a conditional binomial, and no nuisance parameter (the baseline's own error rate)
is left to estimate.

For one alternative θ' > 1, the likelihood ratio after k errors is the product over those
errors of p(θ')/p0 (a candidate error) or (1 - p(θ'))/(1 - p0) (a baseline error). Given the
past, one factor's expectation when the truth is θ is

    1 + (p(θ) - p0)(p(θ') - p0) / (p0 (1 - p0)),

which is at most 1 whenever θ <= 1 (p(θ) <= p0 < p(θ')). So under H0 "the candidate is no
worse", the ratio is a nonnegative supermartingale starting at 1, for every θ' > 1 and
whatever p0 does from one error to the next. A mixture (weights summing to 1) of such
supermartingales is one too: M_k = sum_j w_j L_k(θ_j). Ville's inequality then bounds the
chance that M ever reaches 1/alpha, at any of infinitely many looks, by alpha:

    P(sup_k M_k >= 1/alpha) <= alpha.

So the guard may check after every request: M changes only when an error arrives, and
checking less often can only lower the false-alarm probability. The statistic is log M and
the threshold log(1/alpha).

The mixture is over p > p0, parametrised by θ so that it stays one test when the traffic
share moves (a ramp step, cohorts): a uniform prior on a log-spaced grid of θ from 1.5 to
1024. For a fixed p0 it is exactly a discrete mixture over p(θ) > p0 (`mixture_log_lr`).
A null with a margin, H0 "the candidate fails at most θ0 times as often" (θ0 > 1), is the
same test with p0 replaced by p(θ0): p(θ0 g), for an alternative g times beyond the null,
equals q g / (q g + 1 - q) with q = p(θ0), so the mixture over g is the one above
(`null_share`). The accuracy test uses it over wrong predictions.

Assumption: requests reach the arms independently of whether they would fail; p0 is read
from the request counts just before the failing request (smoothed by half a request, so
the first errors are judged against an even split rather than an undefined one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import msgspec

THETAS: Final = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0, 1024.0)
"""The error-rate ratios the mixture weighs equally: detects 1.5x slowly, 5x fast, and a
candidate failing everything (θ very large) at the rate of one error's full evidence."""

ACCURACY_THETAS: Final = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
"""The ratios of wrong-prediction rates the accuracy test weighs: a candidate's mistakes are
rarely many times the baseline's, and a grid where they fall detects them sooner."""


def candidate_share(candidate_requests: int, baseline_requests: int) -> float:
    """p0: the candidate's share of the requests so far, smoothed by half a request."""
    return (candidate_requests + 0.5) / (candidate_requests + baseline_requests + 1.0)


def null_share(p0: float, theta0: float) -> float:
    """p(θ0): an error's chance of being the candidate's when it fails exactly θ0 times as
    often as the baseline (θ0 = 1: p0 itself)."""
    return p0 * theta0 / (p0 * theta0 + 1.0 - p0)


def threshold(alpha: float) -> float:
    """log(1/alpha): the statistic at which the test rejects H0 at level alpha."""
    return -math.log(alpha)


class ErrorSplitResult(msgspec.Struct, frozen=True):
    """The test's state at a look, for the guard's evidence."""

    statistic: float
    """log of the mixture likelihood ratio."""
    threshold: float
    alpha: float
    errors: int
    candidate_errors: int
    rejects: bool


class ErrorSplitTest:
    """The running mixture likelihood ratio of one window. O(len(THETAS)) per error."""

    __slots__ = (
        "_cache",
        "_log_lr",
        "_log_thetas",
        "_log_weights",
        "_thetas",
        "candidate_errors",
        "errors",
    )

    def __init__(self, thetas: Sequence[float] = THETAS) -> None:
        if not thetas or any(not theta > 1.0 for theta in thetas):
            raise ValueError("the mixture's error-rate ratios must all be above 1")
        self._thetas = tuple(float(theta) for theta in thetas)
        self._log_thetas = tuple(math.log(theta) for theta in thetas)
        self._log_weights = -math.log(len(thetas))
        self._log_lr = [0.0] * len(thetas)
        self._cache: float | None = 0.0
        self.errors = 0
        self.candidate_errors = 0

    def observe(self, *, candidate: bool, p0: float) -> None:
        """One error: the candidate's (True) or the baseline's, when the candidate had share
        p0 of the traffic (0 < p0 < 1)."""
        if not 0.0 < p0 < 1.0:
            raise ValueError(f"the candidate's share must be inside (0, 1), not {p0}")
        rest = 1.0 - p0
        log = math.log
        if candidate:
            self._log_lr = [
                value + log_theta - log(p0 * theta + rest)
                for value, theta, log_theta in zip(
                    self._log_lr, self._thetas, self._log_thetas, strict=True
                )
            ]
        else:
            self._log_lr = [
                value - log(p0 * theta + rest)
                for value, theta in zip(self._log_lr, self._thetas, strict=True)
            ]
        self.errors += 1
        self.candidate_errors += candidate
        self._cache = None

    @property
    def log_lrs(self) -> list[float]:
        """The log likelihood ratio of each alternative (what `restore` takes back)."""
        return list(self._log_lr)

    def empty(self) -> ErrorSplitTest:
        """A test over the same alternatives, with no evidence yet."""
        return ErrorSplitTest(self._thetas)

    def restore(self, log_lrs: Sequence[float], errors: int, candidate_errors: int) -> None:
        """Take the evidence `log_lrs` (and its error counts) as this test's own, as another
        process's window tally carries it."""
        if len(log_lrs) != len(self._thetas):
            raise ValueError(
                f"{len(log_lrs)} likelihood ratios for a test over {len(self._thetas)} ratios"
            )
        self._log_lr = [float(value) for value in log_lrs]
        self.errors = errors
        self.candidate_errors = candidate_errors
        self._cache = None

    def merge(self, other: ErrorSplitTest) -> None:
        """Pool another window's errors (another replica's over the same release): the
        per-ratio likelihood ratios multiply, since each error enters exactly one of them."""
        if other._log_thetas != self._log_thetas:
            raise ValueError("only tests over the same error-rate ratios can be merged")
        self._log_lr = [a + b for a, b in zip(self._log_lr, other._log_lr, strict=True)]
        self.errors += other.errors
        self.candidate_errors += other.candidate_errors
        self._cache = None

    @property
    def statistic(self) -> float:
        """log M: log of the mixture likelihood ratio (0 before the first error)."""
        if self._cache is None:
            self._cache = _log_mean_exp(self._log_lr, self._log_weights)
        return self._cache

    def result(self, alpha: float) -> ErrorSplitResult:
        statistic, limit = self.statistic, threshold(alpha)
        return ErrorSplitResult(
            statistic=statistic,
            threshold=limit,
            alpha=alpha,
            errors=self.errors,
            candidate_errors=self.candidate_errors,
            rejects=statistic >= limit,
        )


def mixture_log_lr(
    candidate_errors: int, baseline_errors: int, p0: float, thetas: Sequence[float] = THETAS
) -> float:
    """The statistic from counts alone when the share p0 was the same for every error (for
    aggregated counts): a discrete mixture over p(θ) > p0 of the conditional binomial
    likelihood ratio (p/p0)^x (q/q0)^(n-x)."""
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"the candidate's share must be inside (0, 1), not {p0}")
    log_lr = []
    for theta in thetas:
        step = -math.log(p0 * theta + 1.0 - p0)
        log_lr.append(
            (candidate_errors + baseline_errors) * step + candidate_errors * math.log(theta)
        )
    return _log_mean_exp(log_lr, -math.log(len(thetas)))


def _log_mean_exp(values: Sequence[float], log_weight: float) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values)) + log_weight
