"""Several worker processes on one machine act as one server: `gateway serve --workers 2`
with the embedded SQLite store. /metrics counts every request the server answered, whichever
worker answered the scrape; feedback joins whichever worker served the request; the guard
judges both workers' traffic together."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER_TOKEN, REPO_ROOT
from tests.server import RunningServer, running_gateway
from tests.server import call as server_call

pytestmark = pytest.mark.e2e

PIXELS, LABELS = held_out_digits()
REQUESTS = 400


@pytest.fixture(scope="module")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("workers")
    flags = Path(shutil.copytree(REPO_ROOT / "flags", root / "flags"))
    env = {
        "GATEWAY_ADMIN_TOKENS": f"ada:release-manager:{MANAGER_TOKEN}",
        "GATEWAY_ACCESS_LOG_SAMPLE": "0",
        "GATEWAY_GUARD_INTERVAL_S": "0.2",
    }
    with running_gateway(demo_models, root / "work", env, "--workers", "2", flags_dir=flags) as s:
        yield s


def call(
    server: RunningServer, method: str, path: str, body: Any = None, timeout: float = 30
) -> tuple[int, Any, dict[str, str]]:
    return server_call(server, method, path, body, token=MANAGER_TOKEN, timeout_s=timeout)


def requests_counted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{")
    )


def test_metrics_count_every_request_and_feedback_joins_in_any_worker(
    server: RunningServer,
) -> None:
    """400 routed requests spread over two workers: every scrape (whichever worker answers
    it) soon counts all 400; feedback for 100 of them joins every one, though each worker
    served only part of them; both workers' figures are in the guard's pooled window."""
    for i in range(REQUESTS):
        row = PIXELS[i % len(PIXELS)]
        body = {
            "id": f"w-{i}",
            "inputs": [
                {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}
            ],
        }
        status, _, _ = call(server, "POST", "/v2/models/digits/infer", body)
        assert status == 200

    deadline = time.monotonic() + 10
    counts: list[float] = []
    while time.monotonic() < deadline:
        counts = [requests_counted(call(server, "GET", "/metrics")[1]) for _ in range(6)]
        if all(count >= REQUESTS for count in counts):
            break
        time.sleep(0.3)
    assert counts == [REQUESTS] * 6, counts

    items = [{"id": f"w-{i}", "label": int(LABELS[i % len(LABELS)])} for i in range(0, REQUESTS, 4)]
    status, joined, _ = call(server, "POST", "/v2/models/digits/feedback", items)
    assert status == 200, joined
    assert joined["accepted"] == len(items), joined
    assert joined["unknown"] == []
    status, again, _ = call(server, "POST", "/v2/models/digits/feedback", items[:10])
    assert again["duplicate"] == [item["id"] for item in items[:10]]

    deadline = time.monotonic() + 10
    pool: dict[str, Any] = {}
    while time.monotonic() < deadline:
        guard = call(server, "GET", "/admin/releases/digits")[1]["guard"]
        pool = guard["pool"]
        window = guard["window"]
        served = window["baseline"]["requests"] + window["candidate"]["requests"]
        labelled = window["baseline"]["feedback_total"] + window["candidate"]["feedback_total"]
        if pool["processes"] == 2 and served == REQUESTS and labelled == len(items):
            break
        time.sleep(0.2)
    assert pool == {
        "processes": 2,
        "available": True,
        "problem": None,
        "predictions_dropped": 0,
    }
    assert served == REQUESTS
    assert labelled == len(items)


def test_a_change_through_one_worker_is_in_force_in_every_worker(server: RunningServer) -> None:
    """A rollout made through whichever worker answers it is soon in force in both: every
    scrape reports the new flag version."""
    status, release, _ = call(
        server, "POST", "/admin/releases/digits/rollout", {"version": "2", "percent": 30}
    )
    assert status == 200, release
    version = release["flag_version"]
    deadline = time.monotonic() + 5
    seen: set[str] = set()
    while time.monotonic() < deadline:
        scrapes = [call(server, "GET", "/metrics")[1] for _ in range(6)]
        seen = {
            match.group(1)
            for text in scrapes
            for match in re.finditer(
                r'^gateway_flag_version\{flag="digits-release"\} (\S+)', text, re.M
            )
        }
        if seen == {f"{float(version)}"}:
            break
        time.sleep(0.2)
    assert seen == {f"{float(version)}"}
