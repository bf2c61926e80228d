"""End to end: the real server, spoken to by tritonclient.http (a real V2 client)."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from gateway.demo.digits import held_out_digits
from tests.server import RunningServer, running_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_gateway(demo_models, tmp_path_factory.mktemp("e2e")) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def _manifest_accuracy(demo_models: Path, version: str) -> float:
    manifest = json.loads((demo_models / "digits" / version / "manifest.json").read_text())
    return float(manifest["metrics"]["accuracy"])


def test_readiness_and_metadata(client: triton.InferenceServerClient) -> None:
    """tritonclient sees a live, ready server and reads the model's signature."""
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "3")
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]
    assert client.get_server_metadata()["name"] == "release-gateway"


@pytest.mark.parametrize(("version", "binary"), [("1", True), ("2", False), ("3", True)])
def test_held_out_accuracy_matches_manifest(
    client: triton.InferenceServerClient, demo_models: Path, version: str, binary: bool
) -> None:
    """Held-out digits through the server score within one point of the manifest's accuracy."""
    features, labels = held_out_digits()
    predicted: list[int] = []
    for start in range(0, len(features), 64):
        batch = features[start : start + 64]
        tensor = triton.InferInput("pixels", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        outputs = [triton.InferRequestedOutput("label", binary_data=binary)]
        result = client.infer("digits", [tensor], model_version=version, outputs=outputs)
        assert result.get_response()["model_version"] == version
        predicted.extend(result.as_numpy("label").tolist())
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert abs(accuracy - _manifest_accuracy(demo_models, version)) <= 0.01


def test_default_binary_outputs(client: triton.InferenceServerClient) -> None:
    """With tritonclient's defaults (binary in and out, no outputs named) both outputs come back."""
    features, _ = held_out_digits()
    tensor = triton.InferInput("pixels", [2, 64], "FP32")
    tensor.set_data_from_numpy(features[:2])
    result = client.infer("digits", [tensor], request_id="abc")
    assert result.as_numpy("probabilities").shape == (2, 10)
    assert result.as_numpy("label").dtype == np.int64
    assert result.get_response()["id"] == "abc"


def test_failing_version_is_an_error_not_a_crash(client: triton.InferenceServerClient) -> None:
    """Version 4 fails at inference: the client gets an error naming it; the server stays up."""
    features, _ = held_out_digits()
    tensor = triton.InferInput("pixels", [1, 64], "FP32")
    tensor.set_data_from_numpy(features[:1])
    with pytest.raises(triton.InferenceServerException, match="version '4'"):
        client.infer("digits", [tensor], model_version="4")
    assert client.is_server_ready()


def test_fifty_megabyte_body_is_refused_and_server_survives(server: RunningServer) -> None:
    """A 50 MB body gets a 413 naming the limit, and the server keeps serving."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = b"[" + b"1.0," * (50 * 1024 * 1024 // 4) + b"1.0]"
    try:
        # The server may answer and stop reading before the whole body is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(
                "POST",
                "/v2/models/digits/infer",
                body=body,
                headers={"content-type": "application/json"},
            )
        response = connection.getresponse()
        status, payload = response.status, response.read()
    finally:
        connection.close()
    assert status == 413
    assert b"larger than" in payload
    assert server.process.poll() is None
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/v2/health/ready")
    assert connection.getresponse().status == 200
