"""Every Prometheus metric the gateway exports, held by one object with its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latencies of small CPU models sit between 50 µs and a few ms; slow ones reach seconds.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class GatewayMetrics:
    """Counters and histograms named `gateway_*`; tests build a fresh one per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "gateway_requests",
            "Inference requests by model, serving version, variant and outcome.",
            ["model", "version", "variant", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "gateway_request_latency_seconds",
            "Time to serve an inference request inside the gateway, by model and version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._version_ready = Gauge(
            "gateway_model_version_ready",
            "1 when a model version loaded and can serve, 0 when it failed to load.",
            ["model", "version"],
            registry=self.registry,
        )
        self._http_errors = Counter(
            "gateway_http_errors",
            "Error responses by HTTP status, including requests that never reached a model.",
            ["status"],
            registry=self.registry,
        )
        self._flag_version = Gauge(
            "gateway_flag_version",
            "The version of each release flag in force in this process.",
            ["flag"],
            registry=self.registry,
        )
        self._flag_errors = Counter(
            "gateway_flag_evaluation_errors",
            "Requests whose release flag could not be evaluated (served by the baseline).",
            ["model"],
            registry=self.registry,
        )
        # Label lookups cost more than the increment itself; children are cached per label set.
        self._request_children: dict[tuple[str, str, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe_request(
        self, model: str, version: str, outcome: str, latency_s: float | None, variant: str = ""
    ) -> None:
        key = (model, version, variant, outcome)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(*key)
        counter.inc()
        if latency_s is not None:
            histogram = self._latency_children.get((model, version))
            if histogram is None:
                histogram = self._latency_children[(model, version)] = self._latency.labels(
                    model, version
                )
            histogram.observe(latency_s)

    def set_version_ready(self, model: str, version: str, ready: bool) -> None:
        self._version_ready.labels(model, version).set(1 if ready else 0)

    def set_flag_version(self, flag: str, version: int) -> None:
        self._flag_version.labels(flag).set(version)

    def count_flag_error(self, model: str) -> None:
        self._flag_errors.labels(model).inc()

    def count_http_error(self, status: int) -> None:
        self._http_errors.labels(str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
