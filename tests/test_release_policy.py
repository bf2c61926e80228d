"""One release contract on every way in: the typed release policy (parse_policy), refused on
every write path with a named 400 that changes nothing, the offline gate on every write path,
and a stored policy that no longer parses switching only that release's automation off."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient
from structlog.testing import capture_logs

from gateway import Settings, create_app
from gateway.flags.errors import InvalidPolicy
from gateway.flags.policy import parse_policy, stored_policy
from gateway.shadow.policy import ShadowOverrides
from gateway.state import SQLiteStore
from tests.conftest import MANAGER, REPO_ROOT, VIEWER, Client, v2_body
from tests.flags_support import demo_flag

ROLES = {"model": "digits", "baseline": "baseline", "candidate": "candidate"}
ZEROS = np.zeros(64, dtype=np.float32)


def test_a_policy_reads_every_setting_of_a_release() -> None:
    """guard.*, shadow.*, ramp.*, cohort.<name>, fallback and free text all land in one typed
    policy."""
    policy = parse_policy(
        ROLES
        | {
            "fallback": False,
            "owner": "ml-platform",
            "guard.minSample": 250,
            "guard.accuracyMargin": 0.05,
            "shadow.timeoutMs": 200,
            "shadow.keepInputs": True,
            "cohort.beta": '{"in":[{"var":"tier"},["beta"]]}',
            "ramp.version": "2",
            "ramp.steps": "5,50,100",
            "ramp.step": 1,
            "ramp.bakeS": 30,
            "ramp.stepStartedAt": 1000.0,
            "ramp.state": "running",
        }
    )

    assert policy.fallback is False
    assert (policy.guard.min_sample, policy.guard.accuracy_margin) == (250, 0.05)
    assert policy.shadow == ShadowOverrides(timeout_s=0.2, keep_inputs=True)
    assert policy.cohorts == (("beta", {"in": [{"var": "tier"}, ["beta"]]}),)
    assert policy.ramp is not None
    assert (policy.ramp.version, policy.ramp.percent) == ("2", 50)
    assert policy.automated


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("guard.minSample", "lots", "must be an integer of at least 1, not 'lots'"),
        ("guard.alpah", 0.01, "not a guard setting; the guard reads 'guard.minSample'"),
        ("shadow.timeoutMs", "soon", "is 'soon'; it must be a number of milliseconds"),
        ("shadow.concurrency", 4, "not a shadow setting; the shadow settings are"),
        ("gaurd.alpha", 0.01, "not a release setting; a release's metadata holds"),
        ("ramp.bakeS", -1, "'ramp.bakeS' must be a number of seconds >= 0"),
        ("cohort.beta", "not json", "must hold the cohort's JsonLogic rule"),
        ("fallback", "yes", "'fallback' must be true or false, not 'yes'"),
        ("owner", 7, "'owner' is 7; it must be a string"),
    ],
)
def test_a_bad_entry_is_refused_naming_key_value_and_what_is_allowed(
    key: str, value: Any, words: str
) -> None:
    """An unknown key or a value its setting does not allow raises InvalidPolicy naming the
    key, and what is allowed; the lenient reader of stored policies keeps the reason."""
    metadata = ROLES | {key: value}
    if key.startswith("ramp."):
        metadata |= {
            "ramp.version": "2",
            "ramp.steps": "5,100",
            "ramp.step": 0,
            "ramp.stepStartedAt": 0.0,
            "ramp.state": "running",
        } | {key: value}
    with pytest.raises(InvalidPolicy) as refused:
        parse_policy(metadata)
    assert repr(key) in str(refused.value)
    assert words in str(refused.value)
    stored = stored_policy(metadata)
    assert not stored.automated
    assert stored.problem == str(refused.value)


# -- through the app ---------------------------------------------------------------------------

BAD_METADATA = [
    ("guard.minSample", "lots"),
    ("guard.alpah", 0.01),
    ("shadow.timeoutMs", "soon"),
]


@pytest.fixture
def guarded(release_settings: Settings) -> Iterator[Client]:
    settings = msgspec.structs.replace(release_settings, guard_interval_s=0.05)
    with TestClient(app=create_app(settings)) as client:
        yield client


def _decisions(client: Client) -> int:
    status = client.get("/admin/releases/digits", headers=VIEWER).json()
    return sum(d["looks"] for d in status["guard"]["decisions"])


def _still_working(client: Client, etag: str) -> None:
    """The release answers as before, at the same version, and its guard goes on judging."""
    release = client.get("/admin/releases/digits", headers=VIEWER)
    assert release.status_code == 200
    assert release.headers["etag"] == etag
    assert release.json()["guard"]["automation"] == {"enabled": True, "problem": None}
    before = _decisions(client)
    deadline = time.monotonic() + 5
    while _decisions(client) == before:
        assert time.monotonic() < deadline, "the guard stopped judging the release"
        time.sleep(0.05)
    infer = client.post("/v2/models/digits/infer", json=v2_body(ZEROS))
    assert infer.status_code == 200


@pytest.mark.parametrize(("key", "value"), BAD_METADATA)
def test_bad_metadata_in_a_whole_flag_put_is_a_named_400_that_changes_nothing(
    guarded: Client, key: str, value: Any
) -> None:
    """PUT /admin/flags/{key} with a bad policy entry answers 400 naming the key; the ETag
    does not move and the release and its guard keep working."""
    etag = guarded.get("/admin/flags/digits-release", headers=VIEWER).headers["etag"]
    flag = demo_flag()
    flag["metadata"][key] = value

    refused = guarded.put("/admin/flags/digits-release", json=flag, headers=MANAGER)

    assert refused.status_code == 400
    assert repr(key) in refused.json()["error"]
    _still_working(guarded, etag)


def test_bad_parameters_of_an_operation_are_a_named_400_that_changes_nothing(
    guarded: Client,
) -> None:
    """A release operation whose result would carry a bad policy entry (a ramp's bake time, a
    cohort's name) answers 400 saying what is wrong; nothing changes."""
    etag = guarded.get("/admin/releases/digits", headers=VIEWER).headers["etag"]

    ramp = guarded.post(
        "/admin/releases/digits/ramp", json={"version": "2", "bake_s": -1}, headers=MANAGER
    )
    cohort = guarded.post(
        "/admin/releases/digits/cohorts",
        json={"name": "../x", "rule": {"==": [{"var": "t"}, "q"]}, "version": "2"},
        headers=MANAGER,
    )

    assert ramp.status_code == 400
    assert "bake_s" in ramp.json()["error"]
    assert cohort.status_code == 400
    assert "cohort" in cohort.json()["error"]
    _still_working(guarded, etag)


@pytest.mark.parametrize(("key", "value"), BAD_METADATA)
def test_bad_metadata_in_a_flag_file_is_logged_and_not_applied(
    guarded: Client, flags_dir: Path, key: str, value: Any
) -> None:
    """A flag file edited with a bad policy entry is refused: logged, audited as rejected with
    the key named, and not applied; the ETag does not move and the guard keeps working."""
    etag = guarded.get("/admin/releases/digits", headers=VIEWER).headers["etag"]
    path = flags_dir / "digits.json"
    doc = json.loads(path.read_text())
    doc["flags"]["digits-release"]["metadata"][key] = value
    path.write_text(json.dumps(doc))

    deadline = time.monotonic() + 3
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        entry = guarded.get("/admin/audit?limit=1", headers=VIEWER).json()["entries"][0]
        if entry["action"] == "file_change_rejected":
            break
        time.sleep(0.05)
    assert entry["action"] == "file_change_rejected"
    assert repr(key) in entry["reason"]
    _still_working(guarded, etag)


def test_the_offline_gate_guards_a_whole_flag_put(guarded: Client) -> None:
    """A PUT that brings a version worse offline (3) into the candidate is refused (409) as a
    rollout would be; with ?force=true it is applied and audited as forced with the
    comparison."""
    flag = demo_flag()
    flag["variants"]["candidate"]["serve"] = "3"

    refused = guarded.put("/admin/flags/digits-release", json=flag, headers=MANAGER)
    forced = guarded.put(
        "/admin/flags/digits-release?force=true&reason=accepted", json=flag, headers=MANAGER
    )

    assert refused.status_code == 409
    assert "offline gate" in refused.json()["error"]
    assert forced.status_code == 200, forced.text
    entry = guarded.get("/admin/audit?limit=1", headers=VIEWER).json()["entries"][0]
    assert entry["action"] == "replace_forced"
    gate = entry["evidence"]["offline_gate"]
    assert (gate["candidate_version"], gate["forced"], gate["passed"]) == ("3", True, False)


def test_the_offline_gate_guards_a_flag_file_which_can_name_an_override(
    guarded: Client, flags_dir: Path
) -> None:
    """A flag file bringing version 3 into the candidate is refused like a rollout; naming it
    in guard.offlineOverride applies it, audited as forced."""
    path = flags_dir / "digits.json"
    doc = json.loads(path.read_text())
    doc["flags"]["digits-release"]["variants"]["candidate"]["serve"] = "3"

    def newest(action: str) -> dict[str, Any]:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            entry: dict[str, Any] = guarded.get("/admin/audit?limit=1", headers=VIEWER).json()[
                "entries"
            ][0]
            if entry["action"] == action:
                return entry
            time.sleep(0.05)
        raise AssertionError(f"no {action} in the audit log")

    path.write_text(json.dumps(doc))
    assert "offline gate" in newest("file_change_rejected")["reason"]
    doc["flags"]["digits-release"]["metadata"]["guard.offlineOverride"] = "3"
    path.write_text(json.dumps(doc))
    forced = newest("file_change_forced")
    assert forced["evidence"]["offline_gate"]["candidate_version"] == "3"
    release = guarded.get("/admin/releases/digits", headers=VIEWER).json()
    assert release["candidate"]["version"] == "3"


# -- a stored policy that no longer parses -----------------------------------------------------


@pytest.fixture
def two_releases(demo_models: Path, tmp_path: Path, settings: Settings) -> Settings:
    """Two models (`digits` and its copy `letters`), each with its release flag; the guard
    looks every 50 ms and acts at a minimum sample of 30."""
    models = Path(shutil.copytree(demo_models, tmp_path / "models"))
    shutil.copytree(models / "digits", models / "letters")
    flags = tmp_path / "two-flags"
    flags.mkdir()
    doc = json.loads((REPO_ROOT / "flags" / "digits.json").read_text())
    for model in ("digits", "letters"):
        flag = doc["flags"]["digits-release"]
        single = {
            "flags": {
                f"{model}-release": flag
                | {"metadata": flag["metadata"] | {"model": model, "guard.minSample": 30}}
            }
        }
        (flags / f"{model}.json").write_text(json.dumps(single))
    return msgspec.structs.replace(
        settings, models_dir=models, flags_dir=flags, guard_interval_s=0.05
    )


def test_a_stored_policy_that_no_longer_parses_switches_off_only_that_releases_automation(
    two_releases: Settings,
) -> None:
    """A flag stored by another version of the gateway with a key this one refuses keeps
    serving: its status says its automation is off and why, a log event says so, operations
    on it still work; the other release's guard still rolls a failing candidate back."""
    with TestClient(app=create_app(two_releases)):
        pass  # seeds both flags into the store
    store = SQLiteStore(two_releases.state_path)
    record = asyncio.run(store.get_flag("digits-release"))
    assert record is not None
    old = record.flag | {"metadata": record.flag["metadata"] | {"shadow.concurrency": 4}}
    asyncio.run(
        store.put_flag(
            "digits-release",
            old,
            expected_version=record.version,
            actor="gateway 0.9",
            action="replace",
            reason="written by an older gateway",
            model="digits",
        )
    )
    asyncio.run(store.close())

    with capture_logs() as logs, TestClient(app=create_app(two_releases)) as client:
        status = client.get("/admin/releases/digits", headers=VIEWER)
        assert status.status_code == 200
        automation = status.json()["guard"]["automation"]
        assert automation["enabled"] is False
        assert "'shadow.concurrency'" in automation["problem"]
        assert client.post("/v2/models/digits/infer", json=v2_body(ZEROS)).status_code == 200
        rollout = client.post(
            "/admin/releases/digits/rollout",
            json={"version": "2", "percent": 20, "reason": "still operable"},
            headers=MANAGER,
        )
        assert rollout.status_code == 200, rollout.text
        forced = client.post(
            "/admin/releases/letters/rollout",
            json={"version": "4", "percent": 50, "force": True},
            headers=MANAGER,
        )
        assert forced.status_code == 200, forced.text
        deadline = time.monotonic() + 30
        rolled_back = False
        for i in range(4_000):
            client.post(
                "/v2/models/letters/infer",
                json=v2_body(ZEROS),
                headers={"x-targeting-key": f"u{i}"},
            )
            if i % 100 == 99:
                entries = client.get("/admin/audit?model=letters", headers=VIEWER).json()
                if any(e["action"] == "guard_rollback" for e in entries["entries"]):
                    rolled_back = True
                    break
            assert time.monotonic() < deadline
        assert rolled_back, "the other release's guard did not act"
        assert (
            client.get("/admin/releases/digits", headers=VIEWER).json()["guard"]["decisions"] == []
        )
    events = [log for log in logs if log["event"] == "release_policy_invalid"]
    assert {event["flag"] for event in events} == {"digits-release"}
