"""The admin API: auth on every change, validated and versioned flags, audit, persistence."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from tests.conftest import (
    MANAGER,
    MANAGER_TOKEN,
    REPO_ROOT,
    VIEWER,
    VIEWER_TOKEN,
    Client,
    scratch_settings,
)

KEY = "digits-release"

CHANGES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/admin/releases/digits/rollout", {"version": "2", "percent": 20}),
    (
        "POST",
        "/admin/releases/digits/cohorts",
        {"name": "qa", "rule": {"==": [1, 1]}, "version": "2"},
    ),
    ("DELETE", "/admin/releases/digits/cohorts/beta", None),
    ("POST", "/admin/releases/digits/shadow", {"versions": [], "percent": 0}),
    ("POST", "/admin/releases/digits/promote", {}),
    ("POST", "/admin/releases/digits/rollback", {}),
    ("POST", "/admin/releases/digits/disable", {}),
    ("POST", "/admin/releases/digits/enable", {}),
    ("PUT", f"/admin/flags/{KEY}", {}),
]
BAD_CREDENTIALS = [
    ({}, 401, "missing bearer token"),
    ({"authorization": "Basic Zm9vOmJhcg=="}, 401, "missing bearer token"),
    ({"authorization": "Bearer"}, 401, "missing bearer token"),
    ({"authorization": "Bearer not-a-real-token-at-all"}, 401, "invalid bearer token"),
    (VIEWER, 403, "release-manager"),
]


@pytest.fixture(scope="module")
def refusing_client(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    """One app with the demo release for every refused change below (building one takes a
    third of a second): each case checks that its refusal changed nothing."""
    root = tmp_path_factory.mktemp("refusals")
    settings = scratch_settings(
        demo_models,
        root,
        Path(shutil.copytree(REPO_ROOT / "flags", root / "flags")),
        admin_tokens=f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}",
    )
    with TestClient(app=create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
@pytest.mark.parametrize(("headers", "status", "words"), BAD_CREDENTIALS)
def test_no_change_without_a_release_manager_token(
    refusing_client: Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    """None, malformed, wrong or viewer tokens are refused on every change; nothing changes."""
    before = refusing_client.get(f"/admin/flags/{KEY}", headers=VIEWER)
    response = refusing_client.request(method, path, json=body, headers=headers)
    assert response.status_code == status
    assert words in response.json()["error"]
    after = refusing_client.get(f"/admin/flags/{KEY}", headers=VIEWER)
    assert after.headers["etag"] == before.headers["etag"]
    assert after.json() == before.json()


def test_reads_need_a_token_too(release_client: Client) -> None:
    """Viewers read the admin API; without a token it answers 401."""
    assert release_client.get("/admin/flags").status_code == 401
    assert release_client.get("/admin/flags", headers=VIEWER).status_code == 200
    assert release_client.get("/admin/releases/digits", headers=VIEWER).status_code == 200


def test_admin_is_closed_when_no_token_is_configured(settings: Settings) -> None:
    """With no token configured, every admin endpoint refuses: admin is never open."""
    closed = Settings(
        **{**{f: getattr(settings, f) for f in settings.__struct_fields__}, "admin_tokens": ""}
    )
    with TestClient(app=create_app(closed)) as client:
        response = client.get("/admin/flags", headers=MANAGER)
        assert response.status_code == 401
        assert "no admin token is configured" in response.json()["error"]


def test_tokens_never_appear_in_logs(
    release_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither a valid nor a rejected token is written to the logs."""
    release_client.get("/admin/flags", headers={"authorization": "Bearer wrong-token-that-is-long"})
    release_client.post(
        "/admin/releases/digits/rollout", json={"version": "2", "percent": 5}, headers=MANAGER
    )
    out = capsys.readouterr()
    assert "wrong-token-that-is-long" not in out.out + out.err
    assert MANAGER["authorization"].split()[1] not in out.out + out.err


def test_release_status_shows_variants_split_cohorts_shadows(release_client: Client) -> None:
    """GET /admin/releases/{model} describes the demo release."""
    release = release_client.get("/admin/releases/digits", headers=VIEWER).json()
    assert release["flag"] == KEY
    assert release["baseline"] == {"variant": "baseline", "version": "1"}
    assert release["candidate"] == {"variant": "candidate", "version": "2"}
    assert release["split"] == {"baseline": 90.0, "candidate": 10.0}
    assert [c["name"] for c in release["cohorts"]] == ["beta"]
    assert release["shadows"][0]["version"] == "3"
    assert release["flag_version"] == 1


def test_rollout_changes_split_versions_and_audits(release_client: Client) -> None:
    """A rollout is in force, bumps the flag version and ETag, and is audited with who and why."""
    response = release_client.post(
        "/admin/releases/digits/rollout",
        json={"version": "2", "percent": 25, "reason": "canary looks fine"},
        headers=MANAGER,
    )
    assert response.status_code == 200, response.text
    assert response.json()["split"] == {"baseline": 75.0, "candidate": 25.0}
    assert response.headers["etag"] == '"2"'
    entry = release_client.get("/admin/audit?model=digits&limit=1", headers=VIEWER).json()[
        "entries"
    ][0]
    assert entry["actor"] == "ada"
    assert entry["action"] == "rollout"
    assert entry["reason"] == "canary looks fine"
    assert (entry["version_before"], entry["version_after"]) == (1, 2)
    assert any("fractional" in change["path"] for change in entry["diff"])


def test_stale_if_match_gets_412_and_changes_nothing(release_client: Client) -> None:
    """A PUT or an operation with a stale If-Match is refused with 412; the flag is unchanged."""
    flag = release_client.get(f"/admin/flags/{KEY}", headers=VIEWER).json()
    release_client.post(
        "/admin/releases/digits/rollout", json={"version": "2", "percent": 30}, headers=MANAGER
    )
    stale = release_client.put(
        f"/admin/flags/{KEY}", json=flag, headers=MANAGER | {"if-match": '"1"'}
    )
    assert stale.status_code == 412
    assert "expected version 1" in stale.json()["error"]
    stale_op = release_client.post(
        "/admin/releases/digits/disable", json={}, headers=MANAGER | {"if-match": '"1"'}
    )
    assert stale_op.status_code == 412
    current = release_client.get(f"/admin/flags/{KEY}", headers=VIEWER)
    assert current.headers["etag"] == '"2"'
    assert current.json()["state"] == "ENABLED"


def test_put_replaces_the_flag_with_matching_etag(release_client: Client) -> None:
    """PUT with the current ETag replaces the flag and returns the next ETag."""
    flag = release_client.get(f"/admin/flags/{KEY}", headers=VIEWER).json()
    flag["targeting"]["if"][2]["fractional"] = [["baseline", 50], ["candidate", 50]]
    response = release_client.put(
        f"/admin/flags/{KEY}?reason=half", json=flag, headers=MANAGER | {"if-match": '"1"'}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    assert release_client.get("/admin/releases/digits", headers=VIEWER).json()["split"] == {
        "baseline": 50.0,
        "candidate": 50.0,
    }


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda f: f["variants"]["candidate"].update(serve="7"), "'7'"),
        (lambda f: f.update(defaultVariant="nope"), "nope"),
        (lambda f: f["metadata"].pop("baseline"), "baseline"),
        (lambda f: f["variants"].update(bad={"version": "1"}), "bad"),
        (lambda f: f["targeting"]["if"].__setitem__(1, "ghost"), "ghost"),
    ],
)
def test_invalid_put_is_rejected_and_changes_nothing(
    release_client: Client, mutate: Any, words: str
) -> None:
    """An invalid flag gets 400 naming the problem; the flag in force and its version stay."""
    flag = release_client.get(f"/admin/flags/{KEY}", headers=VIEWER).json()
    broken = copy.deepcopy(flag)
    mutate(broken)
    response = release_client.put(f"/admin/flags/{KEY}", json=broken, headers=MANAGER)
    assert response.status_code == 400
    assert words in response.json()["error"]
    after = release_client.get(f"/admin/flags/{KEY}", headers=VIEWER)
    assert after.json() == flag
    assert after.headers["etag"] == '"1"'


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("rollout", {"version": "9", "percent": 10}, 400, "'9'"),
        ("rollout", {"version": "2", "percent": 140}, 400, "percent"),
        ("rollout", {"version": "2"}, 400, "percent"),
        ("rollout", {"version": "2", "percent": "ten"}, 400, "percent"),
        ("cohorts", {"name": "beta", "rule": {"==": [1, 1]}, "version": "2"}, 409, "beta"),
        ("shadow", {"versions": ["8"], "percent": 10}, 400, "'8'"),
        ("explode", {}, 400, "unknown release action"),
    ],
)
def test_invalid_operations_change_nothing(
    release_client: Client, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    """Bad operation requests get a 4xx naming the problem, and write no flag version."""
    response = release_client.post(f"/admin/releases/digits/{path}", json=body, headers=MANAGER)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert release_client.get(f"/admin/flags/{KEY}", headers=VIEWER).headers["etag"] == '"1"'


def test_unknown_release_and_flag_are_404(release_client: Client) -> None:
    """Reading or changing a release that does not exist is a 404."""
    assert release_client.get("/admin/releases/nope", headers=VIEWER).status_code == 404
    assert release_client.get("/admin/flags/nope", headers=VIEWER).status_code == 404
    missing = release_client.delete("/admin/releases/digits/cohorts/nope", headers=MANAGER)
    assert missing.status_code == 404


def test_changes_survive_a_restart(release_settings: Settings) -> None:
    """An API change is still in force after the app is rebuilt on the same state."""
    with TestClient(app=create_app(release_settings)) as client:
        client.post(
            "/admin/releases/digits/rollout", json={"version": "2", "percent": 40}, headers=MANAGER
        )
    with TestClient(app=create_app(release_settings)) as client:
        release = client.get("/admin/releases/digits", headers=VIEWER).json()
        assert release["split"] == {"baseline": 60.0, "candidate": 40.0}
        assert release["flag_version"] == 2
        actions = [
            e["action"] for e in client.get("/admin/audit", headers=VIEWER).json()["entries"]
        ]
        assert actions == ["rollout", "seed"]


def test_audit_limit_is_bounded(release_client: Client) -> None:
    """An audit limit outside 1..1000 is a 400, not a crash."""
    assert release_client.get("/admin/audit?limit=0", headers=VIEWER).status_code == 400
    assert release_client.get("/admin/audit?limit=x", headers=VIEWER).status_code == 400
