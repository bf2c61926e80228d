"""The guard end to end over HTTP: fallback, automatic rollback, a ramp that promotes, feedback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER, VIEWER, Client
from tests.server import wait_for

FEATURES, LABELS = held_out_digits()


def body(index: int) -> dict[str, Any]:
    row = FEATURES[index % len(FEATURES)]
    return {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]
    }


@pytest.fixture
def guarded_client(release_settings: Settings, flags_dir: Path) -> Iterator[Client]:
    """The demo release with a small guard sample, checked every 50 ms."""
    path = flags_dir / "digits.json"
    doc = json.loads(path.read_text())
    doc["flags"]["digits-release"]["metadata"]["guard.minSample"] = 30
    path.write_text(json.dumps(doc))
    settings = msgspec.structs.replace(release_settings, guard_interval_s=0.05)
    with TestClient(app=create_app(settings)) as client:
        yield client


def test_failing_candidate_falls_back_then_rolls_back(guarded_client: Client) -> None:
    """A forced rollout of version 4: clients only get answers (fallback), then the guard rolls
    back by itself, once, with its evidence in the audit log."""
    refused = guarded_client.post(
        "/admin/releases/digits/rollout", json={"version": "4", "percent": 50}, headers=MANAGER
    )
    assert refused.status_code == 409
    assert "offline" in refused.json()["error"]
    forced = guarded_client.post(
        "/admin/releases/digits/rollout",
        json={"version": "4", "percent": 50, "force": True, "reason": "try the new export"},
        headers=MANAGER,
    )
    assert forced.status_code == 200, forced.text
    fallbacks = 0
    for i in range(400):
        response = guarded_client.post(
            "/v2/models/digits/infer", json=body(i), headers={"x-targeting-key": f"user-{i}"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "1"
        fallbacks += response.headers.get("x-fallback") == "true"
    # The guard rolls back once the candidate has its minimum sample (30) of failures.
    assert fallbacks >= 30

    def rolled_back() -> dict[str, Any] | None:
        entries = guarded_client.get("/admin/audit?model=digits", headers=VIEWER).json()["entries"]
        return next((e for e in entries if e["action"] == "guard_rollback"), None)

    entry = wait_for(rolled_back)
    assert entry["actor"] == "guard"
    evidence = entry["evidence"]
    assert evidence["flag_version_before"] == entry["version_before"]
    assert evidence["candidate"]["errors"] >= 30
    assert "statistic" in json.dumps(evidence)
    release = guarded_client.get("/admin/releases/digits", headers=VIEWER).json()
    assert release["split"]["candidate"] == 0.0
    assert release["cohorts"] == []
    actions = [
        e["action"] for e in guarded_client.get("/admin/audit", headers=VIEWER).json()["entries"]
    ]
    assert actions.count("guard_rollback") == 1
    assert "rollout_forced" in actions
    metrics = guarded_client.get("/metrics").text
    assert "gateway_guard_rollbacks_total" in metrics
    assert 'gateway_fallbacks_total{model="digits",version="4"}' in metrics


def test_ramp_promotes_itself_through_every_step(guarded_client: Client) -> None:
    """A ramp of version 2 advances through 1, 5, 25, 50 % on healthy traffic and promotes."""
    started = guarded_client.post(
        "/admin/releases/digits/ramp",
        json={"version": "2", "steps": [1, 5, 25, 50, 100], "bake_s": 0, "reason": "ramp 2"},
        headers=MANAGER,
    )
    assert started.status_code == 200, started.text
    assert started.json()["split"]["candidate"] == 1.0
    deadline = time.monotonic() + 120
    i = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            response = guarded_client.post(
                "/v2/models/digits/infer", json=body(i), headers={"x-targeting-key": f"u{i}"}
            )
            assert response.status_code == 200
            i += 1
        release = guarded_client.get("/admin/releases/digits", headers=VIEWER).json()
        if release["baseline"]["version"] == "2":
            break
    else:
        raise AssertionError(f"ramp did not promote: {release['guard']}")
    entries = guarded_client.get("/admin/audit?model=digits&limit=50", headers=VIEWER).json()
    actions = [e["action"] for e in reversed(entries["entries"])]
    assert actions[actions.index("ramp_start") :].count("ramp_advance") == 4
    assert release["guard"]["ramp"] is None


def test_ramp_pause_resume_abort(guarded_client: Client) -> None:
    """A ramp can be paused, resumed and aborted; abort sends everything to the baseline."""
    guarded_client.post(
        "/admin/releases/digits/ramp", json={"version": "2", "bake_s": 3600}, headers=MANAGER
    )
    paused = guarded_client.post("/admin/releases/digits/ramp/pause", json={}, headers=MANAGER)
    assert paused.json()["guard"]["ramp"]["state"] == "paused"
    resumed = guarded_client.post("/admin/releases/digits/ramp/resume", json={}, headers=MANAGER)
    assert resumed.json()["guard"]["ramp"]["state"] == "running"
    aborted = guarded_client.post("/admin/releases/digits/ramp/abort", json={}, headers=MANAGER)
    assert aborted.json()["guard"]["ramp"] is None
    assert aborted.json()["split"]["candidate"] == 0.0
    again = guarded_client.post("/admin/releases/digits/ramp/pause", json={}, headers=MANAGER)
    assert again.status_code == 409


def test_feedback_gives_live_accuracy_close_to_offline(client: Client, demo_models: Path) -> None:
    """True labels for held-out digits give each version a live accuracy within 2 points of
    its offline accuracy; unknown ids are reported back."""
    for version in ("1", "2", "3"):
        ids = []
        for start in range(0, len(FEATURES), 50):
            rows = FEATURES[start : start + 50]
            response = client.post(
                f"/v2/models/digits/versions/{version}/infer",
                json={
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": list(rows.shape),
                            "datatype": "FP32",
                            "data": rows.ravel().tolist(),
                        }
                    ]
                },
            )
            ids.append((response.json()["id"], LABELS[start : start + 50].tolist()))
        items = [{"id": request_id, "label": labels} for request_id, labels in ids]
        result = client.post("/v2/models/digits/feedback", json=items).json()
        assert result["accepted"] == len(ids)
        manifest = json.loads((demo_models / "digits" / version / "manifest.json").read_text())
        joined = result["versions"][version]
        assert abs(joined["correct"] / joined["total"] - manifest["metrics"]["accuracy"]) <= 0.02
    unknown = client.post("/v2/models/digits/feedback", json={"id": "nope", "label": 3}).json()
    assert unknown["unknown"] == ["nope"]
    bad = client.post("/v2/models/digits/feedback", json={"label": 3})
    assert bad.status_code == 400


def test_a_less_accurate_candidate_is_rolled_back_on_ground_truth(guarded_client: Client) -> None:
    """Version 3 (trained on corrupted labels) answers every request without error; rolled
    out to 50 % with feedback for every request, the guard rolls it back on live accuracy,
    once, and the audit entry shows both accuracies and the test's statistic against its
    threshold."""
    forced = guarded_client.post(
        "/admin/releases/digits/rollout",
        json={"version": "3", "percent": 50, "force": True, "reason": "accuracy test"},
        headers=MANAGER,
    )
    assert forced.status_code == 200, forced.text

    def rolled_back() -> dict[str, Any] | None:
        entries = guarded_client.get("/admin/audit?model=digits", headers=VIEWER).json()["entries"]
        return next((e for e in entries if e["action"] == "guard_rollback"), None)

    entry = None
    for i in range(2_000):
        response = guarded_client.post(
            "/v2/models/digits/infer",
            json=body(i) | {"id": f"acc-{i}"},
            headers={"x-targeting-key": f"acc-user-{i}"},
        )
        assert response.status_code == 200
        assert response.headers.get("x-fallback") is None  # it never fails, it is only wrong
        feedback = {"id": f"acc-{i}", "label": int(LABELS[i % len(LABELS)])}
        assert guarded_client.post("/v2/models/digits/feedback", json=feedback).status_code == 200
        if i % 50 == 49 and (entry := rolled_back()) is not None:
            break
    assert entry is not None, "the less accurate candidate was never rolled back"
    evidence = entry["evidence"]
    assert evidence["triggers"] == ["accuracy_test"]
    accuracy = evidence["accuracy"]
    assert accuracy["candidate"] < accuracy["baseline"] - 0.2
    assert min(accuracy["candidate_labelled"], accuracy["baseline_labelled"]) >= 100
    assert accuracy["test"]["statistic"] >= accuracy["test"]["threshold"]
    assert accuracy["test"]["rejects"] is True
    assert "live accuracy" in entry["reason"]
    actions = [
        e["action"] for e in guarded_client.get("/admin/audit", headers=VIEWER).json()["entries"]
    ]
    assert actions.count("guard_rollback") == 1


def test_a_shadows_live_accuracy_shows_beside_the_baselines(guarded_client: Client) -> None:
    """With version 3 shadowing at 100 % and feedback sent, the release status shows version
    3's live accuracy next to the baseline's, over the same labelled requests."""
    shadow = guarded_client.post(
        "/admin/releases/digits/shadow", json={"versions": ["3"], "percent": 100}, headers=MANAGER
    )
    assert shadow.status_code == 200, shadow.text
    for i in range(200):
        response = guarded_client.post(
            "/v2/models/digits/infer",
            json=body(i) | {"id": f"sh-{i}"},
            headers={"x-targeting-key": "always-the-baseline", "x-ctx-tier": "free"},
        )
        assert response.status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = guarded_client.get("/admin/releases/digits", headers=VIEWER).json()["guard"]
        if status["shadow_versions"].get("3", {}).get("requests", 0) >= 200:
            break
        time.sleep(0.05)
    items = [{"id": f"sh-{i}", "label": int(LABELS[i % len(LABELS)])} for i in range(200)]
    joined = guarded_client.post("/v2/models/digits/feedback", json=items).json()
    assert joined["accepted"] == 200

    status = guarded_client.get("/admin/releases/digits", headers=VIEWER).json()["guard"]
    served = status["versions"]["1"]
    shadowed = status["shadow_versions"]["3"]
    assert served["feedback_total"] >= 200
    assert shadowed["feedback_total"] == 200
    assert shadowed["live_accuracy"] < served["live_accuracy"] - 0.2
    (pair,) = [p for p in status["shadow_pairs"] if (p["primary"], p["shadow"]) == ("1", "3")]
    assert pair["labelled"] == 200
    assert pair["shadow_accuracy"] < pair["primary_accuracy"] - 0.2
    report = guarded_client.get("/admin/shadow/digits", headers=VIEWER).json()
    (summary,) = [p for p in report["pairs"] if p["shadow"] == "3"]
    assert summary["live_accuracy"] == {
        "labelled": 200,
        "primary": pair["primary_accuracy"],
        "shadow": pair["shadow_accuracy"],
    }
