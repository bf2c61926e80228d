"""The dashboard's history: interval figures from the guard's running totals, bounded in time,
sampled from live traffic and served to the pages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import held_out_digits
from gateway.guard.histogram import LatencyHistogram
from gateway.ui.history import Reading, ReleaseHistory
from gateway.ui.sampler import guard_point
from tests.conftest import MANAGER, v2_body


def _reading(
    requests: int, errors: int, latencies_s: list[float], labelled: int = 0, correct: int = 0
) -> Reading:
    histogram = LatencyHistogram()
    for value in latencies_s:
        histogram.record(value)
    return Reading(
        requests=requests,
        errors=errors,
        fallbacks=0,
        feedback_total=labelled,
        feedback_correct=correct,
        latency_counts=tuple(histogram.counts),
        latency_min_s=histogram.min_s,
        latency_max_s=histogram.max_s,
    )


def test_samples_are_the_figures_of_each_interval() -> None:
    """The first reading only sets the start; then each sample holds the interval's requests
    per second, error rate, labelled accuracy and the p50/p99 of the interval's requests alone
    (a slow interval is not diluted by the fast ones before it)."""
    history = ReleaseHistory(keep_s=3600, interval_s=5)
    fast = [0.001] * 100
    assert history.record("m", 100.0, {"1": _reading(100, 0, fast, 10, 9)}) is None
    slow = fast + [0.010] * 50
    sample = history.record("m", 105.0, {"1": _reading(150, 5, slow, 30, 19)})
    assert sample is not None
    point = sample.versions["1"]
    assert point.requests == 50
    assert point.requests_per_s == 10.0
    assert point.errors == 5
    assert point.error_rate == 0.1
    assert point.p50_ms is not None
    assert 9.0 <= point.p50_ms <= 10.0
    assert point.labelled == 20
    assert point.accuracy == 0.5
    assert history.samples("m") == [sample]
    assert history.samples("m", since=105.0) == []


def test_a_version_new_or_reset_counts_from_zero() -> None:
    """A version first seen, or whose totals fell (another process), counts from zero, never
    negative; an interval without requests has no rates or quantiles."""
    history = ReleaseHistory(keep_s=3600, interval_s=1)
    history.record("m", 0.0, {"1": _reading(500, 10, [0.002] * 490)})
    sample = history.record(
        "m", 2.0, {"1": _reading(40, 1, [0.003] * 39), "2": _reading(4, 0, [0.001] * 4)}
    )
    assert sample is not None
    assert sample.versions["1"].requests == 40
    assert sample.versions["1"].errors == 1
    assert sample.versions["2"].requests_per_s == 2.0
    idle = history.record("m", 3.0, {"1": _reading(40, 1, [0.003] * 39)})
    assert idle is not None
    assert idle.versions["1"].error_rate is None
    assert idle.versions["1"].p99_ms is None
    assert idle.versions["1"].accuracy is None


def test_history_keeps_only_its_window_and_forgets_models() -> None:
    """Samples older than `keep_s` go, the count stays bounded, and a model no longer served
    is forgotten."""
    history = ReleaseHistory(keep_s=10, interval_s=1)
    for second in range(100):
        history.record("m", float(second), {"1": _reading(second, 0, [])})
    kept = history.samples("m")
    assert len(kept) <= 11
    assert kept[0].at >= 89.0
    assert kept[-1].at == 99.0
    history.forget_except({"other"})
    assert history.samples("m") == []


def test_guard_point_reads_status_json_whatever_it_lacks_or_adds() -> None:
    """The guard's view is read from status JSON: missing parts give None, extra fields are
    ignored."""
    assert guard_point({}) == (None, None)
    status = {
        "window": {
            "flag_version": 7,
            "candidate": {"requests": 12, "pooled_from": 3},
            "baseline": {"requests": 90},
            "error_test": {"statistic": 1.5, "threshold": 5.3, "new_field": True},
        },
        "decisions": [{"kind": "healthy", "reason": "ok"}],
        "executor": {"queue": 0},
    }
    flag_version, point = guard_point(status)
    assert flag_version == 7
    assert point is not None
    assert (point.decision, point.statistic, point.threshold) == ("healthy", 1.5, 5.3)
    assert (point.candidate_requests, point.baseline_requests) == (12, 90)


def test_sampler_records_live_traffic_for_the_pages(
    release_settings: Settings, tmp_path: Path
) -> None:
    """The app samples its live figures in the background: after some traffic the history
    endpoint (any admin token) holds samples whose requests add up to what was sent, with the
    guard's threshold; `since` returns only newer samples; unknown models are 404s, and the
    endpoint needs a token."""
    settings = msgspec.structs.replace(release_settings, ui_sample_interval_s=0.2)
    features, _ = held_out_digits()
    rows = np.asarray(features[:40], dtype=np.float32)
    with TestClient(app=create_app(settings)) as client:
        time.sleep(0.5)  # a first reading, before the traffic
        for i, row in enumerate(rows):
            response = client.post(
                "/v2/models/digits/infer", json=v2_body(row), headers={"x-targeting-key": f"u{i}"}
            )
            assert response.status_code == 200
        deadline = time.monotonic() + 10
        counted = 0
        samples: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            answer = client.get("/ui/api/history/digits", headers=MANAGER)
            assert answer.status_code == 200
            samples = answer.json()["samples"]
            counted = sum(point["requests"] for s in samples for point in s["versions"].values())
            if counted >= len(rows):
                break
            time.sleep(0.2)
        assert counted == len(rows)
        assert any(s["guard"] and s["guard"]["threshold"] for s in samples)
        last = samples[-1]["at"]
        newer = client.get(f"/ui/api/history/digits?since={last}", headers=MANAGER).json()
        assert all(s["at"] > last for s in newer["samples"])
        assert client.get("/ui/api/history/nope", headers=MANAGER).status_code == 404
        assert client.get("/ui/api/history/digits").status_code == 401
        assert client.get("/ui/api/history/digits?since=abc", headers=MANAGER).status_code == 400
