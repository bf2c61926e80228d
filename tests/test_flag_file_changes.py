"""Editing a file under flags/ while the gateway runs: in force within a second, audited."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import VIEWER, Client


def _wait_for(client: Client, predicate: Any, timeout_s: float = 1.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate(client.get("/admin/releases/digits", headers=VIEWER).json()):
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"change not in force after {timeout_s}s")


def test_file_edit_takes_effect_within_a_second(release_client: Client, flags_dir: Path) -> None:
    """A valid edit of flags/digits.json is in force within a second and audited as the file's."""
    path = flags_dir / "digits.json"
    doc = json.loads(path.read_text())
    doc["flags"]["digits-release"]["targeting"]["if"][2]["fractional"] = [
        ["baseline", 70],
        ["candidate", 30],
    ]
    path.write_text(json.dumps(doc))
    _wait_for(release_client, lambda r: r["split"] == {"baseline": 70.0, "candidate": 30.0})
    entry = release_client.get("/admin/audit?limit=1", headers=VIEWER).json()["entries"][0]
    assert entry["actor"] == "file:digits.json"
    assert entry["action"] == "file_change"
    response = release_client.post(
        "/v2/models/digits/infer",
        json={
            "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]
        },
        headers={"x-targeting-key": "k"},
    )
    assert response.status_code == 200


def test_invalid_file_edit_changes_nothing_and_says_why(
    release_client: Client, flags_dir: Path
) -> None:
    """A file edit naming a missing version, or broken JSON, is refused; the good flag stays."""
    path = flags_dir / "digits.json"
    doc = json.loads(path.read_text())
    doc["flags"]["digits-release"]["variants"]["candidate"]["serve"] = "42"
    path.write_text(json.dumps(doc))
    deadline = time.monotonic() + 2
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        entries = release_client.get("/admin/audit?limit=5", headers=VIEWER).json()["entries"]
        if entries[0]["action"] != "seed":
            break
        time.sleep(0.05)
    assert entries[0]["action"] == "file_change_rejected"
    assert "'42'" in entries[0]["reason"]
    path.write_text("{ not json")
    time.sleep(0.6)
    entries = release_client.get("/admin/audit?limit=1", headers=VIEWER).json()["entries"]
    assert entries[0]["action"] == "file_rejected"
    release = release_client.get("/admin/releases/digits", headers=VIEWER).json()
    assert release["candidate"]["version"] == "2"
    assert release["flag_version"] == 1
