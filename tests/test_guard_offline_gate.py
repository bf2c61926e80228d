"""The offline gate on the demo models' real manifests: a candidate worse than its baseline on
the held-out set is refused unless forced, and a forced start carries its evidence."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway.guard.errors import OfflineGateRefused
from gateway.guard.offline_gate import check_offline, compare_offline
from gateway.guard.policy import GuardPolicy
from gateway.repository.manifest import Manifest, read_manifest

POLICY = GuardPolicy()


@pytest.fixture(scope="module")
def manifests(demo_models: Path) -> dict[str, Manifest]:
    """The demo versions' manifests, as the recipe wrote them."""
    return {v: read_manifest(demo_models / "digits" / v) for v in ("1", "2", "3", "4")}


def test_a_better_candidate_passes(manifests: dict[str, Manifest]) -> None:
    """Version 2 (accuracy 0.98) against version 1 (0.92) passes, with both figures kept."""
    comparison = check_offline(
        manifests["1"], manifests["2"], POLICY, baseline_version="1", candidate_version="2"
    )
    assert comparison.passed
    assert not comparison.forced
    accuracy = comparison.metrics[0]
    assert accuracy.metric == "accuracy"
    assert accuracy.baseline == pytest.approx(0.92, abs=0.01)
    assert accuracy.candidate == pytest.approx(0.98, abs=0.01)
    assert accuracy.difference > 0


def test_a_worse_candidate_is_refused_with_both_figures(manifests: dict[str, Manifest]) -> None:
    """Version 3 (accuracy 0.58) against version 1 (0.92) is refused; the message gives both
    figures for each metric that fell, and names both versions."""
    with pytest.raises(OfflineGateRefused) as caught:
        check_offline(
            manifests["1"], manifests["3"], POLICY, baseline_version="1", candidate_version="3"
        )
    message = str(caught.value)
    assert "accuracy 0.5822" in message
    assert "baseline's 0.9222" in message
    assert "macro_f1 0.4857" in message
    assert "'3'" in message
    assert "'1'" in message
    assert not caught.value.comparison.passed


def test_forcing_a_refused_candidate_returns_the_evidence_to_audit(
    manifests: dict[str, Manifest],
) -> None:
    """With force, the worse candidate is let through, marked forced, with JSON-ready
    evidence of what was overridden."""
    comparison = check_offline(
        manifests["1"], manifests["3"], POLICY, force=True, candidate_version="3"
    )
    assert comparison.forced
    assert not comparison.passed
    assert "overridden" in comparison.summary()
    evidence = msgspec.json.decode(msgspec.json.encode(comparison.evidence()))
    assert evidence["forced"] is True
    assert evidence["passed"] is False
    assert evidence["metrics"][0]["candidate"] == pytest.approx(0.5822, abs=1e-4)


def test_a_manifest_without_metrics_is_refused_unless_forced(
    manifests: dict[str, Manifest],
) -> None:
    """Version 4 has no offline metrics: it cannot be compared, so it is refused with that
    reason, and force lets it through."""
    with pytest.raises(OfflineGateRefused, match="has no offline metrics"):
        check_offline(manifests["1"], manifests["4"], POLICY, candidate_version="4")
    assert check_offline(manifests["1"], manifests["4"], POLICY, force=True).forced


def test_the_tolerance_and_the_metrics_compared_come_from_the_policy(
    manifests: dict[str, Manifest],
) -> None:
    """Version 1 as the candidate against version 2 is 0.056 worse: refused at the default
    0.01 tolerance, accepted at 0.1; only the metrics the policy names are compared."""
    assert not compare_offline(manifests["2"], manifests["1"], POLICY).passed
    lenient = GuardPolicy(offline_tolerance=0.1, offline_metrics=("accuracy",))
    comparison = compare_offline(manifests["2"], manifests["1"], lenient)
    assert comparison.passed
    assert [m.metric for m in comparison.metrics] == ["accuracy"]


def test_metrics_from_different_data_are_not_compared(manifests: dict[str, Manifest]) -> None:
    """Metrics measured on another split cannot be compared, so the gate refuses."""
    base = manifests["1"]
    assert base.metrics is not None
    other = msgspec.structs.replace(
        manifests["2"], metrics=msgspec.structs.replace(base.metrics, split="train")
    )
    with pytest.raises(OfflineGateRefused, match="different data"):
        check_offline(base, other, POLICY)
