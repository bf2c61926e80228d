"""What only the Redis store must guarantee, on real `redis-server` processes of the tests' own
(tests/redis_support.py): races between clients, notifications, a Redis that dies or comes
back empty, several gateways in one Redis, and a gateway that starts while Redis is down.
The common contract is tests/test_store_contract.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient
from redis.crc import key_slot
from structlog.testing import capture_logs

from gateway import Settings, create_app
from gateway.state import StoreUnavailable, VersionConflict
from gateway.state.factory import open_store
from gateway.state.redis import RedisStore
from gateway.state.redis_keys import Keys
from gateway.state.sqlite import SQLiteStore
from tests.conftest import MANAGER
from tests.redis_support import (
    RedisServer,
    fresh_prefix,
    running_redis,
)
from tests.test_store_contract import prediction, put, route


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may kill and start again."""
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[list[RedisStore]]:
    """Two store objects (two replicas) on the session's Redis, under a fresh prefix."""
    prefix = fresh_prefix()
    opened = [RedisStore(redis_server.url, prefix=prefix) for _ in range(2)]
    yield opened
    for store in opened:
        await store.close()


@pytest.mark.anyio
async def test_two_clients_racing_one_version_exactly_one_wins(stores: list[RedisStore]) -> None:
    """Two replicas' clients change one flag at the same expected version, 20 rounds: each
    round exactly one wins, the other gets VersionConflict, and the audit log has one entry
    per winning change."""
    first, second = stores
    await put(first, "digits-release", route("2", 0), 0)
    outcomes: list[Counter[str]] = []
    for round_ in range(20):
        results = await asyncio.gather(
            put(first, "digits-release", route("2", 2 * round_ + 1), round_ + 1),
            put(second, "digits-release", route("2", 2 * round_ + 2), round_ + 1),
            return_exceptions=True,
        )
        outcomes.append(
            Counter("conflict" if isinstance(r, VersionConflict) else "won" for r in results)
        )

    assert all(outcome == Counter({"won": 1, "conflict": 1}) for outcome in outcomes)
    final = await second.get_flag("digits-release")
    assert final is not None
    assert final.version == 21
    assert [e.version_after for e in await first.audit(limit=100)] == list(range(21, 0, -1))
    assert await first.change_counter() == 21


@pytest.mark.anyio
async def test_unconditional_writes_racing_all_land(stores: list[RedisStore]) -> None:
    """Writes without an expected version from two clients at once all land, each at its own
    version (a write that lost the race reads again and writes on top)."""
    first, second = stores
    await asyncio.gather(
        *(put(store, "k", route("2", i), None) for i, store in enumerate(stores * 5))
    )

    record = await first.get_flag("k")
    assert record is not None
    assert record.version == 10
    assert sorted(e.version_after or 0 for e in await second.audit(limit=100)) == list(range(1, 11))


@pytest.mark.anyio
async def test_prefixes_keep_gateways_apart(redis_server: RedisServer) -> None:
    """Two gateways (two prefixes) in one Redis see neither each other's flags, audit, counter,
    nor notifications."""
    ours = RedisStore(redis_server.url, prefix=fresh_prefix())
    theirs = RedisStore(redis_server.url, prefix=fresh_prefix())
    try:
        feed = ours.change_feed()
        assert feed is not None
        waiting = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)  # subscribed
        await put(theirs, "digits-release", route("2"), 0)
        await theirs.add_predictions(
            "digits", [prediction("r1", time.time())], keep_s=60, max_entries=10
        )

        assert await ours.get_flag("digits-release") is None
        assert await ours.list_flags() == []
        assert await ours.audit() == []
        assert await ours.change_counter() == 0
        assert (await ours.claim_predictions("digits", ["r1"]))["r1"] == "unknown"
        assert await ours.epoch() != await theirs.epoch()
        assert not waiting.done()
        waiting.cancel()
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.anyio
async def test_a_killed_redis_raises_store_unavailable_then_reconnects(
    own_redis: RedisServer,
) -> None:
    """With Redis killed, every kind of call raises StoreUnavailable naming the store (no
    raw redis-py error, no hang); started again (empty), the same store object works."""
    store = RedisStore(own_redis.url, prefix="gw", timeout_s=0.5)
    try:
        await put(store, "digits-release", route("2"), 0)
        own_redis.kill()

        for call in (
            store.get_flag("digits-release"),
            put(store, "digits-release", route("3"), 1),
            store.change_counter(),
            store.epoch(),
            store.audit(),
            store.claim_predictions("digits", ["r1"]),
            store.window_tallies("digits", 1),
        ):
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{own_redis.port}"):
                await asyncio.wait_for(call, timeout=30)

        own_redis.start()
        assert await store.get_flag("digits-release") is None  # came back empty
        assert (await put(store, "digits-release", route("3"), 0)).version == 1
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_redis_that_never_answers_raises_store_unavailable(tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a hung Redis) costs a call its
    timeout, then StoreUnavailable: no call waits without bound."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="gw", timeout_s=0.3)
        try:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.get_flag("k"), timeout=30)
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(put(store, "k", route("2"), 0), timeout=30)
        finally:
            await store.close()


@pytest.mark.anyio
async def test_epoch_changes_when_redis_comes_back_empty(own_redis: RedisServer) -> None:
    """The epoch lasts while Redis keeps its data and is new after a restart without
    persistence, so replicas can tell that their flags are gone."""
    store = RedisStore(own_redis.url, prefix="gw", timeout_s=0.5)
    try:
        before = await store.epoch()
        assert await store.epoch() == before
        own_redis.kill()
        own_redis.start()

        after = await store.epoch()
        assert after != before
        assert await store.epoch() == after
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_change_feed_resumes_after_redis_restarts(own_redis: RedisServer) -> None:
    """The change feed yields on another client's write, survives Redis being killed and
    started again (it subscribes again and yields once, for what it may have missed), and
    then yields on writes again."""
    listener = RedisStore(own_redis.url, prefix="gw", timeout_s=0.3)
    writer = RedisStore(own_redis.url, prefix="gw", timeout_s=0.3)
    feed = listener.change_feed()
    assert feed is not None
    try:
        waiting = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)  # subscribed
        await put(writer, "digits-release", route("2"), 0)
        await asyncio.wait_for(waiting, timeout=10)

        with capture_logs() as logs:
            own_redis.kill()
            waiting = asyncio.ensure_future(anext(feed))
            await asyncio.sleep(0.5)  # the feed sees the connection go
            own_redis.start()
            await asyncio.wait_for(waiting, timeout=30)  # resumed
        events = [log["event"] for log in logs]
        assert "flag_notifications_lost" in events
        assert "flag_notifications_resumed" in events

        waiting = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)
        await put(writer, "digits-release", route("3"), 0)
        await asyncio.wait_for(waiting, timeout=10)
    finally:
        await listener.close()
        await writer.close()


@pytest.mark.anyio
async def test_open_store_picks_the_store_the_settings_name(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """GATEWAY_STORE empty or "sqlite" opens the embedded file, a redis:// URL the Redis store
    under GATEWAY_REDIS_PREFIX, which marks the process as sharing its state."""
    embedded = Settings(state_path=tmp_path / "state.db")
    shared = Settings.from_mapping(
        {"GATEWAY_STORE": redis_server.url, "GATEWAY_REDIS_PREFIX": "picked"}
    )

    sqlite_store = open_store(embedded)
    redis_store = open_store(shared)
    try:
        assert isinstance(sqlite_store, SQLiteStore)
        assert isinstance(redis_store, RedisStore)
        await put(redis_store, "k", route("2"), None)
        assert await RedisStore(redis_server.url, prefix="picked").get_flag("k") is not None
        assert (embedded.shared_state, shared.shared_state) == (False, True)
    finally:
        await sqlite_store.close()
        await redis_store.close()


@pytest.mark.anyio
async def test_redis_cluster_setting_opens_a_cluster_client(redis_cluster: RedisServer) -> None:
    """GATEWAY_REDIS_CLUSTER=true opens the store with a Redis Cluster client: on a one-node
    cluster, a flag write (one script over the release keys) and its notification work."""
    settings = Settings.from_mapping(
        {
            "GATEWAY_STORE": redis_cluster.url,
            "GATEWAY_REDIS_PREFIX": fresh_prefix(),
            "GATEWAY_REDIS_CLUSTER": "true",
        }
    )
    store = open_store(settings)
    try:
        feed = store.change_feed()
        assert feed is not None
        waiting = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.3)  # subscribed
        assert (await put(store, "digits-release", route("2"), 0)).version == 1
        await asyncio.wait_for(waiting, timeout=10)
        assert [e.version_after for e in await store.audit()] == [1]
    finally:
        await store.close()


def test_a_gateway_starts_and_serves_while_redis_is_down(
    release_settings: Settings, own_redis: RedisServer
) -> None:
    """Redis down at start-up: the gateway starts, predicts with the flags of `flags/`, and
    refuses an admin change with 503 instead of half-applying it; once Redis is up the
    change goes through."""
    settings = msgspec.structs.replace(
        release_settings,
        store=own_redis.url,
        redis_prefix=fresh_prefix(),
        flag_poll_interval_s=0.1,
    )
    own_redis.kill()
    with TestClient(app=create_app(settings)) as client:
        in_force = client.post(
            "/ofrep/v1/evaluate/flags/digits-release", json={"context": {"targetingKey": "u1"}}
        )
        assert in_force.status_code == 200, in_force.text  # the flag of flags/ is in force
        body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32"}]}
        body["inputs"][0]["data"] = [0.0] * 64
        assert client.post("/v2/models/digits/infer", json=body).status_code == 200

        change = client.post(
            "/admin/releases/digits/rollout", json={"version": "2", "percent": 50}, headers=MANAGER
        )
        assert change.status_code == 503, change.text

        own_redis.start()
        for _ in range(100):
            change = client.post(
                "/admin/releases/digits/rollout",
                json={"version": "2", "percent": 50},
                headers=MANAGER,
            )
            if change.status_code == 200:
                break
            # Until the follower's next look at the store finishes its start (seeds flags/),
            # the change is refused: 503, or 404 while the emptied store holds no flag yet.
            assert change.status_code in (503, 404), change.text
            time.sleep(0.1)
        assert change.status_code == 200, change.text
        assert change.json()["split"] == {"baseline": 50.0, "candidate": 50.0}


@pytest.mark.parametrize("prefix", ["gateway", "release-gateway", "a:b"])
def test_keys_used_together_share_one_cluster_slot(prefix: str) -> None:
    """Under Redis Cluster a script or transaction may touch one slot only: the keys each of
    them takes together hash to one slot (flag writes and the audit log; comparison records
    of every model; one model's predictions), while different groups may spread."""
    keys = Keys(prefix)
    groups = {
        "release": [
            keys.flags,
            keys.versions,
            keys.changes,
            keys.epoch,
            keys.audit_next,
            keys.audit_entries,
            keys.audit_all,
            keys.audit_model("digits"),
            keys.audit_model("iris"),
        ],
        "shadow": [
            keys.shadow_next,
            keys.shadow_records,
            keys.shadow_written,
            keys.shadow_models,
            keys.shadow_at("digits"),
            keys.shadow_at("iris"),
        ],
        "feedback": keys.predictions("digits"),
    }
    for name, members in groups.items():
        assert len({key_slot(key.encode()) for key in members}) == 1, name
    assert all(key.startswith("{" + prefix + ":") for group in groups.values() for key in group)
