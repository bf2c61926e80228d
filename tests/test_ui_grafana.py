"""The Grafana dashboard shipped in deploy/grafana uses only metrics and labels that a real
gateway's /metrics exposes, after traffic, shadows, drops, a guard decision and a rollback."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app
from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER, REPO_ROOT, Client, scratch_settings, v2_body

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "release-gateway.json"
METRIC = re.compile(r"\b(gateway_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return found


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> dict[str, set[str]]:
    """Sample name -> label names, from /metrics after a session that exercises every panel."""
    root = tmp_path_factory.mktemp("grafana")
    # Version 2 never runs as a shadow (a shadow queue of 0): shadowing it drops every run.
    models = Path(shutil.copytree(demo_models, root / "models"))
    manifest_path = models / "digits" / "2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["execution"] = {"max_shadow_queue": 0}
    manifest_path.write_text(json.dumps(manifest))
    flags = json.loads((REPO_ROOT / "flags" / "digits.json").read_text())
    flag = flags["flags"]["digits-release"]
    flag["variants"]["baseline"]["shadow"] = [
        {"version": "3", "percent": 100},
        {"version": "2", "percent": 100},
    ]
    flag["metadata"]["guard.minSample"] = 30  # the guard acts sooner
    (root / "flags").mkdir()
    (root / "flags" / "digits.json").write_text(json.dumps(flags))
    settings = scratch_settings(
        models,
        root,
        root / "flags",
        admin_tokens=f"ada:release-manager:{MANAGER['authorization'].split()[1]}",
    )
    features, _ = held_out_digits()
    rows = np.asarray(features, dtype=np.float32)
    with TestClient(app=create_app(settings)) as client:
        _traffic(client, rows, 100)
        ramp = client.post(
            "/admin/releases/digits/ramp",
            json={"version": "2", "steps": [50, 100], "bake_s": 0, "reason": "grafana test"},
            headers=MANAGER,
        )
        assert ramp.status_code == 200, ramp.text
        _traffic_until(client, rows, "gateway_ramp_advances_total{")
        forced = client.post(
            "/admin/releases/digits/rollout",
            json={"version": "4", "percent": 50, "force": True, "reason": "grafana test"},
            headers=MANAGER,
        )
        assert forced.status_code == 200, forced.text
        _traffic_until(client, rows, "gateway_guard_rollbacks_total{")
        client.post("/v2/models/digits/infer", json={"inputs": []})  # a 400: an HTTP error
        # A flag that fails at evaluation (a division by zero) counts an evaluation error.
        flag = client.get("/admin/flags/digits-release", headers=MANAGER).json()
        flag["targeting"] = {
            "if": [{"<": [{"/": [1, {"var": "zero"}]}, 1]}, "candidate", "baseline"]
        }
        flag["metadata"] = {
            k: v for k, v in flag["metadata"].items() if not k.startswith("cohort.")
        }
        assert (
            client.put("/admin/flags/digits-release", json=flag, headers=MANAGER).status_code == 200
        )
        client.post("/v2/models/digits/infer", json=v2_body(rows[0]), headers={"x-ctx-zero": "0"})
        time.sleep(1.5)  # the shadow records' flush
        text = client.get("/metrics").text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def _traffic_until(client: Client, rows: np.ndarray[Any, Any], needle: str) -> None:
    """Traffic until /metrics shows `needle` (the guard acts within a second of its sample)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _traffic(client, rows, 40)
        if needle in client.get("/metrics").text:
            return
    raise AssertionError(f"/metrics never showed {needle}")


def _traffic(client: Client, rows: np.ndarray[Any, Any], count: int) -> None:
    for i in range(count):
        client.post(
            "/v2/models/digits/infer",
            json=v2_body(rows[i % len(rows)]),
            headers={"x-targeting-key": f"user-{time.monotonic_ns()}"},
        )


def test_dashboard_metric_names_are_exposed(exposed: dict[str, set[str]]) -> None:
    """Every metric the dashboard's PromQL names (with its _total, _bucket, _sum or _count
    suffix) has samples in the gateway's /metrics."""
    dashboard = json.loads(DASHBOARD.read_text())
    used = {m.group(1) for e in _expressions(dashboard) for m in METRIC.finditer(e)}
    assert len(used) >= 15
    missing = sorted(used - set(exposed))
    assert not missing, f"the dashboard uses metrics /metrics lacks: {missing}"


def test_dashboard_labels_exist_on_their_metrics(exposed: dict[str, set[str]]) -> None:
    """Every label a selector matches on, or an aggregation groups by, is a label of the
    metrics in that expression (le included for histogram buckets)."""
    dashboard = json.loads(DASHBOARD.read_text())
    for expression in _expressions(dashboard):
        metrics = list(METRIC.finditer(expression))
        known = set().union(*(exposed.get(m.group(1), set()) for m in metrics))
        for match in metrics:
            for label in MATCHER.findall(match.group(2) or ""):
                assert label in exposed[match.group(1)], (label, match.group(0))
        for group in BY.findall(expression):
            for label in (part.strip() for part in group.split(",")):
                assert label in known, (label, expression)


def test_dashboard_covers_the_issue_and_lays_out_cleanly() -> None:
    """The dashboard has panels for requests, errors, latency by version, shadow agreement,
    drops, guard decisions and rollbacks, a model variable and a datasource input, and no two
    panels overlap."""
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(_expressions(dashboard))
    for metric in (
        "gateway_requests_total",
        "gateway_request_latency_seconds_bucket",
        "gateway_http_errors_total",
        "gateway_shadow_agreement_ratio",
        "gateway_shadow_drops_total",
        "gateway_guard_decisions_total",
        "gateway_guard_rollbacks_total",
    ):
        assert metric in text, metric
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model"} <= names
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
