"""The inference path's request counter and latency histogram, cheap enough for every request.

prometheus-client's `Counter.inc` and `Histogram.observe` take a lock each and find the
bucket with a Python loop: a few microseconds a request, a noticeable share of the gateway's
own cost per request (`bench/README.md`). Only the event loop records here, so plain ints
need no lock; a custom collector (prometheus-client's documented extension point) turns them
into the same metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.observability.histograms import HistogramCounts

RequestKey = tuple[str, str, str, str]  # model, version, variant, outcome


class RequestPathMetrics(Collector):
    """`gateway_requests_total` and `gateway_request_latency_seconds`, kept as plain numbers."""

    def __init__(self, latency_buckets: Sequence[float]) -> None:
        self._requests: dict[RequestKey, int] = {}
        self._latency = HistogramCounts(
            "gateway_request_latency_seconds",
            "Time to serve an inference request inside the gateway, by model and version.",
            ["model", "version"],
            latency_buckets,
        )

    def observe(
        self, model: str, version: str, outcome: str, latency_s: float | None, variant: str
    ) -> None:
        key = (model, version, variant, outcome)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        if latency_s is not None:
            self._latency.observe((model, version), latency_s)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "gateway_requests",
            "Inference requests by model, serving version, variant and outcome.",
            labels=["model", "version", "variant", "outcome"],
        )
        for key, count in list(self._requests.items()):
            requests.add_metric(list(key), count)
        yield requests
        yield self._latency.family()
