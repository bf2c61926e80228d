"""Shadow comparison and review as plain Python: classes, differences, bounds, statistics,
the summary's grouping, release policies, time ranges and cohorts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.flags.document import Release, Route
from gateway.flags.policy import parse_policy
from gateway.repository.manifest import TensorSpec
from gateway.shadow.cohorts import cohort_of
from gateway.shadow.compare import (
    compare,
    input_record,
    max_abs_diff,
    output_record,
    tensor_bytes,
)
from gateway.shadow.summary import quantile, summarise, wilson_interval
from gateway.shadow.timerange import parse_instant, time_range
from gateway.state import ComparisonRecord

PROBS = TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])
LABEL = TensorSpec(name="label", datatype="INT64", shape=[-1])
PIXELS = TensorSpec(name="pixels", datatype="FP32", shape=[-1, 4])


def probabilities(*rows: list[float]) -> np.ndarray[Any, Any]:
    return np.array(rows, dtype=np.float32)


def test_compare_counts_agreeing_rows_and_the_largest_difference() -> None:
    """Agreement is per row; the difference is the largest |a - b| over shared float outputs
    of equal shape (labels and mismatched shapes are left out)."""
    primary = {
        "probabilities": probabilities([0.1, 0.7, 0.2], [0.6, 0.2, 0.2]),
        "label": np.array([1, 0]),
    }
    shadow = {
        "probabilities": probabilities([0.2, 0.6, 0.2], [0.1, 0.1, 0.8]),
        "label": np.array([1, 2]),
        "extra": probabilities([1.0]),
    }

    result = compare(["1", "0"], ["1", "2"], primary, shadow)

    assert (result.rows, result.agreed_rows, result.agree) == (2, 1, False)
    assert result.max_abs_diff == pytest.approx(0.6, abs=1e-6)
    assert compare(["1"], ["1"], {}, {}).agree is True
    assert max_abs_diff({"p": probabilities([1.0, 2.0])}, {"p": probabilities([1.0])}) is None


def test_outputs_without_classes_are_compared_by_difference_only() -> None:
    """No class on one side, or a different row count: agreement is None, not False."""
    values = {"score": np.array([[0.5], [0.25]], dtype=np.float32)}

    unclassed = compare(None, ["1", "2"], values, values)
    assert (unclassed.rows, unclassed.agreed_rows, unclassed.agree) == (2, None, None)
    assert unclassed.max_abs_diff == 0.0
    assert compare(["1"], ["1", "2"], {}, {}).agree is None


def test_output_record_keeps_data_within_the_bound() -> None:
    """Each output keeps shape and datatype; data only while the side's budget of elements
    lasts; the classes are always kept."""
    outputs = {
        "probabilities": probabilities([0.1, 0.7, 0.2], [0.5, 0.2, 0.3]),
        "label": np.array([1, 0], dtype=np.int64),
    }

    full = output_record(outputs, [PROBS, LABEL], ["1", "0"], max_values=8)
    cut = output_record(outputs, [PROBS, LABEL], ["1", "0"], max_values=4)

    assert full.tensors["probabilities"].data == pytest.approx([0.1, 0.7, 0.2, 0.5, 0.2, 0.3])
    assert full.tensors["label"].data == [1, 0]
    assert cut.tensors["probabilities"].data is None
    assert cut.tensors["probabilities"].shape == [2, 3]
    assert cut.tensors["label"].data == [1, 0]
    assert cut.classes == ["1", "0"]


def test_input_record_is_bounded_in_bytes() -> None:
    """Inputs are kept whole when their bytes fit the bound, else not at all."""
    pixels = np.arange(8, dtype=np.float32).reshape(2, 4)

    kept = input_record({"pixels": pixels}, [PIXELS], max_bytes=32)
    assert kept is not None
    assert kept["pixels"].data == list(range(8))
    assert kept["pixels"].datatype == "FP32"
    assert input_record({"pixels": pixels}, [PIXELS], max_bytes=31) is None
    texts = np.array([b"abc", b"de"], dtype=np.object_)
    assert tensor_bytes(texts) == 5
    kept_texts = input_record({"text": texts}, [], max_bytes=5)
    assert kept_texts is not None
    assert kept_texts["text"].data == ["abc", "de"]
    assert kept_texts["text"].datatype == "BYTES"


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Reference values: the roots pi of Wilson's score equation
        # (k/n - pi)^2 = z^2 pi (1 - pi) / n with z = 1.95996, solved separately.
        (81, 263, 0.2553, 0.3662),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 2, 0.0945, 0.9055),
    ],
)
def test_wilson_interval_matches_reference_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    """The 95 % Wilson interval equals published reference values to four decimals."""
    found_low, found_high = wilson_interval(successes, trials)
    assert found_low == pytest.approx(low, abs=1e-4)
    assert found_high == pytest.approx(high, abs=1e-4)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_rate(pair: tuple[int, int]) -> None:
    """For any count, 0 <= low <= k/n <= high <= 1."""
    successes, trials = pair
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials + 1e-12
    assert successes / trials - 1e-12 <= high <= 1.0


def test_wilson_interval_without_trials_and_with_impossible_counts() -> None:
    """No trials: the whole [0, 1]; more successes than trials is an error."""
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_quantile_interpolates_between_ranks() -> None:
    """Quantiles interpolate linearly, as numpy's default method does."""
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def record(
    shadow: str,
    *,
    cohort: str = "",
    agree: bool | None = True,
    rows: int = 1,
    outcome: str = "compared",
    at: float = 100.0,
    diff: float | None = 0.1,
    primary_error: str = "",
) -> ComparisonRecord:
    agreed = None if agree is None else (rows if agree else rows - 1)
    return ComparisonRecord(
        request_id="r",
        at=at,
        model="digits",
        primary_version="1",
        shadow_version=shadow,
        outcome=outcome,  # type: ignore[arg-type]
        cohort=cohort,
        rows=rows,
        agreed_rows=agreed,
        agree=agree,
        max_abs_diff=diff if agree is not None else None,
        primary_latency_ms=1.0,
        shadow_latency_ms=2.0 if outcome != "timeout" else 250.0,
        primary_error=primary_error,
        shadow_error="boom" if outcome in {"shadow_error", "timeout"} else "",
    )


def test_summary_groups_by_pair_then_cohort() -> None:
    """Pairs are ordered by version; each has its totals and one entry per cohort; agreement
    counts rows; errors, timeouts and primary failures are counted apart."""
    records = [
        record("3", agree=True, at=10.0),
        record("3", agree=False, rows=4, cohort="beta", at=20.0, diff=0.9),
        record("3", agree=None, outcome="shadow_error", at=5.0),
        record("3", agree=None, outcome="timeout", at=6.0),
        record("3", agree=None, outcome="primary_error", primary_error="bad", at=7.0),
        record("10", agree=True),
        record("2", agree=True),
    ]

    summary = summarise("digits", records, since=1.0, until=None)

    assert [(p.primary, p.shadow) for p in summary.pairs] == [("1", "2"), ("1", "3"), ("1", "10")]
    stats = summary.pairs[1].stats
    assert (stats.count, stats.compared, stats.rows, stats.agreed_rows) == (5, 2, 5, 4)
    assert stats.agreement is not None
    assert stats.agreement.rate == pytest.approx(0.8)
    assert (stats.agreement.low, stats.agreement.high) == wilson_interval(4, 5)
    assert stats.disagreements == 1
    assert (stats.errors.primary, stats.errors.shadow, stats.errors.timeout) == (1, 1, 1)
    assert stats.diff is not None
    assert stats.diff.p50 == pytest.approx(0.5)
    assert stats.diff.max == 0.9
    assert stats.latency.shadow.p50_ms == 2.0  # the timeout's 250 ms is no latency
    assert (stats.first_at, stats.last_at) == (5.0, 20.0)
    cohorts = {c.cohort: c.stats for c in summary.pairs[1].cohorts}
    assert sorted(cohorts) == ["", "beta"]
    assert (cohorts["beta"].rows, cohorts["beta"].agreed_rows) == (4, 3)
    assert summarise("digits", []).pairs == []


def test_summary_of_errors_only_has_no_agreement() -> None:
    """A pair whose every run failed has counts and errors, but no agreement or difference."""
    stats = summarise("digits", [record("4", agree=None, outcome="shadow_error")]).pairs[0].stats

    assert (stats.agreement, stats.diff, stats.rows) == (None, None, 0)
    assert stats.errors.shadow == 1


def test_time_range_reads_epoch_iso_and_ages() -> None:
    """Epoch seconds, ISO 8601 (UTC when unzoned) and ages before now are all accepted."""
    now = 1_000_000.0

    assert parse_instant("12.5", now) == 12.5
    assert parse_instant("15m", now) == now - 900
    assert parse_instant("2h", now) == now - 7200
    assert parse_instant("1w", now) == now - 604_800
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_instant("2026-01-02T03:04:05", now) == moment
    assert parse_instant("2026-01-02T04:04:05+01:00", now) == moment
    assert time_range(None, "", now) == (None, None)
    assert time_range("1h", None, now) == (now - 3600, None)


@pytest.mark.parametrize(("since", "until"), [("yesterday", None), ("nan", None), ("1h", "2h")])
def test_time_range_refuses_what_it_cannot_read(since: str, until: str | None) -> None:
    """Unreadable times, non-finite numbers and a start after the end are errors."""
    with pytest.raises(ValueError, match=r"time|since"):
        time_range(since, until, 1_000_000.0)


def release_with_cohorts(cohorts: dict[str, Any]) -> Release:
    metadata = {f"cohort.{name}": json.dumps(rule) for name, rule in cohorts.items()}
    return Release(
        key="digits-release",
        model="digits",
        baseline="baseline",
        candidate="candidate",
        routes=MappingProxyType({"baseline": Route("1"), "candidate": Route("2")}),
        state="ENABLED",
        default_variant="baseline",
        metadata=MappingProxyType(dict(metadata)),
        policy=parse_policy(metadata),
    )


def test_cohort_is_the_first_named_rule_the_context_matches() -> None:
    """Only targeting matches have a cohort; the first named rule that matches names it;
    flagd's own operators work; no match is the cohort ""."""
    release = release_with_cohorts(
        {
            "beta": {"in": [{"var": "tier"}, ["beta", "internal"]]},
            "eu": {"starts_with": [{"var": "region"}, "eu-"]},
        }
    )
    assert cohort_of(release, "TARGETING_MATCH", "k", {"tier": "beta"}) == "beta"
    assert cohort_of(release, "TARGETING_MATCH", "k", {"region": "eu-west"}) == "eu"
    assert cohort_of(release, "TARGETING_MATCH", "k", {"tier": "free"}) == ""
    assert cohort_of(release, "DISABLED", "k", {"tier": "beta"}) == ""
    assert cohort_of(None, "TARGETING_MATCH", "k", {"tier": "beta"}) == ""
