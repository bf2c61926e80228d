"""The inference path's request counter and latency histogram, cheap enough for every request.

prometheus-client's `Counter.inc` and `Histogram.observe` take a lock each and find the
bucket with a Python loop: a few microseconds a request, a noticeable share of the gateway's
own cost per request (`bench/README.md`). Only the event loop records here, so plain ints
need no lock; a custom collector (prometheus-client's documented extension point) turns them
into the same metric families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

RequestKey = tuple[str, str, str, str]  # model, version, variant, outcome
# How prometheus-client writes bucket bounds (`le`), so these read like its own histograms.
_go_float = cast(Callable[[float], str], floatToGoString)


class RequestPathMetrics(Collector):
    """`gateway_requests_total` and `gateway_request_latency_seconds`, kept as plain numbers."""

    def __init__(self, latency_buckets: Sequence[float]) -> None:
        self._bounds = tuple(latency_buckets)
        self._requests: dict[RequestKey, int] = {}
        # Per (model, version): a count per bucket (the last is +Inf), then the sum.
        self._latency: dict[tuple[str, str], list[float]] = {}

    def observe(
        self, model: str, version: str, outcome: str, latency_s: float | None, variant: str
    ) -> None:
        key = (model, version, variant, outcome)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        if latency_s is not None:
            counts = self._latency.get((model, version))
            if counts is None:
                counts = self._latency[(model, version)] = [0.0] * (len(self._bounds) + 2)
            counts[bisect_left(self._bounds, latency_s)] += 1
            counts[-1] += latency_s

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "gateway_requests",
            "Inference requests by model, serving version, variant and outcome.",
            labels=["model", "version", "variant", "outcome"],
        )
        for key, count in list(self._requests.items()):
            requests.add_metric(list(key), count)
        yield requests
        latency = HistogramMetricFamily(
            "gateway_request_latency_seconds",
            "Time to serve an inference request inside the gateway, by model and version.",
            labels=["model", "version"],
        )
        edges = [_go_float(bound) for bound in self._bounds] + ["+Inf"]
        for (model, version), counts in list(self._latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for edge, in_bucket in zip(edges, counts[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((edge, cumulative))
            latency.add_metric([model, version], buckets, counts[-1])
        yield latency
