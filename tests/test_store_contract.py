"""One contract for every `Store` implementation, plus what only the SQLite file must guarantee.

Async tests run on anyio's pytest plugin (`@pytest.mark.anyio`, asyncio backend): anyio comes
with litestar, so the suite needs no extra plugin. To add an implementation, add one entry to
`BACKENDS`: a function that, given the test's request and temporary directory, returns a factory
opening new store objects on one shared backend (as several worker processes would). The Redis
backend is a real `redis-server` of the session (tests/redis_support.py), a fresh key prefix
per test; what only Redis must guarantee is in tests/test_store_redis.py.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.state import (
    ArmTally,
    ComparisonRecord,
    DiffFn,
    EvidenceTally,
    OutputRecord,
    ShadowLabels,
    SQLiteStore,
    Store,
    StoredPrediction,
    StoreUnavailable,
    TensorData,
    VersionConflict,
    WindowTally,
)
from gateway.state.redis import RedisStore
from tests.redis_support import RedisServer, fresh_prefix


def before_after_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """A trivial diff that shows exactly which previous value the store handed over."""
    return [{"before": before, "after": after}]


class OpenStore(Protocol):
    """Opens a new store object on the test's one backend."""

    def __call__(self, diff: DiffFn = ...) -> Awaitable[Store]: ...


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    path = tmp_path / "state" / "gateway.sqlite"

    async def open_store(diff: DiffFn = before_after_diff) -> Store:
        return SQLiteStore(path, diff=diff)

    return open_store


def redis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = fresh_prefix()

    async def open_store(diff: DiffFn = before_after_diff) -> Store:
        return RedisStore(server.url, prefix=prefix, diff=diff)

    return open_store


def redis_cluster_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """A Redis Cluster client on a one-node cluster: a script or transaction over keys of
    two slots would fail here (CROSSSLOT), as on a real cluster."""
    server: RedisServer = request.getfixturevalue("redis_cluster")
    prefix = fresh_prefix()

    async def open_store(diff: DiffFn = before_after_diff) -> Store:
        return RedisStore(server.url, prefix=prefix, diff=diff, cluster=True)

    return open_store


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], OpenStore]] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
    "redis-cluster": redis_cluster_backend,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """A factory of store objects on one backend; every store it opened is closed afterwards."""
    backend = BACKENDS[request.param](request, tmp_path)
    opened: list[Store] = []

    async def tracked(diff: DiffFn = before_after_diff) -> Store:
        store = await backend(diff)
        opened.append(store)
        return store

    yield tracked
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    """A store on a fresh backend."""
    return await open_store()


def route(version: str, percent: int = 0) -> dict[str, Any]:
    """A flagd flag object of the shape the gateway stores (two route variants, a fractional)."""
    return {
        "state": "ENABLED",
        "defaultVariant": "baseline",
        "variants": {"baseline": {"version": "1"}, "candidate": {"version": version}},
        "targeting": {"fractional": [["candidate", percent], ["baseline", 100 - percent]]},
    }


async def put(
    store: Store,
    key: str,
    flag: dict[str, Any],
    expected_version: int | None = None,
    *,
    model: str = "digits",
    evidence: dict[str, Any] | None = None,
) -> Any:
    return await store.put_flag(
        key,
        flag,
        expected_version=expected_version,
        actor="alice",
        action="replace",
        reason="test",
        model=model,
        evidence=evidence,
    )


@pytest.mark.anyio
async def test_put_then_get_and_list(store: Store) -> None:
    """A written flag reads back with version 1 and its writer; list_flags returns all by key."""
    started = time.time()
    written = await put(store, "digits-release", route("2", 10), expected_version=0)
    await put(store, "a-release", route("3"), expected_version=0)

    got = await store.get_flag("digits-release")
    assert got == written
    assert got is not None
    assert got.flag == route("2", 10)
    assert got.version == 1
    assert got.updated_by == "alice"
    assert started - 1 <= got.updated_at <= time.time() + 1
    assert await store.get_flag("missing") is None
    assert [record.key for record in await store.list_flags()] == ["a-release", "digits-release"]


@pytest.mark.anyio
async def test_versions_increment_and_audit_records_them(store: Store) -> None:
    """Each change raises the version by one; the audit log records each before → after."""
    for percent, expected in ((10, 0), (25, 1), (50, 2)):
        record = await put(store, "digits-release", route("2", percent), expected)
        assert record.version == expected + 1

    entries = await store.audit()
    assert [(e.version_before, e.version_after) for e in entries] == [(2, 3), (1, 2), (None, 1)]


@pytest.mark.anyio
async def test_stale_expected_version_conflicts_and_changes_nothing(store: Store) -> None:
    """A stale expected version raises VersionConflict and leaves flag, audit and counter as is."""
    await put(store, "digits-release", route("2", 10), 0)
    current = await put(store, "digits-release", route("2", 25), 1)
    audit_before = await store.audit()
    counter_before = await store.change_counter()

    with pytest.raises(VersionConflict) as caught:
        await put(store, "digits-release", route("2", 99), 1)

    conflict = caught.value
    assert (conflict.key, conflict.expected, conflict.actual) == ("digits-release", 1, 2)
    assert await store.get_flag("digits-release") == current
    assert await store.audit() == audit_before
    assert await store.change_counter() == counter_before


@pytest.mark.anyio
async def test_expected_zero_conflicts_on_existing_key(store: Store) -> None:
    """Expected version 0 means "create": it conflicts with an existing key at its version."""
    await put(store, "digits-release", route("2"), 0)

    with pytest.raises(VersionConflict) as caught:
        await put(store, "digits-release", route("3"), 0)

    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert len(await store.audit()) == 1


@pytest.mark.anyio
async def test_expected_version_on_missing_key_conflicts(store: Store) -> None:
    """An expected version above 0 for a key that does not exist conflicts with actual 0."""
    with pytest.raises(VersionConflict) as caught:
        await put(store, "digits-release", route("2"), 3)

    assert (caught.value.expected, caught.value.actual) == (3, 0)
    assert await store.get_flag("digits-release") is None
    assert await store.audit() == []


@pytest.mark.anyio
async def test_no_expected_version_writes_unconditionally(store: Store) -> None:
    """expected_version=None skips the check: it creates, then overwrites whatever is stored."""
    assert (await put(store, "digits-release", route("2"), None)).version == 1
    assert (await put(store, "digits-release", route("3"), None)).version == 2


@pytest.mark.anyio
async def test_equal_flag_writes_nothing(store: Store) -> None:
    """Writing the stored flag again (keys in any order) returns the stored record, no audit."""
    stored = await put(store, "digits-release", route("2", 10), 0)
    counter = await store.change_counter()
    same_reordered = dict(reversed(list(route("2", 10).items())))

    again = await put(store, "digits-release", same_reordered, 1)

    assert again == stored
    assert await store.change_counter() == counter
    assert len(await store.audit()) == 1


@pytest.mark.anyio
async def test_json_distinct_values_are_a_change(store: Store) -> None:
    """Values equal in Python but not in JSON (1 and true) are a change, not a no-op."""
    await put(store, "digits-release", {"state": "ENABLED", "variants": {"on": 1}}, 0)

    record = await put(store, "digits-release", {"state": "ENABLED", "variants": {"on": True}}, 1)

    assert record.version == 2
    assert record.flag["variants"]["on"] is True


@pytest.mark.anyio
async def test_audit_newest_first_filtered_and_limited(store: Store) -> None:
    """audit() lists newest first, keeps only the given model's entries, and stops at limit."""
    await put(store, "digits-release", route("2", 10), 0, model="digits")
    await put(store, "iris-release", route("2", 10), 0, model="iris")
    await put(store, "digits-release", route("2", 20), 1, model="digits")
    await store.append_audit(
        actor="guard", action="guard.healthy", key="iris-release", model="iris", reason="ok"
    )

    everything = await store.audit()
    assert [(e.model, e.action) for e in everything] == [
        ("iris", "guard.healthy"),
        ("digits", "replace"),
        ("iris", "replace"),
        ("digits", "replace"),
    ]
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    digits = await store.audit(model="digits")
    assert [e.version_after for e in digits] == [2, 1]
    assert await store.audit(model="digits", limit=1) == digits[:1]
    assert await store.audit(limit=2) == everything[:2]
    assert await store.audit(model="unknown") == []


@pytest.mark.anyio
async def test_audit_limit_must_be_positive(store: Store) -> None:
    """A limit below 1 is a programming error (ValueError), not an empty answer."""
    with pytest.raises(ValueError, match="limit"):
        await store.audit(limit=0)


@pytest.mark.anyio
async def test_audit_entries_carry_diff_and_evidence(store: Store) -> None:
    """A flag write's entry holds who, why, the injected diff of stored → new, and the evidence."""
    await put(store, "digits-release", route("2", 10), 0)
    evidence = {"errors": [3, 40], "statistic": 21.5, "threshold": 20.0, "flag_version": 1}

    await store.put_flag(
        "digits-release",
        route("2", 0),
        expected_version=1,
        actor="guard",
        action="rollback",
        reason="error rate",
        model="digits",
        evidence=evidence,
    )

    newest, first = await store.audit()
    assert first.diff == [{"before": None, "after": route("2", 10)}]
    assert first.evidence is None
    assert (newest.actor, newest.action, newest.reason) == ("guard", "rollback", "error rate")
    assert newest.key == "digits-release"
    assert newest.diff == [{"before": route("2", 10), "after": route("2", 0)}]
    assert newest.evidence == evidence


@pytest.mark.anyio
async def test_diff_is_computed_from_the_stored_flag(open_store: OpenStore) -> None:
    """The diff's `before` is what the store holds, even when the writer last saw something else."""
    first, second = await open_store(), await open_store()
    await put(first, "digits-release", route("2", 10), 0)
    await put(second, "digits-release", route("2", 20), None)  # `first` has not seen this write

    await put(first, "digits-release", route("2", 30), None)

    (newest, *_) = await first.audit()
    assert newest.diff == [{"before": route("2", 20), "after": route("2", 30)}]


@pytest.mark.anyio
async def test_failing_diff_writes_nothing(open_store: OpenStore) -> None:
    """put_flag is one transaction: when the diff raises, neither flag nor audit entry is kept."""

    def broken_diff(before: Any, after: Any) -> list[dict[str, Any]]:
        raise RuntimeError("diff failed")

    store = await open_store(broken_diff)

    with pytest.raises(RuntimeError, match="diff failed"):
        await put(store, "digits-release", route("2"), 0)

    assert await store.get_flag("digits-release") is None
    assert await store.audit() == []
    assert await store.change_counter() == 0


@pytest.mark.anyio
async def test_append_audit_records_an_event_without_versions(store: Store) -> None:
    """append_audit stores an event with no versions, touching neither flags nor the counter."""
    entry = await store.append_audit(
        actor="file-watcher",
        action="flag_file.rejected",
        key="digits-release",
        model="digits",
        reason="digits.json: version '9' is not in the repository",
        diff=[{"op": "replace", "path": "/variants/candidate/version", "value": "9"}],
        evidence={"file": "digits.json"},
    )

    assert (entry.version_before, entry.version_after) == (None, None)
    assert await store.audit() == [entry]
    assert await store.get_flag("digits-release") is None
    assert await store.change_counter() == 0
    bare = await store.append_audit(
        actor="guard", action="guard.hold", key="k", model="digits", reason="not enough data"
    )
    assert (bare.diff, bare.evidence) == ([], None)
    assert bare.id > entry.id


@pytest.mark.anyio
async def test_data_survives_close_and_reopen(open_store: OpenStore) -> None:
    """Flags, versions, audit and the counter are all there after closing and reopening."""
    store = await open_store()
    await put(store, "digits-release", route("2", 10), 0)
    await put(store, "digits-release", route("2", 20), 1, evidence={"why": "ramp"})
    flags, audit = await store.list_flags(), await store.audit()
    counter = await store.change_counter()
    await store.close()

    reopened = await open_store()

    assert await reopened.list_flags() == flags
    assert await reopened.audit() == audit
    assert await reopened.change_counter() == counter
    assert (await put(reopened, "digits-release", route("2", 30), 2)).version == 3


@pytest.mark.anyio
async def test_closed_store_refuses_calls(open_store: OpenStore) -> None:
    """After close() (twice is harmless) every call raises StoreUnavailable."""
    store = await open_store()
    await store.close()
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.get_flag("digits-release")
    with pytest.raises(StoreUnavailable):
        await put(store, "digits-release", route("2"), 0)


@pytest.mark.anyio
async def test_two_stores_see_each_others_writes(open_store: OpenStore) -> None:
    """Two store objects on one backend (two workers): each write raises the other's counter."""
    worker_a, worker_b = await open_store(), await open_store()
    seen_by_a = await worker_a.change_counter()

    await put(worker_b, "digits-release", route("2", 10), 0)

    assert await worker_a.change_counter() > seen_by_a
    record = await worker_a.get_flag("digits-release")
    assert record is not None
    assert record.flag == route("2", 10)
    seen_by_b = await worker_b.change_counter()
    await put(worker_a, "digits-release", route("2", 20), 1)
    assert await worker_b.change_counter() > seen_by_b


@pytest.mark.anyio
async def test_concurrent_writes_with_one_expected_version_one_wins(
    open_store: OpenStore,
) -> None:
    """Threads racing put_flag with the same expected version: exactly one wins each round."""
    await put(await open_store(), "digits-release", route("2", 0), 0)
    writers, rounds = 4, 10
    barrier = threading.Barrier(writers)
    outcomes: list[list[int | str]] = [[] for _ in range(writers)]

    async def write_rounds(index: int) -> None:
        store = await open_store()
        try:
            for round_ in range(rounds):
                barrier.wait(timeout=10)  # every thread at the same version before racing
                flag = route("2", 1 + index * rounds + round_)
                try:
                    record = await put(store, "digits-release", flag, round_ + 1)
                except VersionConflict:
                    outcomes[index].append("conflict")
                else:
                    outcomes[index].append(record.version)
                barrier.wait(timeout=10)  # the round's winner has committed
        finally:
            await store.close()

    threads = [
        threading.Thread(target=asyncio.run, args=(write_rounds(index),))
        for index in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    for round_ in range(rounds):
        results = Counter(outcomes[index][round_] for index in range(writers))
        assert results == Counter({round_ + 2: 1, "conflict": writers - 1})
    checker = await open_store()
    final = await checker.get_flag("digits-release")
    assert final is not None
    assert final.version == rounds + 1
    assert len(await checker.audit(limit=100)) == rounds + 1


# Shadow comparisons: batches in, newest first out, bounded retention.


def comparison(
    request_id: str,
    at: float,
    *,
    shadow: str = "3",
    agree: bool | None = True,
    model: str = "digits",
    payload: bool = True,
) -> ComparisonRecord:
    """A comparison record of the shape the shadow runner writes."""
    outputs = OutputRecord(
        classes=["7"],
        tensors={
            "probabilities": TensorData(shape=[1, 2], datatype="FP32", data=[0.25, 0.75]),
            "label": TensorData(shape=[1], datatype="INT64", data=None),
        },
    )
    return ComparisonRecord(
        request_id=request_id,
        at=at,
        model=model,
        primary_version="1",
        shadow_version=shadow,
        outcome="compared" if agree is not None else "shadow_error",
        variant="baseline",
        cohort="beta",
        context={"tier": "beta", "age": 41, "score": 0.5, "vip": True},
        rows=1,
        agreed_rows=None if agree is None else int(agree),
        agree=agree,
        max_abs_diff=None if agree is None else 0.125,
        primary_latency_ms=0.25,
        shadow_latency_ms=None if agree is None else 0.5,
        shadow_error="" if agree is not None else "RuntimeError: boom",
        primary_output=outputs if payload else None,
        shadow_output=outputs if payload and agree is not None else None,
        inputs={"pixels": TensorData(shape=[1, 2], datatype="FP32", data=[1.0, 2.0])}
        if payload
        else None,
    )


@pytest.mark.anyio
async def test_comparisons_round_trip_newest_first(store: Store) -> None:
    """A batch of records reads back whole (payload included), newest first by time,
    whatever order the batches were written in; other models' records stay apart."""
    older = [comparison("a", 10.0), comparison("b", 30.0, agree=False)]
    newer = [comparison("c", 20.0, agree=None), comparison("x", 25.0, model="other")]
    await store.add_comparisons(newer)
    await store.add_comparisons(older)
    await store.add_comparisons([])

    found = await store.comparisons("digits")

    assert [r.request_id for r in found] == ["b", "c", "a"]
    assert found[2] == older[0]
    assert found[1] == newer[0]
    assert [r.request_id for r in await store.comparisons("other")] == ["x"]
    assert await store.comparisons("nobody") == []


@pytest.mark.anyio
async def test_comparisons_filter_by_range_pair_and_disagreement(store: Store) -> None:
    """since is inclusive and until exclusive; primary/shadow pick a pair; disagreements_only
    keeps records whose classes differ (not errors); limit keeps the newest; payload=False
    reads everything but the outputs and inputs."""
    await store.add_comparisons(
        [
            comparison("a", 10.0),
            comparison("b", 20.0, agree=False),
            comparison("c", 30.0, agree=False, shadow="2"),
            comparison("d", 40.0, agree=None),
        ]
    )

    def ids(records: list[ComparisonRecord]) -> list[str]:
        return [r.request_id for r in records]

    assert ids(await store.comparisons("digits", since=20.0, until=40.0)) == ["c", "b"]
    assert ids(await store.comparisons("digits", shadow="3")) == ["d", "b", "a"]
    assert ids(await store.comparisons("digits", primary="2")) == []
    assert ids(await store.comparisons("digits", disagreements_only=True)) == ["c", "b"]
    assert ids(await store.comparisons("digits", limit=2)) == ["d", "c"]
    light = await store.comparisons("digits", payload=False)
    assert light[-1] == comparison("a", 10.0, payload=False)
    assert all(r.primary_output is None and r.inputs is None for r in light)
    with pytest.raises(ValueError, match="limit"):
        await store.comparisons("digits", limit=0)


@pytest.mark.anyio
async def test_prune_comparisons_by_age_and_count(store: Store) -> None:
    """Pruning deletes records older than the cut, then all but the newest written; it says
    how many went."""
    await store.add_comparisons([comparison(str(i), float(i)) for i in range(10)])

    assert await store.prune_comparisons(older_than=3.0) == 3
    assert await store.prune_comparisons(keep_newest=5) == 2
    assert [r.request_id for r in await store.comparisons("digits")] == [
        "9",
        "8",
        "7",
        "6",
        "5",
    ]
    assert await store.prune_comparisons(older_than=0.0, keep_newest=100) == 0
    assert await store.prune_comparisons(keep_newest=0) == 5
    assert await store.comparisons("digits") == []


@pytest.mark.anyio
async def test_prune_cuts_across_written_batches(store: Store) -> None:
    """Records written in several batches prune exactly: by age where the cut falls inside a
    batch, and by count keeping the most recently written, whatever their times."""
    for start in (0, 4, 8):  # three batches of four, the middle one written with later times
        offset = 100.0 if start == 4 else 0.0
        await store.add_comparisons(
            [comparison(str(i), float(i) + offset) for i in range(start, start + 4)]
        )

    assert await store.prune_comparisons(older_than=2.0) == 2  # "0", "1" of the first batch
    # The 7 written last: the third batch, and the middle one but for its first ("4").
    assert await store.prune_comparisons(keep_newest=7) == 3  # "2", "3", "4"
    found = [r.request_id for r in await store.comparisons("digits")]
    assert found == ["7", "6", "5", "11", "10", "9", "8"]
    assert await store.prune_comparisons(keep_newest=3) == 4
    assert [r.request_id for r in await store.comparisons("digits")] == ["11", "10", "9"]


@pytest.mark.anyio
async def test_comparisons_of_equal_times_read_the_later_written_first(store: Store) -> None:
    """Records with one time, in one batch or across batches, read back latest written first."""
    await store.add_comparisons([comparison("a", 5.0), comparison("b", 5.0)])
    await store.add_comparisons([comparison("c", 5.0)])

    assert [r.request_id for r in await store.comparisons("digits")] == ["c", "b", "a"]
    assert [r.request_id for r in await store.comparisons("digits", limit=2)] == ["c", "b"]


@pytest.mark.anyio
async def test_comparisons_are_shared_and_refused_when_closed(open_store: OpenStore) -> None:
    """Records written by one store object (worker) are read by another; a closed store
    refuses comparison calls like any other."""
    worker_a, worker_b = await open_store(), await open_store()
    await worker_a.add_comparisons([comparison("a", 1.0)])

    assert [r.request_id for r in await worker_b.comparisons("digits")] == ["a"]
    await worker_a.close()
    with pytest.raises(StoreUnavailable):
        await worker_a.add_comparisons([comparison("b", 2.0)])
    with pytest.raises(StoreUnavailable):
        await worker_a.comparisons("digits")
    with pytest.raises(StoreUnavailable):
        await worker_a.prune_comparisons(keep_newest=1)


# What only the SQLite implementation must guarantee.


async def _sqlite_with_history(path: Path) -> SQLiteStore:
    store = SQLiteStore(path, diff=before_after_diff)
    await put(store, "digits-release", route("2", 10), 0)
    await store.append_audit(actor="guard", action="guard.hold", key="k", model="m", reason="r")
    return store


@pytest.mark.anyio
async def test_sqlite_audit_table_refuses_update_and_delete(tmp_path: Path) -> None:
    """Triggers keep the audit table append-only even against direct SQL on the file."""
    store = await _sqlite_with_history(tmp_path / "state.sqlite")
    entries = await store.audit()

    with sqlite3.connect(tmp_path / "state.sqlite") as raw:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE audit SET reason = 'rewritten'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM audit")
    raw.close()

    assert await store.audit() == entries
    await store.close()


@pytest.mark.anyio
async def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    """Opening creates the file (and its folder) with its schema, in WAL mode for shared use."""
    path = tmp_path / "new" / "state.sqlite"
    store = SQLiteStore(path)
    await store.close()

    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        assert {"flags", "audit", "meta"} <= tables
    finally:
        raw.close()


@pytest.mark.anyio
async def test_sqlite_refuses_a_newer_schema_or_a_foreign_file(tmp_path: Path) -> None:
    """A file from a newer schema, or one that is not SQLite, raises StoreUnavailable."""
    newer = tmp_path / "newer.sqlite"
    await (await _sqlite_with_history(newer)).close()
    raw = sqlite3.connect(newer)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_bytes(b"not a database, just some bytes" * 100)

    with pytest.raises(StoreUnavailable, match="schema version 99"):
        SQLiteStore(newer)
    with pytest.raises(StoreUnavailable):
        SQLiteStore(foreign)


def _race_in_process(path: str, barrier: Barrier, results: Queue[int | str]) -> None:
    """One worker process: open the shared file, wait for the others, write at version 1."""

    async def race() -> int | str:
        store = SQLiteStore(Path(path), diff=before_after_diff)
        try:
            barrier.wait(timeout=30)
            record = await put(store, "digits-release", route("2", 50), 1)
        except VersionConflict:
            return "conflict"
        finally:
            await store.close()
        return int(record.version)

    results.put(asyncio.run(race()))


@pytest.mark.anyio
async def test_sqlite_processes_racing_one_expected_version_one_wins(tmp_path: Path) -> None:
    """Worker processes sharing the file race put_flag at one expected version: exactly one wins."""
    path = tmp_path / "state.sqlite"
    await (await _sqlite_with_history(path)).close()
    context = multiprocessing.get_context("spawn")
    workers = 3
    barrier = context.Barrier(workers)
    results: Queue[int | str] = context.Queue()
    processes = [
        context.Process(target=_race_in_process, args=(str(path), barrier, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in range(workers)]
    for process in processes:
        process.join(timeout=30)

    assert Counter(outcomes) == Counter({2: 1, "conflict": workers - 1})
    store = SQLiteStore(path)
    assert [e.version_after for e in await store.audit(model="digits")] == [2, 1]
    await store.close()


@pytest.mark.anyio
async def test_sqlite_file_of_schema_1_gains_the_comparison_table(tmp_path: Path) -> None:
    """A state file written before shadow mode (schema 1) opens, keeps its flags, and takes
    comparison records."""
    path = tmp_path / "state.sqlite"
    await (await _sqlite_with_history(path)).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE shadow_batches")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()

    store = SQLiteStore(path)
    try:
        assert [r.key for r in await store.list_flags()] == ["digits-release"]
        await store.add_comparisons([comparison("a", 1.0)])
        assert len(await store.comparisons("digits")) == 1
    finally:
        await store.close()


# The comparison table of schema 2, a row per record, as gateways before schema 3 wrote it.
_SCHEMA_2_COMPARISONS = """
CREATE TABLE shadow_comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, model TEXT NOT NULL,
    request_id TEXT NOT NULL, primary_version TEXT NOT NULL, shadow_version TEXT NOT NULL,
    outcome TEXT NOT NULL, variant TEXT NOT NULL, cohort TEXT NOT NULL, context TEXT NOT NULL,
    rows INTEGER NOT NULL, agreed_rows INTEGER, agree INTEGER, max_abs_diff REAL,
    primary_latency_ms REAL, shadow_latency_ms REAL, primary_error TEXT NOT NULL,
    shadow_error TEXT NOT NULL, inputs_dropped INTEGER NOT NULL, payload TEXT
)
"""


@pytest.mark.anyio
@pytest.mark.parametrize("schema", [2, 3])
async def test_sqlite_file_of_an_older_shadow_schema_keeps_its_flags_and_drops_its_records(
    tmp_path: Path, schema: int
) -> None:
    """A state file of schema 2 (a row per comparison record) or 3 (records mixed with
    agreement batches) opens with its flags and audit log as they were; its old comparison
    records (review data kept for days) are discarded, and it takes new ones."""
    path = tmp_path / "state.sqlite"
    await (await _sqlite_with_history(path)).close()
    raw = sqlite3.connect(path)
    if schema == 2:
        raw.execute("DROP TABLE shadow_batches")
        raw.execute(_SCHEMA_2_COMPARISONS)
        raw.execute(
            "INSERT INTO shadow_comparisons (at, model, request_id, primary_version, "
            "shadow_version, outcome, variant, cohort, context, rows, primary_error, "
            "shadow_error, inputs_dropped) VALUES (1.0, 'digits', 'a', '1', '3', 'compared', "
            "'', '', '{}', 1, '', '', 0)"
        )
    else:
        raw.execute(
            "INSERT INTO shadow_batches (model, first_at, last_at, records, data) "
            "VALUES ('digits', 1.0, 1.0, 1, x'93909090')"
        )
    raw.execute(f"PRAGMA user_version = {schema}")
    raw.commit()
    raw.close()

    with capture_logs() as logs:
        store = SQLiteStore(path)
    try:
        assert [r.key for r in await store.list_flags()] == ["digits-release"]
        assert len(await store.audit()) == 2
        assert await store.comparisons("digits") == []
        await store.add_comparisons([comparison("new", 2.0)])
        assert [r.request_id for r in await store.comparisons("digits")] == ["new"]
    finally:
        await store.close()
    (event,) = [log for log in logs if log["event"] == "shadow_records_discarded"]
    assert (event["schema"], event["records"]) == (schema, 1)
    raw = sqlite3.connect(path)
    tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    assert "shadow_comparisons" not in tables


# What the processes of one gateway share: predictions waiting for feedback, guard windows.


def prediction(request_id: str, at: float, version: str = "1") -> StoredPrediction:
    return StoredPrediction(
        request_id=request_id, version=version, variant="baseline", labels=("7", "3"), at=at
    )


@pytest.mark.anyio
async def test_epoch_is_the_backends_and_lasts(open_store: OpenStore) -> None:
    """Every store object on one backend reports the same epoch, and keeps reporting it."""
    first, second = await open_store(), await open_store()
    epoch = await first.epoch()
    assert epoch
    assert await second.epoch() == epoch
    assert await first.epoch() == epoch


@pytest.mark.anyio
async def test_a_prediction_is_claimed_once_by_any_process(open_store: OpenStore) -> None:
    """A stored prediction is handed, with its shadows' labels, to the first claim from any
    store object; every later claim is a duplicate; an id never stored is unknown."""
    worker_a, worker_b = await open_store(), await open_store()
    now = time.time()
    await worker_a.add_predictions(
        "digits", [prediction("r1", now), prediction("r2", now)], keep_s=60.0, max_entries=100
    )
    await worker_a.add_shadow_labels(
        "digits",
        [ShadowLabels("r1", "3", ("1", "3")), ShadowLabels("never-stored", "3", ("1",))],
    )

    claims = await worker_b.claim_predictions("digits", ["r1", "nope"])
    again = await worker_a.claim_predictions("digits", ["r1", "r2"])

    assert claims["r1"] == msgspec.structs.replace(prediction("r1", now), shadows={"3": ("1", "3")})
    assert claims["nope"] == "unknown"
    assert again["r1"] == "duplicate"
    assert again["r2"] == prediction("r2", now)
    assert (await worker_b.claim_predictions("other-model", ["r2"]))["r2"] == "unknown"


@pytest.mark.anyio
async def test_predictions_are_kept_for_their_time_and_count(store: Store) -> None:
    """A prediction older than keep_s is gone; beyond max_entries the oldest go first; a
    request id stored again replaces the prediction (unclaimed, without old shadows)."""
    now = time.time()
    await store.add_predictions(
        "digits", [prediction("old", now - 120.0)], keep_s=60.0, max_entries=100
    )
    await store.add_predictions(
        "digits", [prediction(f"r{i}", now) for i in range(5)], keep_s=60.0, max_entries=3
    )
    claims = await store.claim_predictions("digits", ["old", "r0", "r1", "r2", "r3", "r4"])
    assert [claims[i] == "unknown" for i in ("old", "r0", "r1")] == [True, True, True]
    assert all(isinstance(claims[i], StoredPrediction) for i in ("r2", "r3", "r4"))

    await store.add_shadow_labels("digits", [ShadowLabels("r4", "3", ("0", "0"))])
    await store.add_predictions(
        "digits", [prediction("r4", now, version="2")], keep_s=60.0, max_entries=3
    )
    replaced = (await store.claim_predictions("digits", ["r4"]))["r4"]
    assert replaced == prediction("r4", now, version="2")


def tally(requests: int, errors: int = 0, log_lr: float = 0.0) -> WindowTally:
    return WindowTally(
        started_at=100.0,
        baseline=ArmTally(variant="baseline", version="1", requests=requests),
        candidate=ArmTally(
            variant="candidate",
            version="2",
            requests=requests,
            errors=errors,
            errors_by_kind={"timeout": errors} if errors else {},
            latency={12: requests},
            latency_min_s=0.001,
            latency_max_s=0.002,
            labelled=requests,
            correct=requests - errors,
        ),
        error_test=EvidenceTally(
            log_lr=[log_lr, 2 * log_lr], errors=errors, candidate_errors=errors
        ),
        accuracy_test=EvidenceTally(log_lr=[0.0, 0.0]),
    )


@pytest.mark.anyio
async def test_window_figures_are_one_per_process_and_replaced_whole(
    open_store: OpenStore,
) -> None:
    """Each process's figures of a window are kept apart and replaced by its next write (a
    retry never counts twice); every process's are read back together, per flag version."""
    worker_a, worker_b = await open_store(), await open_store()
    await worker_a.put_window_tally("digits", 3, "process-a", tally(10))
    await worker_a.put_window_tally("digits", 3, "process-a", tally(25, errors=2, log_lr=0.5))
    await worker_b.put_window_tally("digits", 3, "process-b", tally(7))
    await worker_b.put_window_tally("digits", 4, "process-b", tally(1))

    found = await worker_b.window_tallies("digits", 3)

    assert sorted(found, key=lambda t: t.candidate.requests) == [tally(7), tally(25, 2, 0.5)]
    assert await worker_a.window_tallies("digits", 4) == [tally(1)]
    assert await worker_a.window_tallies("digits", 5) == []
    assert await worker_a.window_tallies("other", 3) == []


@pytest.mark.anyio
async def test_a_change_feed_tells_of_every_flag_write(open_store: OpenStore) -> None:
    """A store with a change feed yields after a flag write by another store object (pub/sub
    between replicas); one without leaves callers to poll the change counter."""
    listener, writer = await open_store(), await open_store()
    feed = listener.change_feed()
    if feed is None:
        before = await listener.change_counter()
        await put(writer, "digits-release", route("2"))
        assert await listener.change_counter() > before
        return
    waiting = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0.2)  # subscribed
    await put(writer, "digits-release", route("2"))
    await asyncio.wait_for(waiting, timeout=2.0)
