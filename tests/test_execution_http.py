"""Deadlines and bounded queues through the app: a pinned or baseline request past its
deadline is a 504 naming the version and the deadline, a full queue a 503 with retry-after,
and a routed request whose candidate times out or is overloaded is answered by the baseline
and counted against the candidate by kind; the release status shows every version's
executor."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway import Settings, create_app
from gateway.demo.digits import held_out_digits
from tests.conftest import REPO_ROOT, VIEWER, v2_body
from tests.shadow_support import SLOW, build_fault_repository, join_slow_calls, write_flags

PIXELS, _ = held_out_digits()
TIMEOUT_MS = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fault_models(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fault_repository(demo_models, tmp_path_factory.mktemp("faults") / "models")


def candidate_flag(version: str, percent: int) -> dict[str, Any]:
    """The demo release with `version` as the candidate on `percent` % of the traffic and no
    cohorts or shadows (let past the offline gate: the fault versions have no metrics)."""
    doc = json.loads((REPO_ROOT / "flags" / "digits.json").read_text())
    flag: dict[str, Any] = copy.deepcopy(doc["flags"]["digits-release"])
    flag["variants"] = {"baseline": {"serve": "1"}, "candidate": {"serve": version}}
    flag["targeting"] = {"fractional": [["baseline", 100 - percent], ["candidate", percent]]}
    flag["metadata"] = {k: v for k, v in flag["metadata"].items() if not k.startswith("cohort.")}
    flag["metadata"]["guard.offlineOverride"] = version
    return flag


@pytest.fixture
async def client(
    settings: Settings, fault_models: Path, tmp_path: Path
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The fault repository, every version with a 300 ms deadline, a queue of one and no
    batching (so a request that arrives while one runs waits, and the next is refused, rather
    than all of them running as one call), and the slow version as the candidate on every
    request."""
    app = create_app(
        msgspec.structs.replace(
            settings,
            models_dir=fault_models,
            flags_dir=write_flags(tmp_path / "flags", candidate_flag(SLOW, 100)),
            inference_timeout_ms=float(TIMEOUT_MS),
            execution_max_queue=1,
            execution_max_batch_size=1,
            guard_interval_s=3600.0,  # the guard looks only when the test has asserted
        )
    )
    async with AsyncTestClient(app=app) as test_client:
        yield test_client
    join_slow_calls()


@pytest.mark.anyio
async def test_a_pinned_request_past_its_deadline_is_a_504_naming_version_and_deadline(
    client: AsyncTestClient[Litestar],
) -> None:
    """A pinned request to a version slower than its deadline is answered 504 at the deadline,
    with a V2 error body naming the version and the deadline."""
    response = await client.post(
        f"/v2/models/digits/versions/{SLOW}/infer", json=v2_body(PIXELS[0])
    )

    assert response.status_code == 504
    error = response.json()["error"]
    assert f"version {SLOW!r}" in error
    assert f"{TIMEOUT_MS} ms deadline" in error


@pytest.mark.anyio
async def test_a_full_queue_is_a_503_with_retry_after(client: AsyncTestClient[Litestar]) -> None:
    """With the slow version's instance busy and its queue of one taken, the next pinned
    request is refused at once: 503, a body saying the queue is full, and retry-after."""
    path = f"/v2/models/digits/versions/{SLOW}/infer"
    first = asyncio.ensure_future(client.post(path, json=v2_body(PIXELS[0])))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(client.post(path, json=v2_body(PIXELS[1])))
    await asyncio.sleep(0.05)

    refused = await client.post(path, json=v2_body(PIXELS[2]))

    assert refused.status_code == 503
    assert "queue is full" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    assert {(await first).status_code, (await second).status_code} == {504}


@pytest.mark.anyio
async def test_a_routed_request_whose_candidate_fails_to_answer_gets_the_baseline(
    client: AsyncTestClient[Litestar],
) -> None:
    """Routed requests whose candidate times out, or finds its queue full, are answered by
    the baseline (x-fallback: true) and counted against the candidate by kind, in the guard's
    window and in the metrics; the release status shows the candidate's executor figures."""
    bodies = [v2_body(PIXELS[i]) for i in range(3)]
    answers = await asyncio.gather(
        *(client.post("/v2/models/digits/infer", json=b) for b in bodies)
    )

    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-fallback"] == "true"
        assert answer.headers["x-model-version"] == "1"
        assert answer.headers["x-route-variant"] == "candidate"
    status = (await client.get("/admin/releases/digits", headers=VIEWER)).json()
    candidate = status["guard"]["window"]["candidate"]
    assert candidate["requests"] == 3
    assert candidate["fallbacks"] == 3
    kinds = candidate["errors_by_kind"]
    assert kinds.get("timeout", 0) >= 1
    assert kinds.get("overloaded", 0) >= 1
    assert kinds["timeout"] + kinds["overloaded"] == 3
    slow = status["execution"][SLOW]
    assert slow["config"]["timeout_ms"] == TIMEOUT_MS
    assert slow["timeouts"]["primary"] == kinds["timeout"]
    assert slow["overloads"]["primary"] == kinds["overloaded"]
    assert status["execution"]["1"]["calls"] >= 1
    metrics = (await client.get("/metrics")).text
    for outcome in ("timeout", "overloaded"):
        labels = f'model="digits",outcome="{outcome}",variant="candidate",version="{SLOW}"'
        assert f"gateway_requests_total{{{labels}}}" in metrics
