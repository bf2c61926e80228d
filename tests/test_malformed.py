"""Malformed requests: each gets a 4xx with an error naming the problem, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Client

ROW = [1.0] * 64


def body(**tensor: Any) -> bytes:
    base: dict[str, Any] = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}
    base.update(tensor)
    return json.dumps({"inputs": [base]}).encode()


JSON = {"content-type": "application/json"}
OVERRUN = (
    b'{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":256}}]}'
)

# (case id, path, body, headers, expected status, words the error must contain)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("bad-json", "/v2/models/digits/infer", b'{"inputs": [', JSON, 400, "malformed JSON"),
    ("empty-body", "/v2/models/digits/infer", b"", JSON, 400, "empty request body"),
    ("not-an-object", "/v2/models/digits/infer", b"[1, 2]", JSON, 400, "Expected `object`"),
    ("missing-inputs", "/v2/models/digits/infer", b"{}", JSON, 400, "inputs"),
    ("strings-as-fp32", "/v2/models/digits/infer", body(data=["1"] * 64), JSON, 400, "strings"),
    ("bools-as-fp32", "/v2/models/digits/infer", body(data=[True] * 64), JSON, 400, "booleans"),
    ("mixed-types", "/v2/models/digits/infer", body(data=[1.0] * 63 + [{}]), JSON, 400, "not FP32"),
    ("shape-vs-data", "/v2/models/digits/infer", body(data=ROW[:63]), JSON, 400, "63"),
    ("wrong-rank", "/v2/models/digits/infer", body(shape=[64]), JSON, 400, "shape [64]"),
    ("wrong-width", "/v2/models/digits/infer", body(shape=[2, 32]), JSON, 400, "expects [-1, 64]"),
    ("negative-dim", "/v2/models/digits/infer", body(shape=[-1, 64]), JSON, 400, "shape [-1, 64]"),
    (
        "wrong-datatype",
        "/v2/models/digits/infer",
        body(datatype="INT32"),
        JSON,
        400,
        "expects FP32",
    ),
    ("unknown-datatype", "/v2/models/digits/infer", body(datatype="FP128"), JSON, 400, "FP128"),
    ("ragged", "/v2/models/digits/infer", body(data=[[1.0] * 64, [1.0]]), JSON, 400, "regular"),
    (
        "nan",
        "/v2/models/digits/infer",
        body(data=ROW[:63]).replace(b"1.0]", b"NaN]"),
        JSON,
        400,
        "malformed JSON",
    ),
    (
        "infinity",
        "/v2/models/digits/infer",
        body(data=ROW[:63]).replace(b"1.0]", b"1e999]"),
        JSON,
        400,
        "out of range",
    ),
    ("fp32-overflow", "/v2/models/digits/infer", body(data=[1e39] * 64), JSON, 400, "non-finite"),
    ("missing-input", "/v2/models/digits/infer", body(name="image"), JSON, 400, "unknown input"),
    (
        "no-data",
        "/v2/models/digits/infer",
        b'{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32"}]}',
        JSON,
        400,
        "neither data nor binary_data_size",
    ),
    (
        "unknown-output",
        "/v2/models/digits/infer",
        json.dumps(
            {
                "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}],
                "outputs": [{"name": "logits"}],
            }
        ).encode(),
        JSON,
        400,
        "logits",
    ),
    (
        "too-many-rows",
        "/v2/models/digits/infer",
        body(shape=[2000, 64], data=ROW * 2000),
        JSON,
        413,
        "limit",
    ),
    (
        "too-large-body",
        "/v2/models/digits/infer",
        b" " * (2 * 1024 * 1024),
        JSON,
        413,
        "larger than",
    ),
    (
        "wrong-content-type",
        "/v2/models/digits/infer",
        body(),
        {"content-type": "text/csv"},
        415,
        "text/csv",
    ),
    ("unknown-model", "/v2/models/nope/infer", body(), JSON, 404, "unknown model 'nope'"),
    ("unknown-version", "/v2/models/digits/versions/9/infer", body(), JSON, 404, "no version '9'"),
    ("path-trick", "/v2/models/digits/versions/..%2F..%2Fetc/infer", body(), JSON, 404, "version"),
    (
        "bad-binary-header",
        "/v2/models/digits/infer",
        body(),
        JSON | {"inference-header-content-length": "x"},
        400,
        "not an integer",
    ),
    (
        "binary-overrun",
        "/v2/models/digits/infer",
        OVERRUN,
        JSON | {"inference-header-content-length": str(len(OVERRUN))},
        400,
        "past the end",
    ),
    ("v1-not-instances", "/v1/models/digits:predict", b'{"rows": []}', JSON, 400, "instances"),
    ("v1-bad-rows", "/v1/models/digits:predict", b'{"instances": [[1, 2]]}', JSON, 400, "shape"),
]


@pytest.mark.parametrize(
    ("path", "payload", "headers", "status", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_malformed_request_gets_a_named_4xx(
    infer_client: Client,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    """Each kind of malformed request gets its 4xx and an `error` that says what is wrong,
    from the ASGI fast path and from the Litestar handlers alike."""
    response = infer_client.post(path, content=payload, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error, error
    after = infer_client.post("/v2/models/digits/infer", content=body(), headers=JSON)
    assert after.status_code == 200


def test_enough_kinds_of_malformed_request() -> None:
    """The table covers at least the twenty kinds the foundation issue asks for."""
    assert len({case[0] for case in CASES}) >= 20


def test_unknown_route_and_method_are_v2_errors(client: Client) -> None:
    """Routing errors (no endpoint, wrong method) come in the same `{"error": ...}` shape."""
    missing = client.get("/v3/nothing")
    assert missing.status_code == 404
    assert "no such endpoint" in missing.json()["error"]
    wrong_method = client.get("/v2/models/digits/infer")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]
