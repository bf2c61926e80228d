"""The inference API over Litestar's test client: V2 infer, metadata, health, V1 predict."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.demo.digits import held_out_digits
from tests.conftest import Client, v2_body


def test_default_version_serves_and_says_which(client: Client) -> None:
    """An unpinned request is served by the model's default version, named in body and header."""
    features, _ = held_out_digits()
    response = client.post("/v2/models/digits/infer", json=v2_body(features[:4], "req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "digits"
    assert body["model_version"] == "1"
    assert response.headers["x-model-version"] == "1"
    assert body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [4, 10]
    assert outputs["label"]["datatype"] == "INT64"
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(4, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert outputs["label"]["data"] == probabilities.argmax(axis=1).tolist()


def test_pinned_version_bypasses_the_default(client: Client) -> None:
    """A request to /versions/2/infer is served by version 2 whatever the default is."""
    features, _ = held_out_digits()
    response = client.post("/v2/models/digits/versions/2/infer", json=v2_body(features[:1]))
    assert response.status_code == 200
    assert response.json()["model_version"] == "2"
    assert response.headers["x-model-version"] == "2"


def test_missing_id_is_assigned(client: Client) -> None:
    """A request without an id gets a fresh one, different for each request."""
    features, _ = held_out_digits()
    ids = {
        client.post("/v2/models/digits/infer", json=v2_body(features[:1])).json()["id"]
        for _ in range(3)
    }
    assert len(ids) == 3
    assert all(ids)


def test_requested_outputs_only(client: Client) -> None:
    """Naming outputs in the request returns just those."""
    features, _ = held_out_digits()
    body = v2_body(features[:2]) | {"outputs": [{"name": "label"}]}
    response = client.post("/v2/models/digits/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]


def test_nested_data_is_accepted(client: Client) -> None:
    """V2 allows data as nested lists matching the shape."""
    features, _ = held_out_digits()
    body = v2_body(features[:2])
    body["inputs"][0]["data"] = features[:2].tolist()
    assert client.post("/v2/models/digits/infer", json=body).status_code == 200


def test_failing_version_answers_5xx_naming_it_and_server_goes_on(client: Client) -> None:
    """Version 4 fails at inference: a 502 that names the version; the next request still works."""
    features, _ = held_out_digits()
    failed = client.post("/v2/models/digits/versions/4/infer", json=v2_body(features[:1]))
    assert failed.status_code == 502
    assert "version '4'" in failed.json()["error"]
    healthy = client.post("/v2/models/digits/infer", json=v2_body(features[:1]))
    assert healthy.status_code == 200


def test_server_and_model_metadata(client: Client) -> None:
    """GET /v2 and the model metadata describe the server, versions and signature."""
    server = client.get("/v2").json()
    assert server["name"] == "release-gateway"
    model = client.get("/v2/models/digits").json()
    assert model["name"] == "digits"
    assert model["versions"] == ["1", "2", "3", "4", "5"]
    assert model["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert model["parameters"]["version"] == "1"
    assert model["parameters"]["offline_metrics"]["accuracy"] > 0.8
    torch_version = client.get("/v2/models/digits/versions/3").json()
    assert torch_version["parameters"]["runtime"] == "torchscript"


def test_health_and_readiness(client: Client) -> None:
    """Live and ready answer 200 when the default versions are loaded; per-version ready too."""
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/digits/ready").status_code == 200
    assert client.get("/v2/models/digits/versions/3/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_v1_predict(client: Client) -> None:
    """KServe V1 `:predict` takes instances and returns one prediction per instance."""
    features, _ = held_out_digits()
    response = client.post("/v1/models/digits:predict", json={"instances": features[:3].tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 3
    assert set(body["predictions"][0]) == {"probabilities", "label"}
    assert body["model_version"] == "1"


def test_v1_unknown_verb_is_404(client: Client) -> None:
    """Only the `:predict` verb exists under /v1/models."""
    response = client.post("/v1/models/digits:explain", json={"instances": []})
    assert response.status_code == 404
    assert "predict" in response.json()["error"]


def test_metrics_count_requests_by_version_and_outcome(client: Client) -> None:
    """/metrics counts requests by model, version and outcome, with a latency histogram."""
    features, _ = held_out_digits()
    client.post("/v2/models/digits/infer", json=v2_body(features[:1]))
    client.post("/v2/models/digits/versions/4/infer", json=v2_body(features[:1]))
    client.post("/v2/models/digits/infer", content=b"{")
    text = client.get("/metrics").text
    assert 'gateway_requests_total{model="digits",outcome="ok",variant="",version="1"} 1.0' in text
    assert (
        'gateway_requests_total{model="digits",outcome="error",variant="",version="4"} 1.0' in text
    )
    assert 'gateway_request_latency_seconds_count{model="digits",version="1"} 1.0' in text
    assert 'gateway_http_errors_total{status="400"} 1.0' in text
    assert 'gateway_model_version_ready{model="digits",version="4"} 1.0' in text


def test_openapi_schema_lists_the_endpoints(client: Client) -> None:
    """The OpenAPI document describes the inference endpoints."""
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/v2/models/{model}/infer" in paths
    assert "/v2/models/{model}/versions/{version}/infer" in paths


@pytest.mark.parametrize("path", ["/v2/models/digits/infer"])
def test_binary_tensor_extension_round_trip(client: Client, path: str) -> None:
    """Binary tensor data in and out (what tritonclient sends by default) gives the JSON answer."""
    features, _ = held_out_digits()
    rows = features[:2]
    header = (
        b'{"inputs":[{"name":"pixels","shape":[2,64],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":512}}],"parameters":{"binary_data_output":true}}'
    )
    response = client.post(
        path,
        content=header + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    meta = __import__("json").loads(response.content[:json_length])
    sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
    assert sizes == [2 * 10 * 4, 2 * 8]
    tail = response.content[json_length:]
    labels = np.frombuffer(tail[sizes[0] :], dtype=np.int64)
    expected = client.post(path, json=v2_body(rows)).json()["outputs"][1]["data"]
    assert labels.tolist() == expected
