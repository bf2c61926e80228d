"""The ASGI fast path for V2 infer answers exactly as the Litestar handlers do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import held_out_digits
from tests.conftest import Client, v2_body

Exchange = tuple[int, dict[str, str], bytes]
# Headers the two adapters may word differently without changing the answer.
_TRANSPORT_HEADERS = {"content-length", "date", "server"}


def _clients(settings: Settings) -> Iterator[tuple[Client, Client]]:
    fast = msgspec.structs.replace(settings, inference_fast_path=True)
    slow = msgspec.structs.replace(settings, inference_fast_path=False)
    with TestClient(app=create_app(fast)) as a, TestClient(app=create_app(slow)) as b:
        yield a, b


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[Client, Client]]:
    yield from _clients(settings)


@pytest.fixture
def both_released(release_settings: Settings) -> Iterator[tuple[Client, Client]]:
    yield from _clients(release_settings)


def _exchange(client: Client, path: str, content: bytes, headers: dict[str, str]) -> Exchange:
    response = client.post(path, content=content, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in _TRANSPORT_HEADERS}
    return response.status_code, kept, response.content


def _v2(rows: np.ndarray[Any, Any]) -> bytes:
    return json.dumps(v2_body(rows, "same-id")).encode()


def _binary(rows: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "id": "same-id",
            "inputs": [
                {
                    "name": "pixels",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + rows.tobytes(), {"inference-header-content-length": str(len(header))}


JSON = {"content-type": "application/json"}


def test_same_answers_without_a_release(both: tuple[Client, Client]) -> None:
    """Default, pinned, binary, failing and malformed requests get the same status, headers and
    body from both adapters."""
    rows = held_out_digits()[0][:3].astype(np.float32)
    binary_body, binary_headers = _binary(rows)
    cases = [
        ("/v2/models/digits/infer", _v2(rows), JSON),
        ("/v2/models/digits/versions/2/infer", _v2(rows), JSON),
        ("/v2/models/digits/versions/4/infer", _v2(rows), JSON),
        ("/v2/models/digits/infer", binary_body, binary_headers),
        ("/v2/models/digits/infer", b'{"inputs": [', JSON),
        ("/v2/models/nope/infer", _v2(rows), JSON),
        ("/v2/models/digits/infer", _v2(rows), {"content-type": "text/csv"}),
    ]
    fast, slow = both
    statuses = []
    for path, content, headers in cases:
        answer = _exchange(fast, path, content, headers)
        assert answer == _exchange(slow, path, content, headers), path
        statuses.append(answer[0])
    assert statuses == [200, 200, 502, 200, 400, 404, 415]


def test_same_routing_headers_with_the_demo_release(
    both_released: tuple[Client, Client],
) -> None:
    """With the demo release, a cohort user and sticky users get the same version, variant
    and reason from both adapters."""
    rows = held_out_digits()[0][:1].astype(np.float32)
    fast, slow = both_released
    seen_variants = set()
    for user in [f"user-{n}" for n in range(40)]:
        headers = JSON | {
            "x-targeting-key": user,
            "x-ctx-tier": "beta" if user == "user-0" else "free",
        }
        answer = _exchange(fast, "/v2/models/digits/infer", _v2(rows), headers)
        assert answer == _exchange(slow, "/v2/models/digits/infer", _v2(rows), headers)
        seen_variants.add(answer[1]["x-route-variant"])
    assert len(seen_variants) >= 2  # the cohort user's variant differs from the baseline's


def test_chunked_body_over_the_limit_is_refused(settings: Settings) -> None:
    """A body sent in chunks with no content-length still gets the 413 naming the limit."""

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (256 * 1024)

    app = create_app(msgspec.structs.replace(settings, inference_fast_path=True))
    with TestClient(app=app) as client:
        response = client.post("/v2/models/digits/infer", content=chunks(), headers=JSON)
        assert response.status_code == 413
        assert f"larger than the {settings.max_body_bytes} bytes" in response.json()["error"]
        metrics = client.get("/metrics").text
        assert 'gateway_http_errors_total{status="413"} 1.0' in metrics


@pytest.mark.anyio
async def test_client_gone_mid_body_gets_nothing_and_breaks_nothing(settings: Settings) -> None:
    """A client that disconnects before its body is complete is answered with nothing, and
    the next request is served."""
    app = create_app(msgspec.structs.replace(settings, inference_fast_path=True))
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "method": "POST",
            "path": "/v2/models/digits/infer",
            "raw_path": b"/v2/models/digits/infer",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "state": {},
        }

    async def messages(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        for item in items:
            yield item

    gone = messages(
        [{"type": "http.request", "body": b'{"inp', "more_body": True}, {"type": "http.disconnect"}]
    )
    await app(scope(), gone.__anext__, send)  # type: ignore[arg-type]
    assert sent == []
    rows = held_out_digits()[0][:1].astype(np.float32)
    whole = messages([{"type": "http.request", "body": _v2(rows), "more_body": False}])
    await app(scope(), whole.__anext__, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["model_version"] == "1"


def test_other_methods_and_paths_reach_litestar(client: Client) -> None:
    """Only POST .../infer is taken: a GET on the infer path is Litestar's 405, and the model
    metadata under the same prefix still answers."""
    assert client.get("/v2/models/digits/infer").status_code == 405
    assert client.get("/v2/models/digits").json()["name"] == "digits"
