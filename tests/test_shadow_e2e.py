"""End to end over HTTP on the real server: the demo release shadowing 3 (corrupted labels)
and 2 (the better MLP) behind 1. The recorded agreement must be what the versions' offline
predictions on the same inputs say, computed here with onnxruntime and torch directly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER_TOKEN, VIEWER_TOKEN, v2_body
from tests.server import RunningServer, run_cli, running_gateway
from tests.shadow_support import release_flag, write_flags

pytestmark = [
    pytest.mark.e2e,
    # The independent offline check loads TorchScript directly; torch deprecates its loader.
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]
TOKENS = f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}"
SINGLE = 120  # single-row requests, every other one from the `beta` cohort
BATCHES = 6  # requests of BATCH rows (their inputs exceed the release's byte bound)
BATCH = 5
MAX_INPUT_BYTES = 1024  # one row is 256 bytes; a batch of 5 is 1280


@pytest.fixture(scope="module")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("shadow-e2e")
    flag = release_flag(
        [("3", 100), ("2", 100)],
        cohort=True,
        metadata={"shadow.keepInputs": True, "shadow.maxInputBytes": MAX_INPUT_BYTES},
    )
    env = {
        "GATEWAY_ADMIN_TOKENS": TOKENS,
        "GATEWAY_SHADOW_FLUSH_INTERVAL_S": "0.1",
        # Every request must be compared: no CPU budget to shed them, however busy the
        # machine is, even while a slow start of the TorchScript version (its first calls per
        # input shape are profiling runs) keeps runs queued.
        "GATEWAY_SHADOW_CPU_SHARE": "64",
        "GATEWAY_ACCESS_LOG_SAMPLE": "0",
    }
    flags = write_flags(workdir / "flags", flag)
    with running_gateway(demo_models, workdir, env, flags_dir=flags) as running:
        yield running


def post(server: RunningServer, path: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get(server: RunningServer, path: str, token: str = VIEWER_TOKEN) -> Any:
    request = urllib.request.Request(
        server.url + path, headers={"authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return raw.decode() if path == "/metrics" else json.loads(raw)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def offline_classes(models: Path, version: str, pixels: np.ndarray[Any, Any]) -> list[int]:
    """Top classes of a demo version, straight from its artifact (not through the gateway)."""
    directory = models / "digits" / version
    if (directory / "model.onnx").exists():
        session = ort.InferenceSession(
            str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        probabilities = session.run(["probabilities"], {"pixels": pixels})[0]
    else:
        module = torch.jit.load(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
        with torch.inference_mode():
            probabilities = module(torch.from_numpy(pixels))[0].numpy()
    return [int(c) for c in np.argmax(probabilities, axis=1)]


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server.url, VIEWER_TOKEN, *args)


def test_recorded_agreement_matches_offline_predictions(
    server: RunningServer, demo_models: Path
) -> None:
    """Traffic through the release gives one record per request and shadow; per pair and per
    cohort the agreed rows equal the offline count on the same inputs; 3 agrees little and 2
    a lot; the disagreements are exactly the requests the offline predictions disagree on,
    with their inputs when they fit the bound; metrics count the same; the CLI prints it."""
    pixels, _ = held_out_digits()
    requests: dict[str, tuple[np.ndarray[Any, Any], str]] = {}
    for index in range(SINGLE):
        requests[f"s-{index}"] = (pixels[index : index + 1], "beta" if index % 2 else "")
    for batch in range(BATCHES):
        start = SINGLE + batch * BATCH
        requests[f"b-{batch}"] = (pixels[start : start + BATCH], "")
    for request_id, (rows, tier) in requests.items():
        headers = {"x-targeting-key": f"user-{request_id}"}
        if tier:
            headers["x-ctx-tier"] = tier
        answer = post(server, "/v2/models/digits/infer", v2_body(rows, request_id), headers)
        assert (answer["id"], answer["model_version"]) == (request_id, "1")

    deadline = time.monotonic() + 30
    while True:
        summary = get(server, "/admin/shadow/digits")
        counts = {p["shadow"]: p["stats"]["count"] for p in summary["pairs"]}
        if counts == {"2": len(requests), "3": len(requests)}:
            break
        metrics_text = get(server, "/metrics")
        dropped = {
            shadow: metric(
                metrics_text,
                "gateway_shadow_requests_total",
                model="digits",
                primary="1",
                shadow=shadow,
                outcome="dropped",
            )
            for shadow in ("2", "3")
        }
        assert dropped == {"2": 0, "3": 0}, "the shadow budget dropped work"
        assert time.monotonic() < deadline, f"records never arrived: {counts}"
        time.sleep(0.1)

    primary = {rid: offline_classes(demo_models, "1", rows) for rid, (rows, _) in requests.items()}
    stats = {p["shadow"]: p for p in summary["pairs"]}
    rates = {}
    for version in ("2", "3"):
        shadow = {rid: offline_classes(demo_models, version, r) for rid, (r, _) in requests.items()}
        agreed = {
            rid: sum(a == b for a, b in zip(primary[rid], shadow[rid], strict=True))
            for rid in requests
        }
        pair = stats[version]
        assert pair["primary"] == "1"
        assert pair["stats"]["rows"] == SINGLE + BATCHES * BATCH
        assert pair["stats"]["agreed_rows"] == sum(agreed.values())
        assert pair["stats"]["compared"] == len(requests)
        assert pair["stats"]["errors"] == {"primary": 0, "shadow": 0, "timeout": 0}
        by_cohort = {c["cohort"]: c["stats"] for c in pair["cohorts"]}
        assert by_cohort["beta"]["agreed_rows"] == sum(
            agreed[rid] for rid, (_, tier) in requests.items() if tier == "beta"
        )
        assert by_cohort[""]["agreed_rows"] == sum(
            agreed[rid] for rid, (_, tier) in requests.items() if tier != "beta"
        )
        agreement = pair["stats"]["agreement"]
        assert agreement["low"] <= agreement["rate"] <= agreement["high"]
        rates[version] = agreement["rate"]

        listed = get(server, f"/admin/shadow/digits/disagreements?shadow={version}&limit=1000")
        records = listed["disagreements"]
        expected = {rid for rid, rows in requests.items() if agreed[rid] < len(rows[0])}
        assert {r["request_id"] for r in records} == expected
        for record in records:
            rows, _ = requests[record["request_id"]]
            assert record["primary_output"]["classes"] == [
                str(c) for c in primary[record["request_id"]]
            ]
            if rows.nbytes <= MAX_INPUT_BYTES:
                assert record["inputs"]["pixels"]["data"] == rows.ravel().tolist()
            else:
                assert (record["inputs"], record["inputs_dropped"]) == (None, True)

        metrics_text = get(server, "/metrics")
        labels = {"model": "digits", "primary": "1", "shadow": version}
        assert metric(
            metrics_text, "gateway_shadow_requests_total", outcome="compared", **labels
        ) == len(requests)
        assert metric(metrics_text, "gateway_shadow_rows_total", result="agree", **labels) == sum(
            agreed.values()
        )

    assert rates["3"] < 0.75  # corrupted labels: low agreement
    assert rates["2"] > 0.85  # the better MLP: high agreement

    report = cli(server, "shadow", "report", "digits", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == get(server, "/admin/shadow/digits")
    table = cli(server, "shadow", "report", "digits")
    assert table.returncode == 0, table.stderr
    for version in ("2", "3"):
        line = next(
            row for row in table.stdout.splitlines() if re.match(rf"1\s+{version}\s+all\s", row)
        )
        assert f"{rates[version]:.1%}" in line
    assert re.search(r"^\s+beta\s+\d+", table.stdout, re.MULTILINE)
    listing = cli(server, "shadow", "disagreements", "digits", "--shadow", "3", "--limit", "3")
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.strip().splitlines()) == 4  # the header and three requests


def test_cli_review_errors_have_exit_codes(server: RunningServer) -> None:
    """An unknown model exits 1 with the gateway's message; a bad range too; no token, 3."""
    unknown = cli(server, "shadow", "report", "nope")
    assert unknown.returncode == 1
    assert "unknown model" in unknown.stderr
    bad = cli(server, "shadow", "report", "digits", "--since", "last tuesday")
    assert bad.returncode == 1
    assert "ISO 8601" in bad.stderr
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TOKEN"}
    no_token = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "shadow",
            "report",
            "digits",
            "--url",
            server.url,
            "--token-file",
            "/nonexistent",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert no_token.returncode == 3
