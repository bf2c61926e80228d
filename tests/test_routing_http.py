"""Routing by the release flag, checked through HTTP: stickiness, split, cohorts, kill switch."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from litestar.testing import TestClient

from gateway import Settings, create_app
from tests.conftest import MANAGER, Client

ROW = [float(v) for v in range(64)]
BODY = json.dumps(
    {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
).encode()
JSON = {"content-type": "application/json"}


def infer(client: Client, headers: dict[str, str] | None = None, body: bytes = BODY) -> Any:
    response = client.post("/v2/models/digits/infer", content=body, headers=JSON | (headers or {}))
    assert response.status_code == 200, response.text
    return response


def test_route_headers_say_variant_reason_and_version(release_client: Client) -> None:
    """A routed response names its variant, the OpenFeature reason and the serving version."""
    response = infer(release_client, {"x-targeting-key": "user-1"})
    variant = response.headers["x-route-variant"]
    assert variant in {"baseline", "candidate"}
    assert response.headers["x-route-reason"] == "TARGETING_MATCH"
    expected = {"baseline": "1", "candidate": "2"}[variant]
    assert response.headers["x-model-version"] == expected
    assert response.json()["model_version"] == expected


def test_same_key_same_variant_also_after_rebuild(release_settings: Settings) -> None:
    """A targeting key gets the same variant on every request, and from a fresh app instance."""
    keys = [f"user-{i}" for i in range(60)]
    with TestClient(app=create_app(release_settings)) as first:
        seen = {k: infer(first, {"x-targeting-key": k}).headers["x-route-variant"] for k in keys}
        again = {k: infer(first, {"x-targeting-key": k}).headers["x-route-variant"] for k in keys}
    with TestClient(app=create_app(release_settings)) as second:
        fresh = {k: infer(second, {"x-targeting-key": k}).headers["x-route-variant"] for k in keys}
    assert seen == again == fresh
    assert set(seen.values()) == {"baseline", "candidate"}


def test_split_over_five_thousand_keys_matches_the_weights(release_client: Client) -> None:
    """Over 5,000 targeting keys sent through HTTP, the split is within 1.5 points of 90/10
    (3.5 standard deviations; the router's own test checks the split over many more keys)."""
    counts: Counter[str] = Counter()
    for i in range(5_000):
        counts[infer(release_client, {"x-targeting-key": f"k{i}"}).headers["x-route-variant"]] += 1
    assert abs(counts["candidate"] / 5_000 - 0.10) <= 0.015
    assert counts["baseline"] + counts["candidate"] == 5_000


def test_cohort_rule_wins_over_the_percentage(release_client: Client) -> None:
    """Requests in the beta/internal cohort go to the candidate whatever their bucket."""
    for i in range(200):
        from_header = infer(release_client, {"x-targeting-key": f"u{i}", "x-ctx-tier": "beta"})
        assert from_header.headers["x-route-variant"] == "candidate"
    body = json.loads(BODY)
    body["parameters"] = {"targeting_key": "u1", "context": {"tier": "internal"}}
    from_parameters = infer(release_client, body=json.dumps(body).encode())
    assert from_parameters.headers["x-model-version"] == "2"


def test_targeting_key_from_parameters_is_sticky(release_client: Client) -> None:
    """parameters.targeting_key makes routing sticky like the header does."""
    body = json.loads(BODY)
    body["parameters"] = {"targeting_key": "sticky-user"}
    raw = json.dumps(body).encode()
    variants = {infer(release_client, body=raw).headers["x-route-variant"] for _ in range(20)}
    header_variant = infer(release_client, {"x-targeting-key": "sticky-user"}).headers[
        "x-route-variant"
    ]
    assert variants == {header_variant}


def test_kill_switch_sends_everything_to_the_baseline(release_client: Client) -> None:
    """After `disable`, every request (cohort members too) is served by the baseline, DISABLED."""
    assert (
        release_client.post("/admin/releases/digits/disable", json={}, headers=MANAGER).status_code
        == 200
    )
    for i in range(100):
        response = infer(release_client, {"x-targeting-key": f"u{i}", "x-ctx-tier": "beta"})
        assert response.headers["x-model-version"] == "1"
        assert response.headers["x-route-reason"] == "DISABLED"


def test_a_change_is_in_force_for_the_very_next_request(release_client: Client) -> None:
    """A rollout to 100 % sends the very next request to the candidate."""
    release_client.post(
        "/admin/releases/digits/rollout", json={"version": "2", "percent": 100}, headers=MANAGER
    )
    assert infer(release_client, {"x-targeting-key": "anyone"}).headers["x-model-version"] == "2"
    release_client.post("/admin/releases/digits/rollback", json={}, headers=MANAGER)
    assert (
        infer(release_client, {"x-targeting-key": "anyone", "x-ctx-tier": "beta"}).headers[
            "x-model-version"
        ]
        == "1"
    )


def test_unevaluable_flag_serves_baseline_and_is_counted(release_client: Client) -> None:
    """A flag failing at evaluation sends requests to the baseline, logged and counted."""
    flag = release_client.get("/admin/flags/digits-release", headers=MANAGER).json()
    flag["targeting"] = {"if": [{"<": [{"/": [1, {"var": "zero"}]}, 1]}, "candidate", "baseline"]}
    del flag["metadata"]["cohort.beta"]
    assert (
        release_client.put("/admin/flags/digits-release", json=flag, headers=MANAGER).status_code
        == 200
    )
    response = infer(release_client, {"x-targeting-key": "u", "x-ctx-zero": "0"})
    assert response.headers["x-route-reason"] == "ERROR"
    assert response.headers["x-model-version"] == "1"
    metrics = release_client.get("/metrics").text
    assert 'gateway_flag_evaluation_errors_total{model="digits"} 1.0' in metrics


def test_bad_context_is_a_400(release_client: Client) -> None:
    """A non-primitive context attribute or an empty targeting key is refused with 400."""
    body = json.loads(BODY)
    body["parameters"] = {"context": {"tier": ["beta"]}}
    response = release_client.post(
        "/v2/models/digits/infer", content=json.dumps(body), headers=JSON
    )
    assert response.status_code == 400
    assert "parameters.context.tier" in response.json()["error"]
    body["parameters"] = {"targeting_key": ""}
    response = release_client.post(
        "/v2/models/digits/infer", content=json.dumps(body), headers=JSON
    )
    assert response.status_code == 400


def test_pinned_requests_bypass_the_flag(release_client: Client) -> None:
    """A pinned request is served by its version and carries no routing headers."""
    response = release_client.post(
        "/v2/models/digits/versions/3/infer", content=BODY, headers=JSON | {"x-ctx-tier": "beta"}
    )
    assert response.headers["x-model-version"] == "3"
    assert "x-route-variant" not in response.headers


def test_requests_count_by_variant(release_client: Client) -> None:
    """The request counter carries the routing variant."""
    infer(release_client, {"x-targeting-key": "u", "x-ctx-tier": "beta"})
    metrics = release_client.get("/metrics").text
    assert (
        'gateway_requests_total{model="digits",outcome="ok",variant="candidate",version="2"} 1.0'
        in metrics
    )
