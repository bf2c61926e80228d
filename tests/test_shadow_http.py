"""Shadow mode through the app: failing shadows never touch the client's answer, every case
is counted, and the review API (viewer role) shows summaries and disagreements."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import held_out_digits
from tests.conftest import MANAGER, VIEWER, Client, v2_body
from tests.shadow_support import (
    NAN,
    RAISES,
    SLOW,
    SLOW_S,
    WRONG_SHAPE,
    build_fault_repository,
    join_slow_calls,
    release_flag,
    slow_model,
    slow_trips,
    write_flags,
    write_version,
)

MakeClient = Callable[..., Client]


@pytest.fixture(scope="module")
def fault_models(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo versions and the failing ones (nan, wide, slow, picky)."""
    return build_fault_repository(demo_models, tmp_path_factory.mktemp("faults") / "models")


@pytest.fixture
def make_client(settings: Settings, fault_models: Path, tmp_path: Path) -> Iterator[MakeClient]:
    """Start an app over the fault repository with `flag` as the release; closed at the end."""
    stack: list[Client] = []

    def make(flag: dict[str, Any], **overrides: Any) -> Client:
        flags = write_flags(tmp_path / f"flags-{len(stack)}", flag)
        values = {f: getattr(settings, f) for f in settings.__struct_fields__}
        values |= {
            "models_dir": fault_models,
            "flags_dir": flags,
            "state_path": tmp_path / f"state-{len(stack)}.db",
            "shadow_flush_interval_s": 0.05,
        }
        client = TestClient(app=create_app(Settings(**(values | overrides))))
        stack.append(client.__enter__())
        return client

    yield make
    for client in reversed(stack):
        client.__exit__(None, None, None)
    join_slow_calls()


PIXELS, _ = held_out_digits()
BRIEF = "brief"  # a version that takes 0.1 s a call


def outputs_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    outputs: list[dict[str, Any]] = response.json()["outputs"]
    return outputs


def wait_for_summary(
    client: Client, expected: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        summary: dict[str, Any] = client.get("/admin/shadow/digits", headers=VIEWER).json()
        if expected(summary):
            return summary
        if time.monotonic() > deadline:
            raise AssertionError(f"summary never got there: {summary}")
        time.sleep(0.02)


def pairs(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{p['primary']}->{p['shadow']}": p["stats"] for p in summary["pairs"]}


def shadow_count(client: Client, shadow: str, outcome: str, primary: str = "1") -> float:
    return counted_in(client.get("/metrics").text, shadow, outcome, primary)


def counted_in(metrics: str, shadow: str, outcome: str, primary: str = "1") -> float:
    """`gateway_shadow_requests_total` for one pair and outcome, read from /metrics text."""
    labels = f'model="digits",outcome="{outcome}",primary="{primary}",shadow="{shadow}"'
    for line in metrics.splitlines():
        if line.startswith(f"gateway_shadow_requests_total{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_failing_shadows_never_change_the_answer(make_client: MakeClient) -> None:
    """Shadows that raise, answer NaN, answer the wrong shape, or hang past their timeout:
    the client gets exactly the primary's answer, status and headers, at once; each failure
    is recorded and counted by its outcome."""
    flag = release_flag(
        [(RAISES, 100), (NAN, 100), (WRONG_SHAPE, 100), (SLOW, 100)],
        metadata={"shadow.timeoutMs": 150},
    )
    client = make_client(flag)
    body = v2_body(PIXELS[0], request_id="req-1")
    pinned = client.post("/v2/models/digits/versions/1/infer", json=body)

    started = time.perf_counter()
    routed = client.post("/v2/models/digits/infer", json=body)
    elapsed = time.perf_counter() - started

    assert outputs_of(routed) == outputs_of(pinned)
    assert routed.json()["id"] == "req-1"
    assert routed.headers["x-model-version"] == "1"
    assert routed.headers["x-route-variant"] == "baseline"
    assert elapsed < SLOW_S / 2
    summary = wait_for_summary(client, lambda s: len(s["pairs"]) == 4)
    stats = pairs(summary)
    for version in (RAISES, NAN, WRONG_SHAPE):
        assert stats[f"1->{version}"]["count"] == 1
        assert stats[f"1->{version}"]["errors"] == {"primary": 0, "shadow": 1, "timeout": 0}
        assert shadow_count(client, version, "shadow_error") == 1
    assert stats[f"1->{SLOW}"]["errors"] == {"primary": 0, "shadow": 0, "timeout": 1}
    assert shadow_count(client, SLOW, "timeout") == 1
    assert all(s["agreement"] is None for s in stats.values())
    assert client.get("/v2/health/ready").status_code == 200


def test_a_full_shadow_queue_drops_shadow_work_and_counts_it(make_client: MakeClient) -> None:
    """With the slow shadow's queue (two runs) full, further shadow work is dropped, not
    queued: every client still gets the primary's answer at once, and the drops are counted;
    the runs it took time out."""
    flag = release_flag([(SLOW, 100)], metadata={"shadow.timeoutMs": 100})
    client = make_client(flag)
    pinned = outputs_of(client.post("/v2/models/digits/versions/1/infer", json=v2_body(PIXELS[3])))

    latencies = []
    for _ in range(6):
        started = time.perf_counter()
        answer = client.post("/v2/models/digits/infer", json=v2_body(PIXELS[3]))
        latencies.append(time.perf_counter() - started)
        assert outputs_of(answer) == pinned

    assert max(latencies) < SLOW_S / 2
    dropped = shadow_count(client, SLOW, "dropped")
    assert 1 <= dropped <= 4
    stats = pairs(
        wait_for_summary(
            client, lambda s: bool(s["pairs"]) and s["pairs"][0]["stats"]["count"] == 6 - dropped
        )
    )[f"1->{SLOW}"]
    assert stats["errors"]["timeout"] == 6 - dropped


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_shadows_start_only_while_few_primaries_are_in_flight(
    settings: Settings, demo_models: Path, tmp_path: Path
) -> None:
    """Shadows use spare capacity only: a request that ends while more primaries than
    `shadow_max_primaries_in_flight` are in flight (itself included) drops its drawn shadow,
    counted as primary_busy, and still gets its own answer; the last ones to end, with few
    left in flight, run theirs.

    8 requests at once to a primary that takes 0.1 s a call, one request a call: they end
    one after another with 8, 7, ... 1 in flight, so with a limit of 3 exactly 5 shadows are
    dropped and 3 compared."""
    models = tmp_path / "models"
    shutil.copytree(demo_models, models)
    write_version(
        models / "digits",
        BRIEF,
        slow_model(slow_trips(0.1)),
        "0.1 s a call.",
        {"max_batch_size": 1},
    )
    flag = release_flag([("2", 100)], serve=BRIEF, metadata={"guard.offlineOverride": "2"})
    values = {f: getattr(settings, f) for f in settings.__struct_fields__}
    app = create_app(
        Settings(
            **values
            | {
                "models_dir": models,
                "flags_dir": write_flags(tmp_path / "flags", flag),
                "state_path": tmp_path / "state.db",
                # No deadline or budget refuses anything here (a busy machine slows the
                # calls): only the limit does.
                "inference_timeout_ms": 30_000.0,
                "shadow_cpu_share": 4.0,
                "shadow_max_primaries_in_flight": 3,
                "guard_interval_s": 3600.0,
            }
        )
    )
    # httpx's ASGI transport on the test's own loop: the 8 requests are in flight at once
    # (Litestar's test clients hand each request to their portal and wait for it).
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        answers = await asyncio.gather(
            *(client.post("/v2/models/digits/infer", json=v2_body(PIXELS[0])) for _ in range(8))
        )
        assert [answer.status_code for answer in answers] == [200] * 8
        assert {answer.headers["x-model-version"] for answer in answers} == {BRIEF}
        await until_shadows_settle(client, 3)
        metrics = (await client.get("/metrics")).text

    assert 'gateway_shadow_drops_total{reason="primary_busy"} 5.0' in metrics
    assert counted_in(metrics, "2", "dropped", primary=BRIEF) == 5
    assert counted_in(metrics, "2", "compared", primary=BRIEF) == 3


async def until_shadows_settle(client: httpx.AsyncClient, compared: int) -> None:
    """Wait (10 s at most) until `compared` shadow runs were compared."""
    deadline = time.monotonic() + 10.0
    while counted_in((await client.get("/metrics")).text, "2", "compared", BRIEF) < compared:
        assert time.monotonic() < deadline, "the shadows did not settle in time"
        await asyncio.sleep(0.02)


def test_a_failing_primary_is_recorded_beside_its_shadow(make_client: MakeClient) -> None:
    """When the served version fails, the client gets the same error as without shadows, and
    the comparison keeps the primary's error and the shadow's answer."""
    # The baseline has no offline metrics to judge the candidate by: let it past the gate.
    flag = release_flag([("2", 100)], serve=RAISES, metadata={"guard.offlineOverride": "2"})
    client = make_client(flag)
    body = v2_body(PIXELS[5])
    pinned = client.post(f"/v2/models/digits/versions/{RAISES}/infer", json=body)

    routed = client.post("/v2/models/digits/infer", json=body)

    assert routed.status_code == pinned.status_code == 502
    assert routed.json() == pinned.json()
    stats = pairs(wait_for_summary(client, lambda s: bool(s["pairs"])))[f"{RAISES}->2"]
    assert stats["errors"] == {"primary": 1, "shadow": 0, "timeout": 0}
    assert stats["agreement"] is None
    assert shadow_count(client, "2", "primary_error", primary=RAISES) == 1


def test_disagreements_list_outputs_and_bounded_inputs(make_client: MakeClient) -> None:
    """Disagreements come newest first with both outputs; inputs are kept when the release
    says so and they fit its byte bound, else marked as dropped."""
    flag = release_flag(
        [("3", 100)], metadata={"shadow.keepInputs": True, "shadow.maxInputBytes": 256}
    )
    client = make_client(flag)
    for i in range(40):
        outputs_of(client.post("/v2/models/digits/infer", json=v2_body(PIXELS[i], f"one-{i}")))
    wait_for_summary(
        client,
        lambda s: (
            bool(s["pairs"])
            and s["pairs"][0]["stats"]["count"] + shadow_count(client, "3", "dropped") == 40
        ),
    )
    single = client.get("/admin/shadow/digits/disagreements?limit=100", headers=VIEWER).json()
    records = single["disagreements"]
    assert records, "version 3 (corrupted labels) disagrees with version 1 on some digits"
    for record in records:
        index = int(record["request_id"].removeprefix("one-"))
        assert record["agree"] is False
        assert record["primary_output"]["classes"] != record["shadow_output"]["classes"]
        assert record["inputs"]["pixels"]["data"] == PIXELS[index].tolist()
    two = [int(r["request_id"].removeprefix("one-")) for r in records[:2]]
    if len(two) == 2:
        pair_body = v2_body(np.stack([PIXELS[two[0]], PIXELS[two[1]]]), "two-rows")
        outputs_of(client.post("/v2/models/digits/infer", json=pair_body))
        wait_for_summary(
            client,
            lambda s: s["pairs"][0]["stats"]["count"] + shadow_count(client, "3", "dropped") == 41,
        )
        newest = client.get("/admin/shadow/digits/disagreements?limit=1", headers=VIEWER).json()
        (record,) = newest["disagreements"]
        assert (record["request_id"], record["rows"], record["agreed_rows"]) == ("two-rows", 2, 0)
        assert (record["inputs"], record["inputs_dropped"]) == (None, True)
    times = [r["at"] for r in records]
    assert times == sorted(times, reverse=True)


def test_pinned_requests_are_not_shadowed_but_v1_predict_is(make_client: MakeClient) -> None:
    """A pinned version bypasses routing and so shadowing; KServe V1 :predict is routed and
    shadowed like V2."""
    client = make_client(release_flag([("2", 100)]))
    client.post("/v2/models/digits/versions/1/infer", json=v2_body(PIXELS[0]))
    v1 = client.post("/v1/models/digits:predict", json={"instances": [PIXELS[1].tolist()]})

    assert v1.status_code == 200
    stats = pairs(wait_for_summary(client, lambda s: bool(s["pairs"])))["1->2"]
    time.sleep(0.1)
    assert pairs(client.get("/admin/shadow/digits", headers=VIEWER).json())["1->2"]["count"] == 1
    assert stats["compared"] == 1


def test_review_needs_a_token_and_checks_its_query(make_client: MakeClient) -> None:
    """The review is for viewers and up; unknown models are 404; unreadable ranges and limits
    are 400 with the reason; a range in the future is empty."""
    client = make_client(release_flag([("2", 100)]))
    client.post("/v2/models/digits/infer", json=v2_body(PIXELS[0]))

    assert client.get("/admin/shadow/digits").status_code == 401
    assert client.get("/admin/shadow/digits/disagreements").status_code == 401
    assert client.get("/admin/shadow/digits", headers=MANAGER).status_code == 200
    assert client.get("/admin/shadow/nope", headers=VIEWER).status_code == 404
    bad = client.get("/admin/shadow/digits?since=yesterday", headers=VIEWER)
    assert bad.status_code == 400
    assert "ISO 8601" in bad.json()["error"]
    assert client.get("/admin/shadow/digits?since=1h&until=2h", headers=VIEWER).status_code == 400
    limit = client.get("/admin/shadow/digits/disagreements?limit=0", headers=VIEWER)
    assert limit.status_code == 400
    future = client.get(f"/admin/shadow/digits?since={time.time() + 3600}", headers=VIEWER)
    assert future.json()["pairs"] == []
    assert future.json()["since"] > time.time()
    assert wait_for_summary(client, lambda s: bool(s["pairs"]))["model"] == "digits"


def test_shadow_settings_come_from_the_environment() -> None:
    """GATEWAY_SHADOW_* settings become the shadow configuration; nonsense is refused."""
    settings = Settings.from_mapping(
        {
            "GATEWAY_SHADOW_TIMEOUT_MS": "250",
            "GATEWAY_SHADOW_KEEP_INPUTS": "true",
            "GATEWAY_SHADOW_RETENTION_S": "3600",
        }
    )

    config = settings.shadow
    assert config.retention_s == 3600.0
    assert (config.defaults.timeout_s, config.defaults.keep_inputs) == (0.25, True)
    with pytest.raises(ValueError, match="shadow"):
        Settings.from_mapping({"GATEWAY_SHADOW_BUFFER_RECORDS": "0"})
    with pytest.raises(ValueError, match="shadow"):
        Settings.from_mapping({"GATEWAY_SHADOW_TIMEOUT_MS": "-1"})


def test_app_freezes_its_startup_heap_while_it_serves(settings: Settings) -> None:
    """While an app serves, its start-up heap is frozen out of full garbage collections;
    once it stops, that heap is collectable again; gc_freeze off freezes nothing."""
    gc.unfreeze()
    with TestClient(app=create_app(settings)):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with TestClient(app=create_app(msgspec.structs.replace(settings, gc_freeze=False))):
        assert gc.get_freeze_count() == 0


def test_app_collects_its_young_generation_less_often_while_it_serves(
    settings: Settings,
) -> None:
    """While an app serves, the collector's first threshold is the configured one (the other
    two unchanged); once it stops, the process's thresholds are back; 0 leaves them alone."""
    before = gc.get_threshold()
    with TestClient(app=create_app(msgspec.structs.replace(settings, gc_gen0_threshold=12_345))):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before
    with TestClient(app=create_app(msgspec.structs.replace(settings, gc_gen0_threshold=0))):
        assert gc.get_threshold() == before
    with pytest.raises(ValueError, match="gc_gen0_threshold"):
        Settings.from_mapping({"GATEWAY_GC_GEN0_THRESHOLD": "-1"})
