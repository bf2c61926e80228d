"""Live statistics on the request path: the latency histogram, per-version counters, release
windows, and the per-process registry the request path and the guard share."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from gateway.guard.histogram import LatencyHistogram, bucket_bounds, bucket_of
from gateway.guard.live import GuardStats
from gateway.guard.sequential import ErrorSplitTest, candidate_share
from gateway.guard.stats import ErrorKind, VersionStats
from gateway.guard.window import Arm, ReleaseWindow

BASELINE = ("baseline", "1")
CANDIDATE = ("candidate", "2")


def histogram_of(values: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    return histogram


def test_quantiles_are_within_the_bucket_resolution() -> None:
    """On 20,000 log-normal latencies, p50, p90 and p99 estimates fall within 10 % of the
    exact sample quantiles."""
    values = np.random.default_rng(3).lognormal(math.log(0.002), 0.6, 20_000)
    histogram = histogram_of(values.tolist())
    for q in (0.5, 0.9, 0.99):
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert estimate == pytest.approx(float(np.quantile(values, q)), rel=0.10)


def test_buckets_cover_every_latency() -> None:
    """Every latency from 0 to hours falls in a bucket whose bounds contain it."""
    for seconds in (0.0, 1e-6, 1e-5, 3.7e-4, 0.02, 1.0, 99.9, 100.0, 7200.0):
        low, high = bucket_bounds(bucket_of(seconds))
        assert low <= seconds < high or (seconds == high == 100.0)


def test_a_single_slow_request_does_not_move_the_p99() -> None:
    """With 200 requests (two beyond the 99th percentile), one request 10,000 times slower
    leaves the p99 estimate where the others put it."""
    histogram = histogram_of([0.001] * 199 + [10.0])
    p99 = histogram.quantile(0.99)
    assert p99 is not None
    assert p99 < 0.0011


def test_an_empty_histogram_has_no_quantile_and_bad_values_are_ignored() -> None:
    """No observation, no estimate; negative or non-finite latencies are not counted; small
    samples are clamped to the exact extremes seen."""
    histogram = histogram_of([-1.0, math.nan, math.inf])
    assert histogram.count == 0
    assert histogram.quantile(0.5) is None
    histogram.record(0.004)
    assert histogram.quantile(0.99) == 0.004


def test_merged_histograms_equal_one_that_saw_everything() -> None:
    """Merging two histograms gives the same counts and quantiles as recording both samples
    into one."""
    values = np.random.default_rng(5).exponential(0.01, 2_000).tolist()
    first, second = histogram_of(values[:700]), histogram_of(values[700:])
    first.merge(second)
    whole = histogram_of(values)
    assert first.counts == whole.counts
    assert first.quantile(0.99) == whole.quantile(0.99)


def test_version_stats_count_requests_errors_by_kind_and_fallbacks() -> None:
    """Every request counts; an error counts by kind (and as a fallback when the baseline
    answered for it); latency is kept for successes only. The snapshot is JSON-ready."""
    stats = VersionStats("2")
    stats.record(0.002)
    stats.record(0.004)
    stats.record(None, ErrorKind.TIMEOUT, fallback=True)
    stats.record(0.5, ErrorKind.INVALID_OUTPUT)
    stats.record_successes(6, 0.003)
    snapshot = stats.snapshot()
    assert (snapshot.requests, snapshot.errors, snapshot.fallbacks) == (10, 2, 1)
    assert snapshot.errors_by_kind == {"timeout": 1, "invalid_output": 1}
    assert snapshot.error_rate == pytest.approx(0.2)
    assert snapshot.latency.count == 8
    assert snapshot.latency.p99_ms is not None
    assert snapshot.latency.p99_ms < 5.0
    assert msgspec.json.decode(msgspec.json.encode(snapshot))["requests"] == 10


def test_a_window_tells_arms_apart_by_variant_even_for_the_same_version() -> None:
    """An A/A release (one version in both variants) still has two arms, told apart by the
    variant that served."""
    window = ReleaseWindow("digits", 3, 0.0, baseline=("baseline", "1"), candidate=("canary", "1"))
    assert window.same_version
    assert window.arm_of("canary") is Arm.CANDIDATE
    assert window.arm_of("baseline") is Arm.BASELINE
    assert window.arm_of("other") is None
    assert window.arm_of(None) is None


def test_an_error_updates_the_test_with_the_share_of_requests_before_it() -> None:
    """When an error arrives, the window's sequential test sees it with p0 = the candidate's
    share of the requests before it."""
    window = ReleaseWindow("digits", 1, 0.0, baseline=BASELINE, candidate=CANDIDATE)
    window.record_successes(Arm.CANDIDATE, 9)
    window.record_successes(Arm.BASELINE, 90)
    window.record(Arm.CANDIDATE, error=ErrorKind.EXCEPTION)
    expected = ErrorSplitTest()
    expected.observe(candidate=True, p0=candidate_share(9, 90))
    assert window.error_test.statistic == pytest.approx(expected.statistic)
    assert (window.candidate.requests, window.candidate.errors) == (10, 1)


def test_observe_counts_per_version_and_in_the_window_of_its_arm() -> None:
    """A served request counts for its version since start, and in the release's window when
    its variant is an arm that still serves that version; shadow runs never enter a window."""
    live = GuardStats()
    live.sync_release("digits", 4, baseline=BASELINE, candidate=CANDIDATE, now=100.0)
    live.observe("digits", "2", "candidate", 0.002)
    live.observe("digits", "2", "candidate", None, ErrorKind.EXCEPTION, fallback=True)
    live.observe("digits", "1", "baseline", 0.001)
    live.observe("digits", "3", "candidate", 0.001)  # the variant no longer serves "3"
    live.observe("digits", "1", None, 0.001)  # no variant: pinned or no flag
    live.observe_shadow("digits", "3", 0.004)
    window = live.window("digits")
    assert window is not None
    assert (window.candidate.requests, window.candidate.errors) == (2, 1)
    assert window.candidate.fallbacks == 1
    assert window.baseline.requests == 1
    served = live.served("digits")
    assert {v: s.requests for v, s in served.items()} == {"1": 2, "2": 2, "3": 1}
    assert {v: s.requests for v, s in live.shadowed("digits").items()} == {"3": 1}


def test_a_new_flag_version_starts_a_new_window() -> None:
    """Syncing the same flag version keeps the window; a new version (a ramp step, a
    rollout) starts an empty one from its time, and so does a change of the arms."""
    live = GuardStats()
    first = live.sync_release("digits", 4, baseline=BASELINE, candidate=CANDIDATE, now=1.0)
    live.observe("digits", "2", "candidate", 0.002)
    assert live.sync_release("digits", 4, baseline=BASELINE, candidate=CANDIDATE, now=2.0) is first
    second = live.sync_release("digits", 5, baseline=BASELINE, candidate=CANDIDATE, now=3.0)
    assert second is not first
    assert (second.started_at, second.flag_version, second.candidate.requests) == (3.0, 5, 0)
    third = live.sync_release("digits", 5, baseline=BASELINE, candidate=("candidate", "3"), now=4)
    assert third is not second
    live.drop_release("digits")
    assert live.window("digits") is None
    assert live.served("digits")["2"].requests == 1


def test_feedback_counts_for_the_version_and_its_arm() -> None:
    """Labels joined to a served prediction count for the version and for the window's arm
    of the variant that served it; labels of a shadow prediction count for the version as
    shadow only."""
    live = GuardStats()
    window = live.sync_release("digits", 1, baseline=BASELINE, candidate=CANDIDATE, now=0.0)
    live.record_feedback("digits", "2", 3, 4, served=True, variant="candidate")
    live.record_feedback("digits", "1", 1, 1, served=True)
    live.record_feedback("digits", "3", 0, 2, served=False)
    assert (window.candidate.accuracy.correct, window.candidate.accuracy.total) == (3, 4)
    assert window.candidate.accuracy.accuracy == 0.75
    assert window.baseline.accuracy.total == 1
    assert live.served("digits")["2"].accuracy.total == 4
    assert live.shadowed("digits")["3"].accuracy.total == 2
