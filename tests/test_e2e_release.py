"""End to end on the real server: the CLI, the OFREP client, and a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

from tests.conftest import MANAGER_TOKEN, REPO_ROOT, VIEWER_TOKEN
from tests.server import RunningServer, free_port, run_cli, running_gateway

pytestmark = pytest.mark.e2e
TOKENS = f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO_ROOT / "flags", tmp_path / "flags")
    return tmp_path


@pytest.fixture
def server(demo_models: Path, workdir: Path) -> Iterator[RunningServer]:
    env = {"GATEWAY_ADMIN_TOKENS": TOKENS}
    with running_gateway(demo_models, workdir, env, flags_dir=workdir / "flags") as running:
        yield running


def cli(
    server: RunningServer, *args: str, token: str = MANAGER_TOKEN
) -> subprocess.CompletedProcess[str]:
    return run_cli(server.url, token, *args)


def routed_version(server: RunningServer, key: str, tier: str | None = None) -> str:
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]}
    request = urllib.request.Request(
        f"{server.url}/v2/models/digits/infer",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-targeting-key": key}
        | ({"x-ctx-tier": tier} if tier else {}),
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.headers["x-model-version"])


def test_cli_operations_exit_codes_and_audit(server: RunningServer) -> None:
    """The CLI changes the release, prints tables, and exits 0 / 1 / 3 as documented."""
    status = cli(server, "release", "status", "digits")
    assert status.returncode == 0, status.stderr
    assert "candidate" in status.stdout
    assert "90%" in status.stdout
    rollout = cli(
        server,
        "release",
        "rollout",
        "digits",
        "--version",
        "2",
        "--percent",
        "100",
        "--reason",
        "go",
    )
    assert rollout.returncode == 0, rollout.stderr
    assert routed_version(server, "someone") == "2"
    refused = cli(server, "release", "rollout", "digits", "--version", "9", "--percent", "5")
    assert refused.returncode == 1
    assert "'9'" in refused.stderr
    viewer = cli(server, "release", "rollback", "digits", token=VIEWER_TOKEN)
    assert viewer.returncode == 3
    assert "release-manager" in viewer.stderr
    stale = cli(server, "release", "disable", "digits", "--if-match", "1")
    assert stale.returncode == 1
    assert "412" in stale.stderr
    cohort = cli(server, "release", "cohort", "remove", "digits", "beta")
    assert cohort.returncode == 0, cohort.stderr
    shadow = cli(server, "release", "shadow", "digits", "--versions", "3", "--percent", "50")
    assert shadow.returncode == 0, shadow.stderr
    assert "3 @50" in shadow.stdout
    assert cli(server, "release", "rollback", "digits").returncode == 0
    assert routed_version(server, "someone", tier="beta") == "1"
    audit = cli(server, "audit", "--model", "digits")
    assert audit.returncode == 0
    lines = audit.stdout.splitlines()
    assert "rollback" in lines[1]
    assert "ada" in lines[1]
    assert "go" in audit.stdout


def test_cli_flags_get_put_and_validate(
    server: RunningServer, workdir: Path, demo_models: Path
) -> None:
    """`flags get` prints the flag, `flags put` replaces it, `flags validate` checks a file."""
    got = cli(server, "flags", "get", "digits-release")
    assert got.returncode == 0
    flag = json.loads(got.stdout)
    flag["targeting"]["if"][2]["fractional"] = [["baseline", 0], ["candidate", 100]]
    path = workdir / "edited.json"
    path.write_text(json.dumps(flag))
    put = cli(server, "flags", "put", "digits-release", str(path), "--if-match", "1")
    assert put.returncode == 0, put.stderr
    assert routed_version(server, "x") == "2"
    valid = cli(
        server,
        "flags",
        "validate",
        str(workdir / "flags" / "digits.json"),
        "--models",
        str(demo_models),
    )
    assert valid.returncode == 0, valid.stderr
    bad = workdir / "bad.json"
    bad.write_text(json.dumps({"flags": {"k": flag | {"defaultVariant": "nope"}}}))
    invalid = cli(server, "flags", "validate", str(bad), "--models", str(demo_models))
    assert invalid.returncode == 1
    assert "nope" in invalid.stderr


def test_cli_unreachable_gateway_exits_4() -> None:
    """A gateway that cannot be reached is exit code 4, with the URL in the message."""
    result = run_cli(f"http://127.0.0.1:{free_port()}", "x" * 20, "release", "status", "digits")
    assert result.returncode == 4
    assert "cannot reach" in result.stderr


def test_ofrep_client_evaluates_the_same_flag(server: RunningServer) -> None:
    """The real OFREP provider gets the same variant the gateway routes to, for the same key."""
    api.set_provider(OFREPProvider(server.url), "ofrep-test")
    client = api.get_client("ofrep-test")
    for i in range(30):
        key = f"user-{i}"
        details = client.get_object_details("digits-release", {}, EvaluationContext(key))
        assert details.error_code is None, details.error_message
        assert isinstance(details.value, dict)
        assert details.value["serve"] == routed_version(server, key)
    beta = client.get_object_details("digits-release", {}, EvaluationContext("z", {"tier": "beta"}))
    assert beta.variant == "candidate"
    missing = client.get_object_details("nope", {"d": 1}, EvaluationContext("z"))
    assert missing.error_code is not None
    assert missing.value == {"d": 1}


def test_ofrep_bulk_etag(server: RunningServer) -> None:
    """Bulk evaluation returns an ETag; sending it back gets 304 until the flag changes."""

    def bulk(etag: str | None = None) -> tuple[int, str, bytes]:
        headers = {"content-type": "application/json"} | ({"if-none-match": etag} if etag else {})
        request = urllib.request.Request(
            f"{server.url}/ofrep/v1/evaluate/flags",
            data=json.dumps({"context": {"targetingKey": "u1"}}).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers["etag"], response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["etag"], b""

    status, etag, body = bulk()
    assert status == 200
    assert json.loads(body)["flags"][0]["key"] == "digits-release"
    assert bulk(etag)[0] == 304
    cli(server, "release", "disable", "digits")
    assert bulk(etag)[0] == 200


def test_api_changes_survive_a_restart(demo_models: Path, workdir: Path) -> None:
    """A change through the CLI is still in force after the server restarts on the same state."""
    env = {"GATEWAY_ADMIN_TOKENS": TOKENS}
    port = free_port()
    with running_gateway(
        demo_models, workdir, env, flags_dir=workdir / "flags", port=port
    ) as first:
        assert (
            cli(
                first, "release", "rollout", "digits", "--version", "2", "--percent", "100"
            ).returncode
            == 0
        )
    with running_gateway(
        demo_models, workdir, env, flags_dir=workdir / "flags", port=port
    ) as second:
        assert routed_version(second, "anyone") == "2"


def test_loadgen_drives_traffic_and_feedback(server: RunningServer) -> None:
    """`gateway loadgen` sends routed digits with feedback and reports per-version figures."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "loadgen",
            "--url",
            server.url,
            "--requests",
            "300",
            "--concurrency",
            "2",
            "--every",
            "0.5",
            "--feedback",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "300/300 sent, 0 errors" in last
    assert "v1:" in last
    feedback = int(last.split("feedback ")[1].split()[0])
    assert feedback > 250
    guard = json.loads(cli(server, "release", "status", "digits", "--json").stdout)["guard"]
    window = guard["window"]
    assert window["baseline"]["requests"] + window["candidate"]["requests"] == 300
    assert window["baseline"]["feedback_total"] > 0
