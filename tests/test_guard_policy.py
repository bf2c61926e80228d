"""The guard policy a release declares in its flag metadata: defaults, keys, refusals."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.flags.validation import validate_flag
from gateway.guard.errors import InvalidPolicy
from gateway.guard.policy import GuardPolicy
from tests.flags_support import DEMO_KEY, KNOWN, demo_flag


def test_no_guard_keys_give_the_defaults() -> None:
    """A release without guard metadata gets the documented defaults; keys of other kinds
    (model, cohorts, ramp) are ignored."""
    policy = GuardPolicy.from_metadata(
        {"model": "digits", "cohort.beta": "{}", "ramp.step": 1, "other": "x"}
    )
    assert policy == GuardPolicy()
    assert (policy.min_sample, policy.alpha, policy.latency_quantile) == (100, 0.005, 0.99)
    assert (policy.latency_factor, policy.latency_min_sample) == (1.5, 500)
    assert (policy.max_error_rate, policy.max_latency_ms, policy.min_live_accuracy) == (
        0.2,
        None,
        None,
    )
    assert policy.fallback
    assert policy.auto_rollback


def test_every_key_is_read() -> None:
    """Each `guard.*` key sets its field, and `fallback` is the release's existing key."""
    policy = GuardPolicy.from_metadata(
        {
            "guard.minSample": 200,
            "guard.alpha": 0.01,
            "guard.latencyQuantile": 0.95,
            "guard.latencyFactor": 2,
            "guard.latencyMinSample": 100,
            "guard.latencyMinDeltaMs": 5,
            "guard.maxErrorRate": 0.5,
            "guard.maxLatencyMs": 250,
            "guard.minLiveAccuracy": 0.9,
            "guard.minFeedback": 20,
            "guard.offlineTolerance": 0.02,
            "guard.offlineMetrics": "accuracy",
            "guard.autoRollback": False,
            "fallback": False,
        }
    )
    assert policy == GuardPolicy(
        min_sample=200,
        alpha=0.01,
        latency_quantile=0.95,
        latency_factor=2.0,
        latency_min_sample=100,
        latency_min_delta_ms=5.0,
        max_error_rate=0.5,
        max_latency_ms=250.0,
        min_live_accuracy=0.9,
        min_feedback=20,
        offline_tolerance=0.02,
        offline_metrics=("accuracy",),
        auto_rollback=False,
        fallback=False,
    )


def test_zero_switches_an_optional_rule_off() -> None:
    """`guard.maxLatencyMs` and `guard.minLiveAccuracy` at 0 mean the rule is off."""
    policy = GuardPolicy.from_metadata({"guard.maxLatencyMs": 0, "guard.minLiveAccuracy": 0})
    assert policy.max_latency_ms is None
    assert policy.min_live_accuracy is None


def test_to_metadata_round_trips() -> None:
    """A policy written to metadata reads back as the same policy."""
    policy = GuardPolicy(max_latency_ms=80.0, min_live_accuracy=0.85, offline_metrics=("macro_f1",))
    assert GuardPolicy.from_metadata(policy.to_metadata()) == policy
    assert GuardPolicy.from_metadata(GuardPolicy().to_metadata()) == GuardPolicy()


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"guard.minsample": 10}, "guard.minsample"),
        ({"guard.minSample": 0}, "guard.minSample"),
        ({"guard.minSample": 10.5}, "guard.minSample"),
        ({"guard.minSample": True}, "guard.minSample"),
        ({"guard.alpha": 0}, "guard.alpha"),
        ({"guard.alpha": 1}, "guard.alpha"),
        ({"guard.alpha": "0.01"}, "guard.alpha"),
        ({"guard.latencyQuantile": 1.0}, "guard.latencyQuantile"),
        ({"guard.latencyFactor": 0.5}, "guard.latencyFactor"),
        ({"guard.maxErrorRate": 0}, "guard.maxErrorRate"),
        ({"guard.maxErrorRate": 1.5}, "guard.maxErrorRate"),
        ({"guard.maxLatencyMs": -5}, "guard.maxLatencyMs"),
        ({"guard.minLiveAccuracy": 2}, "guard.minLiveAccuracy"),
        ({"guard.offlineMetrics": "accuracy,f2"}, "guard.offlineMetrics"),
        ({"guard.autoRollback": "no"}, "guard.autoRollback"),
        ({"fallback": 1}, "fallback"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(metadata: dict[str, Any], key: str) -> None:
    """Unknown guard keys, wrong types and out-of-range values are refused with the key named."""
    with pytest.raises(InvalidPolicy, match=re.escape(f"'{key}'")):
        GuardPolicy.from_metadata(metadata)


def test_a_latency_sample_too_small_for_its_quantile_is_refused() -> None:
    """A latency minimum sample that leaves fewer than two requests beyond the quantile is
    refused (one slow request could then move it); a policy built directly is checked like
    one read from metadata (and says "off" with None rather than 0)."""
    with pytest.raises(InvalidPolicy, match="at least 200"):
        GuardPolicy.from_metadata({"guard.latencyMinSample": 150})
    with pytest.raises(InvalidPolicy, match="at least 1000"):
        GuardPolicy.from_metadata({"guard.latencyQuantile": 0.998})
    with pytest.raises(InvalidPolicy, match=r"guard\.alpha"):
        GuardPolicy(alpha=2.0)
    with pytest.raises(InvalidPolicy, match="None"):
        GuardPolicy(max_latency_ms=0.0)


def test_a_flag_with_guard_metadata_stays_a_valid_release() -> None:
    """Guard keys ride in the flag's metadata: the flag still validates, and the Release's
    policy hands them to the guard unchanged."""
    flag = demo_flag()
    flag["metadata"].update(GuardPolicy(min_sample=250, max_latency_ms=40.0).to_metadata())
    release = validate_flag(DEMO_KEY, flag, KNOWN)
    policy = release.policy.guard
    assert policy.min_sample == 250
    assert policy.max_latency_ms == 40.0
