"""The OpenAPI document is the contract: schemathesis, with every check, finds nothing wrong
when it runs the whole document against the real server; and the document's key entries are
the objects the handlers really answer with."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway import create_app
from tests.conftest import MANAGER_TOKEN, REPO_ROOT, VIEWER, VIEWER_TOKEN, Client, scratch_settings
from tests.server import RunningServer, running_gateway

SCHEMATHESIS_CONFIG = Path(__file__).with_name("data") / "schemathesis.toml"
MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def document(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document the gateway serves at /schema/openapi.json."""
    settings = scratch_settings(demo_models, tmp_path_factory.mktemp("openapi-doc"))
    with TestClient(app=create_app(settings)) as client:
        response = client.get("/schema/openapi.json")
        assert response.status_code == 200
        schema: dict[str, Any] = response.json()
        return schema


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return resolved


def _body(document: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][status]
    return _resolve(document, response["content"]["application/json"]["schema"])


def test_readiness_is_an_object_with_ready(document: dict[str, Any]) -> None:
    """GET /v2/health/ready declares a JSON object with a boolean `ready`, for 200 and 503."""
    for status in ("200", "503"):
        schema = _body(document, "/v2/health/ready", "get", status)
        assert schema["type"] == "object"
        assert schema["properties"]["ready"]["type"] == "boolean"
        assert schema["required"] == ["ready"]


def test_flag_list_is_an_object_of_flag_summaries(document: dict[str, Any]) -> None:
    """GET /admin/flags declares {flags: [{key, model, version, etag, ...}]}."""
    schema = _body(document, "/admin/flags", "get", "200")
    flags = schema["properties"]["flags"]
    assert flags["type"] == "array"
    item = _resolve(document, flags["items"])
    assert {"key", "model", "version", "etag", "updated_at", "updated_by"} <= set(
        item["properties"]
    )


def test_infer_declares_the_v2_request_and_response(document: dict[str, Any]) -> None:
    """V2 infer takes an Open Inference Protocol request and answers its response; its
    errors carry the gateway's error body."""
    operation = document["paths"]["/v2/models/{model}/infer"]["post"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["inputs"]
    tensor = request["properties"]["inputs"]["items"]
    assert {"name", "shape", "datatype", "data"} <= set(tensor["properties"])
    response = _body(document, "/v2/models/{model}/infer", "post", "200")
    assert {"model_name", "model_version", "id", "outputs"} <= set(response["properties"])
    for status in ("400", "404", "413", "415", "503"):
        error = _body(document, "/v2/models/{model}/infer", "post", status)
        assert error["properties"] == {"error": {"type": "string"}}


def test_admin_operations_need_the_bearer_scheme(document: dict[str, Any]) -> None:
    """Every /admin operation lists the bearer security scheme, which is declared, and says
    it can answer 401; public operations list none."""
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    admin = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete"}:
                continue
            if path.startswith("/admin/"):
                admin += 1
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert "401" in operation["responses"], (method, path)
            else:
                assert "security" not in operation, (method, path)
    assert admin >= 10


def test_no_json_operation_answers_a_bare_string(document: dict[str, Any]) -> None:
    """No operation declares a JSON body of type string: each is the object it really is."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete"}:
                continue
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is not None:
                    schema = _resolve(document, content["schema"])
                    assert schema.get("type") != "string", (method, path, status)


def test_options_allows_every_method_of_the_path(client: Client) -> None:
    """OPTIONS on a path with two operations lists both in Allow (as the document does)."""
    response = client.options("/admin/flags/digits-release")
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, PUT"


def test_a_parameter_out_of_its_range_is_a_400_naming_it(client: Client) -> None:
    """A query parameter outside the range the document declares is refused with 400 that
    names the parameter and the bound."""
    response = client.get("/admin/audit?limit=0", headers=VIEWER)
    assert response.status_code == 400
    assert "'limit'" in response.json()["error"]
    assert ">= 1" in response.json()["error"]


@pytest.fixture
def contract_server(demo_models: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """The real gateway with the demo release flags and a release-manager token, serving the
    demo without its version 4: a broken export on purpose, whose every answer is the 502
    the document declares, which schemathesis's not_a_server_error check would report."""
    models = tmp_path / "models"
    shutil.copytree(
        demo_models,
        models,
        ignore=lambda folder, _names: ["4"] if folder.endswith("digits") else [],
    )
    flags = Path(shutil.copytree(REPO_ROOT / "flags", tmp_path / "flags"))
    env = {"GATEWAY_ADMIN_TOKENS": f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}"}
    with running_gateway(models, tmp_path / "run", env, flags_dir=flags) as server:
        yield server


@pytest.mark.e2e
def test_schemathesis_finds_nothing(contract_server: RunningServer, tmp_path: Path) -> None:
    """schemathesis with every check, over every operation of the document (state-changing
    ones included), against the running server, reports no failure."""
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(SCHEMATHESIS_CONFIG),
        "run",
        f"{contract_server.url}/schema/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {MANAGER_TOKEN}",
        "--max-examples",
        str(MAX_EXAMPLES),
        # Deterministic generation: the same cases on every run (it implies no database).
        "--generation-deterministic",
        "--workers",
        "2",
        "--no-color",
    ]
    # In tmp_path: schemathesis writes its crash cache (.schemathesis/) where it runs.
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    assert selected is not None, run.stdout[-5000:]
    assert selected[1] == selected[2], "every operation of the document is tested"
    assert int(selected[2]) >= 25
