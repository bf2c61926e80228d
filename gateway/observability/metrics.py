"""Every Prometheus metric the gateway exports, held by one object with its own registry."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from gateway.observability.execution_metrics import ExecutionMetrics
from gateway.observability.histograms import HistogramCollector, HistogramCounts
from gateway.observability.request_metrics import RequestPathMetrics
from gateway.observability.worker_metrics import WorkerMetrics

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

# The largest absolute difference between two versions' outputs (probabilities: 0..1).
DIFFERENCE_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
SHADOW_OUTCOMES = ("compared", "shadow_error", "timeout", "dropped", "primary_error")


@dataclass(slots=True)
class _PairMetrics:
    """The metric children of one (model, primary, shadow) pair, and its agreement so far."""

    agree: Counter
    disagree: Counter
    ratio: Gauge
    agreed: int = 0
    rows: int = 0


class GatewayMetrics:
    """Counters and histograms named `gateway_*`; tests build a fresh one per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._request_path = RequestPathMetrics(LATENCY_BUCKETS)
        self.registry.register(self._request_path)
        self.execution = ExecutionMetrics()
        self.registry.register(self.execution)
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
        self._shadow_requests = Counter(
            "gateway_shadow_requests",
            "Shadow runs by model, primary and shadow version, and outcome: compared, "
            "shadow_error, timeout, dropped (budget full), primary_error (the primary failed).",
            ["model", "primary", "shadow", "outcome"],
            registry=self.registry,
        )
        self._shadow_rows = Counter(
            "gateway_shadow_rows",
            "Rows compared in shadow by pair, and whether the top classes agreed (agree) or not.",
            ["model", "primary", "shadow", "result"],
            registry=self.registry,
        )
        self._shadow_agreement = Gauge(
            "gateway_shadow_agreement_ratio",
            "Share of the rows compared in shadow whose top classes agreed, by pair, since this "
            "process started.",
            ["model", "primary", "shadow"],
            registry=self.registry,
        )
        # Observed from the executors' shadow threads, under _shadow_lock.
        self._shadow_lock = threading.Lock()
        self._shadow_latency = HistogramCounts(
            "gateway_shadow_latency_seconds",
            "Time a shadow version's call took, by model and shadow version (the runs of one "
            "call share its time).",
            ["model", "version"],
            LATENCY_BUCKETS,
        )
        self._shadow_difference = HistogramCounts(
            "gateway_shadow_max_abs_difference",
            "Largest absolute difference between the primary's and the shadow's outputs.",
            ["model", "primary", "shadow"],
            DIFFERENCE_BUCKETS,
        )
        self.registry.register(
            HistogramCollector(self._shadow_lock, self._shadow_latency, self._shadow_difference)
        )
        self._shadow_drops = Counter(
            "gateway_shadow_drops",
            "Shadow runs dropped, by reason: primary_busy (too many primaries in flight), "
            "cpu_budget (the shadows' CPU budget is spent), queue_full (the shadow version's "
            "queue had no room) or unavailable (the shadow version is not loaded).",
            ["reason"],
            registry=self.registry,
        )
        self._shadow_records = Counter(
            "gateway_shadow_records",
            "Comparison records by fate: written to the store, or dropped (buffer_full, "
            "store_error).",
            ["fate"],
            registry=self.registry,
        )
        self._fallbacks = Counter(
            "gateway_fallbacks",
            "Requests a failing version left to the baseline, by the version that failed.",
            ["model", "version"],
            registry=self.registry,
        )
        self._guard_decisions = Counter(
            "gateway_guard_decisions",
            "Guard decisions by model and kind (insufficient_data, healthy, breach, ready).",
            ["model", "kind"],
            registry=self.registry,
        )
        self._guard_rollbacks = Counter(
            "gateway_guard_rollbacks",
            "Automatic rollbacks by model and the first rule that fired.",
            ["model", "trigger"],
            registry=self.registry,
        )
        self._ramp_advances = Counter(
            "gateway_ramp_advances",
            "Ramp steps taken (the last one promotes), by model.",
            ["model"],
            registry=self.registry,
        )
        self._webhook_failures = Counter(
            "gateway_guard_webhook_failures",
            "Guard webhook posts that failed or timed out (the flag change stands).",
            ["model"],
            registry=self.registry,
        )
        self._workers: WorkerMetrics | None = None
        # Label lookups cost more than the increment itself; children are cached per label set.
        self._shadow_children: dict[tuple[str, str, str, str], Counter] = {}
        self._shadow_drop_children: dict[str, Counter] = {}
        # Per shadow pair: its metric children and the running agreement (under the lock).
        self._pairs: dict[tuple[str, str, str], _PairMetrics] = {}

    def observe_request(
        self, model: str, version: str, outcome: str, latency_s: float | None, variant: str = ""
    ) -> None:
        self._request_path.observe(model, version, outcome, latency_s, variant)

    def set_version_ready(self, model: str, version: str, ready: bool) -> None:
        self._version_ready.labels(model, version).set(1 if ready else 0)

    def set_flag_version(self, flag: str, version: int) -> None:
        self._flag_version.labels(flag).set(version)

    def count_flag_error(self, model: str) -> None:
        self._flag_errors.labels(model).inc()

    def count_http_error(self, status: int) -> None:
        self._http_errors.labels(str(status)).inc()

    # -- shadow (called from the event loop and from shadow worker threads) ---------------

    def count_shadow(
        self, model: str, primary: str, shadow: str, outcome: str, count: int = 1
    ) -> None:
        key = (model, primary, shadow, outcome)
        counter = self._shadow_children.get(key)
        if counter is None:
            counter = self._shadow_children[key] = self._shadow_requests.labels(*key)
        counter.inc(count)

    def observe_shadow_comparisons(
        self,
        model: str,
        primary: str,
        shadow: str,
        *,
        rows: int,
        agreed_rows: int,
        differences: list[float],
    ) -> None:
        """Count a batch of one pair's comparisons: rows compared and agreed, differences."""
        key = (model, primary, shadow)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _PairMetrics(
                agree=self._shadow_rows.labels(*key, "agree"),
                disagree=self._shadow_rows.labels(*key, "disagree"),
                ratio=self._shadow_agreement.labels(*key),
            )
        if rows > 0:
            pair.agree.inc(agreed_rows)
            pair.disagree.inc(rows - agreed_rows)
        with self._shadow_lock:
            if rows > 0:
                pair.agreed += agreed_rows
                pair.rows += rows
                pair.ratio.set(pair.agreed / pair.rows)
            self._shadow_difference.observe_many(key, differences)

    def observe_shadow_latency(
        self, model: str, version: str, latency_s: float, runs: int = 1
    ) -> None:
        """Count `runs` shadow runs that took `latency_s` (the runs of one batch)."""
        with self._shadow_lock:
            self._shadow_latency.observe((model, version), latency_s, runs)

    def count_shadow_drop(self, reason: str) -> None:
        counter = self._shadow_drop_children.get(reason)
        if counter is None:
            counter = self._shadow_drop_children[reason] = self._shadow_drops.labels(reason)
        counter.inc()

    def count_shadow_records(self, fate: str, count: int = 1) -> None:
        if count:
            self._shadow_records.labels(fate).inc(count)

    def count_fallback(self, model: str, version: str) -> None:
        self._fallbacks.labels(model, version).inc()

    def observe_guard_decision(self, model: str, kind: str) -> None:
        self._guard_decisions.labels(model, kind).inc()

    def count_guard_rollback(self, model: str, trigger: str) -> None:
        self._guard_rollbacks.labels(model, trigger).inc()

    def count_ramp_advance(self, model: str) -> None:
        self._ramp_advances.labels(model).inc()

    def count_webhook_failure(self, model: str) -> None:
        self._webhook_failures.labels(model).inc()

    def merge_workers(self, workers: WorkerMetrics) -> None:
        """Answer scrapes with every worker process's samples added up (`worker_metrics`)."""
        self._workers = workers

    def exposition(self) -> bytes:
        if self._workers is not None:
            return self._workers.exposition()
        data: bytes = generate_latest(self.registry)
        return data
