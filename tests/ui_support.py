"""The browser tests' gateway, traffic and Chromium: one of each per test module."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER, MANAGER_TOKEN, REPO_ROOT, VIEWER_TOKEN
from tests.server import RunningServer, running_gateway

CHROMIUM = Path(os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "var" / "ui-screenshots"


def request(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        connection.request(
            method,
            path,
            body=payload,
            headers={"content-type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None, dict(response.headers)
    finally:
        connection.close()


@contextmanager
def demo_gateway(models: Path, workdir: Path) -> Iterator[RunningServer]:
    """The demo release with a release manager `ada` and a viewer `vic`, sampling its history
    every second; shadow 3 on every baseline request, keeping inputs (turned on through the
    flag, as a release manager would)."""
    flags = Path(shutil.copytree(REPO_ROOT / "flags", workdir / "flags"))
    env = {
        "GATEWAY_ADMIN_TOKENS": f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}",
        "GATEWAY_UI_SAMPLE_INTERVAL_S": "1",
        "GATEWAY_ACCESS_LOG_SAMPLE": "0",
    }
    with running_gateway(models, workdir, env, flags_dir=flags) as server:
        status, flag, headers = request(
            server, "GET", "/admin/flags/digits-release", headers=MANAGER
        )
        assert status == 200
        flag["metadata"]["shadow.keepInputs"] = True
        flag["variants"]["baseline"]["shadow"] = [{"version": "3", "percent": 100}]
        status, answer, _ = request(
            server,
            "PUT",
            "/admin/flags/digits-release?reason=keep+inputs+for+the+review",
            flag,
            {**MANAGER, "if-match": headers["etag"]},
        )
        assert status == 200, answer
        yield server


@dataclass
class Traffic:
    """Demo requests from many users, about `rate` a second, half of them labelled."""

    server: RunningServer
    rate: float = 40.0
    sent: int = 0
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        features, labels = held_out_digits()
        rng = np.random.default_rng(7)
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        feedback: list[dict[str, Any]] = []
        deadline = time.monotonic() + 600  # bounded even if a test never stops it
        while not self.stop.is_set() and time.monotonic() < deadline:
            index = int(rng.integers(len(features)))
            body = {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 64],
                        "datatype": "FP32",
                        "data": features[index].tolist(),
                    }
                ]
            }
            headers = {"content-type": "application/json", "x-targeting-key": f"u{self.sent}"}
            try:
                connection.request("POST", "/v2/models/digits/infer", json.dumps(body), headers)
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status == 200 and rng.random() < 0.5:
                    feedback.append({"id": answer["id"], "label": int(labels[index])})
                if len(feedback) >= 20:
                    connection.request(
                        "POST", "/v2/models/digits/feedback", json.dumps(feedback), headers
                    )
                    connection.getresponse().read()
                    feedback = []
                self.sent += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            time.sleep(1.0 / self.rate)
        connection.close()


@contextmanager
def generated_traffic(server: RunningServer) -> Iterator[Traffic]:
    traffic = Traffic(server)
    thread = threading.Thread(target=traffic.run, name="ui-traffic", daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        thread.join(timeout=15)
