"""Histograms kept as plain numbers export what prometheus-client's own Histogram exports."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.observability.histograms import HistogramCollector, HistogramCounts
from gateway.observability.metrics import DIFFERENCE_BUCKETS, GatewayMetrics

# Values on the bucket bounds, between them, below the first and above the last.
VALUES = [0.0, 0.0001, 0.00005, 0.001, 0.004, 0.05, 0.05, 0.3, 0.75, 1.0, 1.5, 7.0]


def exported(counts: HistogramCounts) -> bytes:
    registry = CollectorRegistry()
    registry.register(HistogramCollector(threading.Lock(), counts))
    return generate_latest(registry)


def reference(values: list[float]) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram(
        "difference", "Doc.", ["pair"], buckets=DIFFERENCE_BUCKETS, registry=registry
    )
    for value in values:
        histogram.labels("a").observe(value)
    # prometheus-client adds a _created sample per child; the counts carry no creation time.
    return (
        b"\n".join(
            line for line in generate_latest(registry).splitlines() if b"_created" not in line
        )
        + b"\n"
    )


def test_values_one_at_a_time_export_as_prometheus_client_would() -> None:
    """Observing each value once gives the same buckets, count and sum, line for line."""
    counts = HistogramCounts("difference", "Doc.", ["pair"], DIFFERENCE_BUCKETS)
    for value in VALUES:
        counts.observe(("a",), value)
    assert exported(counts) == reference(VALUES)


def test_a_batch_of_values_and_repeated_values_count_alike() -> None:
    """`observe_many` over a batch, and one value observed n times at once, count as the same
    values observed one by one."""
    counts = HistogramCounts("difference", "Doc.", ["pair"], DIFFERENCE_BUCKETS)
    counts.observe_many(("a",), VALUES[:6])
    counts.observe_many(("a",), [])
    counts.observe(("a",), VALUES[6], 1)
    for value in VALUES[7:]:
        counts.observe(("a",), value, 1)
    assert exported(counts) == reference(VALUES)

    repeated = HistogramCounts("difference", "Doc.", ["pair"], DIFFERENCE_BUCKETS)
    repeated.observe(("a",), 0.05, 3)
    assert exported(repeated) == reference([0.05, 0.05, 0.05])


def test_shadow_latency_counts_every_run_of_a_batch() -> None:
    """A batch's latency observed for its runs counts each run, in the gateway's registry."""
    metrics = GatewayMetrics()
    metrics.observe_shadow_latency("digits", "2", 0.002, runs=40)
    metrics.observe_shadow_comparisons(
        "digits", "1", "2", rows=3, agreed_rows=2, differences=[0.1, 0.2, 0.9]
    )
    sample = metrics.registry.get_sample_value
    assert sample("gateway_shadow_latency_seconds_count", {"model": "digits", "version": "2"}) == 40
    assert (
        sample(
            "gateway_shadow_latency_seconds_bucket",
            {"model": "digits", "version": "2", "le": "0.001"},
        )
        == 0
    )
    assert (
        sample("gateway_shadow_latency_seconds_sum", {"model": "digits", "version": "2"})
        == 0.002 * 40
    )
    pair = {"model": "digits", "primary": "1", "shadow": "2"}
    assert sample("gateway_shadow_max_abs_difference_count", pair) == 3
    assert sample("gateway_shadow_max_abs_difference_bucket", {**pair, "le": "0.25"}) == 2
    assert sample("gateway_shadow_agreement_ratio", pair) == 2 / 3
